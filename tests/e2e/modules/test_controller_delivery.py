"""``kubesolo.fleet.update_stage`` with ``delivery: controller`` end to end: real ansible-playbook, a real
registry and real SSH nodes that have no Python (busybox only), as KubeSolo OS nodes are.

The controller downloads each layer once into its cache, copies it to the node over sftp, and the
node checks it with ``sha256sum`` and publishes it with a symlink swap, all in busybox ``sh``.  Any
module that ran on a node by mistake would fail there: the interpreter run_playbook configures does
not exist on the nodes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import subprocess

import pytest

from tests.support import artifacts
from tests.support.sshnode import inventory

DEST = "/var/lib/kubesolo/update/staged"
STORE = "/var/lib/kubesolo/update/.staged.kubesolo-fleet"
STAGED_NAMES = ["kubesolo-os.gz", "release.json", "vmlinuz"]
#: sshd (LogLevel VERBOSE) logs this for every sftp session, i.e. for every file Ansible puts.
SFTP_SESSION = "Starting session: subsystem 'sftp' for root"
#: Files a controller delivery copies with the connection's file transfer per release: the two layers
#: (release.json, small, goes through the shell).
PUTS_PER_STAGE = 2
STAGE = "stage"


def machine_goarch() -> str:
    """The OCI architecture of this machine, what the node's ``uname -m`` maps to."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def release_arches() -> tuple[str, ...]:
    return tuple(dict.fromkeys(("amd64", "arm64", machine_goarch())))


def release_dir(manifest_digest: str) -> str:
    return manifest_digest.replace(":", "-")


def stage_task(repository: str, cache, *, name: str = STAGE, **args) -> dict:
    """An update_stage task with controller delivery that never stops the play (failures are asserted).

    ``architecture`` comes from the host variable ``node_arch`` when set (else the node's ``uname -m``),
    the tag from ``node_tag`` (else ``stable``).
    """
    module_args = {
        "repository": repository,
        "plain_http": True,
        "tag": "{{ node_tag | default('stable') }}",
        "architecture": "{{ node_arch | default(omit) }}",
        "dest": DEST,
        "delivery": "controller",
        "controller_cache": str(cache),
    }
    module_args.update(args)
    return {"name": name, "kubesolo.fleet.update_stage": module_args, "ignore_errors": True}


def play(*tasks, hosts: str = "all") -> list[dict]:
    return [{"name": "nodes", "hosts": hosts, "gather_facts": False, "tasks": list(tasks)}]


def node_inventory(nodes, host_vars=None) -> dict:
    """The SSH inventory of ``nodes`` with extra host variables ``{name: {...}}`` (for those of ``nodes``)."""
    inv = inventory(nodes)
    for name, hostvars in inv["all"]["hosts"].items():
        hostvars.update((host_vars or {}).get(name, {}))
    return inv


def sftp_sessions(node) -> int:
    return node.log_path.read_text(encoding="utf-8", errors="replace").count(SFTP_SESSION)


def store_entries(node) -> list[str]:
    store = node.path(STORE)
    return sorted(p.name for p in store.iterdir()) if store.is_dir() else []


def leftovers(node) -> list[str]:
    """Temporary or half-published entries in the node's store."""
    store = node.path(STORE)
    if not store.is_dir():
        return []
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.name.startswith(("tmp-", "link-", "trash-")))


def layer_total(manifest: artifacts.PushedManifest) -> int:
    return len(manifest.kernel) + len(manifest.initramfs)


