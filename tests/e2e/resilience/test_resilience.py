# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""update_stage under network faults: real ansible-playbook, a fault proxy, a real registry.

Whatever the network does, a node holds either its previous release (A) or the new one (B),
complete and verified, never a mix and never corrupt bytes, and a run recovers from what can be
recovered from with as little re-download as possible.

Two playbooks run side by side, each with one task per case (half the cases each; most of a case's
time goes to waiting: backoff, Retry-After, stalls).  Each case has its own repository (so its
faults, keyed by blob or manifest path, touch nothing else), its own release B and its own node
directory, a copy of a node that holds A.  The :class:`FaultProxy` log tells which requests each
case made and what they got.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from tests.support import artifacts
from tests.support.faultproxy import Fault, FaultProxy, blob_path, manifest_path
from tests.support.playbook import run_playbook as run_playbook_in
from tests.support.resilience import (
    copy_node,
    held_release,
    hermetic_env,
    part_files,
    release_dir_name,
    snapshot,
    stage_ok,
    store_of,
)

KERNEL_SIZE = 300_001
INITRAMFS_SIZE = 1_200_007  # more than one 1 MiB download chunk
K = 100_000  # body bytes sent before a connection is broken
TRUNCATE_AT = 700_000


def kernel(manifest: artifacts.PushedManifest) -> str:
    return manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE]


def initramfs(manifest: artifacts.PushedManifest) -> str:
    return manifest.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE]


@dataclass
class Case:
    """A release B staged through ``faults`` (a function of repo and B), ``runs`` times in a row."""

    name: str
    faults: Callable[[str, artifacts.PushedManifest], list[Fault]]
    args: dict = field(default_factory=dict)
    runs: int = 1


FLIP_RATE = 4 * 1024 * 1024  # bytes per second: about 0.3 s for the initramfs

CASES = [
    Case("reset", lambda repo, b: [Fault("reset", blob_path(repo, kernel(b)), after=K)]),
    Case("unavailable-twice", lambda repo, b: [Fault("status", blob_path(repo, kernel(b)), times=2, status=503)]),
    Case(
        "too-many-requests",
        lambda repo, b: [
            Fault("status", blob_path(repo, kernel(b)), status=429, retry_after="1"),
        ],
        args={"retry_max_wait": 3},
    ),
    Case(
        "unavailable-always",
        lambda repo, b: [
            Fault("status", blob_path(repo, kernel(b)), times=None, status=503),
        ],
        args={"retries": 3},
    ),
    Case(
        "manifest-unavailable-always",
        lambda repo, b: [
            Fault("status", manifest_path(repo), times=None, status=503),
        ],
        args={"retries": 2},
    ),
    Case("blob-not-found", lambda repo, b: [Fault("status", blob_path(repo, initramfs(b)), times=None, status=404)]),
    Case("truncated", lambda repo, b: [Fault("truncate", blob_path(repo, initramfs(b)), after=TRUNCATE_AT)]),
    # Throttled, the flipped initramfs fails well after the kernel downloading beside it is verified.
    Case(
        "flipped",
        lambda repo, b: [
            Fault("flip", blob_path(repo, initramfs(b)), flip=(0, 654_321), rate=FLIP_RATE),
        ],
    ),
    Case(
        "flipped-then-clean",
        lambda repo, b: [
            Fault("flip", blob_path(repo, initramfs(b)), flip=(654_321,), rate=FLIP_RATE),
        ],
        runs=2,
    ),
    Case(
        "stall-once",
        lambda repo, b: [Fault("stall", blob_path(repo, kernel(b)), after=K, seconds=4)],
        args={"timeout": 1},
    ),
    Case(
        "stall-always",
        lambda repo, b: [
            Fault("stall", blob_path(repo, kernel(b)), times=None, after=K, seconds=4),
        ],
        args={"timeout": 1, "retries": 1},
    ),
    Case(
        "drip-always",
        lambda repo, b: [
            Fault("drip", blob_path(repo, kernel(b)), times=None, after=K, seconds=0.25),
        ],
        args={"timeout": 1, "retries": 1},
    ),
    Case(
        "range-ignored",
        lambda repo, b: [
            Fault("reset", blob_path(repo, kernel(b)), after=K),
            Fault("ignore-range", blob_path(repo, kernel(b)), times=None),
        ],
    ),
]


