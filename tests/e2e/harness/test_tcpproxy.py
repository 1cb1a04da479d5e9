"""The cutting TCP proxy: plain sockets first (exact byte counts), then ssh and Ansible through it to the
SSH test nodes."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest

from tests.support.sshnode import inventory
from tests.support.tcpproxy import CuttingProxy

# ---------------------------------------------------------------- a plain TCP server to forward to


class _Server:
    """Accepts connections on 127.0.0.1; per connection reads until EOF or reset, echoing what it
    reads when ``echo``.  ``ends`` lists ``(bytes received, "eof" | "reset")`` per connection."""

    def __init__(self, *, echo: bool = False) -> None:
        self.echo = echo
        self.ends: list[tuple[int, str]] = []
        self._done = threading.Condition()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.address = self._sock.getsockname()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _peer = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        received, end = 0, "eof"
        with conn:
            try:
                while data := conn.recv(65536):
                    received += len(data)
                    if self.echo:
                        conn.sendall(data)
            except ConnectionResetError:
                end = "reset"
        with self._done:
            self.ends.append((received, end))
            self._done.notify_all()

    def wait_ends(self, count: int, timeout: float = 5) -> list[tuple[int, str]]:
        with self._done:
            assert self._done.wait_for(lambda: len(self.ends) >= count, timeout), self.ends
            return list(self.ends)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def echo_server():
    server = _Server(echo=True)
    yield server
    server.close()


def _exchange(address, payload: bytes, *, chunk: int = 4096) -> tuple[bytes, str]:
    """Send ``payload`` in chunks, half-close, read the answer: ``(answer, "eof" | "reset")``.

    A reset is reported once, to whichever call comes first (connect, a send or the reader's
    recv; a later recv sees an end of file), so any of them counts.
    """
    answer = bytearray()
    resets = []
    try:
        sock = socket.create_connection(address, timeout=5)
    except ConnectionResetError:  # accepted and reset before connect() saw it complete
        return b"", "reset"
    with sock:

        def read():
            try:
                while data := sock.recv(65536):
                    answer.extend(data)
            except ConnectionResetError:
                resets.append("recv")

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for start in range(0, len(payload), chunk):
                sock.sendall(payload[start : start + chunk])
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            resets.append("send")
        except OSError:  # ENOTCONN from shutdown: the reset came in between
            resets.append("shutdown")
        reader.join(10)
        assert not reader.is_alive()
    return bytes(answer), "reset" if resets else "eof"


PAYLOAD = os.urandom(100_000)


def test_forwards_both_ways_and_counts(echo_server):
    with CuttingProxy(echo_server.address) as proxy:
        answer, end = _exchange(proxy.address, PAYLOAD)
        proxy.wait_idle()

        assert (answer, end) == (PAYLOAD, "eof")
        (conn,) = proxy.connections
        assert (conn.bytes_up, conn.bytes_down, conn.cut, conn.closed) == (100_000, 100_000, False, True)
        assert (proxy.bytes_up, proxy.bytes_down, proxy.cuts_done) == (100_000, 100_000, 0)
        assert echo_server.wait_ends(1) == [(100_000, "eof")]


def test_cut_after_resets_both_sides_and_later_connections_pass(echo_server):
    with CuttingProxy(echo_server.address, cut_after=10_000, cuts=1) as proxy:
        first = _exchange(proxy.address, PAYLOAD)
        second = _exchange(proxy.address, PAYLOAD)
        proxy.wait_idle()

        assert first[1] == "reset" and len(first[0]) <= 10_000
        assert second == (PAYLOAD, "eof")
        cut, passed = proxy.connections
        assert (cut.bytes_up, cut.cut, passed.bytes_up, passed.cut) == (10_000, True, 100_000, False)
        assert proxy.cuts_done == 1 and proxy.bytes_up == 110_000 and proxy.cuts_left == 0
        ends = sorted(echo_server.wait_ends(2))
        assert ends[0][1] == "reset" and ends[0][0] <= 10_000 and ends[1] == (100_000, "eof")


def test_cuts_none_cuts_every_connection_and_zero_cuts_at_once(echo_server):
    with CuttingProxy(echo_server.address, cut_after=0, cuts=None) as proxy:
        results = [_exchange(proxy.address, PAYLOAD) for _attempt in range(3)]
        proxy.wait_idle()

        assert [end for _answer, end in results] == ["reset"] * 3
        assert [(c.bytes_up, c.cut) for c in proxy.connections] == [(0, True)] * 3
        assert proxy.cuts_done == 3 and proxy.cuts_left is None


def test_rearm_counts_from_now_on_an_open_connection_and_reset_counters(echo_server):
    with CuttingProxy(echo_server.address) as proxy, socket.create_connection(proxy.address, timeout=5) as sock:
        sock.sendall(b"x" * 3000)
        received = 0
        while received < 3000:
            received += len(sock.recv(65536))
        assert proxy.connections[0].bytes_up == 3000

        proxy.arm(cut_after=500, cuts=1)
        sock.sendall(b"y" * 2000)
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass

        proxy.wait_idle()
        (conn,) = proxy.connections
        assert (conn.bytes_up, conn.cut, proxy.cuts_done) == (3500, True, 1)
        proxy.reset_counters()
        assert (proxy.connections, proxy.bytes_up, proxy.bytes_down, proxy.cuts_done) == ([], 0, 0, 0)


def test_rate_limits_the_uplink(echo_server):
    with CuttingProxy(echo_server.address, rate=400_000) as proxy:
        started = time.monotonic()
        answer, _end = _exchange(proxy.address, PAYLOAD)
        elapsed = time.monotonic() - started

    assert answer == PAYLOAD
    assert elapsed >= 0.2, elapsed  # 100 kB at 400 kB/s: 0.25 s


def test_stall_freezes_the_link_until_released(echo_server):
    with CuttingProxy(echo_server.address, cut_after=1000, stall=True) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"z" * 5000)
            got = b""
            sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                while True:
                    got += sock.recv(65536)
            (conn,) = proxy.connections
            assert (conn.bytes_up, conn.cut, conn.stalled, conn.closed) == (1000, True, True, False)
            assert len(got) <= 1000

            assert proxy.release_stalled() == 1
            sock.settimeout(5)
            with pytest.raises(ConnectionResetError):
                while sock.recv(65536):
                    pass
        proxy.wait_idle()
        assert proxy.cuts_done == 1


def test_a_refused_target_resets_the_client():
    closed = socket.create_server(("127.0.0.1", 0))
    address = closed.getsockname()
    closed.close()
    with CuttingProxy(address) as proxy:
        _answer, end = _exchange(proxy.address, b"hello")
        proxy.wait_idle()
        (conn,) = proxy.connections

    assert end == "reset"
    assert conn.error and "ConnectionRefused" in conn.error and not conn.cut


# ---------------------------------------------------------------- ssh and Ansible through it


BLOB = os.urandom(1_000_000)


@pytest.mark.parametrize("kind", ["openssh", "dropbear"])
def test_ssh_through_the_proxy_is_cut_once_then_passes(kind, request):
    factory = request.getfixturevalue("ssh_node_factory" if kind == "openssh" else "dropbear_node_factory")
    (node,) = factory()
    command = "cat > /tmp/blob && sha256sum /tmp/blob"

    with CuttingProxy((node.host, node.port), cut_after=200_000, cuts=1) as proxy:
        plain = subprocess.run(
            node.ssh_command("echo hello", port=proxy.port), capture_output=True, timeout=30, check=False
        )
        cut = subprocess.run(
            node.ssh_command(command, port=proxy.port), input=BLOB, capture_output=True, timeout=30, check=False
        )
        again = subprocess.run(
            node.ssh_command(command, port=proxy.port), input=BLOB, capture_output=True, timeout=30, check=False
        )
        proxy.wait_idle()

    assert plain.returncode == 0 and plain.stdout == b"hello\n", plain
    assert cut.returncode == 255, cut
    assert again.returncode == 0, again
    assert again.stdout.split()[0].decode() == hashlib.sha256(BLOB).hexdigest()
    first, second, third = proxy.connections
    assert not first.cut and second.cut and not third.cut
    # The handshake, authentication and the first part of the blob: 200 000 bytes exactly.
    assert second.bytes_up == 200_000 and third.bytes_up > len(BLOB)
    assert proxy.cuts_done == 1 and proxy.bytes_up == first.bytes_up + second.bytes_up + third.bytes_up


def test_a_cut_kills_the_control_master_and_the_next_command_reconnects(dropbear_node_factory):
    (node,) = dropbear_node_factory()
    master = [
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={node.control_path_dir}/%C",  # stop() closes what is there
        "-o",
        "ControlPersist=30",
    ]

    def ssh(command, stdin=b""):
        argv = node.ssh_command(command, port=proxy.port)
        # ssh keeps the first value of an option: these win over ssh_command's "no master".
        return subprocess.run(argv[:1] + master + argv[1:], input=stdin, capture_output=True, timeout=30, check=False)

    with CuttingProxy((node.host, node.port)) as proxy:
        assert ssh("echo one").stdout == b"one\n"
        assert ssh("echo two").stdout == b"two\n"
        assert len(proxy.connections) == 1  # both went through the master's connection

        proxy.arm(cut_after=50_000, cuts=1)  # counted from now on the master's connection
        cut = ssh("cat > /tmp/blob", stdin=BLOB)
        after = ssh("echo three")

        assert cut.returncode == 255, cut
        assert after.stdout == b"three\n", after
        first, second = proxy.connections
        assert first.cut and first.closed and not second.cut
        assert proxy.cuts_done == 1


def test_ansible_retries_a_cut_transfer_on_a_new_connection(dropbear_node_factory, run_playbook, tmp_path):
    (node,) = dropbear_node_factory()
    script = tmp_path / "big.sh"
    # About 1 MB after the command (random: Ansible's ssh compresses, -C), so the piped transfer
    # (dd) is where the cut lands.
    padding = base64.encodebytes(os.urandom(750_000)).decode()
    script.write_text(f"#!/bin/sh\necho delivered\nexit 0\n{padding}", encoding="utf-8")
    hosts = inventory([node])

    with CuttingProxy((node.host, node.port), cut_after=300_000, cuts=1) as proxy:
        hosts["all"]["hosts"][node.name].update({"ansible_port": proxy.port, "ansible_ssh_retries": 1})
        run = run_playbook(
            [
                {
                    "name": "big script",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [{"name": "script", "ansible.builtin.script": str(script)}],
                }
            ],
            inventory=hosts,
        )

    assert run.rc == 0, run
    assert run.result("script", node.name)["stdout_lines"] == ["delivered"]
    cut, *later = proxy.connections
    assert cut.cut and cut.bytes_up == 300_000
    assert later and not any(conn.cut for conn in later)
    assert proxy.cuts_done == 1