def assert_node_holds(node, manifest: artifacts.PushedManifest, repository: str) -> dict:
    """``DEST`` on ``node`` links to the release directory of ``manifest``, the store's only entry,
    which holds exactly the pushed layers and a matching record; returns the record."""
    dest = node.path(DEST)
    assert dest.is_symlink(), f"{DEST} on {node.name} is not a symlink"
    assert os.readlink(dest) == f".staged.kubesolo-fleet/{release_dir(manifest.digest)}"
    assert store_entries(node) == [release_dir(manifest.digest)], node.name
    assert sorted(p.name for p in dest.iterdir()) == STAGED_NAMES
    assert (dest / "vmlinuz").read_bytes() == manifest.kernel, node.name
    assert (dest / "kubesolo-os.gz").read_bytes() == manifest.initramfs, node.name
    for name in STAGED_NAMES:
        assert (dest / name).stat().st_mode & 0o777 == 0o644, name
    assert leftovers(node) == []
    record = json.loads((dest / "release.json").read_text(encoding="utf-8"))
    assert record["schema"] == 1
    assert record["manifest_digest"] == manifest.digest
    assert record["version"] == manifest.version
    assert record["architecture"] == manifest.arch
    assert record["repository"] == repository
    kernel_digest = manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE]
    initramfs_digest = manifest.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE]
    assert record["files"] == {
        "vmlinuz": {
            "media_type": artifacts.KERNEL_MEDIA_TYPE,
            "digest": kernel_digest,
            "size": len(manifest.kernel),
            "sha256": kernel_digest.split(":", 1)[1],
        },
        "kubesolo-os.gz": {
            "media_type": artifacts.INITRAMFS_MEDIA_TYPE,
            "digest": initramfs_digest,
            "size": len(manifest.initramfs),
            "sha256": initramfs_digest.split(":", 1)[1],
        },
    }
    return record


def node_snapshot(node) -> dict:
    """What the node's release directory holds: link target and every staged file's bytes."""
    dest = node.path(DEST)
    return {
        "link": os.readlink(dest),
        "store": store_entries(node),
        **{name: (dest / name).read_bytes() for name in STAGED_NAMES},
    }


# ----------------------------------------------------------------------------------------------
# 1. Staging on Python-less nodes: explicit amd64, explicit arm64, and the node's uname -m.

KERNEL_SIZE = 100_003
INITRAMFS_SIZE = 1_200_007  # more than one 1 MiB download chunk


def test_controller_delivery_stages_on_nodes_without_python(registry, ssh_node_factory, run_playbook, tmp_path):
    repo = "controller/first"
    repository = f"{registry.host}/{repo}"
    release = artifacts.push_release(
        registry,
        repo,
        "stable",
        "v0.3.0",
        release_arches(),
        min_compatible="v0.2.0",
        release_notes="controller delivery",
        release_date="2026-11-01T12:00:00Z",
        kernel_size=KERNEL_SIZE,
        initramfs_size=INITRAMFS_SIZE,
    )
    amd64, arm64, native = ssh_node_factory(names=["amd64", "arm64", "native"])
    arches = {"amd64": "amd64", "arm64": "arm64", "native": machine_goarch()}
    cache = tmp_path / "cache"
    mark = registry.mark()

    run = run_playbook(
        play(stage_task(repository, cache)),
        inventory=node_inventory(
            [amd64, arm64, native], {"amd64": {"node_arch": "amd64"}, "arm64": {"node_arch": "arm64"}}
        ),
        args=["-f", "10"],
    )

    assert run.rc == 0, run
    downloaded = {}
    for node in (amd64, arm64, native):
        manifest = release.manifests[arches[node.name]]
        assert run.status(STAGE, node.name) == "changed"
        result = run.result(STAGE, node.name)
        assert result["changed"] is True
        assert result["delivery"] == "controller"
        assert result["manifest_digest"] == manifest.digest
        assert result["index_digest"] == release.digest
        assert result["architecture"] == arches[node.name]
        assert result["staged"] == {
            "vmlinuz_path": f"{DEST}/vmlinuz",
            "initramfs_path": f"{DEST}/kubesolo-os.gz",
            "version": "v0.3.0",
        }
        assert result["metadata"] == {
            "version": "v0.3.0",
            "channel": "stable",
            "min_compatible_version": "v0.2.0",
            "architecture": arches[node.name],
            "release_notes": "controller delivery",
            "release_date": "2026-11-01T12:00:00Z",
        }
        assert result["bytes_transferred"] == KERNEL_SIZE + INITRAMFS_SIZE
        downloaded[node.name] = result["bytes_downloaded"]
        assert_node_holds(node, manifest, repository)
        # Two layers and the record went over sftp, one session each (internal-sftp in the chroot).
        assert sftp_sessions(node) == PUTS_PER_STAGE, node.log_tail()
        # Ansible's remote temp dir for the action was removed again.
        remote_tmp = node.path(str(tmp_path / "ansible-tmp" / "remote"))
        assert not remote_tmp.exists() or list(remote_tmp.iterdir()) == []
    # Each layer was downloaded once for the whole run, by whichever host fetched it first: the two
    # amd64 hosts downloaded the amd64 release once between them.
    per_arch = {}
    for host, count in downloaded.items():
        per_arch[arches[host]] = per_arch.get(arches[host], 0) + count
    assert per_arch == dict.fromkeys(per_arch, KERNEL_SIZE + INITRAMFS_SIZE), downloaded
    assert set(downloaded.values()) <= {0, KERNEL_SIZE, INITRAMFS_SIZE, KERNEL_SIZE + INITRAMFS_SIZE}
    wanted = sorted(d for arch in per_arch for d in release.manifests[arch].layer_digests.values())
    assert sorted(e.reference for e in registry.blob_gets(since=mark)) == wanted
    # The cache holds the verified blobs, named by digest.
    for digest in wanted:
        blob = cache / "blobs" / "sha256" / digest.split(":", 1)[1]
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest.split(":", 1)[1]
        assert (cache / "blobs" / "sha256" / (blob.name + ".sha256")).read_text().strip() == blob.name