def task_name(case: str, run: int = 1) -> str:
    return f"stage {case}" if run == 1 else f"stage {case} again"


@pytest.fixture(scope="module")
def res(registry, tmp_path_factory):
    """Stage A on a template node, copy it per case, then stage each case's B through its faults."""
    tmp = tmp_path_factory.mktemp("resilience")
    env = hermetic_env(tmp)
    previous = artifacts.push_release(registry, "res/previous", "a", "v0.3.0", ("amd64",)).manifests["amd64"]
    template = tmp / "template"
    stage_ok(env, repository=f"{registry.host}/res/previous", tag="a", dest=template / "staged")
    assert held_release(template / "staged", {"A": previous}) == "A"

    with FaultProxy(registry) as proxy:
        cases, playbooks = {}, ([], [])
        for number, case in enumerate(CASES):
            repo = f"res/{case.name}"
            new = artifacts.push_release(
                registry,
                repo,
                "b",
                f"v0.4.0-{case.name}",
                ("amd64",),
                kernel_size=KERNEL_SIZE,
                initramfs_size=INITRAMFS_SIZE,
            ).manifests["amd64"]
            node = tmp / "nodes" / case.name
            copy_node(template, node)
            proxy.add(*case.faults(repo, new))
            args = {
                "repository": f"{proxy.host}/{repo}",
                "plain_http": True,
                "tag": "b",
                "architecture": "amd64",
                "dest": str(node / "staged"),
                "retries": 3,
                "retry_max_wait": 1,
                "timeout": 5,
                **case.args,
            }
            for run in range(1, case.runs + 1):
                playbooks[number % 2].append(
                    {"name": task_name(case.name, run), "kubesolo.fleet.update_stage": args, "ignore_errors": True}
                )
            cases[case.name] = SimpleNamespace(
                repo=repo, new=new, node=node, dest=node / "staged", before=snapshot(node)
            )
        with ThreadPoolExecutor(2) as pool:
            runs = list(
                pool.map(
                    lambda number: run_playbook_in(
                        playbooks[number], tmp_path=tmp / f"playbook{number}", env=hermetic_env(tmp)
                    ),
                    (0, 1),
                )
            )
        host = proxy.host
    run = SimpleNamespace(
        results=[*runs[0].results, *runs[1].results],
        status=lambda task: next(r for r in runs if r.records(task)).status(task),
        result=lambda task: next(r for r in runs if r.records(task)).result(task),
    )
    return SimpleNamespace(previous=previous, cases=cases, run=run, proxy=proxy, host=host)


# ---------------------------------------------------------------------------------- helpers


def succeeded(res, case: str, run: int = 1) -> dict:
    """The result of a case that must have staged B: B complete and verified, A gone, nothing left over."""
    name = task_name(case, run)
    result = res.run.result(name)
    assert res.run.status(name) == "changed", result
    this = res.cases[case]
    assert result["manifest_digest"] == this.new.digest
    assert held_release(this.dest, {"A": res.previous, "B": this.new}) == "B"
    # The previous release and the partial directory are gone, nothing else is in the store.
    assert sorted(p.name for p in store_of(this.dest).iterdir()) == [release_dir_name(this.new.digest)]
    return result


