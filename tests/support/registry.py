"""A real CNCF Distribution registry (Debian's ``docker-registry``) for tests.

Distribution writes two logs, both captured in one file (``log_path``):

* the access log, Apache combined format, on **stdout**, one line per request including failed
  ones (401, 404...).  Go's stdout is unbuffered and each line is one ``write()``, so a line is in
  the file as soon as it is written.  The logging handler wraps the whole server and writes the
  line when the request handler returns, so in principle a client may have read a large response
  before its line exists (not seen in practice: 0 misses in 50 immediate reads after 5 MiB blob
  GETs).  :meth:`Registry.sync` rules it out: it sends a marker request, waits for its line, then
  for the file to stop growing.  ``access_log()``, ``mark()`` and friends call it for you.
* the application log (logrus ``key=value`` lines) on **stderr**; only useful for debugging.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests
import yaml

from .process import ManagedProcess, free_port

# free_port is defined in .process; tests import it from here too.
__all__ = [
    "DEFAULT_BINARY",
    "AccessLogEntry",
    "Registry",
    "deep_merge",
    "free_port",
    "parse_access_log",
    "sha256_digest",
]

#: Debian's build of Distribution 2.8.2; another ``registry`` binary can be named in the environment.
DEFAULT_BINARY = os.environ.get("KUBESOLO_TEST_REGISTRY_BIN", "/usr/bin/docker-registry")

# 127.0.0.1 - - [29/Nov/2026:23:38:30 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_RE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) (?P<size>\d+|-)'
    r'(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?'
)
_BLOB_RE = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<ref>sha256:[0-9a-f]{64})$")
_MANIFEST_RE = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")
_UPLOAD_RE = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/(?P<ref>[^/]*)$")
_TAGS_RE = re.compile(r"^/v2/(?P<repo>.+)/tags/list$")
_SYNC_PARAM = "harness-sync"


def sha256_digest(data: bytes) -> str:
    """Return the OCI digest string (``sha256:<hex>``) of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def deep_merge(base: dict, extra: dict) -> dict:
    """Return a copy of ``base`` with ``extra`` merged in recursively (``extra`` wins)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class AccessLogEntry:
    """One access-log line: request method, path (without query), query, status, size."""

    method: str
    path: str
    query: str
    status: int
    size: int
    user_agent: str
    line: str

    @property
    def kind(self) -> str:
        """``blob``, ``upload``, ``manifest``, ``tags``, ``base`` (``/v2/``) or ``other``."""
        if self.path == "/v2/":
            return "base"
        for kind, regex in (("upload", _UPLOAD_RE), ("blob", _BLOB_RE), ("manifest", _MANIFEST_RE), ("tags", _TAGS_RE)):
            if regex.match(self.path):
                return kind
        return "other"

    @property
    def repo(self) -> str | None:
        """Repository name the request addressed, if any."""
        for regex in (_UPLOAD_RE, _BLOB_RE, _MANIFEST_RE, _TAGS_RE):
            match = regex.match(self.path)
            if match:
                return match.group("repo")
        return None

    @property
    def reference(self) -> str | None:
        """Digest of a blob request, tag or digest of a manifest request."""
        for regex in (_BLOB_RE, _MANIFEST_RE):
            match = regex.match(self.path)
            if match:
                return match.group("ref")
        return None


def parse_access_log(text: str) -> list[AccessLogEntry]:
    """Parse the access-log lines in ``text``; every other line is skipped."""
    entries = []
    for line in text.splitlines():
        match = _ACCESS_RE.search(line)
        if not match:
            continue
        path, _sep, query = match.group("uri").partition("?")
        size = match.group("size")
        entries.append(
            AccessLogEntry(
                method=match.group("method"),
                path=path,
                query=query,
                status=int(match.group("status")),
                size=0 if size == "-" else int(size),
                user_agent=match.group("agent") or "",
                line=line,
            )
        )
    return entries


class Registry(ManagedProcess):
    """A Distribution registry process on 127.0.0.1 with its own temporary storage.

    ``extra_config`` is deep-merged into the generated config (htpasswd auth, TLS certificate...).
    ``scheme`` must match it (``https`` when ``http.tls`` is configured).  ``auth`` and ``verify``
    are what the test-side helpers (``push_*``, ``request``) use to talk to it.
    """

    _noun = "registry"
    _workdir_prefix = "kubesolo-fleet-registry-"

    def __init__(
        self,
        *,
        extra_config: dict | None = None,
        scheme: str = "http",
        auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        binary: str = DEFAULT_BINARY,
        startup_timeout: float = 15.0,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, not {scheme!r}")
        super().__init__(startup_timeout=startup_timeout)
        self.extra_config = extra_config or {}
        self.scheme = scheme
        self.auth = auth
        self.verify = verify
        self.binary = binary
        self.config: dict = {}
        self._session: requests.Session | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as used in image references."""
        if self.port is None:
            raise RuntimeError("registry not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"{self.scheme}://{self.host}"

    @property
    def storage_dir(self) -> Path:
        """Root directory of the filesystem storage driver."""
        return self._workdir() / "storage"

    @property
    def log_path(self) -> Path:
        """File receiving the process's stdout (access log) and stderr (app log)."""
        return self._workdir() / "registry.log"

    @property
    def config_path(self) -> Path:
        """The YAML config file the process was started with."""
        return self._workdir() / "config.yml"

    def _check_requirements(self) -> None:
        if not os.access(self.binary, os.X_OK):
            raise FileNotFoundError(f"{self.binary} not found: install the Debian package docker-registry")

    def _prepare_workdir(self) -> None:
        self.storage_dir.mkdir()

    def _write_config(self) -> None:
        self.config = deep_merge(self._base_config(), self.extra_config)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")

    def _base_config(self) -> dict:
        return {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": uuid.uuid4().hex},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "health": {"storagedriver": {"enabled": False}},
        }

    def _command(self) -> list[str]:
        return [self.binary, "serve", str(self.config_path)]

    def _is_ready(self) -> bool:
        try:
            # Any HTTP answer will do: with auth configured /v2/ answers 401.
            self.request("GET", "/v2/", timeout=1)
        except requests.RequestException:
            return False
        return True

    def _not_ready_message(self) -> str:
        return f"registry did not answer GET {self.url}/v2/"

    def _release_resources(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # ---------------------------------------------------------------- access log

    def sync(self, timeout: float = 5.0) -> int:
        """Wait until every request answered so far is in the log file; return the file size.

        Sends ``GET /v2/?harness-sync=<id>`` and waits for its line, then for the file to stay
        the same size for 50 ms.  Marker requests are left out of :meth:`access_log`.
        """
        token = uuid.uuid4().hex
        self.request("GET", f"/v2/?{_SYNC_PARAM}={token}", timeout=5)
        deadline = time.monotonic() + timeout
        needle = token.encode()
        while needle not in self.log_path.read_bytes():
            if time.monotonic() > deadline:
                raise RuntimeError(f"access log line for the sync request never appeared in {self.log_path}")
            time.sleep(0.01)
        size = self.log_path.stat().st_size
        while True:
            time.sleep(0.05)
            new_size = self.log_path.stat().st_size
            if new_size == size or time.monotonic() > deadline:
                return new_size
            size = new_size

    def mark(self) -> int:
        """Return a position in the log: pass it as ``since=`` to count later requests only."""
        return self.sync()

    def access_log(self, since: int | None = None) -> list[AccessLogEntry]:
        """Return the access-log entries (after ``since``, a :meth:`mark`), oldest first."""
        end = self.sync()
        with open(self.log_path, "rb") as log:
            log.seek(since or 0)
            text = log.read(end - (since or 0)).decode("utf-8", errors="replace")
        return [e for e in parse_access_log(text) if not e.query.startswith(_SYNC_PARAM + "=")]

    def blob_gets(self, since: int | None = None, repo: str | None = None) -> list[AccessLogEntry]:
        """``GET /v2/<repo>/blobs/sha256:...`` requests (blob downloads, not uploads)."""
        return [e for e in self.access_log(since) if e.method == "GET" and e.kind == "blob" and repo in (None, e.repo)]

    def manifest_gets(self, since: int | None = None, repo: str | None = None) -> list[AccessLogEntry]:
        """``GET /v2/<repo>/manifests/<tag or digest>`` requests (HEADs are not counted)."""
        return [
            e for e in self.access_log(since) if e.method == "GET" and e.kind == "manifest" and repo in (None, e.repo)
        ]

    # ---------------------------------------------------------------- storage

    def blob_data_path(self, digest: str) -> Path:
        """Path of the stored bytes of blob ``digest`` (tamper with it to fake corruption)."""
        algorithm, _sep, hexdigest = digest.partition(":")
        if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.storage_dir / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    # ---------------------------------------------------------------- HTTP (test side)

    @property
    def session(self) -> requests.Session:
        """A ``requests`` session carrying ``auth`` and ``verify``, ignoring proxy/CA env vars."""
        if self._session is None:
            self._session = requests.Session()
            # Without this, REQUESTS_CA_BUNDLE would override ``verify`` and a *_PROXY
            # variable could route loopback traffic elsewhere.
            self._session.trust_env = False
            self._session.auth = self.auth
            self._session.verify = self.verify
        return self._session

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send ``method`` to ``path`` (absolute URL or path below ``url``); no status check."""
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, urljoin(self.url + "/", path), **kwargs)

    def push_blob(self, repo: str, data: bytes) -> str:
        """Upload ``data`` monolithically (POST, then PUT with ``digest=``); return its digest."""
        digest = sha256_digest(data)
        response = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        _check(response, 202)
        location = urljoin(self.url + "/", response.headers["Location"])
        separator = "&" if "?" in location else "?"
        response = self.request(
            "PUT",
            f"{location}{separator}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _check(response, 201)
        return digest

    def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest or index under ``reference`` (tag or digest); return sha256 of ``body``."""
        response = self.request(
            "PUT", f"/v2/{repo}/manifests/{reference}", data=body, headers={"Content-Type": media_type}
        )
        _check(response, 201)
        return sha256_digest(body)

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (every tag pointing at it disappears too)."""
        _check(self.request("DELETE", f"/v2/{repo}/manifests/{digest}"), 202)


def _check(response: requests.Response, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.url} answered {response.status_code}, "
            f"expected {status}: {response.text[:500]}"
        )
