"""A reverse proxy in front of a :class:`~tests.support.registry.Registry` that injects faults.

Every request goes to the registry with its headers and the answer comes back unchanged, except
for requests that match a :class:`Fault`: the first ``times`` requests (``None``: every one) whose
method and path match get the fault instead, in the order the faults were added (the first
matching fault with uses left wins).  What a fault does (``action``):

* ``status``: answer ``status`` (503, 429, 404...) without asking the registry, with a
  ``Retry-After: <retry_after>`` header when one is given;
* ``reset``: send the headers and ``after`` body bytes, give the client ``settle`` seconds to read
  them, then reset the connection (RST, not a clean close);
* ``truncate``: send the headers (the full ``Content-Length``) and ``after`` body bytes, then close
  the connection cleanly;
* ``flip``: send the whole body with the bytes at the offsets in ``flip`` inverted (same length);
* ``stall``: send ``after`` body bytes, then nothing for ``seconds`` (longer than the client's
  timeout), then close;
* ``drip``: send ``after`` body bytes, then one byte every ``seconds`` until the body is done;
* ``ignore-range``: forward the request without its ``Range`` header, so the registry (which
  honours Range) answers 200 with the whole blob;
* ``pass``: forward unchanged (with ``rate``, a throttle).

``rate`` (bytes per second) throttles the body of a forwarded answer, whatever the action.
Without a matching fault ``Range`` goes through to the registry, which answers 206.

Every request is in :attr:`FaultProxy.log` (method, path, ``Range`` header, status sent, fault
applied, body bytes sent, arrival and end times) for assertions.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from .httpserver import LocalServer, read_body, send
from .registry import Registry

#: Path patterns (``re.search`` on the path without its query) for :class:`Fault`.
BLOB_PATH = r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$"
MANIFEST_PATH = r"^/v2/.+/manifests/[^/]+$"

ACTIONS = ("pass", "status", "reset", "truncate", "flip", "stall", "drip", "ignore-range")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}
_CHUNK = 64 * 1024


def blob_path(repo: str, digest: str) -> str:
    """The path pattern of the blob ``digest`` of ``repo``."""
    return "^" + re.escape(f"/v2/{repo}/blobs/{digest}") + "$"


def manifest_path(repo: str, reference: str | None = None) -> str:
    """The path pattern of manifest ``reference`` of ``repo`` (every manifest when ``None``)."""
    if reference is None:
        return "^" + re.escape(f"/v2/{repo}/manifests/") + "[^/]+$"
    return "^" + re.escape(f"/v2/{repo}/manifests/{reference}") + "$"


@dataclass
class Fault:  # pylint: disable=too-many-instance-attributes
    """What to do to the first ``times`` requests matching ``method`` and ``path`` (a regex)."""

    action: str
    path: str = BLOB_PATH
    method: str | None = "GET"
    times: int | None = 1
    after: int = 0
    status: int = 503
    retry_after: str | None = None
    flip: tuple[int, ...] = (0,)
    seconds: float = 5.0
    settle: float = 0.3
    rate: float | None = None
    used: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {self.action!r}")

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        return (self.method is None or self.method == method) and re.search(self.path, path) is not None


@dataclass
class ProxiedRequest:  # pylint: disable=too-many-instance-attributes
    """One request the proxy received, and what it answered."""

    method: str
    path: str
    query: str
    range: str | None
    started: float  # time.monotonic() at arrival
    action: str | None = None  # the fault applied, None when forwarded untouched
    status: int | None = None  # the status sent to the client
    body_bytes: int = 0  # body bytes sent to the client
    finished: float | None = None

    @property
    def is_blob(self) -> bool:
        return re.search(BLOB_PATH, self.path) is not None

    @property
    def is_manifest(self) -> bool:
        return re.search(MANIFEST_PATH, self.path) is not None


class FaultProxy(LocalServer):
    """The proxy; a context manager.  Add faults with :meth:`add` (also while it runs)."""

    def __init__(self, registry: Registry, faults=()) -> None:
        super().__init__()
        self.registry = registry
        self.faults: list[Fault] = list(faults)
        self.log: list[ProxiedRequest] = []
        self.lock = threading.Lock()

    def add(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        """Forget every fault and the log."""
        with self.lock:
            self.faults.clear()
            self.log.clear()

    # ---------------------------------------------------------------- the log

    def requests(self, path: str | None = None, method: str | None = "GET") -> list[ProxiedRequest]:
        """Logged requests whose path matches the regex ``path`` (every one when ``None``), oldest first."""
        with self.lock:
            entries = list(self.log)
        return [
            e for e in entries if (method is None or e.method == method) and (path is None or re.search(path, e.path))
        ]

    def blob_requests(self, repo: str, digest: str) -> list[ProxiedRequest]:
        """GETs of blob ``digest`` of ``repo``."""
        return self.requests(blob_path(repo, digest))

    # ---------------------------------------------------------------- answers

    def _take(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.used += 1
                    return fault
        return None

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        path, _sep, query = handler.path.partition("?")
        entry = ProxiedRequest(handler.command, path, query, handler.headers.get("Range"), time.monotonic())
        fault = self._take(handler.command, path)
        entry.action = fault.action if fault is not None else None
        with self.lock:
            self.log.append(entry)
        try:
            if fault is not None and fault.action == "status":
                self._status(handler, entry, fault)
            else:
                self._forward(handler, entry, fault)
        finally:
            entry.finished = time.monotonic()

    def _status(self, handler: BaseHTTPRequestHandler, entry: ProxiedRequest, fault: Fault) -> None:
        read_body(handler)
        body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": f"injected HTTP {fault.status}"}]}).encode()
        headers = {"Content-Type": "application/json"}
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        entry.status = fault.status
        send(handler, fault.status, body, headers)
        entry.body_bytes = len(body) if handler.command != "HEAD" else 0

    def _forward(self, handler: BaseHTTPRequestHandler, entry: ProxiedRequest, fault: Fault | None) -> None:
        body = read_body(handler)
        dropped = set(_HOP_BY_HOP)
        if fault is not None and fault.action == "ignore-range":
            dropped |= {"range", "if-range"}
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in dropped}
        if body or handler.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        upstream = urlsplit(self.registry.url)
        if upstream.scheme != "http":
            raise ValueError("the fault proxy fronts plain-HTTP registries only")
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        try:
            target = entry.path + (f"?{entry.query}" if entry.query else "")
            connection.request(handler.command, target, body=body or None, headers=headers)
            response = connection.getresponse()
            out = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            if handler.command == "HEAD" or response.status in (204, 304):
                self._start(handler, entry, response.status, out)
                return
            if response.getheader("Content-Length") is None:  # not seen from Distribution; buffer to announce one
                data = response.read()
                out.append(("Content-Length", str(len(data))))
                chunks = iter([data])
            else:
                chunks = iter(lambda: response.read(_CHUNK), b"")
            self._start(handler, entry, response.status, out)
            self._body(handler, entry, fault, chunks)
        finally:
            connection.close()

    @staticmethod
    def _start(handler: BaseHTTPRequestHandler, entry: ProxiedRequest, status: int, headers) -> None:
        entry.status = status
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.end_headers()

    def _body(self, handler: BaseHTTPRequestHandler, entry: ProxiedRequest, fault: Fault | None, chunks) -> None:
        """Stream the body, doing the fault's action on the way."""
        action = fault.action if fault is not None else "pass"
        rate = fault.rate if fault is not None else None
        cut = fault.after if action in ("reset", "truncate", "stall", "drip") else None
        flips = set(fault.flip) if action == "flip" else set()
        started = time.monotonic()
        for chunk in chunks:
            if flips:
                chunk = bytearray(chunk)
                for offset in [o for o in flips if entry.body_bytes <= o < entry.body_bytes + len(chunk)]:
                    chunk[offset - entry.body_bytes] ^= 0xFF
                chunk = bytes(chunk)
            if cut is not None and entry.body_bytes + len(chunk) >= cut:
                head, rest = chunk[: cut - entry.body_bytes], chunk[cut - entry.body_bytes :]
                self._write(handler, entry, head)
                self._cut(handler, entry, fault, rest, chunks)
                return
            self._write(handler, entry, chunk, rate, started)

    def _cut(self, handler: BaseHTTPRequestHandler, entry: ProxiedRequest, fault: Fault, rest: bytes, chunks) -> None:
        """The body has reached ``fault.after`` bytes: reset, close, stall or drip from here."""
        handler.close_connection = True
        handler.wfile.flush()
        if fault.action == "reset":
            self.stopping.wait(fault.settle)  # let the client read what was sent: an RST drops unread data
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif fault.action == "stall":
            self.stopping.wait(fault.seconds)
        elif fault.action == "drip":
            for chunk in [rest, *chunks]:
                for byte in chunk:
                    if self.stopping.wait(fault.seconds):
                        return
                    self._write(handler, entry, bytes((byte,)))
        # truncate: just close (cleanly) with the body short of its Content-Length

    def _write(
        self,
        handler: BaseHTTPRequestHandler,
        entry: ProxiedRequest,
        data: bytes,
        rate: float | None = None,
        started: float = 0.0,
    ) -> None:
        if not data:
            return
        handler.wfile.write(data)
        entry.body_bytes += len(data)
        if rate:
            ahead = started + entry.body_bytes / rate - time.monotonic()
            if ahead > 0:
                self.stopping.wait(ahead)
