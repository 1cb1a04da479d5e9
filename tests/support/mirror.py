"""Registry mirrors for tests: a pull-through cache in front of a Registry, and addresses that fail.

Distribution in proxy mode (``proxy: remoteurl``) fetches what it does not have from the upstream
on first request and keeps it; it refuses pushes.  With ``username``/``password`` it logs in to the
upstream (Basic or token, whichever the upstream's challenge asks for).
"""

from __future__ import annotations

import socket

from .process import closed_port
from .registry import Registry, deep_merge


def pull_through_mirror(
    upstream: Registry, *, username: str | None = None, password: str | None = None, **kwargs
) -> Registry:
    """An unstarted Registry caching ``upstream``; other keyword arguments go to :class:`Registry`.

    An HTTPS upstream must be trusted by the mirror's Go TLS stack: system CAs, or the file named
    by ``SSL_CERT_FILE`` in the environment the mirror is started with.
    """
    proxy = {"remoteurl": upstream.url}
    if username is not None:
        proxy.update(username=username, password=password or "")
    return Registry(extra_config=deep_merge({"proxy": proxy}, kwargs.pop("extra_config", {})), **kwargs)


def dead_address() -> str:
    """``127.0.0.1:PORT`` where nothing listens: connecting is refused at once (see :func:`closed_port`)."""
    return f"127.0.0.1:{closed_port()}"


class BlackHole:
    """A port that accepts TCP connections (the kernel completes the handshake) but never answers.

    For timeout tests: a client connects fine, then waits forever for a response.
    """

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self.port: int | None = None

    def __enter__(self) -> BlackHole:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)  # never accept(): connections wait in the backlog
        self.port = self._socket.getsockname()[1]
        return self

    def __exit__(self, *exc_info) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"
