"""The kubesolo.fleet staging benchmark (``bench/run --help`` for the options).

Everything runs on this machine, against a real Distribution registry on 127.0.0.1
(``tests/support/registry.py``), with releases of two random layers per size published by
``kubesolo.fleet.update_publish`` through ``ansible-playbook``.  What is measured, and how:

staging
    One ``ansible-playbook`` run per size, delivery and repetition (local connection, fresh ``dest``
    and fresh controller cache): three trivial tasks, ``update_stage`` in check mode (into another
    dest), ``update_stage``, a marker request to the registry, ``update_stage`` again (the rerun).
    A task's time runs from its start to its result arriving at the controller (``started``/
    ``finished`` of the harness callback).  Per-task overhead = median time of the trivial task;
    module time = stage task time - overhead.  The trivial task has the same fixed cost as the
    delivery: ``ansible.builtin.ping`` for host delivery (a module shipped and run by a new Python
    on the node), ``ansible.builtin.debug`` for controller delivery (an action plugin only, as the
    controller path of update_stage, which runs no module).  Ansible builds a module's payload once
    a run and caches it for every later task and host: the median trivial task and, thanks to the
    check-mode task before it, the measured ``update_stage`` both leave that one-time build out.
direct
    The same staging code without Ansible, in a child process (host delivery:
    ``tests/support/stage_driver.py``; controller delivery: ``bench/controller_driver.py``).  Its
    peak RSS is the ``VmHWM`` the child reads from ``/proc/self/status`` as it ends: the
    high-water mark of that one process, which downloads, hashes and writes both layers.  (Not
    ``ru_maxrss``: Linux carries it over from the forking parent across ``exec``, so it would
    report the benchmark's own peak.)
hand-rolled
    ``curl -s URL -o file && openssl dgst -sha256 file`` and ``curl -s URL | tee file | openssl dgst
    -sha256``, the two layers one after the other, and ``skopeo copy`` of the manifest to ``dir:``.
    Digests are checked.  Unlike the module, these do not fsync, so a third curl variant adds
    ``sync FILE`` (an fsync) to show what durability costs; it is not a candidate for "best curl".
rerun
    The rerun task of the staging runs: its time, and the registry requests and blob bytes between
    the marker request and the end of the run (access log).
fleet
    ``kubesolo.fleet.check`` and a staging-only ``kubesolo.fleet.rollout`` (``kubesolo_fleet_activation=none``)
    over N simulated nodes (``tests/support/fleet.py``), host and controller delivery, fresh nodes
    and cache each run: wall time, registry requests and blob bytes (access log).
signatures
    What a signature policy and signing cost, with an ECDSA P-256 key pair the benchmark makes
    (``cryptography``; PKCS#8 PEM private key, PEM public key, both files).  Fresh releases of two
    random layers of the smallest ``--sizes`` each repetition.  ``update_publish``: one
    ``ansible-playbook`` run a repetition, a check-mode signed publish first (the module's payload
    build), then a release published without ``signing_key`` and another with it, followed by the
    signed one again (idempotent: it must sign nothing); the first of the two goes first in turn.
    ``update_info`` of the signed release's ``stable`` tag: one run a repetition, a warm-up task,
    then INFO_RUNS tasks each of ``signature_policy: off`` and of ``required`` with the trusted key
    (by file), alternating; a repetition's time is the median of its INFO_RUNS; "added" is the
    difference within each repetition.  A marker request to the registry before every measured task
    splits the access log between them.  ``kubesolo.fleet.check`` over the largest ``--fleet`` of
    fresh simulated nodes, without ``kubesolo_fleet_signature_keys`` (the policy ``auto`` is then
    off) and with the trusted key (``auto`` is then required), in turn: wall time, the time of the
    role's task that resolves the release once on the controller (where the signature is checked)
    and requests; every node must be reported as to stage, and signed exactly when the key is given.
ssh
    Controller delivery over real SSH servers on 127.0.0.1, the Python-less busybox nodes of the
    tests: OpenSSH's sshd with internal-sftp (``tests/support/sshnode.py``) and dropbear with
    neither sftp nor scp (``tests/support/dropbearnode.py``).  The controller cache is filled
    beforehand (one local-connection run) and its blobs read once into the page cache, so what is
    measured is the node transfer, not the registry download.  One ``ansible-playbook`` run per
    server, size, ``node_transfer`` the server takes (``shell``; ``put_file``, over sftp, on
    OpenSSH only), ``ssh_args`` variant (Ansible's default, which includes ``-C``, and the same
    without ``-C``; each with a ControlPersist master of its own, as compression is the master's)
    and repetition: trivial ``debug`` tasks for the per-task overhead, a check-mode
    ``update_stage`` that opens the master, ``update_stage`` into a fresh dest.  Transfer time =
    task time - overhead.  Beside it, the same two cached blobs by hand over the
    same server, options and (already open) master: ``ssh 'cat > f' < layer`` for each, then
    ``ssh sha256sum f1 f2``; ``scp`` (sftp) of both, then the same hash (OpenSSH only); the faster
    is "best hand-rolled".  References, not candidates: the first with ``sync`` (update_stage
    syncs when it publishes), and ``ssh 'tee f | sha256sum' < layer`` (hashing as the bytes
    arrive, as the shell stream does), both without ``-C`` only.  Rate limit: ``shell`` and
    ``put_file`` over OpenSSH without ``-C`` at each ``--ssh-rate-limits`` (smallest size), the
    bytes in the node's store sampled every 10 ms; achieved rate = bytes / (last byte's arrival -
    first byte's).  Memory: the shell stream over OpenSSH, the ``ansible-playbook`` process tree
    polled every 0.1 s for ``VmHWM`` (``ProcessTree``).  Link facts: the negotiated cipher and
    compression (``ssh -v``), a bare ``ssh 'cat > /dev/null' < blob``, busybox ``sha256sum`` and
    ``wc -c`` of a cached blob (the node's applets, run on the host: the same static binary).
machine
    CPU, ``openssl speed -evp sha256`` at 1 MiB blocks, Python's hashlib at 1 MiB chunks (from the
    CPU cache) and over a 128 MiB buffer (from memory), loopback (curl of the largest blob to
    /dev/null; both of its blobs at once), disk (``dd conv=fsync``; two ``dd oflag=direct`` at once,
    as update_stage writes), tool versions.

The system's dirty pages are flushed (``sync``) before every measured step, so one step's
writeback does not slow the next.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# pylint: disable=wrong-import-position
from tests.support.collection import collections_root  # noqa: E402
from tests.support.dropbearnode import DROPBEAR, DropbearNode  # noqa: E402
from tests.support.dropbearnode import missing_requirements as dropbear_missing  # noqa: E402
from tests.support.fleet import Fleet, read_report  # noqa: E402
from tests.support.playbook import (  # noqa: E402
    PLAYBOOK_TIMEOUT,
    PlaybookRun,
    kill_playbook,
    run_playbook,
    start_playbook,
)
from tests.support.registry import Registry  # noqa: E402
from tests.support.sshnode import DEFAULT_SSHD, SSH_COMMON_ARGS, SSHNode  # noqa: E402
from tests.support.sshnode import inventory as ssh_inventory  # noqa: E402
from tests.support.sshnode import missing_requirements as sshnode_missing  # noqa: E402
from tests.support.staging import hermetic_env, info_task, stage_task, store_of  # noqa: E402

MIB = 1024 * 1024
DELIVERIES = ("host", "controller")
DRIVERS = {"host": REPO_ROOT / "tests/support/stage_driver.py", "controller": REPO_ROOT / "bench/controller_driver.py"}
#: The trivial task whose time is the fixed per-task cost of each delivery (see above), run OVERHEAD_RUNS times.
OVERHEAD_TASK = {"host": {"ansible.builtin.ping": {}}, "controller": {"ansible.builtin.debug": {"msg": "overhead"}}}
OVERHEAD_RUNS = 3
CONFIG_KEYS = ("sizes", "repeat", "fleet", "fleet_mib", "forks", "quick", "skopeo", "only")
CONFIG_KEYS += ("ssh_sizes", "ssh_memory_sizes", "ssh_rate_limits")
MARKER = "bench-mark=rerun"
NODE_VERSION, RELEASE_VERSION = "v0.9.0", "v1.0.0"
STAGE_TASK = "Stage the release"  # the os_update role's staging task
HAND_ROLLED = {
    "curl_then_dgst": "curl -s {url} -o {file} && openssl dgst -sha256 {file}",
    "curl_tee_dgst": "curl -s {url} | tee {file} | openssl dgst -sha256",
    "curl_dgst_fsync": "curl -s {url} -o {file} && openssl dgst -sha256 {file} && sync {file}",
}
BEST_CURL_OF = ("curl_then_dgst", "curl_tee_dgst")
LABELS = {
    "curl_then_dgst": "`curl -o` then `openssl dgst`",
    "curl_tee_dgst": "`curl | tee | openssl dgst`",
    "curl_dgst_fsync": "`curl -o`, `openssl dgst`, `sync FILE` (fsync like the module)",
    "skopeo": "`skopeo copy` to `dir:`",
    "direct_host": "staging code without Ansible, host",
    "direct_controller": "staging code without Ansible, controller",
}


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def summary(values) -> dict:
    """``{"median", "min", "max", "runs"}`` of the repetitions."""
    values = [float(value) for value in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def settle() -> None:
    """Flush dirty pages, so that the previous step's writeback does not run into the next one."""
    os.sync()


