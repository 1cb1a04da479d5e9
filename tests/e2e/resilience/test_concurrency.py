# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs of update_stage on the same dest at the same time take turns under the store's lock.

* two ansible-playbook runs started together both succeed, the node ends with the new release
  and the registry serves each layer once: whichever run comes second finds it staged;
* a run that cannot get the lock within ``lock_timeout`` fails clearly and touches nothing;
* the lock of a run killed with SIGKILL while it held it blocks nobody (the kernel drops a
  dead process's flock), and the next run resumes what the killed one downloaded.

The last two use ``tests/support/stage_driver.py`` (the module's logic without ansible-playbook's
start-up) to place their runs at precise moments.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support import artifacts
from tests.support.faultproxy import Fault, FaultProxy, blob_path
from tests.support.playbook import run_playbook as run_playbook_in
from tests.support.resilience import (
    driver_result,
    held_release,
    hermetic_env,
    release_dir_name,
    run_driver,
    stage_ok,
    start_driver,
    store_of,
)

KERNEL_SIZE = 3 * 1024 * 1024
INITRAMFS_SIZE = 3 * 1024 * 1024 + 17
RATE = 4 * 1024 * 1024  # bytes per second and layer; the layers download in parallel: about 0.75 s
SLOW = 1024 * 1024  # about 3 s: room for a second run to start while the first downloads


def kernel(manifest: artifacts.PushedManifest) -> str:
    return manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE]


def initramfs(manifest: artifacts.PushedManifest) -> str:
    return manifest.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE]


def push_pair(registry, repo: str):
    a = artifacts.push_release(registry, repo, "a", "v0.3.0", ("amd64",)).manifests["amd64"]
    b = artifacts.push_release(
        registry,
        repo,
        "b",
        "v0.4.0",
        ("amd64",),
        kernel_size=KERNEL_SIZE,
        initramfs_size=INITRAMFS_SIZE,
    ).manifests["amd64"]
    return a, b


def throttle(proxy: FaultProxy, repo: str, b: artifacts.PushedManifest, rate: float = RATE) -> None:
    proxy.add(
        Fault("pass", blob_path(repo, kernel(b)), times=None, rate=rate),
        Fault("pass", blob_path(repo, initramfs(b)), times=None, rate=rate),
    )


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_two_simultaneous_runs_both_succeed_and_fetch_each_layer_once(registry, tmp_path):
    repo = "conc/both"
    a, b = push_pair(registry, repo)
    env = hermetic_env(tmp_path)
    dest = tmp_path / "node" / "staged"
    stage_ok(env, repository=f"{registry.host}/{repo}", tag="a", dest=dest)
    with FaultProxy(registry) as proxy:
        throttle(proxy, repo, b, SLOW)
        task = {
            "name": "stage b",
            "ignore_errors": True,
            "kubesolo.fleet.update_stage": {
                "repository": f"{proxy.host}/{repo}",
                "plain_http": True,
                "tag": "b",
                "architecture": "amd64",
                "dest": str(dest),
            },
        }
        mark = registry.mark()
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda n: run_playbook_in([task], tmp_path=tmp_path / f"run{n}", env=env), (1, 2)))
        log = registry.access_log(since=mark)
        proxied = list(proxy.log)

    results = [run.result("stage b") for run in runs]
    for run in runs:
        assert run.status("stage b") in ("ok", "changed"), run.result("stage b")
    assert held_release(dest, {"A": a, "B": b}) == "B"
    assert sorted(p.name for p in store_of(dest).iterdir()) == [release_dir_name(b.digest)]
    # The runs overlapped: both had resolved the release before the layers were downloaded.
    blob_end = max(e.finished for e in proxied if e.is_blob)
    assert len([e for e in proxied if e.is_manifest and e.started < blob_end]) == 4, proxied
    # Each layer came from the registry once: the second run found B staged.
    blob_gets = sorted((e.reference, e.status) for e in log if e.method == "GET" and e.kind == "blob")
    assert blob_gets == sorted([(kernel(b), 200), (initramfs(b), 200)])
    downloaded = sorted(result["bytes_downloaded"] for result in results)
    assert downloaded == [0, KERNEL_SIZE + INITRAMFS_SIZE], results


def test_a_run_that_cannot_get_the_lock_in_time_fails_clearly(registry, tmp_path):
    repo = "conc/timeout"
    a, b = push_pair(registry, repo)
    env = hermetic_env(tmp_path)
    dest = tmp_path / "node" / "staged"
    stage_ok(env, repository=f"{registry.host}/{repo}", tag="a", dest=dest)
    partial = store_of(dest) / f"partial-{release_dir_name(b.digest)}"
    with FaultProxy(registry) as proxy:
        throttle(proxy, repo, b, SLOW)
        options = {"repository": f"{proxy.host}/{repo}", "tag": "b", "dest": dest}
        first = start_driver(env, **options)
        holder = first.pid
        wait_for((partial / "vmlinuz.part").exists)  # made under the lock: the first run holds it
        started = time.monotonic()
        second = run_driver(env, **options, lock_timeout=0.5)
        waited = time.monotonic() - started
        during = held_release(dest, {"A": a, "B": b})
        first = driver_result(first)

    assert second["_rc"] == 1, second
    assert second["error_code"] == "stage_failed"
    assert second["msg"].startswith(
        f"another run is staging into {store_of(dest)}: the lock {store_of(dest) / '.lock'} is held by pid "
        f"{holder} (host delivery) since "
    ), second
    assert second["msg"].endswith(", for over 0.5s (lock_timeout)"), second
    assert second["transfer"]["retries"] == 0
    assert waited < 3
    assert during == "A"
    assert first["_rc"] == 0 and first["bytes_downloaded"] == KERNEL_SIZE + INITRAMFS_SIZE, first
    assert held_release(dest, {"A": a, "B": b}) == "B"


def test_the_lock_of_a_killed_run_blocks_nobody(registry, tmp_path):
    repo = "conc/stale"
    a, b = push_pair(registry, repo)
    env = hermetic_env(tmp_path)
    dest = tmp_path / "node" / "staged"
    stage_ok(env, repository=f"{registry.host}/{repo}", tag="a", dest=dest)
    partial = store_of(dest) / f"partial-{release_dir_name(b.digest)}"
    with FaultProxy(registry) as proxy:
        throttle(proxy, repo, b)
        options = {"repository": f"{proxy.host}/{repo}", "tag": "b", "dest": dest}
        holder = start_driver(env, **options)
        wait_for(lambda: size_of(partial / "vmlinuz.part") >= 1024 * 1024)
        holder.kill()
        assert driver_result(holder)["_rc"] == -9
        # Both layers were downloading (at the same time): what each kept is resumed.
        left = size_of(partial / "vmlinuz.part") + size_of(partial / "kubesolo-os.gz.part")
        complete = size_of(partial / "vmlinuz") + size_of(partial / "kubesolo-os.gz")
        assert (store_of(dest) / ".lock" / "owner").exists()  # the killed run still names itself
        assert held_release(dest, {"A": a, "B": b}) == "A"
        # lock_timeout 0: one try at the lock, no waiting at all.
        result = run_driver(env, **options, lock_timeout=0)

    assert result["_rc"] == 0, result
    assert held_release(dest, {"A": a, "B": b}) == "B"
    assert result["transfer"]["resumed_bytes"] == left > 0
    assert result["bytes_downloaded"] == KERNEL_SIZE + INITRAMFS_SIZE - left - complete