def failed(res, case: str, error_code: str) -> dict:
    """The result of a case that must have failed: A still at dest, byte for byte, inode for inode."""
    name = task_name(case)
    result = res.run.result(name)
    assert res.run.status(name) == "failed", result
    assert result.get("error_code") == error_code, result
    assert "Traceback" not in json.dumps(result), result
    this = res.cases[case]
    assert held_release(this.dest, {"A": res.previous, "B": this.new}) == "A"
    after = snapshot(this.node)
    kept = {path: entry for path, entry in this.before.items() if path != ".staged.kubesolo-fleet"}
    assert {path: after.get(path) for path in kept} == kept, "the previous release was touched"
    # Only the store's lock and the partial download of B may be new.
    partial = f".staged.kubesolo-fleet/partial-{release_dir_name(this.new.digest)}"
    new = sorted(path for path in after if path not in this.before)
    assert [p for p in new if p != ".staged.kubesolo-fleet/.lock" and not p.startswith(partial)] == [], new
    return result


def blob_requests(res, case: str, digest: str) -> list:
    return res.proxy.blob_requests(res.cases[case].repo, digest)


def fetched_blob_bytes(res, case: str) -> int:
    """Blob bytes (200 and 206 bodies) the proxy sent to the case's runs."""
    return sum(
        e.body_bytes
        for e in res.proxy.requests(f"^/v2/{re.escape(res.cases[case].repo)}/blobs/")
        if e.status in (200, 206)
    )


def total(manifest: artifacts.PushedManifest) -> int:
    return len(manifest.kernel) + len(manifest.initramfs)


# ---------------------------------------------------------------------------------- recoveries


def test_reset_mid_blob_is_resumed_with_a_range_request(res):
    result = succeeded(res, "reset")
    new = res.cases["reset"].new

    assert [(e.range, e.status, e.body_bytes) for e in blob_requests(res, "reset", kernel(new))] == [
        (None, 200, K),
        (f"bytes={K}-", 206, KERNEL_SIZE - K),
    ]
    assert [(e.range, e.status) for e in blob_requests(res, "reset", initramfs(new))] == [(None, 200)]
    assert result["transfer"]["retries"] == 1
    assert result["transfer"]["resumed_bytes"] == K
    assert f"broke off after {K} of {KERNEL_SIZE} bytes" in result["transfer"]["last_error"]


def test_503_twice_then_ok_is_retried_twice(res):
    result = succeeded(res, "unavailable-twice")
    new = res.cases["unavailable-twice"].new

    assert [e.status for e in blob_requests(res, "unavailable-twice", kernel(new))] == [503, 503, 200]
    assert result["transfer"]["retries"] == 2
    assert "HTTP 503" in result["transfer"]["last_error"]
    assert result["transfer"]["resumed_bytes"] == 0


def test_429_with_retry_after_waits_as_told(res):
    result = succeeded(res, "too-many-requests")
    first, second = blob_requests(res, "too-many-requests", kernel(res.cases["too-many-requests"].new))

    assert (first.status, second.status) == (429, 200)
    assert result["transfer"]["retries"] == 1
    assert "HTTP 429" in result["transfer"]["last_error"]
    # Retry-After: 1, neither the backoff of at most 0.5 s of a first retry nor retry_max_wait (3 s).
    assert 0.95 <= second.started - first.finished < 2.5


def test_truncated_body_is_resumed(res):
    result = succeeded(res, "truncated")
    new = res.cases["truncated"].new

    assert [(e.range, e.status, e.body_bytes) for e in blob_requests(res, "truncated", initramfs(new))] == [
        (None, 200, TRUNCATE_AT),
        (f"bytes={TRUNCATE_AT}-", 206, INITRAMFS_SIZE - TRUNCATE_AT),
    ]
    assert result["transfer"]["retries"] == 1
    assert result["transfer"]["resumed_bytes"] == TRUNCATE_AT


def test_stall_longer_than_the_timeout_is_resumed(res):
    result = succeeded(res, "stall-once")
    new = res.cases["stall-once"].new
    first, second = blob_requests(res, "stall-once", kernel(new))

    assert (first.range, first.status, first.body_bytes) == (None, 200, K)
    assert (second.range, second.status, second.body_bytes) == (f"bytes={K}-", 206, KERNEL_SIZE - K)
    # The client gave up after its 1 s timeout, not when the proxy ended the stall (4 s).
    assert second.started - first.started < 3
    assert result["transfer"]["retries"] == 1
    assert result["transfer"]["resumed_bytes"] == K
    assert "timed out" in result["transfer"]["last_error"].lower()


