# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Staging killed with SIGKILL at random points never leaves a node with a mix of two releases.

A node holds release A; staging B (two 6 MiB layers, throttled by a proxy so that a run takes
a second or two) is killed at a random moment, then the node is inspected: ``dest`` must be a
link to A or to B, complete and verified (every file hashed), never dangling, never a mix, never a
partial file at a final path.  When a kill came too late (B published), the node is put back to
A (a fresh copy of a node that staged A) so that the next kill has something to interrupt.  The kill times are drawn from a seeded random generator
(``KUBESOLO_TEST_CRASH_SEED`` overrides the seed) over the length of a whole run, swap included.

The runs are ``tests/support/stage_driver.py`` processes: the module's own code (release
resolution, ``current_release``, ``stage``) in a process of the test's own, so that the SIGKILL
hits the process that stages (killing ansible-playbook would leave its module process running),
without ansible-playbook's start-up on each of the 20-odd runs.  The driver sleeps a little around each ``os.rename`` /
``os.replace`` (``rename_pause``) so that kills land in the windows around the renames that
publish a release as often as in the download.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import artifacts
from tests.support.faultproxy import Fault, FaultProxy, blob_path
from tests.support.resilience import (
    assert_release_dir,
    copy_node,
    driver_result,
    held_release,
    hermetic_env,
    part_files,
    release_dir_name,
    run_driver,
    stage_ok,
    start_driver,
    store_of,
)

SEED = int(os.environ.get("KUBESOLO_TEST_CRASH_SEED", "20261201"))
KILLS = 20
KERNEL_SIZE = 6 * 1024 * 1024
INITRAMFS_SIZE = 6 * 1024 * 1024 + 4097
RATE = 20 * 1024 * 1024  # bytes per second through the proxy: about 0.6 s for B's layers
RENAME_PAUSE = 0.05
REPO = "crash/os"


def kernel(manifest: artifacts.PushedManifest) -> str:
    return manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE]


def initramfs(manifest: artifacts.PushedManifest) -> str:
    return manifest.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE]


def inspect(dest: Path, a: artifacts.PushedManifest, b: artifacts.PushedManifest) -> dict:
    """What a kill left: the release dest holds (or the error that says it holds none) and B's progress."""
    store = store_of(dest)
    partial = store / f"partial-{release_dir_name(b.digest)}"
    found = {
        "label": None,
        "error": None,
        "parts": part_files(store),
        "b_dir": False,
        "partial": sorted(p.name for p in partial.iterdir()) if partial.is_dir() else None,
    }
    try:
        found["label"] = held_release(dest, {"A": a, "B": b})
        stray = [name for name in found["parts"] if not name.startswith(partial.name + "/")]
        assert stray == [], f".part files outside the partial directory: {stray}"
        b_dir = store / release_dir_name(b.digest)
        if found["label"] == "A" and b_dir.exists():
            # Renamed from the partial directory only once complete: publishable as it is.
            assert_release_dir(b_dir, b, "unpublished B")
            found["b_dir"] = True
    except AssertionError as exc:
        found["error"] = str(exc)
    return found


def phase(found: dict) -> str:
    """Where in a run the kill landed, as far as the disk tells."""
    if found["label"] == "B":
        return "published"
    if found["b_dir"]:
        return "verified, not yet published"
    if found["parts"] or any(name in ("vmlinuz", "kubesolo-os.gz") for name in found["partial"] or []):
        return "downloading"
    return "before download"


