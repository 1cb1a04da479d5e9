"""A TCP forwarder that cuts connections: a flaky link between a client (Ansible's ``ssh``) and a server.

:class:`CuttingProxy` listens on 127.0.0.1 (a free port) and forwards every connection it accepts
to ``target`` in both directions, byte for byte, until the fault it is armed with hits:

* ``cut_after=N``: once a connection has carried ``N`` bytes from the client to the server (the
  ``N``-th byte is forwarded, nothing after it), both of its sockets are closed abruptly, with
  ``SO_LINGER`` 0: each side gets a reset (RST), not an end of file.  ``cut_after=None``: never.
* ``cuts``: how many connections the fault hits; later ones pass untouched.  ``None``: every one.
  With several connections open at once, the cuts go to whichever reach their threshold first.
  A connection counts from when it opened or from the last :meth:`~CuttingProxy.arm` that set
  ``cut_after`` or ``cuts``, whichever is later.
* ``stall=True``: a hit connection freezes instead (the proxy stops reading from both sides, so
  each side sees silence, like a link that drops every packet) until :meth:`release_stalled` or
  :meth:`stop` resets it.
* ``rate``: bytes per second from client to server, per connection (a slow uplink).

:meth:`CuttingProxy.arm` re-arms a running proxy: a new ``cut_after`` counts from that moment on
connections already open (they start again from zero) as on new ones, and ``cuts`` is a new
allowance.  So a test can let the set-up through and then say "cut the link after 100 kB more".

What it records (thread-safe; :attr:`CuttingProxy.connections` returns copies): per connection a
:class:`ConnectionStats` (bytes each way, whether cut or stalled, whether closed), and the totals
:attr:`~CuttingProxy.bytes_up`, :attr:`~CuttingProxy.bytes_down`, :attr:`~CuttingProxy.cuts_done`
(connections hit, stalls included).  ``bytes_up`` counts what the proxy handed to the server's
socket: after a cut, the server may have read a little less (the reset drops what its kernel had
not delivered yet).  A cut is counted before the sockets close, so once the client has seen its
reset, the counters show it.

Ansible's ``ssh`` connection and ControlPersist: Ansible runs every command of a host through one
ssh *master* process (``ControlMaster=auto``, ``ControlPersist=60s``), which holds **one** TCP
connection through the proxy for all of them.  A cut therefore kills the master and fails the
command in flight (ssh exits 255: Ansible says "unreachable", or retries it when
``ansible_ssh_retries`` allows).  The next command finds no master, starts a new one, and with it a
new TCP connection: a new entry in :attr:`~CuttingProxy.connections`, cut or not depending on
the cuts left.  Bytes counted per connection therefore include the SSH handshake (a few kB)
and every command before the one in flight; :meth:`~CuttingProxy.arm` while the master is open
counts from that point instead.  Ansible's default ``ssh_args`` also turn on compression (``-C``):
the proxy counts compressed bytes, so a cut meant to land inside a file transfer needs data
that does not compress (random bytes, or their base64).
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from dataclasses import dataclass

__all__ = ["ConnectionStats", "CuttingProxy"]

_CHUNK = 64 * 1024
#: How often blocked socket calls look at the stop / abort flags (seconds).
_POLL = 0.1
_UNSET = object()


@dataclass
class ConnectionStats:
    """One accepted connection, in accept order (``index`` from 0)."""

    index: int
    peer: tuple[str, int]
    #: Bytes forwarded client -> server / server -> client (since the last reset_counters()).
    bytes_up: int = 0
    bytes_down: int = 0
    #: The fault hit it: closed with resets, or (``stalled``) frozen.
    cut: bool = False
    stalled: bool = False
    #: Both directions are over and the sockets are closed.
    closed: bool = False
    #: Why it never reached the target (connection refused...), else None.
    error: str | None = None


class _Link:  # pylint: disable=too-few-public-methods
    """The proxy's state for one connection; fields are guarded by the proxy's lock."""

    def __init__(self, stats: ConnectionStats, client: socket.socket) -> None:
        self.stats = stats
        self.client = client
        self.server: socket.socket | None = None
        self.baseline = 0  # stats.bytes_up when the current cut_after started counting
        self.aborted = False  # sockets are being reset: pumps stop touching them
        self.unstall = threading.Event()
        self.pumps_left = 2


class CuttingProxy:  # pylint: disable=too-many-instance-attributes
    """A TCP forwarder on ``host``:``port`` (``port=0``: a free one) in front of ``target`` = (host, port).

    See the module docstring for ``cut_after``, ``cuts``, ``rate`` and ``stall``.  Use as a context
    manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        target: tuple[str, int],
        *,
        cut_after: int | None = None,
        cuts: int | None = 1,
        rate: float | None = None,
        stall: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target = (target[0], int(target[1]))
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._next_index = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._cuts_done = 0
        self._cut_after: int | None = None
        self._cuts: int | None = cuts
        self._cuts_left: int | None = cuts
        self._rate: float | None = None
        self._stall = False
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []  # guarded by _lock
        self.arm(cut_after=cut_after, cuts=cuts, rate=rate, stall=stall)

    # ---------------------------------------------------------------- configuration

    def arm(self, *, cut_after=_UNSET, cuts=_UNSET, rate=_UNSET, stall=_UNSET) -> None:
        """Change the fault, running or not; arguments left out keep their value.

        Giving ``cut_after`` or ``cuts`` starts a new round: ``cuts`` more connections will be hit
        (``None``: all), and each open connection counts its ``cut_after`` bytes from now.
        ``arm(cut_after=None)`` disarms.  ``rate`` and ``stall`` apply from the next chunk on.
        """
        with self._lock:
            if cut_after is not _UNSET:
                if cut_after is not None and cut_after < 0:
                    raise ValueError(f"cut_after must be >= 0 or None, not {cut_after!r}")
                self._cut_after = cut_after
            if cuts is not _UNSET:
                if cuts is not None and cuts < 0:
                    raise ValueError(f"cuts must be >= 0 or None, not {cuts!r}")
                self._cuts = cuts
            if cut_after is not _UNSET or cuts is not _UNSET:
                self._cuts_left = self._cuts
                for link in self._links:
                    link.baseline = link.stats.bytes_up
            if rate is not _UNSET:
                if rate is not None and rate <= 0:
                    raise ValueError(f"rate must be > 0 or None, not {rate!r}")
                self._rate = rate
            if stall is not _UNSET:
                self._stall = bool(stall)

    @property
    def cut_after(self) -> int | None:
        """The current threshold (``None``: disarmed)."""
        return self._cut_after

    @property
    def cuts_left(self) -> int | None:
        """Connections the current round may still hit (``None``: unlimited)."""
        with self._lock:
            return self._cuts_left

    # ---------------------------------------------------------------- counters

    @property
    def connections(self) -> list[ConnectionStats]:
        """A snapshot of every connection since the last :meth:`reset_counters`, in accept order."""
        with self._lock:
            return [dataclasses.replace(link.stats) for link in self._links]

    @property
    def bytes_up(self) -> int:
        """Bytes forwarded client -> server, all connections together."""
        with self._lock:
            return self._bytes_up

    @property
    def bytes_down(self) -> int:
        """Bytes forwarded server -> client, all connections together."""
        with self._lock:
            return self._bytes_down

    @property
    def cuts_done(self) -> int:
        """Connections the fault has hit (cut, or stalled in stall mode)."""
        with self._lock:
            return self._cuts_done

    def reset_counters(self) -> None:
        """Zero the totals, forget closed connections, zero the counters of open ones (which stay
        listed).  The fault's configuration and allowance are unchanged."""
        with self._lock:
            self._links = [link for link in self._links if not link.stats.closed]
            for link in self._links:
                link.stats.bytes_up = link.stats.bytes_down = 0
                link.baseline = 0
            self._bytes_up = self._bytes_down = self._cuts_done = 0

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every connection accepted so far is closed (stalled ones never are); raises
        TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                open_links = [link.stats.index for link in self._links if not link.stats.closed]
            if not open_links:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"connections {open_links} still open after {timeout} s")
            time.sleep(0.01)

    # ---------------------------------------------------------------- lifecycle

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect: ``(host, port)``."""
        if self.port is None:
            raise RuntimeError("proxy not started")
        return (self.host, self.port)

    def start(self) -> CuttingProxy:
        """Listen and start accepting; returns ``self``."""
        if self._listener is not None:
            raise RuntimeError("proxy already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(64)
        listener.settimeout(_POLL)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._stopping.clear()
        self._spawn(self._accept_loop, "accept")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, reset every open connection (stalled ones too), wait for the threads.
        Safe to call twice."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            links = list(self._links)
        for link in links:
            self._abort(link)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                alive = [thread for thread in self._threads if thread.is_alive()]
                self._threads = alive
            if not alive:
                break
            alive[0].join(max(0.0, deadline - time.monotonic()))

    def release_stalled(self) -> int:
        """Reset the stalled connections (the frozen link comes back dead); returns how many."""
        with self._lock:
            stalled = [link for link in self._links if link.stats.stalled and not link.stats.closed]
        for link in stalled:
            self._abort(link)
        return len(stalled)

    def __enter__(self) -> CuttingProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"CuttingProxy({self.host}:{self.port} -> {self.target[0]}:{self.target[1]},"
            f" cut_after={self._cut_after}, cuts_left={self._cuts_left}, cuts_done={self._cuts_done})"
        )

    # ---------------------------------------------------------------- the threads

    def _spawn(self, target, name: str, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=f"cutting-proxy-{name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping.is_set():
            try:
                client, peer = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # closed by stop()
            with self._lock:
                link = _Link(ConnectionStats(index=self._next_index, peer=peer[:2]), client)
                self._next_index += 1
                self._links.append(link)
            self._spawn(self._connect, f"conn{link.stats.index}", link)

    def _connect(self, link: _Link) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError as exc:
            with self._lock:
                link.stats.error = f"{type(exc).__name__}: {exc}"
                link.pumps_left = 1
            self._abort(link)
            self._pump_done(link)
            return
        link.client.settimeout(_POLL)
        server.settimeout(_POLL)
        with self._lock:
            link.server = server
            aborted = link.aborted
        if aborted:  # stop() came first: _abort() did not see this socket
            _reset(server)
        self._spawn(self._pump, f"conn{link.stats.index}-down", link, False)
        self._pump(link, True)

    def _pump(self, link: _Link, up: bool) -> None:
        """Forward client -> server (``up``) or server -> client until EOF, an error or a fault."""
        source, sink = (link.client, link.server) if up else (link.server, link.client)
        started, sent_total = time.monotonic(), 0
        try:
            while not self._stopping.is_set() and not link.aborted:
                if link.stats.stalled:
                    self._wait_unstall(link)
                    return
                rate = self._rate if up else None
                size = _CHUNK if rate is None else max(1, min(_CHUNK, int(rate / 20)))
                try:
                    data = source.recv(size)
                except socket.timeout:
                    continue
                with self._lock:
                    if link.aborted:
                        return
                    if link.stats.stalled:  # frozen while this chunk came in: it goes nowhere
                        continue
                    if not data:  # end of file: pass the half-close on
                        _quietly(sink.shutdown, socket.SHUT_WR)
                        return
                    hit = False
                    if up and self._cut_after is not None:
                        allowed = self._cut_after - (link.stats.bytes_up - link.baseline)
                        if len(data) >= allowed and (self._cuts_left is None or self._cuts_left > 0):
                            hit, data = True, data[: max(0, allowed)]
                            if self._cuts_left is not None:
                                self._cuts_left -= 1
                            # A stall freezes the other direction at once; a cut follows the last bytes.
                            link.stats.stalled = self._stall
                if not self._send(link, sink, data, up):
                    return
                if hit:
                    with self._lock:
                        link.stats.cut = True
                        self._cuts_done += 1
                    if link.stats.stalled:
                        self._wait_unstall(link)
                    else:
                        self._abort(link)
                    return
                if rate is not None:
                    sent_total += len(data)
                    delay = started + sent_total / rate - time.monotonic()
                    if delay > 0 and self._stopping.wait(delay):
                        return
        except OSError:
            self._abort(link)  # one side reset or vanished: so does the other
        finally:
            self._pump_done(link)

    def _send(self, link: _Link, sink: socket.socket, data: bytes, up: bool) -> bool:
        """Write ``data`` to ``sink``, counting as it goes; False when the link was aborted meanwhile."""
        view = memoryview(data)
        while view:
            if link.aborted:
                return False
            try:
                sent = sink.send(view)
            except socket.timeout:
                if link.aborted or self._stopping.is_set():
                    return False
                continue
            view = view[sent:]
            with self._lock:
                if up:
                    link.stats.bytes_up += sent
                    self._bytes_up += sent
                else:
                    link.stats.bytes_down += sent
                    self._bytes_down += sent
        return True

    def _wait_unstall(self, link: _Link) -> None:
        while not link.unstall.wait(_POLL):
            if self._stopping.is_set():
                break
        self._abort(link)

    def _abort(self, link: _Link) -> None:
        """Reset both sockets of ``link``: SO_LINGER 0, so closing them sends RST.  The pumps notice
        (their recv returns or times out) and the last one closes the sockets."""
        with self._lock:
            if link.aborted:
                return
            link.aborted = True
            sockets = [s for s in (link.client, link.server) if s is not None]
        link.unstall.set()
        for sock in sockets:
            _reset(sock)

    def _pump_done(self, link: _Link) -> None:
        with self._lock:
            link.pumps_left -= 1
            if link.pumps_left > 0:
                return
            sockets = [s for s in (link.client, link.server) if s is not None]
        for sock in sockets:
            _quietly(sock.close)
        with self._lock:
            link.stats.closed = True


def _reset(sock: socket.socket) -> None:
    """Make closing ``sock`` send RST (SO_LINGER 0) and wake a thread blocked in its recv()
    (shutdown for reading sends nothing)."""
    _quietly(sock.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _quietly(sock.shutdown, socket.SHUT_RD)


def _quietly(call, *args) -> None:
    try:
        call(*args)
    except OSError:
        pass
