# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""HTTP plumbing for one registry: the session, TLS, redirects, retries, small bodies, error messages."""

from __future__ import annotations

import time
import traceback

try:
    import requests
    import urllib3
except ImportError:
    requests = urllib3 = None
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None

from ansible_collections.kubesolo.fleet.plugins.module_utils._about import COLLECTION_NAME, COLLECTION_VERSION
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    AuthenticationError,
    ParameterError,
    RegistryConnectionError,
    RegistryResponseError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._json import parse_json
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RETRY_STATUSES, retry_after_seconds
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

USER_AGENT = f"{COLLECTION_NAME}/{COLLECTION_VERSION}"

# Token and error bodies are read only this far.
MAX_SMALL_BODY_BYTES = 64 * 1024
MAX_REDIRECTS = 10
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# The only redirects that keep a write's method and body (RFC 9110); a write is not turned into a GET.
METHOD_KEEPING_REDIRECTS = (307, 308)
# A small answer (manifest, index, token, error body) must arrive whole within this many times
# `timeout`, counted from sending the request: the timeout bounds each read only, so a registry
# dripping a byte now and then would otherwise hold a run (and a mirror its fallback) for hours.
SMALL_BODY_DEADLINE_TIMEOUTS = 3
# Small bodies are read at most this much at a time, so the deadline is checked between reads.
SMALL_READ_BYTES = 16 * 1024


def origin(url):
    """(scheme, host, port) of a URL; None for a URL that cannot be parsed."""
    try:
        parsed = requests.compat.urlparse(url)
        port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    except ValueError:
        return None
    return parsed.scheme, (parsed.hostname or "").lower(), port


def _no_netrc(request):
    """Session-wide auth that changes nothing: it only keeps requests from
    applying ~/.netrc over the registry's Authorization header."""
    return request


class RegistrySession(requests.Session if HAS_REQUESTS else object):
    """A session that sees no redirects: send() follows them by the origin rules.

    requests, even told not to follow a redirect, reads its whole body to prepare the next
    request, and one that it follows keeps the client certificate for any host.
    """

    def get_redirect_target(self, resp):
        return None


def new_session():
    """The session of one registry client: no redirects, no netrc, our User-Agent.

    It holds no client certificate: that is passed per request, to the registry's own origin only.
    """
    session = RegistrySession()
    session.headers["User-Agent"] = USER_AGENT
    session.auth = _no_netrc
    return session


def client_certificate(client_cert=None, client_key=None):
    """What requests takes as ``cert=`` for the client_cert and client_key options (None without)."""
    if client_key and not client_cert:
        raise ParameterError("client_key needs client_cert")
    if not client_cert:
        return None
    return (client_cert, client_key) if client_key else client_cert


def tls_hint(reason, has_client_cert):
    """What to change, from an SSL error's reason."""
    text = reason.lower()
    if "certificate_verify_failed" in text or "certificate verify failed" in text or "hostname" in text:
        return "set ca_path to trust a private CA, or validate_certs=false to skip verification"
    if "wrong_version_number" in text or "wrong version number" in text or "record layer" in text:
        return "if the registry speaks plain HTTP, set plain_http=true"
    if has_client_cert:
        return "the registry refused the handshake: check that it accepts client_cert and client_key"
    return (
        "the registry refused the handshake: if it requires mutual TLS, set client_cert and client_key; "
        "if it speaks plain HTTP, set plain_http=true"
    )


def send(client, method, url, headers=None, data=None):
    """One request through client's session, streamed, with its redirects followed by the origin
    rules (see _next_hop); reads (GET, HEAD) are tried again on faults worth it.

    The client certificate goes only to the registry's own origin, Authorization only as far as
    the first hop to another origin.
    """
    headers = dict(headers or {})
    hops = 0
    while True:
        response = _send_with_retries(client, method, url, headers, data)
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            if response.status_code in (200, 206):
                client.note_server(url)
            return response
        # Unread: a redirect's body is never wanted, and a hostile one may never end.
        response.close()
        if hops == MAX_REDIRECTS:
            raise RegistryConnectionError(
                f"cannot reach registry {client.repository.registry}: more than {MAX_REDIRECTS} redirects, "
                f"the last to {printable(location)}"
            )
        hops += 1
        target = _next_hop(method, url, response.status_code, location)
        if origin(target) != origin(url):
            headers.pop("Authorization", None)
        if hasattr(data, "seek"):
            data.seek(0)
        url = target


def _next_hop(method, url, status, location):
    """The URL a redirect leads to, or RegistryResponseError when it must not be followed."""
    target = requests.compat.urljoin(url, location)
    source, goes_to = origin(url), origin(target)
    where = f"{source[1]}:{source[2]}"
    if goes_to is None or goes_to[0] not in ("http", "https") or not goes_to[1]:
        raise RegistryResponseError(
            f"{where} redirected a request to {printable(target)}, which is not an HTTP(S) address"
        )
    if source[0] == "https" and goes_to[0] != "https":
        # A downgrade would let anyone on the path answer for the registry (or freeze it).
        raise RegistryResponseError(
            f"{where} redirected an HTTPS request to {printable(target)}; refusing to leave HTTPS"
        )
    if method not in ("GET", "HEAD") and status not in METHOD_KEEPING_REDIRECTS:
        raise RegistryResponseError(
            f"{where} answered a {method} with HTTP {status} to {printable(target)}; only 307 and 308 keep the "
            f"method and body of a write"
        )
    return target