def test_server_ignoring_range_after_a_reset_restarts_the_blob(res):
    succeeded(res, "range-ignored")
    new = res.cases["range-ignored"].new

    assert [(e.range, e.action, e.status, e.body_bytes) for e in blob_requests(res, "range-ignored", kernel(new))] == [
        (None, "reset", 200, K),
        (f"bytes={K}-", "ignore-range", 200, KERNEL_SIZE),
    ]


def test_server_ignoring_range_counts_nothing_as_resumed(res):
    # resumed_bytes: "Bytes of blobs that did not have to be fetched again"; the server sent the
    # whole blob again, so none were.
    result = succeeded(res, "range-ignored")
    res.cases["range-ignored"].new

    assert result["transfer"]["retries"] == 1
    assert result["transfer"]["resumed_bytes"] == 0


@pytest.mark.parametrize(
    "case, extra",
    [
        ("reset", 0),
        ("unavailable-twice", 0),
        ("too-many-requests", 0),
        ("truncated", 0),
        ("stall-once", 0),
        ("range-ignored", K),
    ],
)
def test_bytes_downloaded_counts_the_blob_bytes_fetched_by_the_run(res, case, extra):
    # bytes_downloaded: "Blob bytes fetched from the registry by this run".  The bytes before a
    # broken connection were fetched by the run too (and, when the server ignored Range, fetched
    # again): the proxy counts what it sent.
    result = succeeded(res, case)

    fetched = fetched_blob_bytes(res, case)
    assert fetched == total(res.cases[case].new) + extra
    assert result["bytes_downloaded"] == fetched, f"reports {result['bytes_downloaded']}, {fetched} were fetched"


# ---------------------------------------------------------------------------------- failures


def test_503_every_time_fails_after_the_configured_retries(res):
    result = failed(res, "unavailable-always", "registry_error")
    new = res.cases["unavailable-always"].new

    assert "HTTP 503" in result["msg"]
    assert kernel(new) in result["msg"]
    assert result["transfer"]["retries"] == 3
    assert [e.status for e in blob_requests(res, "unavailable-always", kernel(new))] == [503] * 4
    # The initramfs downloaded at the same time, in one go, while the kernel waited for retries.
    assert [e.status for e in blob_requests(res, "unavailable-always", initramfs(new))] == [200]


def test_manifest_503_every_time_fails_and_reports_the_retries(res):
    # transfer is documented as "returned: always" ("also returned on failure").
    result = failed(res, "manifest-unavailable-always", "registry_error")

    assert "HTTP 503" in result["msg"]
    assert [e.status for e in res.proxy.requests(manifest_path(res.cases["manifest-unavailable-always"].repo))] == [
        503
    ] * 3
    assert "transfer" in result, f"the failure result has no transfer: {sorted(result)}"
    assert result["transfer"]["retries"] == 2


def test_404_on_a_blob_fails_at_once(res):
    result = failed(res, "blob-not-found", "not_found")
    new = res.cases["blob-not-found"].new

    assert result["msg"] == f"blob {initramfs(new)} of {res.host}/res/blob-not-found was not found in the registry"
    assert [e.status for e in blob_requests(res, "blob-not-found", initramfs(new))] == [404]
    assert result["transfer"]["retries"] == 0


def test_flipped_bytes_are_never_accepted(res):
    result = failed(res, "flipped", "digest_mismatch")
    this = res.cases["flipped"]
    partial = store_of(this.dest) / f"partial-{release_dir_name(this.new.digest)}"

    assert result["msg"].startswith(f"blob {initramfs(this.new)} has wrong content: its bytes hash to sha256:")
    assert [(e.action, e.status, e.body_bytes) for e in blob_requests(res, "flipped", initramfs(this.new))] == [
        ("flip", 200, INITRAMFS_SIZE),
    ]
    assert result["transfer"]["retries"] == 0
    # The corrupt .part is gone; the kernel, downloaded and verified meanwhile, is kept for the next run.
    assert sorted(p.name for p in partial.iterdir()) == ["vmlinuz"]
    assert (partial / "vmlinuz").read_bytes() == this.new.kernel


