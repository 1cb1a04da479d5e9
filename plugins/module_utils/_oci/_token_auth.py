# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""Answering a registry's authentication challenge: Basic, or a Bearer token from its token service.

Tokens are cached per realm, service and scope for the life of the client and
fetched anew once when the registry rejects a cached one.
"""

from __future__ import annotations

import re
import threading

from ansible_collections.kubesolo.fleet.plugins.module_utils._about import COLLECTION_NAME
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    AuthenticationError,
    RegistryConnectionError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._json import parse_json
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._transport import (
    MAX_SMALL_BODY_BYTES,
    exception_reason,
    origin,
    read_capped,
    requests,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header):
    """Parse a ``WWW-Authenticate`` value into (scheme, {param: value}).

    Returns (None, {}) for an empty or unparsable header.
    """
    if not header or not header.strip():
        return None, {}
    scheme, _sep, rest = header.strip().partition(" ")
    params = {}
    for match in _CHALLENGE_PARAM_RE.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


class TokenAuth:
    """The Authorization a client sends to its registry, and how it answers a challenge.

    ``credentials`` (_credentials.Credentials) answer Basic challenges and obtain
    bearer tokens; without them the client pulls anonymously, which is what
    public registries such as ghcr.io expect.
    """

    def __init__(self, client, credentials):
        self._client = client
        self.credentials = credentials
        self.authorization = None
        self._tokens = {}
        # The token service the registry named first: credentials never go to another one.
        self._realm_origin = None
        # Layers download in parallel threads: one refresh of a rejected token serves them all.
        self._lock = threading.Lock()

    def answer(self, challenge, rejected):
        """Take the Authorization answering ``challenge`` (``rejected`` was just refused) and return it."""
        with self._lock:
            self.authorization = self._authorize(challenge, rejected)
        return self.authorization

    def refused_message(self):
        repository = self._client.repository
        if self.credentials:
            return f"registry {repository.registry} refused the credentials of {self.credentials.username!r} for {repository.path}"
        return (
            f"registry {repository.registry} refused anonymous access to {repository.path} (no credentials were given)"
        )

    def _authorize(self, challenge, rejected):
        repository = self._client.repository
        scheme, params = parse_challenge(challenge)
        if scheme == "bearer":
            key = (
                params.get("realm"),
                params.get("service"),
                params.get("scope") or f"repository:{repository.path}:pull",
            )
            cached = self._tokens.get(key)
            if cached is None or "Bearer " + cached == rejected:
                self._tokens[key] = cached = self._fetch_token(*key)
            return "Bearer " + cached
        if scheme == "basic" and self.credentials and self.credentials.password is not None:
            basic = requests.auth._basic_auth_str(self.credentials.username, self.credentials.password)
            if basic == rejected:
                raise AuthenticationError(self.refused_message())
            return basic
        raise AuthenticationError(
            "registry {} requires authentication ({} challenge) to read {}{}".format(
                repository.registry,
                printable(scheme or "no", limit=40),
                repository.path,
                "" if self.credentials else " and no credentials were given",
            )
        )

    def _fetch_token(self, realm, service, scope):
        """A bearer token from the registry's token service (docker token or OAuth2 refresh)."""
        client = self._client
        registry = client.repository.registry
        realm_origin = origin(realm) if realm else None
        if not realm_origin or realm_origin[0] not in ("http", "https") or not realm_origin[1]:
            raise AuthenticationError(f"registry {registry} sent a bearer challenge without a usable realm")
        if self._realm_origin is None:
            self._realm_origin = realm_origin
        elif realm_origin != self._realm_origin and self.credentials:
            raise AuthenticationError(
                f"registry {registry} named the token service {printable(realm)} after another one; refusing to send "
                f"credentials to a second token service"
            )
        if client.scheme == "https" and realm_origin[0] == "http":
            raise AuthenticationError(
                f"registry {registry} sent a plain-HTTP token realm {printable(realm)}; refusing to "
                "send credentials or take tokens over it"
            )
        query = {"scope": scope}
        if service:
            query["service"] = service
        credentials = self.credentials
        try:
            if credentials and credentials.identity_token:
                form = dict(
                    query,
                    grant_type="refresh_token",
                    refresh_token=credentials.identity_token,
                    client_id=COLLECTION_NAME,
                )
                response = client.session.post(
                    realm,
                    data=form,
                    timeout=client.timeout,
                    stream=True,
                    allow_redirects=False,
                    verify=client.verify,
                    cert=client.certificate_for(realm),
                )
            else:
                auth = (credentials.username, credentials.password) if credentials else None
                response = client.session.get(
                    realm,
                    params=query,
                    auth=auth,
                    timeout=client.timeout,
                    stream=True,
                    allow_redirects=False,
                    verify=client.verify,
                    cert=client.certificate_for(realm),
                )
        except requests.exceptions.RequestException as exc:
            raise RegistryConnectionError(f"cannot reach the token service of {registry}: {exception_reason(exc)}")
        with response:
            body = read_capped(
                client, response, MAX_SMALL_BODY_BYTES, f"token response of {registry}", error=AuthenticationError
            )
            if response.status_code in (401, 403):
                raise AuthenticationError(
                    self.refused_message().replace(f"registry {registry}", f"the token service of {registry}")
                )
            if response.status_code != 200:
                raise AuthenticationError(f"the token service of {registry} answered HTTP {response.status_code}")
        try:
            document = parse_json(body)
        except ValueError:
            document = None
        token = document.get("token") or document.get("access_token") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(f"the token service of {registry} answered without a token")
        return token