# ----------------------------------------------------------------------------------------------
# 2. A rerun transfers nothing; check mode on a new release transfers nothing and changes nothing.


def test_rerun_transfers_nothing_and_check_mode_writes_nothing(registry, ssh_node_factory, run_playbook, tmp_path):
    repo = "controller/rerun"
    repository = f"{registry.host}/{repo}"
    old = artifacts.push_release(registry, repo, "stable", "v0.3.0", release_arches())
    new = artifacts.push_release(registry, repo, "next", "v0.4.0", release_arches())
    (node,) = ssh_node_factory(names=["arm64"])
    inv = node_inventory([node], {"arm64": {"node_arch": "arm64"}})
    cache = tmp_path / "cache"

    first = run_playbook(play(stage_task(repository, cache)), inventory=inv)
    assert first.rc == 0, first
    assert first.status(STAGE, node.name) == "changed"
    assert_node_holds(node, old.manifests["arm64"], repository)
    before = node_snapshot(node)
    sessions = sftp_sessions(node)

    # A rerun, even with an empty controller cache, finds the release on the node.
    empty_cache = tmp_path / "empty-cache"
    mark = registry.mark()
    again = run_playbook(play(stage_task(repository, empty_cache)), inventory=inv, diff=True)

    assert again.rc == 0, again
    assert again.status(STAGE, node.name) == "ok"
    result = again.result(STAGE, node.name)
    assert (result["changed"], result["bytes_transferred"], result["bytes_downloaded"]) == (False, 0, 0)
    assert result["delivery"] == "controller"
    assert result["manifest_digest"] == old.manifests["arm64"].digest
    assert (
        result["diff"]["before"]
        == result["diff"]["after"]
        == {
            "version": "v0.3.0",
            "manifest_digest": old.manifests["arm64"].digest,
        }
    )
    assert registry.blob_gets(since=mark) == []
    assert sftp_sessions(node) == sessions, node.log_tail()
    assert not empty_cache.exists()
    assert node_snapshot(node) == before

    # Check mode on a new release: it would change, but nothing is downloaded, copied or published.
    mark = registry.mark()
    checked = run_playbook(
        play(stage_task(repository, cache, tag="next")),
        inventory=inv,
        check=True,
        diff=True,
    )

    assert checked.rc == 0, checked
    assert checked.status(STAGE, node.name) == "changed"
    result = checked.result(STAGE, node.name)
    assert (result["changed"], result["bytes_transferred"], result["bytes_downloaded"]) == (True, 0, 0)
    assert result["manifest_digest"] == new.manifests["arm64"].digest
    assert result["staged"]["version"] == "v0.4.0"
    assert result["diff"] == {
        "before": {"version": "v0.3.0", "manifest_digest": old.manifests["arm64"].digest},
        "after": {"version": "v0.4.0", "manifest_digest": new.manifests["arm64"].digest},
    }
    assert registry.blob_gets(since=mark) == []
    assert {e.reference for e in registry.manifest_gets(since=mark)} == {"next", new.manifests["arm64"].digest}
    assert sftp_sessions(node) == sessions, node.log_tail()
    assert node_snapshot(node) == before
    assert leftovers(node) == []
    assert_node_holds(node, old.manifests["arm64"], repository)


