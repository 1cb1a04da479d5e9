# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node transfer methods (_node_transfer.py) through a real NodeStore on a local shell.

The node is the system /bin/sh and busybox sh with only busybox applets (node_fakes.py). A broken
link is a shell that hands the node only part of a chunk and then raises NodeLinkError, as the
action plugin does when the connection fails.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import DigestMismatchError
from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _node_store, _node_transfer
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_transfer import (
    MIN_CHUNK_SIZE,
    AutoTransfer,
    NodeLinkError,
    ProgressReport,
    RateLimit,
    ShellStream,
    TransferStats,
    TransferUnavailableError,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.plugin_utils.node_fakes import (
    no_wait_policy,
    read,
    sha256_hex,
    transfer_of,
)

CHUNK = MIN_CHUNK_SIZE
LAYER = os.urandom(5 * CHUNK + 1234)
NAME = "kubesolo-os.gz"


def layer_of(data):
    return {"digest": "sha256:" + sha256_hex(data), "size": len(data)}


class Link:
    """The node's shell behind a link that can break: ``cut(after)`` makes the next appends
    deliver only ``after`` bytes of their chunk before the connection "breaks"."""

    def __init__(self, node):
        self.node = node
        self.cuts = []  # bytes each coming broken append delivers
        self.chunks = []  # the size of every chunk sent
        self.flip_next = False

    def __call__(self, script, data=None):
        if script.startswith("part=") and data is not None:
            self.chunks.append(len(data))
            if self.flip_next:
                self.flip_next = False
                data = bytes([data[0] ^ 1]) + data[1:]
            if self.cuts:
                after = self.cuts.pop(0)
                self.node.run(script, data[:after])
                raise NodeLinkError("the connection to the node broke: Connection reset by peer")
        return self.node.run(script, data)


@pytest.fixture
def work(tmp_path):
    path = tmp_path / "store" / "partial-sha256-x"
    path.mkdir(parents=True)
    return str(path)


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "cache-blob"
    path.write_bytes(LAYER)
    return str(path)


def stream(node, link=None, **kwargs):
    node_store = _node_store.NodeStore(link or node.run, "/unused/staged")
    kwargs.setdefault("chunk_size", CHUNK)
    return ShellStream(node_store, kwargs.pop("policy", no_wait_policy()), **kwargs)


def send(transfer, blob, work, data=LAYER):
    stats = TransferStats(transfer.method)
    sha256 = transfer.send(blob, layer_of(data), work, NAME, stats)
    return stats, sha256


def test_the_stream_sends_the_layer_in_chunks_and_leaves_it_verified(node, blob, work):
    link = Link(node)
    stats, sha256 = send(stream(node, link), blob, work)
    assert read(os.path.join(work, NAME)) == LAYER
    assert os.listdir(work) == [NAME]
    assert sha256 == sha256_hex(LAYER)
    assert link.chunks == [CHUNK] * 5 + [1234]  # the controller never holds more than a chunk
    assert stats.summary() == {"method": "shell", "sent_bytes": len(LAYER), "resumed_bytes": 0, "interruptions": 0}


def test_a_broken_link_costs_at_most_the_chunk_in_flight(node, blob, work):
    link = Link(node)
    link.cuts = [100, CHUNK - 1, 0]
    stats, _sha256 = send(stream(node, link), blob, work)
    assert read(os.path.join(work, NAME)) == LAYER
    assert stats.interruptions == 3
    assert len(LAYER) < stats.sent_bytes <= len(LAYER) + 3 * CHUNK
    assert stats.resumed_bytes == 0


def test_a_link_that_stays_down_fails_with_node_unreachable_and_keeps_what_arrived(node, blob, work):
    # The first two chunks arrive, then the link breaks for good.
    calls = {"n": 0}

    def breaking(script, data=None):
        if script.startswith("part=") and data is not None:
            calls["n"] += 1
            if calls["n"] > 2:
                node.run(script, data[:10])
                raise NodeLinkError("the connection to the node broke: Connection timed out")
        return node.run(script, data)

    transfer = stream(node, breaking, policy=no_wait_policy(retries=2))
    with pytest.raises(NodeLinkError) as raised:
        send(transfer, blob, work)
    assert raised.value.code == "node_unreachable"
    assert "broke 3 times in a row without progress" in str(raised.value)
    assert "Connection timed out" in str(raised.value)
    # The part holds the chunks that matched, and the start of the broken one (cut off next time).
    assert read(os.path.join(work, NAME + ".part"))[: 2 * CHUNK] == LAYER[: 2 * CHUNK]
    stats, _sha256 = send(stream(node), blob, work)
    assert read(os.path.join(work, NAME)) == LAYER
    assert stats.resumed_bytes == 2 * CHUNK + 10
    assert stats.sent_bytes == len(LAYER) - stats.resumed_bytes


def test_a_part_an_earlier_run_left_is_resumed_after_the_node_hashed_it(node, blob, work):
    with open(os.path.join(work, NAME + ".part"), "wb") as handle:
        handle.write(LAYER[: 2 * CHUNK + 7])
    link = Link(node)
    stats, _sha256 = send(stream(node, link), blob, work)
    assert read(os.path.join(work, NAME)) == LAYER
    assert stats.resumed_bytes == 2 * CHUNK + 7
    assert stats.sent_bytes == len(LAYER) - 2 * CHUNK - 7
    assert sum(link.chunks) == stats.sent_bytes


def test_a_part_that_is_not_the_start_of_the_layer_is_discarded(node, blob, work):
    wrong = bytearray(LAYER[: 3 * CHUNK])
    wrong[CHUNK + 5] ^= 0xFF
    with open(os.path.join(work, NAME + ".part"), "wb") as handle:
        handle.write(bytes(wrong))
    stats, _sha256 = send(stream(node), blob, work)
    assert read(os.path.join(work, NAME)) == LAYER
    assert stats.resumed_bytes == 0
    assert stats.sent_bytes == len(LAYER)


def test_a_part_longer_than_the_layer_is_discarded_unread(node, blob, work):
    with open(os.path.join(work, NAME + ".part"), "wb") as handle:
        handle.write(LAYER + b"more")
    stats, _sha256 = send(stream(node), blob, work)
    assert read(os.path.join(work, NAME)) == LAYER
    assert stats.resumed_bytes == 0


def test_a_whole_layer_an_earlier_run_left_is_not_sent_again(node, blob, work):
    with open(os.path.join(work, NAME), "wb") as handle:
        handle.write(LAYER)
    with open(os.path.join(work, NAME + ".part"), "wb") as handle:
        handle.write(b"stale")
    stats, sha256 = send(stream(node), blob, work)
    assert sha256 == sha256_hex(LAYER)
    assert os.listdir(work) == [NAME]
    assert stats.summary() == {"method": "shell", "sent_bytes": 0, "resumed_bytes": len(LAYER), "interruptions": 0}


def test_a_chunk_that_arrives_other_than_sent_is_cut_off_and_sent_again(node, blob, work):
    link = Link(node)
    link.flip_next = True
    stats, _sha256 = send(stream(node, link), blob, work)
    assert read(os.path.join(work, NAME)) == LAYER
    assert stats.interruptions == 1
    assert stats.sent_bytes == len(LAYER) + CHUNK


def test_a_cache_file_other_than_the_manifest_says_is_refused_and_removed(node, blob, work):
    altered = bytearray(LAYER)
    altered[-1] ^= 0xFF
    with open(blob, "wb") as handle:
        handle.write(bytes(altered))
    with pytest.raises(DigestMismatchError) as raised:
        send(stream(node), blob, work)
    assert f"has sha256 {sha256_hex(bytes(altered))}, not the manifest's digest" in str(raised.value)
    assert os.listdir(work) == []


def test_a_sha512_layer_is_checked_by_its_own_digest_and_recorded_by_sha256(node, blob, work):
    layer = {"digest": "sha512:" + hashlib.sha512(LAYER).hexdigest(), "size": len(LAYER)}
    stats = TransferStats("shell")
    assert stream(node).send(blob, layer, work, NAME, stats) == sha256_hex(LAYER)
    assert read(os.path.join(work, NAME)) == LAYER


def test_the_rate_limit_paces_the_chunks():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limit = RateLimit(100_000, clock=lambda: now[0], sleep=sleep)
    assert limit.chunk_size(8 * 1024 * 1024) == 100_000  # about a second's worth each
    assert limit.chunk_size(70_000) == 70_000
    assert RateLimit(1000).chunk_size(8 * 1024 * 1024) == MIN_CHUNK_SIZE  # a command per 64 KiB at least
    for _chunk in range(10):
        limit.sending()
        now[0] += 0.01  # the chunk itself took 10 ms
        limit.sent(100_000)
    assert now[0] == pytest.approx(10.0)  # 1 MB at 100 kB/s
    assert slept[0] == pytest.approx(0.99)
    assert RateLimit(0).chunk_size(12345) == 12345


def test_a_rate_limited_stream_sends_chunks_of_a_second(node, blob, work):
    link = Link(node)
    slept = []
    transfer = stream(node, link, rate_limit=CHUNK * 2, chunk_size=8 * 1024 * 1024, sleep=slept.append)
    send(transfer, blob, work)
    assert max(link.chunks) == CHUNK * 2
    assert sum(slept) > 0


def test_progress_is_reported_every_interval_and_when_done(node, blob, work):
    now = [0.0]
    lines = []
    report = ProgressReport(lines.append, interval=5.0, clock=lambda: now[0])
    progress = _node_transfer.Progress(NAME, 10 * 1024 * 1024, clock=lambda: now[0])
    for step in range(1, 11):
        now[0] = step * 1.0
        progress.sent = progress.held = step * 1024 * 1024
        report(progress)
    progress.done = True
    report(progress)
    assert len(lines) == 3  # at 5 s, 10 s, and done
    assert lines[0] == (
        "node transfer of kubesolo-os.gz: 5.0 of 10.0 MiB on the node, 5.0 MiB sent at 1.0 MiB/s, "
        "nothing resumed, 0 interruptions"
    )
    assert lines[-1].endswith(", done")


def test_the_stream_reports_progress_after_each_chunk(node, blob, work):
    seen = []
    send(stream(node, report=lambda progress: seen.append((progress.held, progress.done))), blob, work)
    assert seen[-1] == (len(LAYER), True)
    assert [held for held, _done in seen[:-1]] == [CHUNK * n for n in range(1, 6)] + [len(LAYER)]


def test_put_file_copies_to_the_part_then_completes_the_layer(node, blob, work):
    node_store = _node_store.NodeStore(node.run, "/unused/staged")
    transfer = transfer_of("put_file", node_store, node.put)
    stats, sha256 = send(transfer, blob, work)
    assert sha256 is None  # checked when the release is published
    assert node.puts == [os.path.join(work, NAME + ".part")]
    assert read(os.path.join(work, NAME)) == LAYER
    assert stats.summary() == {"method": "put_file", "sent_bytes": len(LAYER), "resumed_bytes": 0, "interruptions": 0}


def test_auto_streams_through_the_shell_when_the_connection_cannot_copy(node, blob, work):
    node_store = _node_store.NodeStore(node.run, "/unused/staged")

    def no_sftp(_local, _remote):
        raise TransferUnavailableError("the connection cannot copy files to this node: subsystem request failed")

    auto = AutoTransfer(transfer_of("put_file", node_store, no_sftp, retry=False), stream(node))
    assert auto.method == "put_file"
    stats, sha256 = send(auto, blob, work)
    assert auto.method == "shell" and auto.verified_on_arrival
    assert sha256 == sha256_hex(LAYER)
    assert stats.interruptions == 0
    assert read(os.path.join(work, NAME)) == LAYER


def test_auto_resumes_a_broken_copy_through_the_shell(node, blob, work):
    node_store = _node_store.NodeStore(node.run, "/unused/staged")

    def breaking_copy(local, remote):
        with open(local, "rb") as source, open(remote, "wb") as target:
            target.write(source.read(3 * CHUNK))
        raise NodeLinkError("copying to the node failed: Connection reset by peer")

    auto = AutoTransfer(transfer_of("put_file", node_store, breaking_copy, retry=False), stream(node))
    stats, _sha256 = send(auto, blob, work)
    assert auto.method == "shell"
    assert read(os.path.join(work, NAME)) == LAYER
    assert stats.interruptions == 1
    assert stats.resumed_bytes == 3 * CHUNK
    assert stats.sent_bytes == 2 * len(LAYER) - 3 * CHUNK  # the copy counts whole: it cannot say how far it got