def write_random(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    with open(path, "wb") as handle:
        for offset in range(0, size, 4 * MIB):
            chunk = os.urandom(min(4 * MIB, size - offset))
            hasher.update(chunk)
            handle.write(chunk)
    return "sha256:" + hasher.hexdigest()


def run_measured(command: list[str], **kwargs) -> tuple[float, str]:
    """Run ``command``; return (seconds, stdout+stderr).  Raises on failure."""
    start = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, **kwargs)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}")
    return seconds, done.stdout


def task_seconds(run, name: str, host: str = "localhost") -> float:
    record = run.record(name, host)
    if record["status"] not in ("ok", "changed"):
        raise RuntimeError(f"task {name!r} on {host}: {record['status']}: {record['result'].get('msg')}")
    return record["finished"] - record["started"]


def publish_task(name: str, repository: str, files: dict, **args) -> dict:
    """update_publish of the release ``RELEASE_VERSION`` (tags it and ``stable``) for amd64 from ``files``
    (``vmlinuz`` and ``kubesolo-os.gz``)."""
    artifact = {"architecture": "amd64", "kernel": str(files["vmlinuz"]), "initramfs": str(files["kubesolo-os.gz"])}
    module_args = {
        "repository": repository,
        "plain_http": True,
        "tags": [RELEASE_VERSION, "stable"],
        "version": RELEASE_VERSION,
        "artifacts": [artifact],
    }
    return {"name": name, "kubesolo.fleet.update_publish": {**module_args, **args}}


def blob_bytes(entries) -> int:
    return sum(e.size for e in entries if e.method == "GET" and e.kind == "blob")


def traffic(entries) -> dict:
    """Registry requests, manifest and blob GETs and blob bytes of access-log ``entries``."""
    return {
        "requests": len(entries),
        "manifest_gets": sum(e.method == "GET" and e.kind == "manifest" for e in entries),
        "blob_gets": sum(e.method == "GET" and e.kind == "blob" for e in entries),
        "blob_bytes": blob_bytes(entries),
    }


