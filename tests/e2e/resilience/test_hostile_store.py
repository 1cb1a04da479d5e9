# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""update_stage against a store that somebody else prepared: real ansible-playbook, a real registry.

Another account (a node agent's service user, anyone where ``dest``'s parent is shared) may plant
symbolic links or its own directories beside ``dest``, rewrite a staged kernel together with its
record, or hold the store's lock. Host delivery runs here on the controller itself; controller
delivery against a Python-less SSH node. Every case must refuse with ``unsafe_path`` or wait for
the lock only ``lock_timeout`` seconds, and never touch anything outside the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import artifacts
from tests.support.sshnode import inventory

STAGE = "stage"
NODE_DEST = "/var/lib/kubesolo/update/staged"
NODE_STORE = "/var/lib/kubesolo/update/.staged.kubesolo-fleet"


def store_of(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.kubesolo-fleet"


def release_dir(digest: str) -> str:
    return digest.replace(":", "-")


def host_task(repository: str, dest: Path, **args) -> dict:
    module_args = {"repository": repository, "plain_http": True, "tag": "stable", "architecture": "amd64"}
    module_args.update(dest=str(dest), **args)
    return {"name": STAGE, "kubesolo.fleet.update_stage": module_args, "ignore_errors": True}


def controller_task(repository: str, cache: Path, **args) -> dict:
    module_args = {
        "repository": repository,
        "plain_http": True,
        "tag": "stable",
        "architecture": "amd64",
        "dest": NODE_DEST,
        "delivery": "controller",
        "controller_cache": str(cache),
    }
    module_args.update(args)
    return {"name": STAGE, "kubesolo.fleet.update_stage": module_args, "ignore_errors": True}


def on_nodes(*tasks) -> list[dict]:
    return [{"name": "nodes", "hosts": "all", "gather_facts": False, "tasks": list(tasks)}]


def failed_with(run, error_code: str, host=None) -> dict:
    result = run.result(STAGE, host) if host else run.result(STAGE)
    assert (run.status(STAGE, host) if host else run.status(STAGE)) == "failed", result
    assert result["error_code"] == error_code, result
    assert "Traceback" not in json.dumps(result), result
    return result


def owner_file(pid: int, by: str, controller: str = "") -> str:
    """A lock owner as the lock protocol writes it, for a process of this machine."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    lines = [f"pid={pid}", "start=", f"boot={boot}", f"since={int(time.time())}", f"by={by}"]
    if controller:
        lines.append(f"controller={controller}")
    return "\n".join(lines) + "\n"


def plant_lock(store: Path, owner: str) -> None:
    store.mkdir(mode=0o755, parents=True, exist_ok=True)
    (store / ".lock").mkdir(mode=0o700)
    (store / ".lock" / "owner").write_text(owner, encoding="utf-8")


@pytest.fixture(scope="module")
def release(registry):
    return artifacts.push_release(registry, "trust/os", "stable", "v0.3.0", ("amd64",)).manifests["amd64"]


@pytest.fixture
def repository(registry, release):
    return f"{registry.host}/trust/os"


@pytest.fixture
def sleeper():
    """A live process standing in for the holder of a lock."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


# -- Host delivery -------------------------------------------------------------------------


def test_a_store_planted_as_a_symbolic_link_is_refused_and_never_written_through(repository, run_playbook, tmp_path):
    dest = tmp_path / "node" / "staged"
    victim = tmp_path / "victim"
    victim.mkdir()
    dest.parent.mkdir()
    store_of(dest).symlink_to(victim)

    run = run_playbook([host_task(repository, dest)])

    result = failed_with(run, "unsafe_path")
    assert result["msg"].startswith(f"{store_of(dest)} is not a real directory"), result
    assert list(victim.iterdir()) == []
    assert not os.path.lexists(dest)


def test_a_symbolic_link_planted_as_the_download_directory_is_not_followed(repository, release, run_playbook, tmp_path):
    """The store is the staging user's, but a link named like the work directory of the release
    (as a dead run or an earlier compromise could leave it) must not make root clear its target."""
    dest = tmp_path / "node" / "staged"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_bytes(b"keep me")
    store_of(dest).mkdir(mode=0o755, parents=True)
    (store_of(dest) / f"partial-{release_dir(release.digest)}").symlink_to(victim)

    run = run_playbook([host_task(repository, dest)])

    assert run.status(STAGE) == "changed", run.result(STAGE)
    assert [p.name for p in victim.iterdir()] == ["precious"]
    assert (victim / "precious").read_bytes() == b"keep me"
    assert (dest / "vmlinuz").read_bytes() == release.kernel


def test_a_store_of_another_user_is_refused(repository, run_playbook, tmp_path):
    dest = tmp_path / "node" / "staged"
    store_of(dest).mkdir(mode=0o755, parents=True)
    os.chown(store_of(dest), 65534, 65534)

    result = failed_with(run_playbook([host_task(repository, dest)]), "unsafe_path")

    assert f"belongs to user 65534, not to the staging user {os.geteuid()}" in result["msg"], result
    assert list(store_of(dest).iterdir()) == []


def test_a_parent_directory_others_can_write_is_refused(repository, run_playbook, tmp_path):
    dest = tmp_path / "shared" / "staged"
    dest.parent.mkdir()
    dest.parent.chmod(0o777)

    result = failed_with(run_playbook([host_task(repository, dest)]), "unsafe_path")

    assert result["msg"].startswith(f"{dest.parent} is writable by other users (mode 0777)"), result
    assert list(dest.parent.iterdir()) == []


def test_verify_existing_restages_a_kernel_swapped_together_with_its_record(
    repository, release, run_playbook, tmp_path
):
    dest = tmp_path / "node" / "staged"
    assert run_playbook([host_task(repository, dest)]).status(STAGE) == "changed"
    planted = bytes(len(release.kernel))  # same size: only a digest can tell
    (dest / "vmlinuz").write_bytes(planted)
    record = json.loads((dest / "release.json").read_text(encoding="utf-8"))
    record["files"]["vmlinuz"]["sha256"] = hashlib.sha256(planted).hexdigest()
    (dest / "release.json").write_text(json.dumps(record), encoding="utf-8")

    run = run_playbook([host_task(repository, dest, verify_existing=True)])

    assert run.status(STAGE) == "changed", run.result(STAGE)
    assert (dest / "vmlinuz").read_bytes() == release.kernel


def test_host_delivery_waits_for_a_live_controller_run_and_leaves_its_files_alone(
    repository, run_playbook, tmp_path, sleeper
):
    dest = tmp_path / "node" / "staged"
    plant_lock(store_of(dest), owner_file(sleeper.pid, "controller delivery"))
    work = store_of(dest) / "tmp-AbC123"
    work.mkdir()
    (work / "vmlinuz").write_bytes(b"half copied")

    started = time.monotonic()
    result = failed_with(run_playbook([host_task(repository, dest, lock_timeout=2)]), "stage_failed")

    assert time.monotonic() - started < 30
    assert f"is held by pid {sleeper.pid} (controller delivery) since " in result["msg"], result
    assert result["msg"].endswith("for over 2.0s (lock_timeout)"), result
    assert (work / "vmlinuz").read_bytes() == b"half copied"
    assert not os.path.lexists(dest)


# -- Controller delivery ----------------------------------------------------------------------


def test_controller_delivery_refuses_a_store_planted_as_a_symbolic_link(
    repository, ssh_node_factory, run_playbook, tmp_path
):
    (node,) = ssh_node_factory(names=["planted"])
    victim = node.path("/var/lib/victim")
    victim.mkdir(parents=True)
    node.path(NODE_STORE).parent.mkdir(parents=True, exist_ok=True)
    node.path(NODE_STORE).symlink_to("/var/lib/victim")

    run = run_playbook(on_nodes(controller_task(repository, tmp_path / "cache")), inventory=inventory([node]))

    result = failed_with(run, "unsafe_path", node.name)
    assert result["msg"].startswith(f"{NODE_STORE} is not a real directory"), result
    assert list(victim.iterdir()) == []


def test_a_controller_run_waits_for_a_live_holder_and_names_it(
    repository, ssh_node_factory, run_playbook, tmp_path, sleeper
):
    (node,) = ssh_node_factory(names=["held"])
    plant_lock(node.path(NODE_STORE), owner_file(sleeper.pid, "host delivery"))

    task = controller_task(repository, tmp_path / "cache", lock_timeout=2)
    result = failed_with(run_playbook(on_nodes(task), inventory=inventory([node])), "stage_failed", node.name)

    assert f"its lock is held by pid {sleeper.pid} (host delivery) since " in result["msg"], result
    assert not os.path.lexists(node.path(NODE_DEST))


def test_what_a_killed_controller_run_left_is_swept_and_its_lock_cleared(
    repository, release, ssh_node_factory, run_playbook, tmp_path, sleeper
):
    """A controller killed mid-copy leaves its keeper holding the node's lock and a work directory
    with a partial layer. The next run from the same controller sees that run is gone, clears the
    lock without waiting for its lease, and sweeps the work directory."""
    (node,) = ssh_node_factory(names=["killed"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    store = node.path(NODE_STORE)
    plant_lock(store, owner_file(sleeper.pid, "controller delivery", f"{socket.gethostname()} {gone.pid} 1"))
    (store / "tmp-Dead01").mkdir()
    (store / "tmp-Dead01" / "vmlinuz").write_bytes(b"half copied")

    started = time.monotonic()
    task = controller_task(repository, tmp_path / "cache", lock_timeout=60)
    run = run_playbook(on_nodes(task), inventory=inventory([node]))

    assert run.status(STAGE, node.name) == "changed", run.result(STAGE, node.name)
    assert time.monotonic() - started < 45
    assert sorted(p.name for p in store.iterdir()) == [release_dir(release.digest)]
    assert (node.path(NODE_DEST) / "vmlinuz").read_bytes() == release.kernel
    assert sleeper.wait(10) is not None  # the dead run's keeper was stopped
