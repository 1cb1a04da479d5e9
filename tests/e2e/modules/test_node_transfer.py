"""``update_stage``'s ``node_transfer`` end to end: real ansible-playbook, a real registry, and real SSH
nodes without Python, one of them with no file transfer at all.

The dropbear node (``DropbearNode``: dropbear in a busybox-only chroot, no ``sftp-server``, no
``scp``) refuses Ansible's sftp and scp, so whatever staged a release there went through the shell
stream.  The OpenSSH node (``SSHNode``, internal-sftp) can do both, which lets the methods be
compared on one node.  Memory and the rate limit are asserted loosely here; their figures are in
``bench/run`` (docs/performance.md).
"""

from __future__ import annotations

import os
import threading
import time

from tests.e2e.modules.test_controller_delivery import (
    DEST,
    STAGE,
    assert_node_holds,
    layer_total,
    machine_goarch,
    node_inventory,
    play,
    sftp_sessions,
    stage_task,
)
from tests.support import artifacts
from tests.support.process import descendants

CHUNK = 1024 * 1024


def push(registry, repo, version, kernel_size, initramfs_size):
    """A release of ``repo`` for this machine, tagged stable; its manifest."""
    release = artifacts.push_release(
        registry, repo, "stable", version, (machine_goarch(),), kernel_size=kernel_size, initramfs_size=initramfs_size
    )
    return release.manifests[machine_goarch()]


def test_a_node_without_sftp_or_scp_is_staged_through_its_shell(
    registry, dropbear_node_factory, run_playbook, tmp_path
):
    repo = "transfer/dropbear"
    repository = f"{registry.host}/{repo}"
    manifest = push(registry, repo, "v0.3.0", 300_001, 2 * CHUNK + 12_345)
    (node,) = dropbear_node_factory(names=["edge"])
    cache = tmp_path / "cache"
    tasks = [
        stage_task(repository, cache, name="auto", transfer_chunk_size=CHUNK),
        stage_task(repository, cache, name="again"),
    ]
    run = run_playbook(play(*tasks), inventory=node_inventory([node]))
    assert run.rc == 0, run
    result = run.result("auto", "edge")
    assert run.status("auto", "edge") == "changed", result
    # auto tried the connection's file transfer, which dropbear refuses, and streamed instead.
    assert result["transfer"]["method"] == "shell"
    assert result["transfer"]["sent_bytes"] == layer_total(manifest)
    assert result["transfer"]["interruptions"] == 0
    assert result["bytes_transferred"] == layer_total(manifest)
    assert_node_holds(node, manifest, repository)
    # The rerun reads sizes and sends nothing.
    again = run.result("again", "edge")
    assert run.status("again", "edge") == "ok", again
    assert again["transfer"]["sent_bytes"] == 0


def test_put_file_is_refused_where_the_node_cannot_take_files(registry, dropbear_node_factory, run_playbook, tmp_path):
    repo = "transfer/refused"
    repository = f"{registry.host}/{repo}"
    push(registry, repo, "v0.3.0", 10_000, 20_000)
    (node,) = dropbear_node_factory(names=["edge"])
    run = run_playbook(
        play(stage_task(repository, tmp_path / "cache", node_transfer="put_file")), inventory=node_inventory([node])
    )
    result = run.result(STAGE, "edge")
    assert run.status(STAGE, "edge") == "failed", run
    assert result["error_code"] == "node_transfer_unavailable"
    assert result["msg"].startswith("the connection cannot copy files to this node: ")
    assert result["transfer"]["method"] == "put_file"
    assert "Traceback" not in result["msg"]
    assert not os.path.lexists(node.path(DEST))


def test_both_methods_stage_the_same_release_and_shell_needs_no_sftp(
    registry, ssh_node_factory, run_playbook, tmp_path
):
    repo = "transfer/openssh"
    repository = f"{registry.host}/{repo}"
    manifest = push(registry, repo, "v0.3.0", 150_000, 3 * CHUNK + 1)
    by_shell, by_put = ssh_node_factory(names=["by_shell", "by_put"])
    host_vars = {"by_shell": {"method": "shell"}, "by_put": {"method": "put_file"}}
    task = stage_task(repository, tmp_path / "cache", node_transfer="{{ method }}", transfer_chunk_size=CHUNK)
    run = run_playbook(play(task), inventory=node_inventory([by_shell, by_put], host_vars))
    assert run.rc == 0, run
    for node, method, sessions in ((by_shell, "shell", 0), (by_put, "put_file", 2)):
        result = run.result(STAGE, node.name)
        assert result["transfer"]["method"] == method
        assert result["transfer"]["sent_bytes"] == layer_total(manifest)
        assert_node_holds(node, manifest, repository)
        assert sftp_sessions(node) == sessions, node.log_tail()