class Bench:
    """One benchmark run against ``registry``, with scratch space in ``work``."""

    def __init__(self, options: argparse.Namespace, registry: Registry, work: Path) -> None:
        self.options = options
        self.registry = registry
        self.work = work
        self.env = hermetic_env(work)
        self.releases: dict[int, dict] = {}  # MiB per layer -> repo, manifest, layers
        self._runs = 0

    def scratch(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def playbook(self, plays, **kwargs):
        """Run ``ansible-playbook``; return (run, wall seconds).  Raises unless it succeeded."""
        self._runs += 1
        start = time.monotonic()
        run = run_playbook(plays, tmp_path=self.work / "runs" / str(self._runs), env=self.env, **kwargs)
        wall = time.monotonic() - start
        if run.rc != 0:
            raise RuntimeError(f"ansible-playbook failed:\n{run}")
        return run, wall

    def watched_playbook(self, plays, sample, interval: float, timeout: float = PLAYBOOK_TIMEOUT, **kwargs):
        """``playbook``, calling ``sample(pid)`` with the pid of ``ansible-playbook`` every ``interval``
        seconds while it runs."""
        self._runs += 1
        start = time.monotonic()
        process, command = start_playbook(plays, tmp_path=self.work / "runs" / str(self._runs), env=self.env, **kwargs)
        try:
            while process.poll() is None:
                if time.monotonic() - start > timeout:
                    raise RuntimeError(f"ansible-playbook ran for over {timeout} s")
                sample(process.pid)
                time.sleep(interval)
        finally:
            if process.poll() is None:
                kill_playbook(process)
        wall = time.monotonic() - start
        output = (command.cwd / "playbook.log").read_text(encoding="utf-8", errors="replace")
        run = PlaybookRun(process.returncode, output, "", command.results(), command.argv)
        if run.rc != 0:
            raise RuntimeError(f"ansible-playbook failed:\n{run}")
        return run, wall

    # ---------------------------------------------------------------- releases

    def publish(self, sizes) -> None:
        """Publish ``bench/s<MiB>`` (two random layers of MiB each) with update_publish."""
        tasks = []
        for mib in sizes:
            build = self.work / "build" / str(mib)
            files = {name: build / name for name in ("vmlinuz", "kubesolo-os.gz")}
            layers = [write_random(path, mib * MIB) for path in files.values()]
            path = f"bench/s{mib}"
            self.releases[mib] = {
                "path": path,
                "repo": f"{self.registry.host}/{path}",
                "layers": layers,
                "bytes": 2 * mib * MIB,
            }
            tasks.append(publish_task(path, self.releases[mib]["repo"], files))
        log(f"publishing {', '.join(f'2 x {mib} MiB' for mib in sizes)}")
        run, _wall = self.playbook(tasks)
        for mib, release in self.releases.items():
            release["manifest"] = run.result(release["path"])["manifests"]["amd64"]
        shutil.rmtree(self.work / "build")

    def blob_url(self, mib: int, digest: str) -> str:
        return f"{self.registry.url}/v2/{self.releases[mib]['path']}/blobs/{digest}"

    # ---------------------------------------------------------------- measurements

    def stage_run(self, mib: int, delivery: str) -> dict:
        """Trivial tasks, a check-mode update_stage, update_stage into a fresh dest, a marker request,
        update_stage again."""
        release, scratch = self.releases[mib], self.scratch("stage")
        dest, cache = scratch / "node/staged", scratch / "cache" if delivery == "controller" else None
        stage = {"tag": "stable", "plain_http": True}
        tasks = [{"name": f"overhead {i}", **OVERHEAD_TASK[delivery]} for i in range(OVERHEAD_RUNS)]
        tasks += [
            {
                **stage_task("warm-up", release["repo"], scratch / "warm-up/staged", cache=cache, **stage),
                "check_mode": True,
            },
            stage_task("stage", release["repo"], dest, cache=cache, **stage),
            {"name": "mark", "ansible.builtin.uri": {"url": f"{self.registry.url}/v2/?{MARKER}"}},
            stage_task("rerun", release["repo"], dest, cache=cache, **stage),
        ]
        settle()
        since = self.registry.mark()
        run, wall = self.playbook(tasks)
        entries = self.registry.access_log(since)
        cut = next(i for i, entry in enumerate(entries) if entry.query == MARKER)
        overhead = statistics.median(task_seconds(run, f"overhead {i}") for i in range(OVERHEAD_RUNS))
        first, again = run.result("stage"), run.result("rerun")
        if not first.get("changed") or again.get("changed"):
            raise RuntimeError(f"expected a change, then none: {first.get('changed')}, {again.get('changed')}")
        shutil.rmtree(scratch)
        return {
            "playbook_s": wall,
            "overhead_s": overhead,
            "task_s": task_seconds(run, "stage"),
            "rerun_task_s": task_seconds(run, "rerun"),
            "stage_traffic": traffic(entries[:cut]),
            "rerun_traffic": traffic(entries[cut + 1 :]),
        }

    def direct_run(self, mib: int, delivery: str) -> tuple[float, int]:
        """The staging code without Ansible in a child process: (seconds, peak RSS KiB)."""
        scratch = self.scratch("direct")
        options = {
            "repository": self.releases[mib]["repo"],
            "tag": "stable",
            "plain_http": True,
            "dest": str(scratch / "node/staged"),
            "collections_root": str(collections_root()),
        }
        if delivery == "controller":
            options["controller_cache"] = str(scratch / "cache")
        settle()
        seconds, output = run_measured(
            [sys.executable, str(DRIVERS[delivery]), json.dumps(options)], env={**os.environ, **self.env}
        )
        result = json.loads(output.splitlines()[-1])
        if result.get("failed"):
            raise RuntimeError(output)
        shutil.rmtree(scratch)
        return seconds, result["peak_rss_kib"]

    def hand_rolled_run(self, mib: int, method: str) -> float:
        """Pull both layers by hand with ``method``; check the digests; return seconds."""
        scratch, release = self.scratch("pull"), self.releases[mib]
        if method == "skopeo":
            source = f"docker://{self.registry.host}/{release['path']}@{release['manifest']}"
            command = [
                "skopeo",
                "--insecure-policy",
                "copy",
                "-q",
                "--src-tls-verify=false",
                source,
                f"dir:{scratch / 'x'}",
            ]
            expected = sorted(release["layers"])
        else:
            steps = [
                HAND_ROLLED[method].format(
                    url=shlex.quote(self.blob_url(mib, digest)), file=shlex.quote(str(scratch / f"layer{i}"))
                )
                for i, digest in enumerate(release["layers"])
            ]
            command = ["bash", "-c", "set -euo pipefail\n" + "\n".join(steps)]
            expected = release["layers"]
        settle()
        seconds, output = run_measured(command)
        if method == "skopeo":
            got = sorted(
                f"sha256:{path.name}" for path in (scratch / "x").iterdir() if f"sha256:{path.name}" in expected
            )
        else:
            got = ["sha256:" + digest for digest in re.findall(r"= ([0-9a-f]{64})$", output, re.MULTILINE)]
        if got != expected:
            raise RuntimeError(f"{method} pulled {got}, expected {expected}:\n{output}")
        shutil.rmtree(scratch)
        return seconds

    def size_rows(self, mib: int) -> dict:
        """Every per-size measurement, ``repeat`` times, interleaved."""
        runs: dict[str, list] = {}
        methods = list(HAND_ROLLED) + (["skopeo"] if self.options.skopeo else [])
        for rep in range(1, self.options.repeat + 1):
            log(f"2 x {mib} MiB, repetition {rep}/{self.options.repeat}")
            for delivery in DELIVERIES:
                runs.setdefault(delivery, []).append(self.stage_run(mib, delivery))
                runs.setdefault(f"direct_{delivery}", []).append(self.direct_run(mib, delivery))
            for method in methods:
                runs.setdefault(method, []).append(self.hand_rolled_run(mib, method))
        size = self.releases[mib]["bytes"]
        row = {"mib_per_layer": mib, "release_bytes": size, "other": {}, "staging": {}, "rerun": {}}
        for method in methods:
            row["other"][method] = {"s": summary(runs[method])}
        for delivery in DELIVERIES:
            direct = runs[f"direct_{delivery}"]
            row["other"][f"direct_{delivery}"] = {
                "s": summary(t for t, _rss in direct),
                "peak_rss_kib": summary(rss for _t, rss in direct),
            }
        for entry in row["other"].values():
            entry["mib_s"] = size / MIB / entry["s"]["median"]
        best_curl = min(BEST_CURL_OF, key=lambda method: row["other"][method]["s"]["median"])
        row["best_curl"] = best_curl
        for delivery in DELIVERIES:
            stages = runs[delivery]
            module = summary(r["task_s"] - r["overhead_s"] for r in stages)
            staging = {
                "playbook_s": summary(r["playbook_s"] for r in stages),
                "task_s": summary(r["task_s"] for r in stages),
                "overhead_s": summary(r["overhead_s"] for r in stages),
                "module_s": module,
                "module_mib_s": size / MIB / module["median"],
                "traffic": stages[-1]["stage_traffic"],
                "vs_curl": module["median"] / row["other"][best_curl]["s"]["median"],
                "vs_skopeo": module["median"] / row["other"]["skopeo"]["s"]["median"] if self.options.skopeo else None,
            }
            row["staging"][delivery] = staging
            row["rerun"][delivery] = {
                "task_s": summary(r["rerun_task_s"] for r in stages),
                "module_s": summary(r["rerun_task_s"] - r["overhead_s"] for r in stages),
                **{key: max(r["rerun_traffic"][key] for r in stages) for key in ("requests", "blob_bytes")},
            }
        return row

    def fleet_rows(self, n: int) -> list[dict]:
        """``check`` and a staging-only ``rollout`` (host, controller) over ``n`` fresh simulated nodes."""
        release = self.releases[self.options.fleet_mib]
        nodes = {f"node{i:02d}": {"arch": "amd64", "version": NODE_VERSION} for i in range(1, n + 1)}
        cases = [
            ("check", "-", {}),
            ("rollout", "host", {"kubesolo_fleet_delivery": "host"}),
            ("rollout", "controller", {"kubesolo_fleet_delivery": "controller"}),
        ]
        rows = []
        for playbook, delivery, group_vars in cases:
            walls, staged, last = [], 0, {}
            for _rep in range(self.options.repeat):
                scratch = self.scratch("fleet")
                fleet = Fleet(scratch, release["repo"], nodes)
                if delivery == "controller":
                    group_vars["kubesolo_fleet_controller_cache"] = str(scratch / "cache")
                settle()
                since = self.registry.mark()
                run, wall = self.playbook(
                    f"kubesolo.fleet.{playbook}",
                    inventory=fleet.inventory(**group_vars),
                    extra_vars={"kubesolo_fleet_report_dir": str(scratch / "report")},
                    args=["-f", str(self.options.forks)],
                )
                last = traffic(self.registry.access_log(since))
                walls.append(wall)
                staged = sum(r["task"].endswith(STAGE_TASK) and r["status"] == "changed" for r in run.results)
                if staged != (n if playbook == "rollout" else 0):
                    raise RuntimeError(f"{playbook} staged on {staged} of {n} nodes:\n{run}")
                shutil.rmtree(scratch)
            rows.append(
                {
                    "nodes": n,
                    "playbook": playbook,
                    "delivery": delivery,
                    "wall_s": summary(walls),
                    "staged": staged,
                    **last,
                }
            )
            log(f"fleet of {n}: {playbook} {delivery}: {rows[-1]['wall_s']['median']:.1f} s")
        return rows

    def run(self) -> dict:
        options = self.options
        everything = options.only is None
        sizes = set()
        if options.only in (None, "ssh"):
            sizes |= set(options.ssh_sizes) | set(options.ssh_memory_sizes)
        if everything:
            sizes |= set(options.sizes) | {options.fleet_mib}
        # The signature section publishes its own releases; the machine facts need one to read.
        self.publish(sorted(sizes or {min(options.sizes)}))
        skipped = {"skipped": f"not run (--only {options.only})"}
        results = {
            "config": {key: getattr(options, key) for key in CONFIG_KEYS},
            "machine": self.machine_facts(),
            "sizes": [self.size_rows(mib) for mib in options.sizes] if everything else [],
            "fleet": [row for n in options.fleet for row in self.fleet_rows(n)] if everything else [],
            "signatures": SignatureBench(self).run() if options.only in (None, "signatures") else skipped,
            "ssh": SSHBench(self).run() if options.only in (None, "ssh") else skipped,
        }
        return results

    # ---------------------------------------------------------------- machine facts

    def machine_facts(self) -> dict:
        log("machine facts")
        quick = self.options.quick
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
        meminfo = Path("/proc/meminfo").read_text(encoding="utf-8")
        facts = {
            "cpu_model": model.group(1) if model else platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "sha_ni": bool(re.search(r"^flags\s*:.*\bsha_ni\b", cpuinfo, re.MULTILINE)),
            "memory_gib": int(re.search(r"MemTotal:\s*(\d+)", meminfo).group(1)) / MIB,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "ansible_core": _output([str(Path(sys.executable).parent / "ansible"), "--version"]).split("\n")[0],
            "curl": _output(["curl", "--version"]).split("\n")[0],
            "openssl": _output(["openssl", "version"]).strip(),
            "skopeo": _output(["skopeo", "--version"]).strip() if self.options.skopeo else None,
            "registry": _output([self.registry.binary, "--version"]).split(" ", 1)[-1].strip(),
        }
        speed = _output(
            ["openssl", "speed", "-evp", "sha256", "-bytes", str(MIB), "-seconds", "1" if quick else "3", "-mr"]
        )
        facts["openssl_sha256_mb_s"] = (
            float(re.search(r"^\+F:\d+:sha256:([0-9.]+)", speed, re.MULTILINE).group(1)) / 1e6
        )
        chunk, count = os.urandom(MIB), 64 if quick else 512
        start, hasher = time.perf_counter(), hashlib.sha256()
        for _chunk in range(count):
            hasher.update(chunk)
        facts["hashlib_sha256_mb_s"] = count * MIB / 1e6 / (time.perf_counter() - start)
        # The same from memory rather than from the CPU cache: what hashing a fresh stream can reach.
        stream = os.urandom((16 if quick else 128) * MIB)
        start = time.perf_counter()
        hashlib.sha256(stream).digest()
        facts["hashlib_sha256_uncached_mb_s"] = len(stream) / 1e6 / (time.perf_counter() - start)
        del stream
        largest = max(self.releases)
        urls = [self.blob_url(largest, digest) for digest in self.releases[largest]["layers"]]
        seconds = float(_output(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", urls[0]]))
        facts["loopback_mib_s"] = largest / seconds
        seconds = _timed_together([["curl", "-s", "-o", "/dev/null", url] for url in urls])
        facts["loopback_two_streams_mib_s"] = 2 * largest / seconds
        dd_mib, target = 64 if quick else 1024, self.work / "dd.out"
        settle()
        start = time.monotonic()
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={dd_mib}", "conv=fsync", "status=none"], check=True
        )
        facts["disk_write_fsync_mib_s"] = dd_mib / (time.monotonic() - start)
        target.unlink()
        # Two O_DIRECT writers of 2 MiB blocks, as update_stage writes two layers.
        targets = [self.work / f"dd{i}.out" for i in (1, 2)]
        settle()
        seconds = _timed_together(
            [
                [
                    "dd",
                    "if=/dev/zero",
                    f"of={path}",
                    "bs=2M",
                    f"count={dd_mib // 4}",
                    "oflag=direct",
                    "conv=fsync",
                    "status=none",
                ]
                for path in targets
            ]
        )
        facts["disk_write_direct_two_streams_mib_s"] = dd_mib / seconds
        for target in targets:
            target.unlink()
        return facts


def _output(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _output_and_errors(command: list[str]) -> str:
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True)
    return done.stdout


def _timed_together(commands: list[list[str]]) -> float:
    """Seconds until every one of ``commands``, started at once, has succeeded."""
    start = time.monotonic()
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for command in commands]
    codes = [process.wait() for process in processes]
    if any(codes):
        raise RuntimeError(f"{commands} failed: {codes}")
    return time.monotonic() - start


# -------------------------------------------------------------------- signed releases

#: update_info tasks of each policy in one playbook run, alternating; a repetition's figure is their median.
INFO_RUNS = 3
#: update_info's signature options of each case: none looked up, and a signature by the trusted key required.
INFO_POLICIES = ("off", "required")
#: update_publish of a fresh release without and with signing_key, then the signed one again.
PUBLISH_CASES = ("unsigned", "signed", "signed_again")
#: The fleet's check: no keys (signature_policy auto is then off), and the trusted key (auto is then required).
FLEET_KEYS = ("none", "trusted")
SIGNATURE_MARK = "bench-mark"
#: The os_update role's task that resolves the release (and checks its signature), once on the controller.
RESOLVE_TASK = "Resolve the pinned release once per architecture"
LABELS.update(
    {
        "off": "`signature_policy: off`",
        "required": "`signature_policy: required`, the trusted key",
        "unsigned": "without `signing_key`",
        "signed": "with `signing_key`",
        "signed_again": "with `signing_key`, the same release again",
        "none": "no `kubesolo_fleet_signature_keys`",
        "trusted": "`kubesolo_fleet_signature_keys`: the trusted key",
    }
)


def mark_task(registry: Registry, name: str) -> dict:
    """A request to the registry: in the access log, what follows it up to the next mark is ``name``'s."""
    return {"name": f"mark {name}", "ansible.builtin.uri": {"url": f"{registry.url}/v2/?{SIGNATURE_MARK}={name}"}}


def by_mark(entries) -> dict[str, list]:
    """Access-log ``entries`` split at the ``mark_task`` requests: {name: the requests after it}."""
    parts: dict[str, list] = {}
    current = None
    for entry in entries:
        if entry.kind == "base" and entry.query.startswith(f"{SIGNATURE_MARK}="):
            current = entry.query.partition("=")[2]
            parts[current] = []
        elif current is not None:
            parts[current].append(entry)
    return parts


def request_counts(entries) -> dict:
    """``traffic`` of ``entries`` and their GETs (every kind)."""
    return {**traffic(entries), "gets": sum(e.method == "GET" for e in entries)}


def rotated(cases, rep: int) -> list:
    """``cases`` starting ``rep`` further along: every case goes first in turn."""
    cases = list(cases)
    return cases[rep % len(cases) :] + cases[: rep % len(cases)]


class SignatureBench:
    """What a signature policy and signing cost (module docstring: signatures)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.options = bench.options
        self.registry = bench.registry
        self.mib = min(bench.options.sizes)
        self.dir = bench.scratch("signatures")
        self.signing_key, self.trusted_key = self.dir / "release.key", self.dir / "release.pub"
        self.fingerprint = ""
        self.release = ""  # a release signed by the signing key: the first signed publish

    def run(self) -> dict:
        self.make_keys()
        results = {"mib_per_layer": self.mib, "key": "ECDSA P-256", "key_fingerprint": self.fingerprint}
        results["publish"], results["publish_added"] = self.publish_rows()
        results["info"], results["info_added"] = self.info_rows()
        results["fleet"], results["fleet_added"] = self.fleet_rows(max(self.options.fleet))
        shutil.rmtree(self.dir)
        return results

    def make_keys(self) -> None:
        """An ECDSA P-256 key pair: the private key as unencrypted PKCS#8 PEM, the public key as PEM
        SubjectPublicKeyInfo; its fingerprint as the modules report it (sha256 of the DER
        SubjectPublicKeyInfo)."""
        private = ec.generate_private_key(ec.SECP256R1())
        self.signing_key.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.signing_key.chmod(0o600)
        public = private.public_key()
        info = serialization.PublicFormat.SubjectPublicKeyInfo
        self.trusted_key.write_bytes(public.public_bytes(serialization.Encoding.PEM, info))
        self.fingerprint = "sha256:" + hashlib.sha256(public.public_bytes(serialization.Encoding.DER, info)).hexdigest()

    def build(self, name: str) -> dict:
        """Two random layers of ``self.mib`` MiB: {file name: path}."""
        files = {file: self.dir / "build" / name / file for file in ("vmlinuz", "kubesolo-os.gz")}
        for path in files.values():
            write_random(path, self.mib * MIB)
        return files

    def marked_playbook(self, first: list[dict], cases: list[tuple[str, dict]], **kwargs):
        """Run ``first``, then each (name, task) of ``cases`` after a mark; (run, wall, {name: its
        requests})."""
        tasks = list(first)
        for name, task in cases:
            tasks += [mark_task(self.registry, name), task]
        tasks.append(mark_task(self.registry, "end"))
        settle()
        since = self.registry.mark()
        run, wall = self.bench.playbook(tasks, **kwargs)
        return run, wall, by_mark(self.registry.access_log(since))

    def publish_rows(self) -> tuple[list[dict], dict]:
        """Each repetition, one playbook: a check-mode signed publish (which builds the module's payload
        and imports what signing needs once), then in turn a fresh release published without
        ``signing_key`` and another with it, followed by that signed release again."""
        runs: dict[str, list] = {case: [] for case in PUBLISH_CASES}
        signing = {"signing_key": str(self.signing_key)}
        for rep in range(self.options.repeat):
            log(f"signatures: update_publish, repetition {rep + 1}/{self.options.repeat}")
            files = {case: self.build(f"{rep}-{case}") for case in ("unsigned", "signed")}
            repos = {case: f"{self.registry.host}/bench/signatures/{rep}-{case}" for case in files}
            tasks = {
                "unsigned": [("unsigned", publish_task("unsigned", repos["unsigned"], files["unsigned"]))],
                "signed": [
                    (case, publish_task(case, repos["signed"], files["signed"], **signing))
                    for case in ("signed", "signed_again")
                ],
            }
            warm_up = {
                **publish_task("warm-up", f"{self.registry.host}/bench/signatures/warm-up", files["signed"], **signing),
                "check_mode": True,
            }
            order = [case for group in rotated(tasks, rep) for case in tasks[group]]
            run, _wall, requests = self.marked_playbook([warm_up], order)
            for case in PUBLISH_CASES:
                result = run.result(case)
                runs[case].append(
                    {
                        "task_s": task_seconds(run, case),
                        "changed": result["changed"],
                        "signed": len(result["pushed"]["signed"]),
                        **request_counts(requests[case]),
                    }
                )
            expected = {"unsigned": (True, 0), "signed": (True, 2), "signed_again": (False, 0)}
            got = {case: (runs[case][-1]["changed"], runs[case][-1]["signed"]) for case in PUBLISH_CASES}
            if got != expected:
                raise RuntimeError(f"update_publish (changed, new signatures): expected {expected}, got {got}")
            if rep == 0:
                self.release = repos["signed"]
            shutil.rmtree(self.dir / "build")
        rows = []
        for case in PUBLISH_CASES:
            rows.append(
                {
                    "case": case,
                    "task_s": summary(r["task_s"] for r in runs[case]),
                    # Every repetition makes the same requests; the largest is reported.
                    **{key: max(r[key] for r in runs[case]) for key in ("signed", "requests", "gets")},
                }
            )
            log(f"signatures: update_publish {case}: {rows[-1]['task_s']['median']:.3f} s")
        added = _added((rows[0], runs["unsigned"]), (rows[1], runs["signed"]), ["task_s"], ("requests", "gets"))
        return rows, added

    def info_rows(self) -> tuple[list[dict], dict]:
        """Each repetition, one playbook: update_info of the signed release's ``stable`` tag (a warm-up,
        then INFO_RUNS of each policy, alternating, the first policy rotating)."""
        options = {
            "off": {"signature_policy": "off"},
            "required": {"signature_policy": "required", "signature_keys": [str(self.trusted_key)]},
        }
        runs: dict[str, list] = {policy: [] for policy in INFO_POLICIES}
        for rep in range(self.options.repeat):
            log(f"signatures: update_info, repetition {rep + 1}/{self.options.repeat}")
            warm_up = info_task("warm-up", self.release, tag="stable", plain_http=True, signature_policy="off")
            names = [(f"{policy}-{i}", policy) for i in range(INFO_RUNS) for policy in rotated(INFO_POLICIES, rep)]
            cases = [
                (name, info_task(name, self.release, tag="stable", plain_http=True, **options[policy]))
                for name, policy in names
            ]
            run, _wall, requests = self.marked_playbook([warm_up], cases)
            for policy in INFO_POLICIES:
                mine = [name for name, p in names if p == policy]
                for name in mine:
                    signature = run.result(name)["signature"]
                    verified = signature["verified"] and signature["key_fingerprint"] == self.fingerprint
                    if verified != (policy == "required"):
                        raise RuntimeError(f"update_info {name}: unexpected signature result {signature}")
                counts = [request_counts(requests[name]) for name in mine]
                if any(c != counts[0] for c in counts):
                    raise RuntimeError(f"update_info {policy}: the requests differ between tasks: {counts}")
                runs[policy].append(
                    {"task_s": statistics.median(task_seconds(run, name) for name in mine), **counts[0]}
                )
        rows = [
            {"policy": policy, "task_s": summary(r["task_s"] for r in runs[policy]), **_counts(runs[policy])}
            for policy in INFO_POLICIES
        ]
        added = _added((rows[0], runs["off"]), (rows[1], runs["required"]), ["task_s"], ADDED_COUNTS)
        log(f"signatures: update_info: {added['task_s']['median'] * 1000:+.0f} ms, {added['gets']:+d} GETs")
        return rows, added

    def fleet_rows(self, n: int) -> tuple[list[dict], dict]:
        """The ``check`` playbook over ``n`` fresh simulated nodes, the signed release, without and with
        the trusted key (in turn, the first rotating)."""
        nodes = {f"node{i:02d}": {"arch": "amd64", "version": NODE_VERSION} for i in range(1, n + 1)}
        group_vars = {"none": {}, "trusted": {"kubesolo_fleet_signature_keys": [str(self.trusted_key)]}}
        runs: dict[str, list] = {keys: [] for keys in FLEET_KEYS}
        for rep in range(self.options.repeat):
            for keys in rotated(FLEET_KEYS, rep):
                scratch = self.bench.scratch("signatures-fleet")
                fleet = Fleet(scratch, self.release, nodes)
                settle()
                since = self.registry.mark()
                run, wall = self.bench.playbook(
                    "kubesolo.fleet.check",
                    inventory=fleet.inventory(**group_vars[keys]),
                    extra_vars={"kubesolo_fleet_report_dir": str(scratch / "report")},
                    args=["-f", str(self.options.forks)],
                )
                counts = request_counts(self.registry.access_log(since))
                report = read_report(scratch / "report")
                expected = "yes" if keys == "trusted" else None
                wrong = {host: (r["action"], r["signed"]) for host, r in report.items() if r["signed"] != expected}
                wrong.update({host: (r["action"], r["signed"]) for host, r in report.items() if r["action"] != "stage"})
                if len(report) != n or wrong:
                    raise RuntimeError(f"check with keys {keys}: expected {n} x (stage, {expected}), got {wrong}")
                resolves = [r for r in run.results if r["task"].endswith(RESOLVE_TASK)]
                if [r["status"] for r in resolves] != ["ok"]:
                    raise RuntimeError(f"check with keys {keys}: {RESOLVE_TASK!r}: {resolves}")
                runs[keys].append(
                    {
                        "wall_s": wall,
                        "resolve_s": resolves[0]["finished"] - resolves[0]["started"],
                        "signed_nodes": sum(r["signed"] == "yes" for r in report.values()),
                    }
                )
                runs[keys][-1].update(counts)
                shutil.rmtree(scratch)
            log(f"signatures: check over {n} nodes, repetition {rep + 1}/{self.options.repeat}")
        rows = [
            {
                "nodes": n,
                "signature_keys": keys,
                "wall_s": summary(r["wall_s"] for r in runs[keys]),
                "resolve_s": summary(r["resolve_s"] for r in runs[keys]),
                "signed_nodes": runs[keys][-1]["signed_nodes"],
                **_counts(runs[keys]),
            }
            for keys in FLEET_KEYS
        ]
        added = _added((rows[0], runs["none"]), (rows[1], runs["trusted"]), ["wall_s", "resolve_s"], ADDED_COUNTS)
        log(f"signatures: check over {n} nodes: {added['wall_s']['median']:+.2f} s, {added['gets']:+d} GETs")
        return rows, added


#: The request counts ``_added`` reports.
ADDED_COUNTS = ("requests", "gets", "manifest_gets", "blob_gets")


def _counts(runs: list[dict]) -> dict:
    """The request counts of ``runs`` (the largest of the repetitions)."""
    return {key: max(r[key] for r in runs) for key in ("requests", "gets", "manifest_gets", "blob_gets", "blob_bytes")}


def _added(base: tuple[dict, list], other: tuple[dict, list], time_keys, count_keys) -> dict:
    """What the ``other`` case adds to the ``base`` case, each (row, the runs of its repetitions): the
    times, as summaries of the differences within each repetition, and the requests."""
    (base_row, base_runs), (other_row, other_runs) = base, other
    added = {key: summary(o[key] - b[key] for b, o in zip(base_runs, other_runs)) for key in time_keys}
    return {**added, **{key: other_row[key] - base_row[key] for key in count_keys}}


# -------------------------------------------------------------------- controller delivery over SSH

SSH_SERVERS = {"openssh": SSHNode, "dropbear": DropbearNode}
SERVER_VERSION = {"openssh": [DEFAULT_SSHD, "-V"], "dropbear": [DROPBEAR, "-V"]}
#: The node_transfer methods each server takes: dropbear has neither sftp nor scp.
SSH_TRANSFERS = {"openssh": ("shell", "put_file"), "dropbear": ("shell",)}
#: ``ansible_ssh_args`` of each variant; None leaves Ansible's default, ANSIBLE_SSH_ARGS.
SSH_ARGS = {"default": None, "no_compression": "-o ControlMaster=auto -o ControlPersist=60s"}
ANSIBLE_SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=60s"
#: The rate limited and the memory runs: the variant that leaves the most headroom.
LIMITED_SSH_ARGS = "no_compression"
#: Hand-rolled copies of the cached blobs {l0} and {l1} to {f0} and {f1} (in {dir}) on the node.
SSH_HAND_ROLLED = {
    "cat_then_sha256sum": "{ssh} 'cat > {f0}' < {l0} && {ssh} 'cat > {f1}' < {l1} && {ssh} 'sha256sum {f0} {f1}'",
    "scp_then_sha256sum": "{scp} {l0} {l1} {target}:{dir}/ && {ssh} 'sha256sum {f0} {f1}'",
    "cat_sha256sum_sync": "{ssh} 'cat > {f0}' < {l0} && {ssh} 'cat > {f1}' < {l1} && {ssh} 'sha256sum {f0} {f1} && sync'",
    "tee_sha256sum": "{ssh} 'tee {f0} | sha256sum' < {l0} && {ssh} 'tee {f1} | sha256sum' < {l1}",
}
#: The candidates for "best hand-rolled" (copy, then hash); the others are references, run without -C only.
BEST_SSH_OF = ("cat_then_sha256sum", "scp_then_sha256sum")
NEEDS_SFTP = ("scp_then_sha256sum",)
LABELS.update(
    {
        "cat_then_sha256sum": "`ssh 'cat > f' < layer` x2, then `ssh sha256sum f1 f2`",
        "scp_then_sha256sum": "`scp` (sftp) of both, then `ssh sha256sum f1 f2`",
        "cat_sha256sum_sync": "`ssh 'cat > f' < layer` x2, then `ssh 'sha256sum f1 f2 && sync'` (syncs as the module does)",
        "tee_sha256sum": "`ssh 'tee f \\| sha256sum' < layer` x2 (hashed as it arrives, as the shell stream)",
    }
)
NODE_BENCH_DIR = "/var/lib/kubesolo/bench"  # every dest of the section is below it, on the node
SSH_HOST = "node"
RATE_SAMPLE_S, MEMORY_SAMPLE_S = 0.01, 0.1
SSH_PLAYBOOK_TIMEOUT = 3600  # a shell stream of 2 x 512 MiB takes minutes here


class ProcessTree:
    """Peak memory of a process tree, polled: ``sample(root)`` walks the tree below ``root`` through
    ``/proc/PID/task/TID/children`` and keeps each process's largest ``VmHWM``.  VmHWM is the
    process's own high-water mark, so a poll that comes late still sees the peak (all but the last
    interval before the process ends).  Processes are told apart by their executable: ``root``,
    the forks of ansible-playbook (``python``: one worker per task and host), the ``ssh`` clients
    (the ControlPersist master detaches from the tree and is not seen)."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (kind, VmHWM KiB)

    def sample(self, root: int) -> None:
        todo = [root]
        while todo:
            pid = todo.pop()
            try:
                exe = Path(os.readlink(f"/proc/{pid}/exe")).name
                status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
                for task in os.listdir(f"/proc/{pid}/task"):
                    todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                continue  # gone meanwhile
            hwm = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
            if hwm:
                kind = "root" if pid == root else "python" if exe.startswith("python") else exe
                self.peaks[pid] = (kind, max(int(hwm.group(1)), self.peaks.get(pid, (kind, 0))[1]))

    def peak_kib(self, kind: str) -> int:
        return max((kib for k, kib in self.peaks.values() if k == kind), default=0)

    def count(self, kind: str) -> int:
        return sum(k == kind for k, _kib in self.peaks.values())


