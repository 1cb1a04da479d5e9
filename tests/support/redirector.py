"""A front for a Registry that answers blob downloads with redirects, logging every request's headers.

The :class:`Redirector` is a reverse proxy: each request goes to the registry with its headers
(``Authorization`` included) and the answer comes back unchanged, except for blob GET/HEAD
requests that the registry would answer with 200: those get a redirect instead, the way
registries with an object-store backend send clients to S3 or a CDN.  Where the redirect
points depends on ``mode``:

* ``store``: a :class:`BlobStore` on another port (another origin), ``hops`` redirects in total;
* ``same-origin``: this front itself (a redirect that *may* keep Authorization);
* ``other-scheme``: this very host and port with the other scheme (needs ``tls``; the front
  speaks both);
* ``loop``: front -> store -> front -> ... without end.

``target_host="localhost"`` makes the redirect name another host for the same machine.  The blob
bytes come from the registry's storage directory, so the store needs no credentials.  Every
request to the front and the store is in :attr:`Redirector.log` with all its headers: assert
that no ``Authorization`` reached the store (and, with a store context that asks for one, which
client certificate it was offered).
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from .httpserver import LocalServer, read_body, request_scheme, send
from .registry import Registry

_BLOB = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
# Paths the front and the store serve themselves: /_blobs/<digest>, /hop/<n>/<digest>, /loop/<n>/<digest>
_OWN = re.compile(r"^/(?P<kind>_blobs|hop|loop)/(?:(?P<n>\d+)/)?(?P<digest>sha256:[0-9a-f]{64})$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}
MODES = ("store", "same-origin", "other-scheme", "loop")


@dataclass(frozen=True)
class SeenRequest:
    """A request received by the front or the store."""

    origin: str  # "front" or "store"
    scheme: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    client_certificate: str | None = None  # the common name of a TLS client certificate presented

    @property
    def authorization(self) -> str | None:
        """The Authorization header, if one was sent."""
        return next((v for k, v in self.headers.items() if k.lower() == "authorization"), None)


class _Recorder(LocalServer):
    """Shared by the front and the store: log the request, then let the Redirector answer."""

    def __init__(self, owner: Redirector, origin: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.owner = owner
        self.origin = origin

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        path, _sep, query = handler.path.partition("?")
        seen = SeenRequest(
            self.origin,
            request_scheme(handler),
            handler.command,
            path,
            query,
            dict(handler.headers.items()),
            client_certificate_name(handler),
        )
        with self.owner.lock:
            self.owner.log.append(seen)
        self.owner.answer(self, handler, seen)


def client_certificate_name(handler: BaseHTTPRequestHandler) -> str | None:
    """The common name of the client certificate the connection presented (needs a server
    context that asks for one, see PKI.server_context), or None."""
    connection = handler.connection
    peer = connection.getpeercert() if isinstance(connection, ssl.SSLSocket) else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


class BlobStore(_Recorder):
    """The redirect target on its own port (created and run by a :class:`Redirector`)."""


class Redirector:  # pylint: disable=too-many-instance-attributes
    """Reverse proxy in front of ``registry`` redirecting blob downloads; a context manager.

    ``tls`` / ``store_tls``: server contexts for the front / the store (None: plain HTTP).
    ``status``: the redirect status (301, 302, 303, 307, 308).
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        registry: Registry,
        *,
        mode: str = "store",
        hops: int = 1,
        status: int = 307,
        target_host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        store_tls: ssl.SSLContext | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "other-scheme" and tls is None:
            raise ValueError("mode other-scheme needs tls (the front then speaks HTTP and HTTPS on one port)")
        self.registry = registry
        self.mode = mode
        self.hops = hops
        self.status = status
        self.target_host = target_host
        self.log: list[SeenRequest] = []
        self.lock = threading.Lock()
        self.front = _Recorder(self, "front", tls=tls, sniff_tls=mode == "other-scheme")
        self.store = BlobStore(self, "store", tls=store_tls)

    # ---------------------------------------------------------------- lifecycle and addresses

    def start(self) -> Redirector:
        """Start the store and the front."""
        self.store.start()
        try:
            self.front.start()
        except BaseException:
            self.store.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers."""
        self.front.stop()
        self.store.stop()

    def __enter__(self) -> Redirector:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The front's base URL: use it instead of the registry's."""
        return self.front.url

    @property
    def host(self) -> str:
        """The front's ``127.0.0.1:PORT``, for image references."""
        return self.front.host

    def requests_to(self, origin: str) -> list[SeenRequest]:
        """Logged requests to ``front`` or ``store``."""
        with self.lock:
            return [seen for seen in self.log if seen.origin == origin]

    # ---------------------------------------------------------------- answers

    def answer(self, server: _Recorder, handler: BaseHTTPRequestHandler, seen: SeenRequest) -> None:
        """Answer ``seen``, received by ``server`` (the front or the store)."""
        own = _OWN.match(seen.path)
        if own:
            self._own_path(server, handler, own.group("kind"), int(own.group("n") or 0), own.group("digest"))
            return
        if server is self.store:
            send(handler, 404)
            return
        status, headers, body = self._forward(handler, seen)
        blob = _BLOB.match(seen.path)
        if blob and seen.method in ("GET", "HEAD") and status == 200:
            self._redirect(handler, self._first_target(blob.group("digest"), seen.scheme))
            return
        send(handler, status, body, headers)

    def _first_target(self, digest: str, scheme: str) -> str:
        if self.mode == "same-origin":
            return f"{scheme}://{self.front.host}/_blobs/{digest}"
        if self.mode == "other-scheme":
            other = "http" if scheme == "https" else "https"
            return f"{other}://{self.target_host}:{self.front.port}/_blobs/{digest}"
        kind = "loop" if self.mode == "loop" else "hop"
        return f"{self._store_base()}/{kind}/1/{digest}"

    def _store_base(self) -> str:
        return f"{self.store.scheme}://{self.target_host}:{self.store.port}"

    def _own_path(self, server: _Recorder, handler: BaseHTTPRequestHandler, kind: str, hop: int, digest: str) -> None:
        if kind == "loop":  # store -> front -> store ..., each hop on the other server
            other = self.front if server is self.store else self.store
            self._redirect(handler, f"{other.scheme}://{self.target_host}:{other.port}/loop/{hop + 1}/{digest}")
        elif kind == "hop" and hop < self.hops:
            self._redirect(handler, f"{self._store_base()}/hop/{hop + 1}/{digest}")
        else:
            self._serve_blob(handler, digest)

    def _redirect(self, handler: BaseHTTPRequestHandler, location: str) -> None:
        send(handler, self.status, b"", {"Location": location})

    def _serve_blob(self, handler: BaseHTTPRequestHandler, digest: str) -> None:
        try:
            data = self.registry.blob_data_path(digest).read_bytes()
        except OSError:
            send(handler, 404, b"blob unknown")
            return
        send(handler, 200, data, {"Content-Type": "application/octet-stream"})

    def _forward(self, handler: BaseHTTPRequestHandler, seen: SeenRequest) -> tuple[int, dict, bytes]:
        """Send the request to the registry; return its status, headers and body."""
        body = read_body(handler)
        headers = {k: v for k, v in seen.headers.items() if k.lower() not in _HOP_BY_HOP}
        # Host stays the front's, so the registry's Location headers point back here.
        headers["X-Forwarded-Proto"] = seen.scheme
        if body or seen.method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        upstream = urlsplit(self.registry.url)
        if upstream.scheme == "https":
            context = ssl.create_default_context(
                cafile=self.registry.verify if isinstance(self.registry.verify, str) else None
            )
            if self.registry.verify is False:
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            if self.registry.session.cert:  # a mutual-TLS registry: present the test-side client cert
                context.load_cert_chain(*self.registry.session.cert)
            connection = http.client.HTTPSConnection(upstream.hostname, upstream.port, context=context, timeout=30)
        else:
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        try:
            target = seen.path + (f"?{seen.query}" if seen.query else "")
            connection.request(seen.method, target, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
            if seen.method == "HEAD":  # keep the size the registry announced
                out["Content-Length"] = response.getheader("Content-Length", "0")
            return response.status, out, data
        finally:
            connection.close()