def test_after_flipped_bytes_the_next_run_finishes_the_job(res):
    this = res.cases["flipped-then-clean"]
    first = res.run.result(task_name("flipped-then-clean", 1))

    assert res.run.status(task_name("flipped-then-clean", 1)) == "failed", first
    assert first["error_code"] == "digest_mismatch"
    result = succeeded(res, "flipped-then-clean", run=2)
    assert part_files(store_of(this.dest)) == {}
    assert result["transfer"]["resumed_bytes"] == 0
    assert [e.action for e in blob_requests(res, "flipped-then-clean", initramfs(this.new))] == ["flip", None]


def test_the_run_after_a_failed_layer_does_not_fetch_the_verified_layer_again(res):
    # The kernel was downloaded and verified into the partial directory before the (throttled)
    # initramfs failed (see test_flipped_bytes_are_never_accepted); "the next run finishes the job with as
    # little re-download as possible".
    this = res.cases["flipped-then-clean"]
    result = res.run.result(task_name("flipped-then-clean", 2))

    kernel_gets = [(e.range, e.status) for e in blob_requests(res, "flipped-then-clean", kernel(this.new))]
    assert kernel_gets == [(None, 200)], f"the verified kernel was fetched again: {kernel_gets}"
    assert result["bytes_downloaded"] == INITRAMFS_SIZE


def test_stall_every_time_fails_with_a_timeout(res):
    result = failed(res, "stall-always", "registry_unreachable")
    new = res.cases["stall-always"].new

    assert kernel(new) in result["msg"]
    assert "timed out" in result["msg"].lower()
    assert result["transfer"]["retries"] == 1
    requests = blob_requests(res, "stall-always", kernel(new))
    assert [(e.range, e.body_bytes) for e in requests] == [(None, K), (f"bytes={K}-", K)]
    assert f"broke off after {2 * K} of {KERNEL_SIZE} bytes" in result["msg"]


def test_slow_drip_every_time_fails_as_stalled(res):
    result = failed(res, "drip-always", "registry_unreachable")
    new = res.cases["drip-always"].new

    assert kernel(new) in result["msg"]
    assert "stalled" in result["msg"]
    assert result["transfer"]["retries"] == 1
    first, second = blob_requests(res, "drip-always", kernel(new))
    assert first.range is None
    # Resumed from what the client had (the proxy may have sent a byte more before it noticed).
    assert K < int(re.fullmatch(r"bytes=(\d+)-", second.range).group(1)) <= first.body_bytes
    # About 1 s of drip per attempt, never the ~75 s the whole blob would take at that pace.
    assert second.started - first.started < 4


def test_failed_runs_keep_only_verified_bytes_in_the_store(res):
    # What a failure leaves behind for the next run is a prefix of the right bytes, nothing else.
    for case in (
        "unavailable-always",
        "manifest-unavailable-always",
        "blob-not-found",
        "flipped",
        "stall-always",
        "drip-always",
    ):
        this = res.cases[case]
        store = store_of(this.dest)
        for relative, size in part_files(store).items():
            name = relative.rsplit("/", 1)[-1][: -len(".part")]
            expected = this.new.kernel if name == "vmlinuz" else this.new.initramfs
            assert (store / relative).read_bytes() == expected[:size], f"{case}: {relative} is not a prefix of {name}"


def test_every_staged_file_hashes_to_its_manifest_digest(res):
    # Zero corrupt bytes accepted: every case ends at A or B, each complete and verified.
    for name, case in res.cases.items():
        label = held_release(case.dest, {"A": res.previous, "B": case.new})
        assert label == (
            "B"
            if name
            in (
                "reset",
                "unavailable-twice",
                "too-many-requests",
                "truncated",
                "flipped-then-clean",
                "stall-once",
                "range-ignored",
            )
            else "A"
        ), name