class NodeBytes:
    """When a release's bytes arrived on the node: ``sample()`` sums the sizes of the files in the
    store beside each dest (through the host's view of the node's chroot) and notes the time."""

    def __init__(self, node, dests) -> None:
        self.stores = {dest: node.path(str(store_of(Path(dest)))) for dest in dests}
        self.samples: dict[str, list[tuple[float, int]]] = {dest: [] for dest in dests}

    def sample(self, _root: int = 0) -> None:
        now = time.monotonic()
        for dest, store in self.stores.items():
            held = 0
            for directory, _dirs, files in os.walk(store):
                for name in files:
                    if name != "release.json":
                        with contextlib.suppress(OSError):
                            held += os.stat(os.path.join(directory, name)).st_size
            self.samples[dest].append((now, held))

    def arrival(self, dest: str, size: int) -> tuple[float, float]:
        """(when the first byte was seen, when all ``size`` bytes were) in ``dest``'s store."""
        samples = self.samples[dest]
        return next(t for t, held in samples if held > 0), next(t for t, held in samples if held >= size)


class SSHBench:
    """Controller delivery to real SSH nodes, against hand-rolled copies (module docstring: ssh)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.options = bench.options
        self.caches: dict[int, Path] = {}  # MiB per layer -> its filled controller cache

    def run(self) -> dict:
        options = self.options
        problems = sorted(set(sshnode_missing()) | set(dropbear_missing()))
        if problems:
            log(f"ssh: skipped: {'; '.join(problems)}")
            return {"skipped": "; ".join(problems)}
        self.fill_caches(sorted(set(options.ssh_sizes) | set(options.ssh_memory_sizes)))
        results: dict = {"machine": {}, "staging": [], "hand_rolled": [], "comparison": []}
        for server, node_class in SSH_SERVERS.items():
            with node_class(SSH_HOST) as node:
                for variant in SSH_ARGS:
                    control_dir(node, variant).mkdir(mode=0o700)
                results["machine"][server] = self.link_facts(node, server)
                for mib in options.ssh_sizes:
                    staging, hand_rolled = self.size_rows(node, server, mib)
                    results["staging"] += staging
                    results["hand_rolled"] += hand_rolled
                    results["comparison"] += ssh_comparisons(staging, hand_rolled)
                if server == "openssh":
                    results["rate_limit"] = [
                        row
                        for limit in options.ssh_rate_limits
                        for row in self.rate_limit_rows(node, server, min(options.ssh_sizes), limit)
                    ]
                    for row in results["rate_limit"]:
                        unlimited = [
                            r["mib_s"]
                            for r in results["staging"]
                            if (r["server"], r["mib_per_layer"], r["transfer"], r["ssh_args"])
                            == (server, row["mib_per_layer"], row["transfer"], row["ssh_args"])
                        ]
                        row["unlimited_mib_s"] = unlimited[0] if unlimited else None
                    results["memory"] = [self.memory_row(node, server, mib) for mib in options.ssh_memory_sizes]
        return results

    # ---------------------------------------------------------------- set-up

    def fill_caches(self, sizes) -> None:
        """A controller cache per size, filled by one local run; its blobs are then read once, so that
        every measured run reads them from the page cache."""
        log(f"ssh: filling the controller caches ({', '.join(f'2 x {mib} MiB' for mib in sizes)})")
        scratch = self.bench.scratch("ssh-fill")
        for mib in sizes:
            self.caches[mib] = self.bench.work / "ssh-cache" / str(mib)
        run, _wall = self.bench.playbook(
            [self.stage_task(f"fill {mib}", mib, scratch / str(mib) / "staged") for mib in sizes]
        )
        for mib in sizes:
            if not run.result(f"fill {mib}").get("changed"):
                raise RuntimeError(f"filling the controller cache with 2 x {mib} MiB failed:\n{run}")
            for blob in self.blobs(mib):
                with open(blob, "rb") as handle:
                    while handle.read(4 * MIB):
                        pass
        shutil.rmtree(scratch)

    def blobs(self, mib: int) -> list[Path]:
        """The cached files of the release's two layers, in the manifest's order."""
        return [self.caches[mib] / "blobs" / digest.replace(":", "/") for digest in self.bench.releases[mib]["layers"]]

    def stage_task(self, name: str, mib: int, dest, node=None, variant: str = "", **args) -> dict:
        """update_stage of the release of ``mib`` through its cache; towards ``node``, the task's
        connection takes ``variant``'s ssh_args and ControlPersist master."""
        task = stage_task(
            name,
            self.bench.releases[mib]["repo"],
            dest,
            cache=self.caches[mib],
            tag="stable",
            plain_http=True,
            controller_cache_keep=0,
            **args,
        )
        if node is not None:
            task["vars"] = {"ansible_control_path_dir": str(control_dir(node, variant))}
            if SSH_ARGS[variant] is not None:
                task["vars"]["ansible_ssh_args"] = SSH_ARGS[variant]
        return task

    def node_playbook(self, node, tasks, watch=None, interval: float = 0.0):
        """Run ``tasks`` against ``node``, from a clean bench directory there; (run, wall).  The
        ControlPersist masters are closed after, so every run opens its own."""
        clear_node(node)
        plays = [{"name": "ssh", "hosts": SSH_HOST, "gather_facts": False, "tasks": tasks}]
        settle()
        try:
            if watch is None:
                return self.bench.playbook(plays, inventory=ssh_inventory([node]), timeout=SSH_PLAYBOOK_TIMEOUT)
            return self.bench.watched_playbook(
                plays, watch, interval, inventory=ssh_inventory([node]), timeout=SSH_PLAYBOOK_TIMEOUT
            )
        finally:
            close_masters(node)

    # ---------------------------------------------------------------- measurements

    def link_facts(self, node, server: str) -> dict:
        """What bounds a transfer to this server: the cipher, a bare stream, the node's busybox."""
        log(f"ssh: {server} facts")
        facts = {"version": _output_and_errors(SERVER_VERSION[server]).strip()}
        blob = self.blobs(max(self.caches))[0]
        size = blob.stat().st_size
        for variant in SSH_ARGS:
            ssh = ssh_argv(node, variant)
            verbose = _output_and_errors([ssh[0], "-v", "-o", "ControlMaster=no", *ssh[1:], "true"])
            kex = re.search(r"client->server cipher: (\S+) MAC: \S+ compression: (\S+)", verbose)
            facts[f"cipher_{variant}"], facts[f"compression_{variant}"] = kex.groups() if kex else ("?", "?")
            _output([*ssh, "true"])  # opens the master
            with open(blob, "rb") as handle:
                start = time.monotonic()
                subprocess.run([*ssh, "cat > /dev/null"], stdin=handle, check=True)
            facts[f"stream_{variant}_mib_s"] = size / MIB / (time.monotonic() - start)
            close_masters(node)
        for applet in ("sha256sum", "wc"):
            seconds, _out = run_measured([node.busybox, applet, *(["-c"] if applet == "wc" else []), str(blob)])
            facts[f"busybox_{applet}_mib_s"] = size / MIB / seconds
        facts["busybox"] = _output_and_errors([node.busybox]).split("\n")[0].strip()
        return facts

    def size_rows(self, node, server: str, mib: int) -> tuple[list[dict], list[dict]]:
        """The staging and hand-rolled rows of one server and size, ``repeat`` times, interleaved.

        Every case runs alone (a task's time in a playbook grew with the staging tasks before it:
        about 15 % after two), and each repetition starts the cases one further along.
        """
        staged = [(transfer, variant) for transfer in SSH_TRANSFERS[server] for variant in SSH_ARGS]
        hand_rolled = [
            (method, variant)
            for method in SSH_HAND_ROLLED
            for variant in SSH_ARGS
            if (method in BEST_SSH_OF or variant == LIMITED_SSH_ARGS)
            and (server == "openssh" or method not in NEEDS_SFTP)
        ]
        cases = [(self.stage_run, case) for case in staged] + [(self.hand_rolled_run, case) for case in hand_rolled]
        runs: dict[tuple[str, str], list] = {}
        for rep in range(self.options.repeat):
            log(f"ssh: {server}, 2 x {mib} MiB, repetition {rep + 1}/{self.options.repeat}")
            for measure, case in cases[rep:] + cases[:rep]:
                runs.setdefault(case, []).append(measure(node, mib, *case))
        size, common = self.bench.releases[mib]["bytes"], {"server": server, "mib_per_layer": mib}
        staging = []
        for transfer, variant in staged:
            stages = runs[transfer, variant]
            module = summary(r["task_s"] - r["overhead_s"] for r in stages)
            staging.append(
                {
                    **common,
                    "transfer": transfer,
                    "ssh_args": variant,
                    "task_s": summary(r["task_s"] for r in stages),
                    "overhead_s": summary(r["overhead_s"] for r in stages),
                    "module_s": module,
                    "mib_s": size / MIB / module["median"],
                    "sent_bytes": max(r["sent_bytes"] for r in stages),
                }
            )
        rows = [
            {**common, "method": method, "ssh_args": variant, "s": summary(runs[method, variant])}
            for method, variant in hand_rolled
        ]
        for row in rows:
            row["mib_s"] = size / MIB / row["s"]["median"]
        return staging, rows

    def stage_run(self, node, mib: int, transfer: str, variant: str) -> dict:
        """One playbook: trivial tasks, a check-mode update_stage (which opens the ssh_args variant's
        master), update_stage with ``transfer`` into a fresh dest."""
        tasks = [{"name": f"overhead {i}", **OVERHEAD_TASK["controller"]} for i in range(OVERHEAD_RUNS)]
        tasks += [
            {**self.stage_task("open", mib, f"{NODE_BENCH_DIR}/open/staged", node, variant), "check_mode": True},
            self.stage_task("stage", mib, f"{NODE_BENCH_DIR}/stage/staged", node, variant, node_transfer=transfer),
        ]
        run, _wall = self.node_playbook(node, tasks)
        result = run.result("stage", SSH_HOST)
        if not result.get("changed") or result.get("transfer", {}).get("method") != transfer:
            raise RuntimeError(f"{transfer} with {variant} ssh_args: expected a change by {transfer}: {result}")
        clear_node(node)
        return {
            "task_s": task_seconds(run, "stage", SSH_HOST),
            "overhead_s": statistics.median(task_seconds(run, f"overhead {i}", SSH_HOST) for i in range(OVERHEAD_RUNS)),
            "sent_bytes": result["transfer"]["sent_bytes"],
        }

    def hand_rolled_run(self, node, mib: int, method: str, variant: str) -> float:
        """Copy both cached blobs by hand with ``method`` over ``variant``'s (open) master; check the
        node's digests; return seconds."""
        clear_node(node)
        remote = f"{NODE_BENCH_DIR}/hand"
        node.path(remote).mkdir()
        ssh, blobs = ssh_argv(node, variant), self.blobs(mib)
        _output([*ssh, "true"])  # opens the master
        script = SSH_HAND_ROLLED[method].format(
            ssh=shlex.join(ssh),
            scp=shlex.join(["scp", "-q", *ssh_options(node, variant), "-P", str(node.port)]),
            target=ssh[-1],
            dir=remote,
            l0=shlex.quote(str(blobs[0])),
            l1=shlex.quote(str(blobs[1])),
            f0=f"{remote}/{blobs[0].name}",
            f1=f"{remote}/{blobs[1].name}",
        )
        settle()
        try:
            seconds, output = run_measured(["bash", "-c", "set -euo pipefail\n" + script])
        finally:
            close_masters(node)
        got = re.findall(r"^([0-9a-f]{64}) ", output, re.MULTILINE)
        expected = [blob.name for blob in blobs]
        if got != expected:
            raise RuntimeError(f"{method} over {variant} ssh_args hashed {got}, expected {expected}:\n{output}")
        clear_node(node)
        return seconds

    def rate_limit_rows(self, node, server: str, mib: int, limit_mib_s: int) -> list[dict]:
        """update_stage with each node_transfer under transfer_rate_limit, the node's bytes sampled."""
        log(f"ssh: {server}, 2 x {mib} MiB, transfer_rate_limit {limit_mib_s} MiB/s")
        limit = limit_mib_s * MIB
        dests = {transfer: f"{NODE_BENCH_DIR}/rate-{transfer}/staged" for transfer in SSH_TRANSFERS[server]}
        tasks = [
            {
                **self.stage_task("open", mib, f"{NODE_BENCH_DIR}/open/staged", node, LIMITED_SSH_ARGS),
                "check_mode": True,
            }
        ]
        tasks += [
            self.stage_task(
                transfer, mib, dest, node, LIMITED_SSH_ARGS, node_transfer=transfer, transfer_rate_limit=limit
            )
            for transfer, dest in dests.items()
        ]
        arrivals = NodeBytes(node, dests.values())
        run, _wall = self.node_playbook(node, tasks, arrivals.sample, RATE_SAMPLE_S)
        size, rows = self.bench.releases[mib]["bytes"], []
        for transfer, dest in dests.items():
            task_s, result = task_seconds(run, transfer, SSH_HOST), run.result(transfer, SSH_HOST)
            first, last = arrivals.arrival(dest, size)
            achieved = size / (last - first)
            rows.append(
                {
                    "server": server,
                    "mib_per_layer": mib,
                    "transfer": result["transfer"]["method"],
                    "ssh_args": LIMITED_SSH_ARGS,
                    "limit_mib_s": limit / MIB,
                    "task_s": task_s,
                    "sent_bytes": result["transfer"]["sent_bytes"],
                    "arrival_s": last - first,
                    "achieved_mib_s": achieved / MIB,
                    "deviation": achieved / limit - 1,
                }
            )
        clear_node(node)
        return rows

    def memory_row(self, node, server: str, mib: int) -> dict:
        """Peak RSS of the Ansible worker that stages the release of ``mib`` with the shell stream."""
        log(f"ssh: {server}, 2 x {mib} MiB, peak RSS of the shell stream")
        task = self.stage_task(
            "stage", mib, f"{NODE_BENCH_DIR}/memory/staged", node, LIMITED_SSH_ARGS, node_transfer="shell"
        )
        tree = ProcessTree()
        run, _wall = self.node_playbook(node, [task], tree.sample, MEMORY_SAMPLE_S)
        task_s = task_seconds(run, "stage", SSH_HOST)
        clear_node(node)
        return {
            "server": server,
            "mib_per_layer": mib,
            "transfer": "shell",
            "ssh_args": LIMITED_SSH_ARGS,
            "task_s": task_s,
            "workers": tree.count("python"),
            "worker_peak_rss_kib": tree.peak_kib("python"),
            "playbook_peak_rss_kib": tree.peak_kib("root"),
            "ssh_clients": tree.count("ssh"),
            "ssh_peak_rss_kib": tree.peak_kib("ssh"),
        }