# ----------------------------------------------------------------------------------------------
# 3. One download per layer, however many nodes stage the release.


@pytest.fixture(scope="module")
def fanout_release(registry):
    return artifacts.push_release(registry, "controller/fanout", "stable", "v0.3.0", release_arches())


@pytest.mark.parametrize("count", [1, 10])
def test_one_download_per_layer_for_any_number_of_nodes(
    registry, fanout_release, ssh_node_factory, run_playbook, tmp_path, count
):
    repository = f"{registry.host}/controller/fanout"
    manifest = fanout_release.manifests[machine_goarch()]
    nodes = ssh_node_factory(count)
    cache = tmp_path / "cache"  # fresh for each count
    mark = registry.mark()

    run = run_playbook(play(stage_task(repository, cache)), inventory=node_inventory(nodes), args=["-f", "10"])

    assert run.rc == 0, run
    gets = registry.blob_gets(since=mark)
    assert sorted((e.reference, e.status) for e in gets) == sorted(
        (digest, 200) for digest in manifest.layer_digests.values()
    ), [e.line for e in gets]
    results = {node.name: run.result(STAGE, node.name) for node in nodes}
    assert sum(r["bytes_downloaded"] for r in results.values()) == layer_total(manifest)
    for node in nodes:
        result = results[node.name]
        assert (result["changed"], result["delivery"]) == (True, "controller")
        assert result["bytes_transferred"] == layer_total(manifest)
        assert result["manifest_digest"] == manifest.digest
        assert_node_holds(node, manifest, repository)
        assert sftp_sessions(node) == PUTS_PER_STAGE


# ----------------------------------------------------------------------------------------------
# 4. A cache entry altered after its download is caught on the node; the node keeps its release.


def test_a_corrupted_cache_entry_is_caught_on_the_node(registry, ssh_node_factory, run_playbook, tmp_path):
    repo = "controller/corrupt"
    repository = f"{registry.host}/{repo}"
    release_a = artifacts.push_release(registry, repo, "stable", "v0.3.0", release_arches())
    release_b = artifacts.push_release(registry, repo, "v0.4.0", "v0.4.0", release_arches())
    holder, helper = ssh_node_factory(names=["holder", "helper"])
    cache = tmp_path / "cache"
    a, b = release_a.manifests["amd64"], release_b.manifests["amd64"]
    host_vars = {"holder": {"node_arch": "amd64"}, "helper": {"node_arch": "amd64", "node_tag": "v0.4.0"}}

    # The holder gets A; the helper gets B, which puts B's layers into the controller cache.
    first = run_playbook(play(stage_task(repository, cache)), inventory=node_inventory([holder, helper], host_vars))
    assert first.rc == 0, first
    assert_node_holds(holder, a, repository)
    assert_node_holds(helper, b, repository)
    before = node_snapshot(holder)
    # Same length, other bytes: the cache only checks sizes when it hands out a blob.
    kernel_hex = b.layer_digests[artifacts.KERNEL_MEDIA_TYPE].split(":", 1)[1]
    cached = cache / "blobs" / "sha256" / kernel_hex
    assert cached.read_bytes() == b.kernel
    tampered = artifacts.deterministic_bytes("tampered kernel", len(b.kernel))
    cached.write_bytes(tampered)
    tampered_hex = hashlib.sha256(tampered).hexdigest()
    sessions = sftp_sessions(holder)
    mark = registry.mark()

    run = run_playbook(
        play(stage_task(repository, cache, tag="v0.4.0")),
        inventory=node_inventory([holder], host_vars),
    )

    assert run.status(STAGE, holder.name) == "failed", run
    result = run.result(STAGE, holder.name)
    # The bytes were copied (from the cache, not the registry) and rejected on the node, which
    # still holds A and nothing of B.
    assert registry.blob_gets(since=mark) == []
    assert sftp_sessions(holder) == sessions + PUTS_PER_STAGE
    assert node_snapshot(holder) == before
    assert_node_holds(holder, a, repository)
    assert store_entries(holder) == [release_dir(a.digest)]
    assert leftovers(holder) == []
    # The operator is told which file arrived wrong and that the previous release stays.
    assert result["error_code"] == "stage_failed", result
    assert "Traceback" not in json.dumps(result)
    assert result["msg"] == (
        f"publishing the release at {DEST} failed on the node (exit 3): vmlinuz arrived with sha256 "
        f"{tampered_hex}, expected {kernel_hex}; the previous release is kept"
    ), result


