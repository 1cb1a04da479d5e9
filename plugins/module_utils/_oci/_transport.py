# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""HTTP plumbing for one registry: the session, TLS, retries, size-capped bodies, error messages."""

from __future__ import annotations

import traceback

try:
    import requests
    import urllib3  # pylint: disable=unused-import  # _blobs catches its exceptions
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


class OriginBoundSession(requests.Session if HAS_REQUESTS else object):
    """A session that drops Authorization on any redirect to another origin.

    requests keeps it across an http -> https upgrade of the same host and may
    add netrc credentials for the new host; neither is wanted for registries
    whose blobs redirect to a CDN or object store.
    """

    def rebuild_auth(self, prepared_request, response):
        target, source = origin(prepared_request.url), origin(response.request.url)
        if target is None or target != source:
            prepared_request.headers.pop("Authorization", None)
        if source and source[0] == "https" and (target is None or target[0] != "https"):
            # A downgrade would let anyone on the path answer for the registry (or freeze it).
            raise RedirectRefused(
                f"{source[1]}:{source[2]} redirected an HTTPS request to {printable(prepared_request.url or '')}; "
                f"refusing to leave HTTPS"
            )


class RedirectRefused(requests.exceptions.RequestException if HAS_REQUESTS else Exception):
    """A redirect the client must not follow (set by OriginBoundSession)."""


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


def new_session(client_cert=None, client_key=None):
    """The session of one registry client: origin-bound auth, no netrc, our User-Agent."""
    if client_key and not client_cert:
        raise ParameterError("client_key needs client_cert")
    session = OriginBoundSession()
    session.headers["User-Agent"] = USER_AGENT
    session.max_redirects = MAX_REDIRECTS
    session.auth = _no_netrc
    if client_cert:
        session.cert = (client_cert, client_key) if client_key else client_cert
    return session


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


def send(client, method, url, headers=None, stream=False, data=None):
    """One request through client's session; reads (GET, HEAD) are tried again on faults worth it."""
    registry = client.repository.registry
    retryable = method in ("GET", "HEAD")
    attempt = 0
    while True:
        attempt += 1
        try:
            response = client.session.request(
                method, url, headers=headers, stream=stream, data=data, timeout=client.timeout, verify=client.verify
            )
        except RedirectRefused as exc:
            raise RegistryResponseError(str(exc))
        except requests.exceptions.SSLError as exc:
            reason = exception_reason(exc)
            raise RegistryConnectionError(
                f"TLS with {registry} failed: {reason} ({tls_hint(reason, bool(client.session.cert))})"
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


def read_capped(response, limit, what, error=RegistryResponseError):
    """Read a (streamed) response body, refusing more than ``limit`` bytes."""
    announced = response.headers.get("Content-Length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise error(f"{what} is {announced} bytes, over the {limit} byte limit")
    data = bytearray()
    try:
        for chunk in response.iter_content(65536):
            data += chunk
            if len(data) > limit:
                raise error(f"{what} is over the {limit} byte limit")
    except requests.exceptions.RequestException as exc:
        raise RegistryConnectionError(f"reading {what} failed: {exception_reason(exc)}")
    return bytes(data)


def check_status(response, what):
    """Refuse anything but 200 with a message that says what was asked for."""
    if response.status_code == 200:
        return
    if response.status_code == 403:
        raise AuthenticationError(f"the registry refused access to {what} (HTTP 403)")
    raise RegistryResponseError(
        f"the registry answered HTTP {response.status_code} for {what}{registry_error_message(response)}"
    )


def registry_error_message(response):
    """': <message>' of the first error in a registry's error body, size-capped and printable."""
    try:
        body = read_capped(response, MAX_SMALL_BODY_BYTES, "error body")
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