def control_dir(node, variant: str) -> Path:
    """Where the ControlPersist master of ``variant`` towards ``node`` lives (one per variant, since a
    master's compression is what every command through it gets).  Short: a socket path has at most
    107 bytes, and ssh adds 17 while it creates one."""
    return node.control_path_dir / str(list(SSH_ARGS).index(variant))


def close_masters(node) -> None:
    """Ask every ControlPersist master towards ``node`` to exit."""
    for variant in SSH_ARGS:
        for sock in control_dir(node, variant).iterdir():
            subprocess.run(
                ["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", node.host],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )


def clear_node(node) -> None:
    """An empty bench directory on ``node``, every earlier dest gone."""
    shutil.rmtree(node.path(NODE_BENCH_DIR), ignore_errors=True)
    node.path(NODE_BENCH_DIR).mkdir(parents=True)


def ssh_options(node, variant: str) -> list[str]:
    """The options of an ``ssh`` (or ``scp``) to ``node`` as Ansible's connection passes them: the
    ``variant``'s ssh_args and master, the node's key and common arguments."""
    return [
        "-F",
        "/dev/null",
        *shlex.split(SSH_ARGS[variant] or ANSIBLE_SSH_ARGS),
        "-o",
        f"ControlPath={control_dir(node, variant)}/%r@%h:%p",
        "-o",
        f"IdentityFile={node.client_key}",
        *shlex.split(SSH_COMMON_ARGS),
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ]


