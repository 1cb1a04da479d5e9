"""What the test servers (:class:`~tests.support.registry.Registry`, :class:`~tests.support.sshnode.SSHNode`)
have in common: one server process on a free port of 127.0.0.1, with its config and log in a temp dir.

A subclass says how to configure, launch and probe its server (the abstract methods); this class
starts it, retries on a port collision, waits until it is ready, stops it and removes the temp dir.
"""

from __future__ import annotations

import abc
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TypeVar

# Servers still running when the interpreter exits (a test that forgot stop()) are stopped.
_RUNNING: set[ManagedProcess] = set()
atexit.register(lambda: [server.stop() for server in list(_RUNNING)])

_Self = TypeVar("_Self", bound="ManagedProcess")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Sockets that hold the ports of closed_port() until the interpreter exits.
_CLOSED_PORTS: list[socket.socket] = []


def closed_port() -> int:
    """Return a TCP port on 127.0.0.1 that refuses connections, and keeps refusing them.

    A port that was merely free (:func:`free_port`) may be taken by the next server started, by
    this process or by another one (the tests run in parallel processes).  This one stays bound,
    without listening, until the interpreter exits: nothing else can bind it, and a connection to
    it is refused at once (a reset, as from a port nobody holds).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # pylint: disable=consider-using-with
    sock.bind(("127.0.0.1", 0))
    _CLOSED_PORTS.append(sock)
    return sock.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Children, grandchildren... of ``pid`` (from /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for other in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            with open(f"/proc/{other}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(other)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class ManagedProcess(abc.ABC):
    """A server process on ``port`` whose files live in ``workdir`` (both ``None`` until started)."""

    #: How error messages name an instance ("registry not started"); set by each subclass.
    _noun: str
    #: Prefix of the temp dir's name, so that a leftover one says where it came from; set by each subclass.
    _workdir_prefix: str
    #: Lower-case log phrases that mean "the port was taken": the launch is retried on another port.
    #: (Go says "address already in use", OpenSSH "Address already in use".)
    _port_in_use_markers: tuple[str, ...] = ("address already in use",)

    def __init__(self, *, startup_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.workdir: Path | None = None
        self._process: subprocess.Popen | None = None

    # ---------------------------------------------------------------- what a subclass provides

    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """File receiving the process's stdout and stderr."""

    @abc.abstractmethod
    def _check_requirements(self) -> None:
        """Raise FileNotFoundError when something the server needs is not installed."""

    def _workdir_parent(self) -> Path | None:
        """Directory to create the temp dir in (``None``: the usual temp dir)."""
        return None

    @abc.abstractmethod
    def _prepare_workdir(self) -> None:
        """Create what the server needs in the new ``workdir``, before the first launch."""

    @abc.abstractmethod
    def _write_config(self) -> None:
        """Write the config file for the current ``port`` (called again on each launch attempt)."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    @abc.abstractmethod
    def _is_ready(self) -> bool:
        """True once the server answers."""

    @abc.abstractmethod
    def _not_ready_message(self) -> str:
        """Start of the error when the server is not ready in time: ``"<what> did not answer <where>"``."""

    def _release_resources(self) -> None:
        """Free what outlives the process (client sessions, mounts...), before the temp dir is removed."""

    # ---------------------------------------------------------------- lifecycle

    def _workdir(self) -> Path:
        if self.workdir is None:
            raise RuntimeError(f"{self._noun} not started")
        return self.workdir

    def start(self: _Self) -> _Self:
        """Create the temp dir, start the server and wait until it is ready; returns ``self``."""
        if self._process is not None:
            raise RuntimeError(f"{self._noun} already started")
        self._check_requirements()
        self.workdir = Path(tempfile.mkdtemp(prefix=self._workdir_prefix, dir=self._workdir_parent()))
        _RUNNING.add(self)
        try:
            self._prepare_workdir()
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        # The port is picked before the server binds it; retry on the rare collision.
        for attempt in range(3):
            self.port = free_port()
            self._write_config()
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(  # pylint: disable=consider-using-with
                    self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )
            try:
                self._wait_ready()
                return
            except RuntimeError:
                self._terminate()
                tail = self.log_tail().lower()
                if attempt == 2 or not any(marker in tail for marker in self._port_in_use_markers):
                    raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self._process.args[0]} exited with {self._process.returncode} before answering; "
                    f"log tail:\n{self.log_tail()}"
                )
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self._not_ready_message()} within {self.startup_timeout:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM the server, SIGKILL it after ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def stop(self, *, keep_files: bool = False) -> None:
        """Stop the server and remove the temp dir unless ``keep_files``.  Safe to call twice."""
        _RUNNING.discard(self)
        self._terminate()
        self._release_resources()
        if self.workdir is not None and not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self: _Self) -> _Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` lines of the process log (for error messages)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except (OSError, RuntimeError):
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])
