"""A Docker registry token server (the ``auth: token`` realm), plus a ``requests`` auth that uses it.

Protocol: the registry answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``;
the client GETs ``realm?service=...&scope=repository:NAME:pull,push`` (Basic credentials optional)
and retries with ``Authorization: Bearer <token>``.  The OAuth2 form (POST ``grant_type=password``
or ``refresh_token``, what a docker ``identitytoken`` is used with) is served too.

What Distribution 2.8 checks in a token (registry/auth/token/token.go):

* ``iss`` equals the configured ``issuer`` and ``aud`` the configured ``service``.  ``aud`` must be
  a JSON *string*: 2.8 unmarshals it into a Go string, so a list makes the token "malformed".
* ``exp``/``nbf`` with 60 s of leeway (:data:`LEEWAY`).  A token is only refused 60 s after its
  ``exp``, so :attr:`TokenServer.lifetime` moves ``exp`` back by the leeway.
* the signing key: the header's ``x5c`` chain (standard base64 DER, leaf first) must verify up to a
  certificate of ``rootcertbundle``; or ``kid`` must be the libtrust key ID of the public key of a
  certificate *in* the bundle.  The bundle written here holds the CA and the signer, so both work.
* ``access``: a list of ``{type, name, actions}``; anything not listed is refused (401
  ``insufficient_scope``), including with a valid token.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .httpserver import LocalServer, read_body, send
from .tls import PKI, CertKey

#: Clock-skew allowance Distribution adds to ``exp`` and ``nbf`` (``token.Leeway``).
LEEWAY = 60
SERVICE = "kubesolo-test-registry"
ISSUER = "kubesolo-test-token-issuer"
TOKEN_PATH = "/token"


# ------------------------------------------------------------------------- JWT


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key) -> str:
    """The libtrust key ID Distribution matches a ``kid`` against.

    SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32, in 12 groups of 4 joined by ``:``.
    """
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def sign_jwt(claims: Mapping, signer: CertKey, *, key_header: str = "x5c") -> str:
    """Return a compact JWS of ``claims`` signed by ``signer`` (ES256 for EC keys, RS256 for RSA).

    ``key_header`` says how the registry finds the key: ``x5c`` (the signer's certificate) or ``kid``.
    """
    key = signer.load_key()
    header: dict = {"typ": "JWT", "alg": "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"}
    if key_header == "x5c":
        header["x5c"] = [base64.b64encode(signer.load_cert().public_bytes(serialization.Encoding.DER)).decode()]
    elif key_header == "kid":
        header["kid"] = libtrust_key_id(key.public_key())
    else:
        raise ValueError(f"key_header must be x5c or kid, not {key_header!r}")
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}".encode()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        # JWS wants r || s (32 bytes each for P-256), not the DER that cryptography returns.
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise TypeError(f"unsupported signing key {type(key).__name__}")
    return f"{signing_input.decode()}.{_b64url(signature)}"


def decode_jwt(token: str) -> tuple[dict, dict]:
    """``(header, claims)`` of a JWT, without checking the signature (for assertions)."""
    header, claims, _signature = token.split(".")
    return tuple(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in (header, claims))


def parse_scope(scope: str) -> dict | None:
    """``repository:kubesolo/os:pull,push`` -> ``{type, name, actions}`` (None if malformed)."""
    kind, _sep, rest = scope.partition(":")
    name, _sep, actions = rest.rpartition(":")
    if not (kind and name and actions):
        return None
    return {"type": kind, "name": name, "actions": actions.split(",")}


# ------------------------------------------------------------------------- server


@dataclass
class TokenRequest:  # pylint: disable=too-many-instance-attributes
    """One request to the token server, as recorded."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    authorization: str | None  # the Authorization header as received
    user: str | None = None  # authenticated user (Basic, password grant or refresh token)
    status: int = 0
    scopes: list[str] = field(default_factory=list)
    granted: list[dict] = field(default_factory=list)  # the token's ``access`` claim
    token: str | None = None


class TokenServer(LocalServer):  # pylint: disable=too-many-instance-attributes
    """Token server for a Registry configured with :meth:`registry_config`.

    Policy: ``users`` (name -> password) may authenticate; anonymous requests get ``pull`` on
    repositories matching ``anonymous_pull`` (fnmatch patterns) and nothing else; a user gets the
    actions of ``grants[user]`` (pattern -> actions), by default pull and push everywhere.  Bad
    credentials get 401.  Requested actions outside the policy are left out of the token.

    Behaviour knobs (plain attributes, change them any time): ``lifetime`` (seconds the registry
    accepts a token), ``token_field`` (``token``, ``access_token`` or ``both``), ``body`` (None,
    ``oversized`` or ``endless``), ``oversized_bytes``, ``status`` (answer every request with this
    status instead), ``key_header`` (``x5c`` or ``kid``), ``issue_refresh_tokens``.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        pki: PKI,
        *,
        users: Mapping[str, str] | None = None,
        anonymous_pull: Iterable[str] = (),
        grants: Mapping[str, Mapping[str, Iterable[str]]] | None = None,
        signer: CertKey | None = None,
        lifetime: float = 300,
        tls=None,
        service: str = SERVICE,
        issuer: str = ISSUER,
    ) -> None:
        super().__init__(tls=tls)
        self.users = dict(users or {})
        self.anonymous_pull = tuple(anonymous_pull)
        self.grants = {
            user: {pattern: tuple(actions) for pattern, actions in g.items()} for user, g in (grants or {}).items()
        }
        self.signer = signer or pki.token
        self.service = service
        self.issuer = issuer
        self.lifetime = lifetime
        self.token_field = "token"
        self.body: str | None = None
        self.oversized_bytes = 8 * 1024 * 1024
        self.status: int | None = None
        self.key_header = "x5c"
        self.issue_refresh_tokens = False
        #: refresh token -> user name (seed it to test a docker ``identitytoken``).
        self.refresh_tokens: dict[str, str] = {}
        #: Every request, oldest first.
        self.log: list[TokenRequest] = []
        self._lock = threading.Lock()
        # Distribution takes the CA (to verify x5c chains) and the signer itself (for kid lookups).
        self.rootcertbundle = pki.directory / f"{self.signer.cert.stem}-rootcerts.pem"
        self.rootcertbundle.write_bytes(pki.ca.cert.read_bytes() + self.signer.cert.read_bytes())

    # ---------------------------------------------------------------- for the registry and tests

    @property
    def realm(self) -> str:
        """The URL clients get tokens from."""
        return self.url + TOKEN_PATH

    def registry_config(self) -> dict:
        """``extra_config`` that makes a Registry trust this server's tokens."""
        return {
            "auth": {
                "token": {
                    "realm": self.realm,
                    "service": self.service,
                    "issuer": self.issuer,
                    "rootcertbundle": str(self.rootcertbundle),
                }
            }
        }

    def mark(self) -> int:
        """A position in :attr:`log`: ``server.log[mark:]`` are the later requests."""
        return len(self.log)

    @property
    def tokens_issued(self) -> int:
        """How many tokens were handed out."""
        return sum(1 for entry in self.log if entry.token)

    def issue_token(self, user: str | None, access: list[dict], lifetime: float | None = None) -> str:
        """Sign a token for ``user`` granting ``access`` (no policy check)."""
        now = int(time.time())
        lifetime = self.lifetime if lifetime is None else lifetime
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,  # a string: Distribution 2.8 refuses a list
            "exp": int(now + lifetime) - LEEWAY,  # the registry adds LEEWAY back
            "nbf": now,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        return sign_jwt(claims, self.signer, key_header=self.key_header)

    def allowed_actions(self, user: str | None, repo: str) -> set[str]:
        """Actions the policy gives ``user`` (None: anonymous) on repository ``repo``."""
        if user is None:
            return {"pull"} if any(fnmatch.fnmatchcase(repo, p) for p in self.anonymous_pull) else set()
        grants = self.grants.get(user, {"*": ("pull", "push")})
        return {
            action for pattern, actions in grants.items() if fnmatch.fnmatchcase(repo, pattern) for action in actions
        }

    # ---------------------------------------------------------------- HTTP

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        body = read_body(handler)
        entry = TokenRequest(
            method=handler.command,
            path=url.path,
            query=parse_qs(url.query),
            form=parse_qs(body.decode("utf-8", "replace")) if handler.command == "POST" else {},
            authorization=handler.headers.get("Authorization"),
        )
        with self._lock:
            self.log.append(entry)
        status, payload = self._answer(entry)
        entry.status = status
        if status != 200:
            send(handler, status, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        elif self.body == "endless":
            self._send_endless(handler)
        else:
            data = json.dumps(payload).encode()
            if self.body == "oversized":
                data = json.dumps({**payload, "padding": "x" * self.oversized_bytes}).encode()
            send(handler, 200, data, {"Content-Type": "application/json"})

    def _answer(self, entry: TokenRequest) -> tuple[int, dict]:
        if self.status is not None:
            return self.status, {"details": f"forced status {self.status}"}
        if entry.path != TOKEN_PATH or entry.method not in ("GET", "POST"):
            return 404, {"details": "not found"}
        params = entry.form if entry.method == "POST" else entry.query
        ok, entry.user = self._authenticate(entry, params)
        if not ok:
            return 401, {"details": "incorrect username or password"}
        if params.get("service", [self.service])[0] != self.service:
            return 400, {"details": "unknown service"}
        # GET repeats scope=; the OAuth2 form puts several in one, space-separated.
        entry.scopes = [s for value in params.get("scope", []) for s in value.split(" ") if s]
        for scope in map(parse_scope, entry.scopes):
            if scope and scope["type"] == "repository":
                allowed = self.allowed_actions(entry.user, scope["name"])
                actions = [a for a in scope["actions"] if a in allowed]
                if actions:
                    entry.granted.append({"type": "repository", "name": scope["name"], "actions": actions})
        entry.token = self.issue_token(entry.user, entry.granted)
        payload = {"expires_in": int(self.lifetime), "issued_at": datetime.now(timezone.utc).isoformat()}
        if self.token_field in ("token", "both") and entry.method == "GET":
            payload["token"] = entry.token
        if self.token_field in ("access_token", "both") or entry.method == "POST":
            payload["access_token"] = entry.token
        wants_refresh = (
            params.get("offline_token", [""])[0] == "true" or params.get("access_type", [""])[0] == "offline"
        )
        if entry.user and self.issue_refresh_tokens and wants_refresh:
            refresh = uuid.uuid4().hex
            self.refresh_tokens[refresh] = entry.user
            payload["refresh_token"] = refresh
        return 200, payload

    def _authenticate(self, entry: TokenRequest, params: dict) -> tuple[bool, str | None]:
        """``(ok, user)``: ``(True, None)`` for an anonymous request, ``(False, None)`` for bad credentials."""
        grant = params.get("grant_type", [""])[0] if entry.method == "POST" else ""
        if grant == "refresh_token":
            user = self.refresh_tokens.get(params.get("refresh_token", [""])[0])
            return user is not None, user
        if grant == "password":
            name, password = params.get("username", [""])[0], params.get("password", [""])[0]
        elif entry.authorization is None:
            return True, None
        else:
            scheme, _sep, value = entry.authorization.partition(" ")
            try:
                name, _sep, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False, None
            if scheme.lower() != "basic":
                return False, None
        ok = name in self.users and self.users[name] == password
        return ok, name if ok else None

    def _send_endless(self, handler: BaseHTTPRequestHandler) -> None:
        # Leading whitespace is valid JSON, so a parser waits for more: only a size or time limit helps.
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Connection", "close")  # body ends when the connection does
        handler.end_headers()
        handler.close_connection = True
        chunk = b" " * 65536
        while not self.stopping.is_set():
            handler.wfile.write(chunk)  # OSError once the client hangs up: ends the thread


# ------------------------------------------------------------------------- client side (tests)

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_REPO_PATH = re.compile(r"^/v2/(?P<repo>.+?)/(?:manifests|blobs|tags)/")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ``("bearer", {"realm": "x", "service": "y"})``."""
    scheme, _sep, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class TokenAuth(requests.auth.AuthBase):
    """``requests`` auth for token-protected registries (the tests' own client, not the collection's).

    On a 401 Bearer challenge it fetches a token for the challenged scope (with Basic
    credentials when given) and resends the request once.  Tokens are remembered per
    (host, repository, read/write), so later requests carry one straight away.  Works as the
    ``auth=`` of a :class:`~tests.support.registry.Registry`, so ``push_release`` can publish.
    """

    def __init__(self, username: str | None = None, password: str | None = None, *, verify: bool | str = True) -> None:
        self.username = username
        self.password = password
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.verify = verify
        self._tokens: dict[tuple, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(request: requests.PreparedRequest) -> tuple:
        url = urlsplit(request.url)
        match = _REPO_PATH.match(url.path)
        return url.netloc, match and match.group("repo"), request.method not in ("GET", "HEAD")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        with self._lock:
            token = self._tokens.get(self._key(request))
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        request.register_hook("response", self._on_response)
        return request

    def fetch_token(self, challenge: dict[str, str]) -> str:
        """GET a token for a parsed Bearer ``challenge``."""
        params = {k: v for k, v in challenge.items() if k in ("service", "scope")}
        auth = (self.username, self.password) if self.username is not None else None
        response = self._session.get(challenge["realm"], params=params, auth=auth, timeout=30)
        response.raise_for_status()
        body = response.json()
        return body.get("token") or body["access_token"]

    def _on_response(self, response: requests.Response, **kwargs) -> requests.Response:
        if response.status_code != 401 or getattr(response.request, "token_auth_retry", False):
            return response
        scheme, challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme != "bearer" or "realm" not in challenge:
            return response
        token = self.fetch_token(challenge)
        with self._lock:
            self._tokens[self._key(response.request)] = token
        response.content  # pylint: disable=pointless-statement  # drain, so the connection is reused
        response.close()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        retry.token_auth_retry = True
        new_response = response.connection.send(retry, **kwargs)
        new_response.history.append(response)
        new_response.request = retry
        return new_response

    def close(self) -> None:
        """Close the token-fetching session."""
        self._session.close()