def test_a_poisoned_cache_entry_with_a_matching_record_is_fetched_again(
    registry, ssh_node_factory, run_playbook, tmp_path
):
    """Planted bytes plus a sha256 record that matches them: the node must still get the layer the
    manifest names, never what the cache says about itself."""
    repo = "controller/poisoned"
    repository = f"{registry.host}/{repo}"
    release = artifacts.push_release(registry, repo, "stable", "v0.3.0", release_arches())
    first_node, second_node = ssh_node_factory(names=["first", "second"])
    cache = tmp_path / "cache"
    manifest = release.manifests[machine_goarch()]
    first = run_playbook(play(stage_task(repository, cache)), inventory=node_inventory([first_node]))
    assert first.rc == 0, first
    kernel_digest = manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE]
    cached = cache / "blobs" / "sha256" / kernel_digest.split(":", 1)[1]
    planted = artifacts.deterministic_bytes("planted kernel", len(manifest.kernel))
    cached.write_bytes(planted)
    cached.with_name(cached.name + ".sha256").write_text(hashlib.sha256(planted).hexdigest())
    mark = registry.mark()

    run = run_playbook(play(stage_task(repository, cache)), inventory=node_inventory([second_node]))

    assert run.status(STAGE, second_node.name) == "changed", run
    assert_node_holds(second_node, manifest, repository)
    assert [entry.path.rsplit("/", 1)[1] for entry in registry.blob_gets(since=mark)] == [kernel_digest]
    assert cached.read_bytes() == manifest.kernel


def test_a_held_cache_lock_is_waited_for_lock_timeout_only(registry, ssh_node_factory, run_playbook, tmp_path):
    repo = "controller/locked"
    repository = f"{registry.host}/{repo}"
    release = artifacts.push_release(registry, repo, "stable", "v0.3.0", release_arches())
    (node,) = ssh_node_factory(names=["locked"])
    cache = tmp_path / "cache"
    kernel_digest = release.manifests[machine_goarch()].layer_digests[artifacts.KERNEL_MEDIA_TYPE]
    lock_path = cache / "locks" / (kernel_digest.replace(":", "-") + ".lock")
    lock_path.parent.mkdir(parents=True)
    with open(lock_path, "a") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)  # another run that never lets go
        run = run_playbook(play(stage_task(repository, cache, lock_timeout=2)), inventory=node_inventory([node]))

    result = run.result(STAGE, node.name)
    assert run.status(STAGE, node.name) == "failed", result
    assert result["error_code"] == "stage_failed", result
    assert result["msg"] == (
        f"another run is fetching blob {kernel_digest} into the controller cache (lock {lock_path} held for over 2.0s)"
    ), result
    assert leftovers(node) == []
    assert lock_path.stat().st_mode & 0o777 == 0o600
    assert (cache.stat().st_mode & 0o777) == 0o700


# ----------------------------------------------------------------------------------------------
# 5. Not enough space on the node: refused before anything is copied.

TMPFS_SIZE = "256k"
BIG_LAYER = 150_000  # two of them, plus 10 %, do not fit into 256 KiB