def ssh_argv(node, variant: str) -> list[str]:
    """``ssh`` to ``node`` (a command to append); the last item is the target."""
    return ["ssh", *ssh_options(node, variant), "-p", str(node.port), "-T", f"root@{node.host}"]


def ssh_comparisons(staging: list[dict], hand_rolled: list[dict]) -> list[dict]:
    """Per server, size and ssh_args variant: the shell stream's MiB/s against put_file's (same
    variant, and Ansible's default) and the best hand-rolled copy-then-hash of the same variant."""
    rows = []
    by_key = {(r["transfer"], r["ssh_args"]): r for r in staging}
    for (transfer, variant), shell in by_key.items():
        if transfer != "shell":
            continue
        put_file, default_put_file = by_key.get(("put_file", variant)), by_key.get(("put_file", "default"))
        candidates = [r for r in hand_rolled if r["ssh_args"] == variant and r["method"] in BEST_SSH_OF]
        best = max(candidates, key=lambda r: r["mib_s"])
        rows.append(
            {
                "server": shell["server"],
                "mib_per_layer": shell["mib_per_layer"],
                "ssh_args": variant,
                "shell_mib_s": shell["mib_s"],
                "put_file_mib_s": put_file["mib_s"] if put_file else None,
                "best_hand_rolled": best["method"],
                "best_hand_rolled_mib_s": best["mib_s"],
                "shell_vs_put_file": shell["mib_s"] / put_file["mib_s"] if put_file else None,
                "shell_vs_default_put_file": shell["mib_s"] / default_put_file["mib_s"] if default_put_file else None,
                "shell_vs_hand_rolled": shell["mib_s"] / best["mib_s"],
            }
        )
    return rows


