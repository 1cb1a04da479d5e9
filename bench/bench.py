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

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# pylint: disable=wrong-import-position
from tests.support.collection import collections_root  # noqa: E402
from tests.support.fleet import Fleet  # noqa: E402
from tests.support.playbook import run_playbook  # noqa: E402
from tests.support.registry import Registry  # noqa: E402
from tests.support.staging import hermetic_env, stage_task  # noqa: E402

MIB = 1024 * 1024
DELIVERIES = ("host", "controller")
DRIVERS = {"host": REPO_ROOT / "tests/support/stage_driver.py", "controller": REPO_ROOT / "bench/controller_driver.py"}
#: The trivial task whose time is the fixed per-task cost of each delivery (see above), run OVERHEAD_RUNS times.
OVERHEAD_TASK = {"host": {"ansible.builtin.ping": {}}, "controller": {"ansible.builtin.debug": {"msg": "overhead"}}}
OVERHEAD_RUNS = 3
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
            tasks.append(
                {
                    "name": path,
                    "kubesolo.fleet.update_publish": {
                        "repository": self.releases[mib]["repo"],
                        "plain_http": True,
                        "tags": [RELEASE_VERSION, "stable"],
                        "version": RELEASE_VERSION,
                        "artifacts": [
                            {
                                "architecture": "amd64",
                                "kernel": str(files["vmlinuz"]),
                                "initramfs": str(files["kubesolo-os.gz"]),
                            }
                        ],
                    },
                }
            )
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
        self.publish(sorted(set(options.sizes) | {options.fleet_mib}))
        results = {
            "config": {
                key: getattr(options, key)
                for key in ("sizes", "repeat", "fleet", "fleet_mib", "forks", "quick", "skopeo")
            },
            "machine": self.machine_facts(),
            "sizes": [self.size_rows(mib) for mib in options.sizes],
            "fleet": [row for n in options.fleet for row in self.fleet_rows(n)],
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


def _timed_together(commands: list[list[str]]) -> float:
    """Seconds until every one of ``commands``, started at once, has succeeded."""
    start = time.monotonic()
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for command in commands]
    codes = [process.wait() for process in processes]
    if any(codes):
        raise RuntimeError(f"{commands} failed: {codes}")
    return time.monotonic() - start


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
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (under a minute)")
    parser.add_argument("--no-skopeo", dest="skopeo", action="store_false", help="leave skopeo out")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results", help="output directory")
    options = parser.parse_args(argv)
    defaults = (
        {"sizes": [1], "repeat": 1, "fleet": [1, 2], "fleet_mib": 1}
        if options.quick
        else {"sizes": [1, 64, 256, 1024], "repeat": 3, "fleet": [1, 10, 50], "fleet_mib": 16}
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
