"""A fake registry answering from a table: for malformed and malicious answers a real one never gives.

:class:`FakeRegistry` serves ``GET /v2/`` (200) and every path in its ``routes`` table (the path
without its query) with an :class:`Answer`; anything else gets a 404 with an OCI error body.  An
answer can announce a wrong length, close early, never end, drip, redirect...  Header values may
contain ``{base}``, replaced with the server's URL (for token realms and redirects to itself), and
``{port}``, its port (``http://localhost:{port}/...`` is the same server under another origin).
Every request is in :attr:`FakeRegistry.log`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from .httpserver import LocalServer, read_body


@dataclass(frozen=True)
class Answer:
    """One response.

    ``length``: ``"auto"`` announces ``len(body)``, an int announces that many bytes, ``None`` sends
    the body chunked (no ``Content-Length``).  ``close``: no ``Content-Length`` either, the body ends
    when the connection closes.  ``endless``: repeat ``body`` in chunks until the client goes away.
    ``drip``: send the body one byte every ``drip`` seconds.
    """

    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    length: int | str | None = "auto"
    close: bool = False
    endless: bool = False
    drip: float | None = None


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    query: str
    headers: dict
    at: float


def not_found(path: str) -> Answer:
    body = json.dumps({"errors": [{"code": "NOT_FOUND", "message": f"nothing at {path}"}]}).encode()
    return Answer(404, body, {"Content-Type": "application/json"})


class FakeRegistry(LocalServer):
    """Serves ``routes`` (``{path: Answer}``); add routes before or while it runs."""

    def __init__(self, routes: dict[str, Answer] | None = None) -> None:
        super().__init__()
        self.routes: dict[str, Answer] = dict(routes or {})
        self.log: list[FakeRequest] = []
        self.lock = threading.Lock()

    def requests(self, prefix: str = "") -> list[FakeRequest]:
        """Logged requests whose path starts with ``prefix``."""
        with self.lock:
            return [r for r in self.log if r.path.startswith(prefix)]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        path, _sep, query = handler.path.partition("?")
        with self.lock:
            self.log.append(FakeRequest(handler.command, path, query, dict(handler.headers.items()), time.monotonic()))
        read_body(handler)
        if path == "/v2/":
            answer = Answer(200, b"{}", {"Content-Type": "application/json"})
        else:
            answer = self.routes.get(path) or not_found(path)
        self._answer(handler, answer)

    def _answer(self, handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        handler.send_response(answer.status)
        for name, value in answer.headers.items():
            handler.send_header(name, value.replace("{base}", self.url).replace("{port}", str(self.port)))
        chunked = not answer.close and (answer.endless or answer.length is None)
        if answer.close:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        elif chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            announced = len(answer.body) if answer.length == "auto" else answer.length
            handler.send_header("Content-Length", str(announced))
            if announced != len(answer.body):
                handler.close_connection = True  # the connection cannot be reused after a lie
        handler.end_headers()
        if handler.command == "HEAD":
            return
        if answer.endless:
            while not self.stopping.is_set():
                self._write(handler, answer.body, chunked)
        elif answer.drip is not None:
            for byte in answer.body:
                if self.stopping.wait(answer.drip):
                    return
                self._write(handler, bytes((byte,)), chunked)
        else:
            self._write(handler, answer.body, chunked)
        if chunked and not answer.endless:
            handler.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, data: bytes, chunked: bool) -> None:
        if not data:
            return
        if chunked:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            handler.wfile.write(data)
