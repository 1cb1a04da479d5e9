# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""RegistryClient: one repository of one registry, read (and written) over the distribution API.

The client holds what a connection to the registry shares (session, TLS,
retry policy, authorization, byte counters); the protocol itself lives beside
it in _transport, _token_auth, _manifests, _blobs and _push.
"""

from __future__ import annotations

import threading

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import AuthenticationError
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _push
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._blobs import BlobDownload
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import (
    ANY_MANIFEST_MEDIA_TYPES,
    fetch_manifest,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._token_auth import TokenAuth
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._transport import (
    client_certificate,
    new_session,
    origin,
    send,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable


def _origin_text(parsed):
    # The address a redirect's Location named: the registry's text, not ours.
    return printable(f"{parsed[0]}://{parsed[1]}:{parsed[2]}") if parsed else "a malformed address"


class RegistryClient:
    """Reads manifests and blobs of one repository, and pushes them for update_publish.

    ``credentials`` (_credentials.Credentials) answer Basic challenges and obtain
    bearer tokens (see _token_auth.TokenAuth); without them the client pulls
    anonymously.
    """

    def __init__(
        self,
        repository,
        plain_http=False,
        validate_certs=True,
        ca_path=None,
        timeout=30,
        credentials=None,
        client_cert=None,
        client_key=None,
        retry=None,
    ):
        self.repository = repository
        self.retry = retry or RetryPolicy()
        self.scheme = "http" if plain_http else "https"
        self.timeout = timeout
        # Passed with every request: a session-level value loses to
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment.
        self.verify = (ca_path or True) if validate_certs else False
        self.session = new_session()
        # requests' ``cert=`` for mutual TLS; see certificate_for.
        self.client_cert = client_certificate(client_cert, client_key)
        self.auth = TokenAuth(self, credentials)
        self.resumed_bytes = 0
        self.fetched_bytes = 0
        # Every origin that answered with content ("host:port"), redirect targets and token services included.
        self.served_by = set()
        # Layers download in parallel threads and count into the ones above under this lock.
        self._count_lock = threading.Lock()

    @property
    def credentials(self):
        return self.auth.credentials

    @property
    def base_url(self):
        return f"{self.scheme}://{self.repository.api_host}/v2/{self.repository.path}"

    @property
    def registry_origin(self):
        return origin(self.base_url)

    def certificate_for(self, url):
        """The client certificate for a request to ``url``: only the registry's own origin gets
        it, never a host a redirect or a token realm leads to."""
        return self.client_cert if origin(url) == self.registry_origin else None

    def note_server(self, url):
        """Remember the origin of ``url`` as one that served content to this client."""
        answered_at = origin(url)
        if answered_at:
            with self._count_lock:
                self.served_by.add(f"{answered_at[1]}:{answered_at[2]}")

    def count_bytes(self, fetched=0, resumed=0):
        with self._count_lock:
            self.fetched_bytes += fetched
            self.resumed_bytes += resumed

    def transfer_summary(self):
        """Retries and resumed bytes of this client, for module results."""
        return dict(self.retry.summary(), resumed_bytes=self.resumed_bytes, fetched_bytes=self.fetched_bytes)

    def request(self, method, url, headers=None, data=None):
        """Send a request (the response is streamed), answering one authentication challenge if needed.

        A file-like ``data`` is rewound before a retry.
        """
        headers = dict(headers or {})
        # Credentials go to the registry itself only, never to an upload or
        # blob location on another host.
        if origin(url) != self.registry_origin:
            return send(self, method, url, headers=headers, data=data)
        if self.auth.authorization:
            headers["Authorization"] = self.auth.authorization
        response = send(self, method, url, headers=headers, data=data)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        response.close()
        answered_at = origin(getattr(response, "url", None) or url)
        if answered_at != self.registry_origin:
            # A redirect led elsewhere (a CDN, an object store) and that origin asks for
            # credentials: they are only ever sent to the registry itself.
            raise AuthenticationError(
                f"{_origin_text(answered_at)} asked for authentication after registry {self.repository.registry} "
                f"redirected there; credentials are only sent to the registry itself"
            )
        headers["Authorization"] = self.auth.answer(challenge, rejected=headers.get("Authorization"))
        if hasattr(data, "seek"):
            data.seek(0)
        response = send(self, method, url, headers=headers, data=data)
        if response.status_code == 401:
            response.close()
            raise AuthenticationError(self.auth.refused_message())
        return response

    def get_manifest(self, reference, accept=ANY_MANIFEST_MEDIA_TYPES):
        """A _manifests.ManifestDocument by tag or digest (see _manifests.fetch_manifest)."""
        return fetch_manifest(self, reference, accept)

    def download_blob(self, digest, size, fileobj):
        """Stream blob ``digest`` into ``fileobj``, resuming what it holds; its sha256 hex
        (see _blobs.BlobDownload)."""
        return BlobDownload(self, digest, size, fileobj).run()

    def exists(self, kind, reference):
        return _push.exists(self, kind, reference)

    def upload_blob(self, digest, size, fileobj):
        _push.upload_blob(self, digest, size, fileobj)

    def put_manifest(self, reference, data, media_type):
        _push.put_manifest(self, reference, data, media_type)
