"""Base of the small in-process HTTP(S) servers the tests run (token server, redirecting front...).

A :class:`LocalServer` binds 127.0.0.1 on a port the kernel picks (no race with other tests),
serves each connection in its own thread, and on :meth:`~LocalServer.stop` closes every open
connection and joins every thread it started, so nothing outlives the ``with`` block.

TLS is optional.  The handshake runs in the connection's thread, not in the accept loop, so a
client that never completes it cannot block other clients.  With ``sniff_tls`` the same port
speaks both HTTP and HTTPS (the first byte of a TLS ClientHello is 0x16), which lets a test
redirect to "the same host and port, other scheme".
"""

from __future__ import annotations

import socket
import ssl
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

_Server = TypeVar("_Server", bound="LocalServer")

# A connection idle this long is dropped (keeps a forgotten keep-alive from pinning a thread).
IDLE_TIMEOUT = 30.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as registry clients expect
    timeout = IDLE_TIMEOUT

    def _dispatch(self) -> None:
        try:
            self.server.owner.handle(self)  # type: ignore[attr-defined]
        except OSError:
            raise  # the connection is gone: nothing to answer
        except Exception:  # pylint: disable=broad-exception-caught
            # A bug in a test server must show up in the test, not as a dropped connection.
            send(self, 500, traceback.format_exc().encode(), {"Connection": "close"})
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format, *args) -> None:  # pylint: disable=redefined-builtin
        pass  # servers keep their own structured request logs


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = False  # so that server_close() joins every connection thread
    block_on_close = True

    def __init__(self, owner: LocalServer) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request, client_address) -> None:
        sockets = [request]
        request.settimeout(IDLE_TIMEOUT)
        with self.lock:
            self.connections.add(request)
        try:
            # stop() sets ``stopping`` before it cuts the connections it knows of: one
            # registered after that must go by itself.
            if self.owner.stopping.is_set():
                return
            context = self.owner.tls
            if context is not None and (not self.owner.sniff_tls or request.recv(1, socket.MSG_PEEK) == b"\x16"):
                try:
                    request = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    self.owner.handshake_errors.append(str(exc))
                    return
                sockets.append(request)
                with self.lock:
                    self.connections.add(request)
            self.RequestHandlerClass(request, client_address, self)
        except OSError:
            pass  # client went away, or stop() shut the socket down
        finally:
            with self.lock:
                self.connections.difference_update(sockets)
            for sock in sockets:
                sock.close()

    def close_all_connections(self) -> None:
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LocalServer:
    """An HTTP(S) server on 127.0.0.1; a subclass implements :meth:`handle`.

    ``tls`` is a server-side :class:`ssl.SSLContext` (see :func:`tests.support.tls.server_context`).
    """

    def __init__(self, *, tls: ssl.SSLContext | None = None, sniff_tls: bool = False) -> None:
        if sniff_tls and tls is None:
            raise ValueError("sniff_tls needs a TLS context")
        self.tls = tls
        self.sniff_tls = sniff_tls
        #: TLS handshakes that failed (a client that rejected the certificate, or sent none).
        self.handshake_errors: list[str] = []
        #: Set by :meth:`stop`; long-running responses (endless bodies) poll it.
        self.stopping = threading.Event()
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one request (``handler.command``, ``handler.path``, ``handler.headers``...)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- lifecycle

    def start(self: _Server) -> _Server:
        """Bind a free port and serve in a background thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self.stopping.clear()
        self._server = _ThreadingServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{type(self).__name__}-{self.port}"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut open connections, join every thread.  Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()  # returns once serve_forever has left its loop
        server.close_all_connections()
        server.server_close()  # joins the connection threads
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ---------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return self._server.server_address[1]

    @property
    def scheme(self) -> str:
        """``https`` when a TLS context is set (with ``sniff_tls`` plain HTTP works too)."""
        return "https" if self.tls is not None else "http"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL without trailing slash."""
        return f"{self.scheme}://{self.host}"


def request_scheme(handler: BaseHTTPRequestHandler) -> str:
    """``https`` when ``handler``'s connection is TLS, else ``http``."""
    return "https" if isinstance(handler.connection, ssl.SSLSocket) else "http"


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Read the request body (Content-Length or chunked)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None) -> None:
    """Send a complete response (no body on HEAD; Content-Length always set)."""
    handler.send_response(status)
    headers = dict(headers or {})
    headers.setdefault("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    if body and handler.command != "HEAD":
        handler.wfile.write(body)