def kill_when(process, condition, timeout: float = 20.0) -> None:
    """SIGKILL ``process`` as soon as ``condition()`` holds (checked every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill the run never came"
        time.sleep(0.005)
    process.kill()


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def crash(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    env = hermetic_env(tmp)
    a = artifacts.push_release(registry, REPO, "a", "v0.3.0", ("amd64",)).manifests["amd64"]
    b = artifacts.push_release(
        registry,
        REPO,
        "b",
        "v0.4.0",
        ("amd64",),
        kernel_size=KERNEL_SIZE,
        initramfs_size=INITRAMFS_SIZE,
    ).manifests["amd64"]
    with FaultProxy(registry) as proxy:
        proxy.add(
            Fault("pass", blob_path(REPO, kernel(b)), times=None, rate=RATE),
            Fault("pass", blob_path(REPO, initramfs(b)), times=None, rate=RATE),
        )
        options = {"repository": f"{proxy.host}/{REPO}", "retries": 2, "retry_max_wait": 1, "timeout": 5}

        # How long an uninterrupted A -> B run takes, on a node of its own.
        calibration = tmp / "calibration" / "staged"
        stage_ok(env, **options, tag="a", dest=calibration)
        started = time.monotonic()
        stage_ok(env, **options, tag="b", dest=calibration, rename_pause=RENAME_PAUSE)
        duration = time.monotonic() - started

        template = tmp / "template"
        stage_ok(env, **options, tag="a", dest=template / "staged")
        node = tmp / "node"
        dest = node / "staged"
        copy_node(template, node)
        rng = random.Random(SEED)
        kills = []
        for number in range(KILLS):
            if kills and kills[-1]["label"] == "B":
                # Back to A on a fresh copy of the node: the next kill needs work to interrupt.
                shutil.rmtree(node)
                copy_node(template, node)
            delay = rng.uniform(0, duration)
            process = start_driver(env, **options, tag="b", dest=dest, rename_pause=RENAME_PAUSE)
            time.sleep(delay)
            process.kill()
            result = driver_result(process)
            found = inspect(dest, a, b)
            found.update(number=number, delay=round(delay, 3), rc=result["_rc"], phase=phase(found))
            kills.append(found)
            if found["error"]:
                break
        # And a run to the end on that node, whatever the last kill left.
        after_kills = run_driver(env, **options, tag="b", dest=dest)
        after_kills["inspection"] = inspect(dest, a, b)

        # On a node of its own, one more kill at a chosen point: the initramfs a quarter through
        # (the kernel, downloading at the same time, part-way or done); then a run to the end.
        copy_node(template, tmp / "resume")
        resume = tmp / "resume" / "staged"
        partial = store_of(resume) / f"partial-{release_dir_name(b.digest)}"
        process = start_driver(env, **options, tag="b", dest=resume)
        kill_when(process, lambda: size_of(partial / "kubesolo-os.gz.part") >= INITRAMFS_SIZE // 4)
        driver_result(process)
        before_final = inspect(resume, a, b)
        on_disk = {name: size_of(partial / name) for name in ("vmlinuz", "vmlinuz.part", "kubesolo-os.gz.part")}
        mark = len(proxy.log)
        final = stage_ok(env, **options, tag="b", dest=resume)
        final_requests = proxy.log[mark:]
    return SimpleNamespace(
        a=a,
        b=b,
        dest=dest,
        resume=resume,
        duration=duration,
        kills=kills,
        after_kills=after_kills,
        before_final=before_final,
        on_disk=on_disk,
        final=final,
        final_requests=final_requests,
    )


def describe(kills) -> str:
    return "\n".join(
        f"{k['number']:2d} delay {k['delay']:.3f}s rc {k['rc']}: {k['phase']} {k['error'] or ''}" for k in kills
    )


def test_every_kill_leaves_the_previous_or_the_new_release_complete(crash):
    print(f"seed {SEED}, uninterrupted run {crash.duration:.2f}s\n{describe(crash.kills)}")
    assert len(crash.kills) == KILLS, describe(crash.kills)
    assert [k for k in crash.kills if k["error"]] == [], describe(crash.kills)
    assert all(k["label"] in ("A", "B") for k in crash.kills)


def test_kills_landed_all_over_the_run(crash):
    # Killed (not finished) runs in the download, and runs that got as far as publishing B.
    phases = {k["phase"] for k in crash.kills if k["rc"] == -9}
    assert "downloading" in phases, describe(crash.kills)
    assert {k["phase"] for k in crash.kills} & {"published", "verified, not yet published"}, describe(crash.kills)
    assert any(k["rc"] == -9 for k in crash.kills if k["label"] == "A"), describe(crash.kills)


def test_a_run_after_the_last_kill_finishes_the_job(crash):
    result = crash.after_kills
    assert result["_rc"] == 0 and not result.get("failed"), result
    found = result["inspection"]
    assert found["error"] is None, found["error"]
    assert found["label"] == "B"
    assert found["parts"] == {}


def test_the_run_after_a_kill_mid_download_finishes_and_resumes(crash):
    b = crash.b
    assert crash.before_final["label"] == "A", crash.before_final
    resumed = crash.on_disk["kubesolo-os.gz.part"]
    assert resumed >= INITRAMFS_SIZE // 4

    assert held_release(crash.resume, {"A": crash.a, "B": b}) == "B"
    assert sorted(p.name for p in store_of(crash.resume).iterdir()) == [release_dir_name(b.digest)]
    assert crash.final["changed"] is True
    assert crash.final["transfer"]["resumed_bytes"] >= resumed > 0
    assert crash.final["bytes_downloaded"] < KERNEL_SIZE + INITRAMFS_SIZE
    initramfs_gets = [e for e in crash.final_requests if e.path.endswith(initramfs(b))]
    assert [(e.range, e.status) for e in initramfs_gets] == [(f"bytes={resumed}-", 206)]


def test_the_run_after_a_kill_fetches_only_what_is_missing(crash):
    kernel_kept = crash.on_disk["vmlinuz"] or crash.on_disk["vmlinuz.part"]
    missing = KERNEL_SIZE - kernel_kept + INITRAMFS_SIZE - crash.on_disk["kubesolo-os.gz.part"]
    kernel_gets = [(e.range, e.status) for e in crash.final_requests if e.path.endswith(kernel(crash.b))]

    if crash.on_disk["vmlinuz"]:
        # Complete and verified in the partial directory when the run was killed.
        assert crash.on_disk["vmlinuz"] == KERNEL_SIZE, crash.on_disk
        assert kernel_gets == [], "the verified kernel was fetched again"
    else:
        assert kernel_gets == ([(f"bytes={kernel_kept}-", 206)] if kernel_kept else [(None, 200)]), crash.on_disk
    assert crash.final["bytes_downloaded"] == missing