# -------------------------------------------------------------------- report


def _t(stat: dict) -> str:
    """``median (min..max)`` seconds, or just the value for one run."""
    if len(stat["runs"]) == 1:
        return f"{stat['median']:.2f}"
    return f"{stat['median']:.2f} ({stat['min']:.2f}..{stat['max']:.2f})"


def _x(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def markdown(results: dict) -> str:
    config, machine = results["config"], results["machine"]
    lines = [
        "# kubesolo.fleet staging benchmark",
        "",
        f"Releases of two random layers of the given size; {config['repeat']} repetition(s), times in seconds as "
        "median (min..max). Module time = update_stage task time - per-task overhead, the median time of a "
        "trivial task in the same run: `ansible.builtin.ping` for host delivery (a module run on the node), "
        "`ansible.builtin.debug` for controller delivery (an action plugin, no module). "
        "Ratios: module time / best hand-rolled pull.",
        "",
        "## Machine",
        "",
        "| fact | value |",
        "| --- | --- |",
    ]
    for key, value in machine.items():
        lines.append(f"| {key} | {f'{value:.0f}' if isinstance(value, float) else '-' if value is None else value} |")
    lines += [
        "",
        "## Staging through ansible-playbook",
        "",
        "| MiB/layer | delivery | playbook wall | update_stage task | per-task overhead | module | module MiB/s | "
        "module/curl | module/skopeo |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["sizes"]:
        for delivery, s in row["staging"].items():
            lines.append(
                f"| {row['mib_per_layer']} | {delivery} | {_t(s['playbook_s'])} | {_t(s['task_s'])} | "
                f"{_t(s['overhead_s'])} | {_t(s['module_s'])} | {s['module_mib_s']:.0f} | "
                f"{_x(s['vs_curl'])} | {_x(s['vs_skopeo'])} |"
            )
    lines += [
        "",
        "## The same two blobs without Ansible",
        "",
        "Peak RSS: `VmHWM` of the child process that runs the module's staging code, as it ends.",
        "",
        "| MiB/layer | method | seconds | MiB/s | peak RSS MiB |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for row in results["sizes"]:
        for method, s in row["other"].items():
            rss = f"{s['peak_rss_kib']['median'] / 1024:.1f}" if "peak_rss_kib" in s else ""
            best = " (best curl)" if method == row["best_curl"] else ""
            lines.append(
                f"| {row['mib_per_layer']} | {LABELS[method]}{best} | {_t(s['s'])} | {s['mib_s']:.0f} | {rss} |"
            )
    lines += [
        "",
        "## Rerun of an already staged release",
        "",
        "| MiB/layer | delivery | task | module | registry requests | blob bytes |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in results["sizes"]:
        for delivery, s in row["rerun"].items():
            lines.append(
                f"| {row['mib_per_layer']} | {delivery} | {_t(s['task_s'])} | {_t(s['module_s'])} | "
                f"{s['requests']} | {s['blob_bytes']} |"
            )
    lines += [
        "",
        f"## Fleet (simulated local nodes, 2 x {config['fleet_mib']} MiB release, {config['forks']} forks)",
        "",
        "| nodes | playbook | delivery | wall | registry requests | manifest GETs | blob GETs | blob MiB |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["fleet"]:
        lines.append(
            f"| {row['nodes']} | {row['playbook']} | {row['delivery']} | {_t(row['wall_s'])} | "
            f"{row['requests']} | {row['manifest_gets']} | {row['blob_gets']} | {row['blob_bytes'] / MIB:.0f} |"
        )
    return "\n".join(lines + signatures_markdown(results["signatures"]) + ssh_markdown(results["ssh"])) + "\n"


def _ms(stat: dict, sign: str = "") -> str:
    """``median (min..max)`` milliseconds, or just the value for one run; ``sign="+"`` signs them."""
    if len(stat["runs"]) == 1:
        return f"{stat['median'] * 1000:{sign}.0f}"
    return f"{stat['median'] * 1000:{sign}.0f} ({stat['min'] * 1000:{sign}.0f}..{stat['max'] * 1000:{sign}.0f})"


def _t_signed(stat: dict) -> str:
    """``_t`` with signs: a difference."""
    if len(stat["runs"]) == 1:
        return f"{stat['median']:+.2f}"
    return f"{stat['median']:+.2f} ({stat['min']:+.2f}..{stat['max']:+.2f})"


def signatures_markdown(sig: dict) -> list[str]:
    lines = ["", "## Signature verification", ""]
    if "skipped" in sig:
        return lines + [f"Skipped: {sig['skipped']}."]
    info, added = sig["info"], sig["info_added"]
    lines += [
        f"A release of 2 x {sig['mib_per_layer']} MiB signed by an {sig['key']} key ({sig['key_fingerprint'][:23]}...). "
        f"Times in milliseconds, median (min..max); update_info: per repetition the median of {INFO_RUNS} tasks of "
        "each policy in one run; added: the difference within each repetition.",
        "",
        "| update_info of the tag | task ms | registry requests | GETs | manifest GETs | blob GETs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in info:
        lines.append(
            f"| {LABELS[row['policy']]} | {_ms(row['task_s'])} | {row['requests']} | {row['gets']} | "
            f"{row['manifest_gets']} | {row['blob_gets']} |"
        )
    lines += [
        f"| added by the signature check | {_ms(added['task_s'], '+')} | {added['requests']:+d} | {added['gets']:+d} | "
        f"{added['manifest_gets']:+d} | {added['blob_gets']:+d} |",
        "",
        "| update_publish of a fresh release | task ms | registry requests | GETs | new signatures |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in sig["publish"]:
        lines.append(
            f"| {LABELS[row['case']]} | {_ms(row['task_s'])} | {row['requests']} | {row['gets']} | {row['signed']} |"
        )
    added = sig["publish_added"]
    lines.append(
        f"| added by `signing_key` | {_ms(added['task_s'], '+')} | {added['requests']:+d} | {added['gets']:+d} | |"
    )
    added = sig["fleet_added"]
    lines += [
        "",
        "| nodes | `kubesolo.fleet.check` | wall s | resolve task ms | registry requests | GETs | "
        "nodes reported signed |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in sig["fleet"]:
        lines.append(
            f"| {row['nodes']} | {LABELS[row['signature_keys']]} | {_t(row['wall_s'])} | {_ms(row['resolve_s'])} | "
            f"{row['requests']} | {row['gets']} | {row['signed_nodes']} |"
        )
    lines.append(
        f"| {sig['fleet'][0]['nodes']} | added by the key | {_t_signed(added['wall_s'])} | "
        f"{_ms(added['resolve_s'], '+')} | {added['requests']:+d} | {added['gets']:+d} | |"
    )
    return lines


def ssh_markdown(ssh: dict) -> list[str]:
    lines = ["", "## Controller delivery over SSH", ""]
    if "skipped" in ssh:
        return lines + [f"Skipped: {ssh['skipped']}."]
    lines += [
        "Controller cache filled beforehand and in the page cache: the times are the node transfer. "
        "Transfer = update_stage task time - per-task overhead (`ansible.builtin.debug`). ssh_args: "
        f"`default` is Ansible's (`{ANSIBLE_SSH_ARGS}`), `no_compression` is `{SSH_ARGS['no_compression']}`; "
        "the hand-rolled copies use the same options and ControlPersist master. Ratios: MiB/s over MiB/s.",
        "",
        "| server | fact | value |",
        "| --- | --- | --- |",
    ]
    for server, facts in ssh["machine"].items():
        for key, value in facts.items():
            lines.append(f"| {server} | {key} | {f'{value:.0f}' if isinstance(value, float) else value} |")
    lines += [
        "",
        "| server | MiB/layer | node_transfer | ssh_args | update_stage task | per-task overhead | transfer | MiB/s |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in ssh["staging"]:
        lines.append(
            f"| {r['server']} | {r['mib_per_layer']} | {r['transfer']} | {r['ssh_args']} | {_t(r['task_s'])} | "
            f"{_t(r['overhead_s'])} | {_t(r['module_s'])} | {r['mib_s']:.0f} |"
        )
    lines += [
        "",
        "| server | MiB/layer | hand-rolled | ssh_args | seconds | MiB/s |",
        "| --- | ---: | --- | --- | ---: | ---: |",
    ]
    for r in ssh["hand_rolled"]:
        lines.append(
            f"| {r['server']} | {r['mib_per_layer']} | {LABELS[r['method']]} | {r['ssh_args']} | {_t(r['s'])} | "
            f"{r['mib_s']:.0f} |"
        )
    lines += [
        "",
        "| server | MiB/layer | ssh_args | shell MiB/s | put_file MiB/s | best hand-rolled MiB/s | shell/put_file | "
        "shell/put_file with default ssh_args | shell/best hand-rolled |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in ssh["comparison"]:
        put_file = "-" if r["put_file_mib_s"] is None else f"{r['put_file_mib_s']:.0f}"
        lines.append(
            f"| {r['server']} | {r['mib_per_layer']} | {r['ssh_args']} | {r['shell_mib_s']:.0f} | {put_file} | "
            f"{r['best_hand_rolled_mib_s']:.0f} ({r['best_hand_rolled']}) | {_x(r['shell_vs_put_file'])} | "
            f"{_x(r['shell_vs_default_put_file'])} | {_x(r['shell_vs_hand_rolled'])} |"
        )
    lines += [
        "",
        "Rate limit: the achieved rate is the release's bytes over the time from their first to their last "
        "arrival on the node (sampled every 10 ms); unlimited: the same case's transfer MiB/s above.",
        "",
        "| server | MiB/layer | node_transfer | ssh_args | limit MiB/s | unlimited MiB/s | task s | arrival s | "
        "achieved MiB/s | deviation |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in ssh["rate_limit"]:
        unlimited = "-" if r["unlimited_mib_s"] is None else f"{r['unlimited_mib_s']:.0f}"
        lines.append(
            f"| {r['server']} | {r['mib_per_layer']} | {r['transfer']} | {r['ssh_args']} | {r['limit_mib_s']:.0f} | "
            f"{unlimited} | {r['task_s']:.2f} | {r['arrival_s']:.2f} | {r['achieved_mib_s']:.1f} | "
            f"{r['deviation']:+.1%} |"
        )
    lines += [
        "",
        "Peak RSS (`VmHWM`, polled every 0.1 s) of the processes of the `ansible-playbook` run that stages the "
        "release with the shell stream: the forked worker that runs update_stage, the main process, the ssh clients.",
        "",
        "| server | MiB/layer | node_transfer | task s | worker MiB | ansible-playbook MiB | ssh clients MiB |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in ssh["memory"]:
        lines.append(
            f"| {r['server']} | {r['mib_per_layer']} | {r['transfer']} | {r['task_s']:.2f} | "
            f"{r['worker_peak_rss_kib'] / 1024:.1f} | {r['playbook_peak_rss_kib'] / 1024:.1f} | "
            f"{r['ssh_peak_rss_kib'] / 1024:.1f} |"
        )
    return lines


# -------------------------------------------------------------------- command line


def _mib_list(text: str) -> list[int]:
    values = [int(item) for item in text.split(",") if item.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description="Benchmark update_stage against curl and skopeo.")
    parser.add_argument("--sizes", type=_mib_list, help="MiB per layer (default 1,64,256,1024; --quick: 1)")
    parser.add_argument("--repeat", type=int, help="repetitions of every measurement (default 3; --quick: 1)")
    parser.add_argument("--fleet", type=_mib_list, help="simulated fleet sizes (default 1,10,50; --quick: 1,2)")
    parser.add_argument("--fleet-mib", type=int, help="MiB per layer of the fleet release (default 16; --quick: 1)")
    parser.add_argument("--forks", type=int, default=10, help="ansible-playbook forks for the fleet runs (default 10)")
    parser.add_argument("--ssh-sizes", type=_mib_list, help="MiB per layer over SSH (default 64,256; --quick: 8)")
    parser.add_argument(
        "--ssh-memory-sizes", type=_mib_list, help="MiB per layer of the peak RSS runs (default 64,512; --quick: 8)"
    )
    parser.add_argument(
        "--ssh-rate-limits",
        type=_mib_list,
        help="MiB/s of the rate limited runs, smallest SSH size (default 16,8; --quick: 8)",
    )
    parser.add_argument("--only", choices=["ssh", "signatures"], help="run only this section (and the machine facts)")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (about a minute)")
    parser.add_argument("--no-skopeo", dest="skopeo", action="store_false", help="leave skopeo out")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results", help="output directory")
    options = parser.parse_args(argv)
    defaults = (
        {"sizes": [1], "repeat": 1, "fleet": [1, 2], "fleet_mib": 1}
        | {"ssh_sizes": [8], "ssh_memory_sizes": [8], "ssh_rate_limits": [8]}
        if options.quick
        else {"sizes": [1, 64, 256, 1024], "repeat": 3, "fleet": [1, 10, 50], "fleet_mib": 16}
        | {"ssh_sizes": [64, 256], "ssh_memory_sizes": [64, 512], "ssh_rate_limits": [16, 8]}
    )
    for key, value in defaults.items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    if options.repeat < 1 or options.fleet_mib < 1 or options.forks < 1:
        parser.error("--repeat, --fleet-mib and --forks must be positive")
    return options


def main(argv=None) -> int:
    options = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kubesolo-fleet-bench-"))
    try:
        with Registry() as registry:
            results = Bench(options, registry, work).run()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = markdown(results)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (options.out / "results.md").write_text(report, encoding="utf-8")
    print(report)
    log(f"wrote {options.out / 'results.json'} and {options.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