@pytest.fixture
def small_disk_node(ssh_node_factory):
    """An SSH node whose /var/lib/kubesolo/update is a tmpfs of TMPFS_SIZE: ``(node, host path of the mount)``.

    Skipped where mounting is not permitted (an unprivileged container); unmounted when the test ends.
    """
    (node,) = ssh_node_factory(names=["small-disk"])
    try:
        mount_point = node.mount_tmpfs("/var/lib/kubesolo/update", TMPFS_SIZE)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot mount a {TMPFS_SIZE} tmpfs for the node here (needs CAP_SYS_ADMIN): {exc.stderr.strip()}")
    yield node, mount_point
    node.stop()
    if is_mounted(mount_point):
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        pytest.fail(f"stopping the node left its tmpfs mounted at {mount_point}")


def is_mounted(path) -> bool:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(line.split()[1] == str(path) for line in mounts if len(line.split()) > 1)


def test_not_enough_space_is_refused_before_any_transfer(registry, small_disk_node, run_playbook, tmp_path):
    node, mount_point = small_disk_node
    repo = "controller/space"
    repository = f"{registry.host}/{repo}"
    small = artifacts.push_release(registry, repo, "stable", "v0.3.0", ("arm64",))
    big = artifacts.push_release(
        registry, repo, "v0.4.0", "v0.4.0", ("arm64",), kernel_size=BIG_LAYER, initramfs_size=BIG_LAYER
    )
    inv = node_inventory([node], {"small-disk": {"node_arch": "arm64"}})
    cache = tmp_path / "cache"

    first = run_playbook(play(stage_task(repository, cache)), inventory=inv)
    assert first.rc == 0, first
    assert_node_holds(node, small.manifests["arm64"], repository)
    assert os.stat(node.path(STORE)).st_dev == os.stat(mount_point).st_dev  # staged on the small disk
    before = node_snapshot(node)
    sessions = sftp_sessions(node)
    mark = registry.mark()

    run = run_playbook(play(stage_task(repository, cache, tag="v0.4.0")), inventory=inv)

    assert run.status(STAGE, node.name) == "failed", run
    result = run.result(STAGE, node.name)
    stat = os.statvfs(mount_point)
    free_kib = stat.f_bavail * stat.f_frsize // 1024
    assert layer_total(big.manifests["arm64"]) == 2 * BIG_LAYER
    needed_kib = int(2 * BIG_LAYER * 1.1 / 1024) + 1
    assert free_kib < needed_kib
    assert result["error_code"] == "stage_failed", result
    # The node measured while its lock (a directory and a small owner file) took a page or two.
    message = re.fullmatch(
        rf"not enough space on the node for {re.escape(DEST)}: (\d+) KiB free, {needed_kib} KiB needed "
        rf"\(the release is {2 * BIG_LAYER} bytes, plus 10% margin\); nothing was transferred",
        result["msg"],
    )
    assert message and free_kib - 8 <= int(message.group(1)) <= free_kib, result
    assert registry.blob_gets(since=mark) == []  # not even downloaded to the controller
    assert sftp_sessions(node) == sessions, node.log_tail()
    assert node_snapshot(node) == before
    assert leftovers(node) == []
    assert_node_holds(node, small.manifests["arm64"], repository)


def test_a_node_whose_free_space_cannot_be_read_is_refused(registry, ssh_node_factory, run_playbook, tmp_path):
    repo = "controller/no-df"
    repository = f"{registry.host}/{repo}"
    artifacts.push_release(registry, repo, "stable", "v0.3.0", ("arm64",))
    (node,) = ssh_node_factory(names=["no-df"])
    # Without mount entries busybox df finds no mount point for any path.
    node.path("/proc/mounts").write_text("", encoding="utf-8")
    mark = registry.mark()

    run = run_playbook(
        play(stage_task(repository, tmp_path / "cache")),
        inventory=node_inventory([node], {"no-df": {"node_arch": "arm64"}}),
    )

    assert run.status(STAGE, node.name) == "failed", run
    result = run.result(STAGE, node.name)
    assert registry.blob_gets(since=mark) == []
    assert sftp_sessions(node) == 0
    assert not node.path(DEST).exists() and not node.path(DEST).is_symlink()
    assert leftovers(node) == [] and store_entries(node) == []
    assert result["error_code"] == "node_command_failed", result
    assert result["msg"] == (
        f"preparing {STORE} failed on the node (exit 5): cannot read the free space of {STORE} with df"
    ), result