def _send_with_retries(client, method, url, headers, data):
    """One hop of send(): the request, tried again (GET, HEAD) on faults worth it."""
    registry = client.repository.registry
    retryable = method in ("GET", "HEAD")
    attempt = 0
    while True:
        attempt += 1
        try:
            response = client.session.request(
                method,
                url,
                headers=headers,
                stream=True,
                data=data,
                timeout=client.timeout,
                verify=client.verify,
                cert=client.certificate_for(url),
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            reason = exception_reason(exc)
            raise RegistryConnectionError(
                f"TLS with {registry} failed: {reason} ({tls_hint(reason, bool(client.client_cert))})"
            )
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
            if isinstance(exc, requests.exceptions.Timeout):
                error = f"timed out after {client.timeout}s talking to {registry}"
            else:
                error = f"cannot reach registry {registry}: {exception_reason(exc)}"
            if retryable and client.retry.wait(attempt, error):
                continue
            raise RegistryConnectionError(error)
        except requests.exceptions.RequestException as exc:
            raise RegistryConnectionError(f"cannot reach registry {registry}: {exception_reason(exc)}")
        if retryable and response.status_code in RETRY_STATUSES:
            error = f"registry {registry} answered HTTP {response.status_code}"
            if client.retry.wait(attempt, error, retry_after_seconds(response.headers.get("Retry-After"))):
                response.close()
                continue
        return response


class SmallBodyDeadline:
    """The monotonic moment by which the small answer to one request must have arrived whole.

    Counted from sending the request: requests measures ``elapsed`` up to the parsed headers.
    """

    def __init__(self, client, response):
        self.timeout = client.timeout
        self.seconds = SMALL_BODY_DEADLINE_TIMEOUTS * client.timeout
        elapsed = getattr(response, "elapsed", None)
        self.ends = time.monotonic() - (elapsed.total_seconds() if elapsed else 0) + self.seconds
        # Who sends the body: the registry, its token service or where a redirect led.
        url = getattr(response, "url", None)
        answered_at = origin(url) if url else None
        self.sender = f"{answered_at[1]}:{answered_at[2]}" if answered_at else str(client.repository.registry)

    def check(self, what):
        if time.monotonic() > self.ends:
            raise RegistryConnectionError(
                f"{what} did not arrive whole from {self.sender} within {self.seconds:g}s "
                f"({SMALL_BODY_DEADLINE_TIMEOUTS} times timeout={self.timeout:g}); a registry this slow counts as unreachable"
            )


def arrived_reader(raw, decode_content):
    """``read(amount)`` on a streamed body that returns what has arrived, at most ``amount`` bytes.

    urllib3 2 has read1 (requests' responses do not decode unless asked to). urllib3 1.26 lacks
    it and its read waits for all ``amount`` bytes, so there a body it need not decode is read
    through the standard library's response underneath.
    """
    if hasattr(raw, "read1"):
        if decode_content:
            return lambda amount: raw.read1(amount, decode_content=True)
        return raw.read1
    underneath = getattr(raw, "_fp", None)
    encoding = (getattr(raw, "headers", None) or {}).get("Content-Encoding", "").strip().lower()
    if hasattr(underneath, "read1") and (not decode_content or encoding in ("", "identity")):
        return underneath.read1
    return lambda amount: raw.read(amount, decode_content=decode_content)


def read_capped(client, response, limit, what, error=RegistryResponseError):
    """Read a streamed response body (decoded), refusing more than ``limit`` bytes, and a body
    that is not whole within its SmallBodyDeadline (RegistryConnectionError, as for a fault)."""
    announced = response.headers.get("Content-Length")
    if announced is not None and announced.isascii() and announced.isdigit() and int(announced) > limit:
        raise error(f"{what} is {announced} bytes, over the {limit} byte limit")
    deadline = SmallBodyDeadline(client, response)
    read = arrived_reader(response.raw, decode_content=True)
    data = bytearray()
    try:
        while True:
            chunk = read(SMALL_READ_BYTES)
            if not chunk:
                return bytes(data)
            data += chunk
            if len(data) > limit:
                raise error(f"{what} is over the {limit} byte limit")
            deadline.check(what)
    except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
        raise RegistryConnectionError(f"reading {what} failed: {exception_reason(exc)}")


def check_status(client, response, what):
    """Refuse anything but 200 with a message that says what was asked for."""
    if response.status_code == 200:
        return
    if response.status_code == 403:
        raise AuthenticationError(f"the registry refused access to {what} (HTTP 403)")
    raise RegistryResponseError(
        f"the registry answered HTTP {response.status_code} for {what}{registry_error_message(client, response)}"
    )


def registry_error_message(client, response):
    """': <message>' of the first error in a registry's error body, size-capped, within the
    small-body deadline and printable."""
    try:
        body = read_capped(client, response, MAX_SMALL_BODY_BYTES, "error body")
        errors = parse_json(body).get("errors") or []
        message = errors[0].get("message") or errors[0].get("code")
    except Exception:  # pylint: disable=broad-except
        return ""
    text = printable(message) if message else ""
    return f": {text}" if text else ""


def exception_reason(exc):
    """A short reason for a requests/urllib3 exception (not its whole retry chain)."""
    reason = exc
    for _depth in range(8):
        if isinstance(reason, requests.exceptions.RequestException) and reason.args:
            reason = reason.args[0]
        elif getattr(reason, "reason", None) is not None and reason.reason is not reason:
            reason = reason.reason
        else:
            break
    # It may quote what the server sent (a redirect's URL, a bad header or chunk).
    return printable(reason, limit=300)