def test_the_rate_limit_slows_the_stream_and_verbose_mode_shows_progress(
    registry, dropbear_node_factory, run_playbook, tmp_path
):
    repo = "transfer/limited"
    repository = f"{registry.host}/{repo}"
    manifest = push(registry, repo, "v0.3.0", 100_000, 1_400_000)
    (node,) = dropbear_node_factory(names=["edge"])
    rate = 400_000  # bytes per second: 1.5 MB take at least about 3.75 s
    warm = stage_task(repository, tmp_path / "cache", name="warm", dest="/var/lib/kubesolo/warm")
    task = stage_task(repository, tmp_path / "cache", node_transfer="shell", transfer_rate_limit=rate)
    run = run_playbook(play(warm, task), inventory=node_inventory([node]), args=["-v"])
    assert run.rc == 0, run
    assert_node_holds(node, manifest, repository)
    record = run.record(STAGE, "edge")
    seconds = record["finished"] - record["started"]
    # A floor only (how much slower the machine is may vary): the pace cannot be beaten.
    assert seconds >= 0.9 * layer_total(manifest) / rate, seconds
    assert seconds < 10 * layer_total(manifest) / rate, seconds
    assert "node transfer of kubesolo-os.gz: 1.3 of 1.3 MiB on the node" in run.stdout
    assert "0 interruptions, done" in run.stdout


def test_put_file_passes_the_rate_limit_to_sftp(registry, ssh_node_factory, run_playbook, tmp_path):
    repo = "transfer/limited-sftp"
    repository = f"{registry.host}/{repo}"
    manifest = push(registry, repo, "v0.3.0", 100_000, 1_400_000)
    (node,) = ssh_node_factory(names=["sftp"])
    rate = 400_000
    warm = stage_task(repository, tmp_path / "cache", name="warm", dest="/var/lib/kubesolo/warm")
    task = stage_task(repository, tmp_path / "cache", node_transfer="put_file", transfer_rate_limit=rate)
    run = run_playbook(play(warm, task), inventory=node_inventory([node]))
    assert run.rc == 0, run
    assert run.result(STAGE, "sftp")["transfer"]["method"] == "put_file"
    assert_node_holds(node, manifest, repository)
    record = run.record(STAGE, "sftp")
    seconds = record["finished"] - record["started"]
    assert seconds >= 0.8 * layer_total(manifest) / rate, seconds  # sftp -l paces by its own clock


def test_the_controller_holds_a_chunk_not_a_layer(registry, dropbear_node_factory, run_playbook, tmp_path):
    repo = "transfer/memory"
    repository = f"{registry.host}/{repo}"
    layer = 160 * CHUNK  # bigger than the bound below: a process holding the layer would exceed it
    manifest = push(registry, repo, "v0.3.0", 4096, layer)
    (node,) = dropbear_node_factory(names=["edge"])
    warm = stage_task(repository, tmp_path / "cache", name="warm", dest="/var/lib/kubesolo/warm", node_transfer="shell")
    peak = PeakRSS()
    with peak:
        run = run_playbook(play(warm), inventory=node_inventory([node]))
    assert run.rc == 0, run
    assert_node_holds_at(node, "/var/lib/kubesolo/warm", manifest)
    assert 0 < peak.kib < 100 * 1024, peak.kib


class PeakRSS:
    """The highest resident set of any ansible-playbook process of this test (the main one and its
    forks), sampled every 50 ms while the block runs."""

    def __init__(self):
        self.kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._me = os.getpid()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.is_set():
            for pid in descendants(self._me):
                self.kib = max(self.kib, _playbook_rss_kib(pid))
            time.sleep(0.05)


def _playbook_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if b"ansible-playbook" not in handle.read():
                return 0
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def assert_node_holds_at(node, dest, manifest):
    staged = node.path(dest)
    assert (staged / "vmlinuz").read_bytes() == manifest.kernel
    assert (staged / "kubesolo-os.gz").read_bytes() == manifest.initramfs
