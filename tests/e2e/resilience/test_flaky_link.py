"""Controller delivery over a link that breaks: a real TCP proxy (``CuttingProxy``) between Ansible's
``ssh`` and a real dropbear node in a busybox chroot, which resets the connection after a given number
of bytes, several times per layer; and a controller killed in the middle of a layer.

The shell stream must finish within one run when retries allow it, and across runs when each run
dies; the staged bytes must be the release's, the previous release must survive every failed try, and
the bytes that crossed the proxy must stay below the layers' size plus about a chunk per cut (plus
what SSH itself sends: handshakes, the staging scripts).
"""

from __future__ import annotations

import os
import time

import pytest

from tests.e2e.modules.test_controller_delivery import (
    DEST,
    STAGE,
    assert_node_holds,
    layer_total,
    machine_goarch,
    node_inventory,
    play,
    release_dir,
    stage_task,
)
from tests.support import artifacts
from tests.support.playbook import kill_playbook, start_playbook
from tests.support.tcpproxy import CuttingProxy
from tests.support.vm.node import close_control_masters

CHUNK = 1024 * 1024
#: What SSH adds to the layer bytes on one connection: the handshake, the scripts and their answers.
SSH_OVERHEAD = 256 * 1024
STORE = "/var/lib/kubesolo/update/.staged.kubesolo-fleet"


def push(registry, repo, version, initramfs_size):
    release = artifacts.push_release(
        registry, repo, "stable", version, (machine_goarch(),), kernel_size=200_003, initramfs_size=initramfs_size
    )
    return release.manifests[machine_goarch()]


def through(proxy, node, **host_vars):
    """The inventory of ``node`` reached through ``proxy``."""
    inv = node_inventory([node])
    inv["all"]["hosts"][node.name].update(ansible_port=proxy.port, **host_vars)
    return inv


def streamed(repository, cache, **args):
    return stage_task(
        repository,
        cache,
        node_transfer="shell",
        transfer_chunk_size=CHUNK,
        retry_max_wait=0.2,
        **args,
    )


@pytest.fixture
def edge(dropbear_node_factory):
    (node,) = dropbear_node_factory(names=["edge"])
    return node


def test_a_link_cut_three_times_in_a_layer_is_resumed_within_the_run(registry, edge, run_playbook, tmp_path):
    repo = "flaky/one-run"
    repository = f"{registry.host}/{repo}"
    manifest = push(registry, repo, "v0.3.0", 8 * CHUNK + 4321)
    with CuttingProxy(("127.0.0.1", edge.port), cut_after=int(2.5 * CHUNK), cuts=3) as proxy:
        run = run_playbook(play(streamed(repository, tmp_path / "cache", retries=5)), inventory=through(proxy, edge))
    assert run.rc == 0, run
    assert proxy.cuts_done == 3
    result = run.result(STAGE, "edge")
    assert result["transfer"]["interruptions"] == 3, result["transfer"]
    assert result["transfer"]["method"] == "shell"
    assert layer_total(manifest) < result["transfer"]["sent_bytes"] <= layer_total(manifest) + 3 * CHUNK
    assert proxy.bytes_up <= layer_total(manifest) + 3 * CHUNK + 4 * SSH_OVERHEAD, proxy.connections
    assert_node_holds(edge, manifest, repository)


def test_runs_that_each_die_on_a_cut_resume_one_another_and_keep_the_previous_release(
    registry, edge, run_playbook, tmp_path
):
    repo = "flaky/many-runs"
    repository = f"{registry.host}/{repo}"
    first = push(registry, repo, "v0.3.0", 100_000)
    cache = tmp_path / "cache"
    # The first release arrives on a good link.
    run = run_playbook(play(streamed(repository, cache)), inventory=node_inventory([edge]))
    assert run.rc == 0, run
    assert_node_holds(edge, first, repository)
    second = push(registry, repo, "v0.4.0", 6 * CHUNK + 777)
    work = edge.path(f"{STORE}/partial-{release_dir(second.digest)}")
    crossed = 0
    held = []
    for attempt in range(1, 5):
        with CuttingProxy(("127.0.0.1", edge.port), cut_after=int(2.5 * CHUNK), cuts=1) as proxy:
            run = run_playbook(play(streamed(repository, cache, retries=0)), inventory=through(proxy, edge))
        crossed += proxy.bytes_up
        result = run.result(STAGE, "edge")
        if proxy.cuts_done == 0:
            break
        assert run.status(STAGE, "edge") == "failed", run
        assert result["error_code"] == "node_unreachable", result
        assert result["transfer"]["method"] == "shell"
        # The previous release is untouched; what arrived waits in the release's work directory.
        assert os.readlink(edge.path(DEST)) == f".staged.kubesolo-fleet/{release_dir(first.digest)}"
        assert (edge.path(DEST) / "kubesolo-os.gz").read_bytes() == first.initramfs
        held.append(sum(path.stat().st_size for path in work.iterdir()))
        assert held[-1] > (held[-2] if len(held) > 1 else 0), held
    else:
        pytest.fail(f"still cut after {attempt} runs")
    assert run.rc == 0, run
    assert attempt >= 3  # 6 MiB at 2.5 MiB per run
    result = run.result(STAGE, "edge")
    assert result["transfer"]["resumed_bytes"] >= held[-1] - CHUNK
    assert_node_holds(edge, second, repository)
    cuts = attempt - 1
    assert crossed <= layer_total(second) + cuts * CHUNK + attempt * SSH_OVERHEAD


def test_a_controller_killed_in_the_middle_of_a_layer_is_resumed_by_the_next_run(
    registry, edge, run_playbook, tmp_path
):
    repo = "flaky/killed"
    repository = f"{registry.host}/{repo}"
    manifest = push(registry, repo, "v0.3.0", 8 * CHUNK + 99)
    cache = tmp_path / "cache"
    part = edge.path(f"{STORE}/partial-{release_dir(manifest.digest)}/kubesolo-os.gz.part")
    slow = streamed(repository, cache, transfer_rate_limit=2 * CHUNK)  # 4 s for the initramfs
    process, command = start_playbook(play(slow), tmp_path=tmp_path / "killed", inventory=node_inventory([edge]))
    try:
        deadline = time.monotonic() + 120
        while not (part.exists() and part.stat().st_size >= 3 * CHUNK):
            assert process.poll() is None, (command.cwd / "playbook.log").read_text()
            assert time.monotonic() < deadline, "the layer never started to arrive"
            time.sleep(0.05)
    finally:
        kill_playbook(process)
        close_control_masters(edge.control_path_dir)
    killed_at = part.stat().st_size
    assert 3 * CHUNK <= killed_at < len(manifest.initramfs)
    run = run_playbook(play(streamed(repository, cache)), inventory=node_inventory([edge]))
    assert run.rc == 0, run
    result = run.result(STAGE, "edge")
    # The lock the killed run held was cleared (its controller is gone), and the part resumed.
    assert result["transfer"]["resumed_bytes"] >= killed_at - CHUNK, (result["transfer"], killed_at)
    assert result["transfer"]["sent_bytes"] <= layer_total(manifest) - killed_at + CHUNK
    assert_node_holds(edge, manifest, repository)
