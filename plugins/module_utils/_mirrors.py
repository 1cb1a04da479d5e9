# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mirrors: content addressed by digest is tried at each mirror in order, then upstream.

Tags are resolved at the upstream registry unless mirrors are explicitly
trusted for them, so a stale mirror cannot decide which release a fleet runs;
whatever a mirror serves is verified against the digest the upstream named.
Each mirror has its own client, session and credentials: upstream
credentials never reach a mirror.
"""

from __future__ import annotations

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
)


class MirroredClient:
    """Reads like a RegistryClient; ``sources`` records who served each digest."""

    def __init__(self, upstream, mirrors=(), mirror_tags=False):
        self.upstream = upstream
        self.repository = upstream.repository
        self.mirrors = list(mirrors)  # [(location, RegistryClient)]
        self.mirror_tags = mirror_tags
        self.sources = {}
        self.mirror_errors = []

    @property
    def served_by(self):
        """Every origin that served content, at the upstream, a mirror or where they redirected."""
        hosts = set(self.upstream.served_by)
        for _location, client in self.mirrors:
            hosts |= client.served_by
        return hosts

    def transfer_summary(self):
        """Retries at the upstream (mirrors are not retried); bytes resumed and fetched at any source."""
        summary = self.upstream.transfer_summary()
        for _location, client in self.mirrors:
            summary["resumed_bytes"] += client.resumed_bytes
            summary["fetched_bytes"] += client.fetched_bytes
        return summary

    def get_manifest(self, reference, accept=INDEX_MEDIA_TYPES + MANIFEST_MEDIA_TYPES):
        by_digest = ":" in reference
        mirrors = self.mirrors if by_digest or self.mirror_tags else []
        fetched = self._first(mirrors, lambda client: client.get_manifest(reference, accept))
        if fetched is None:
            fetched = (str(self.repository.registry), self.upstream.get_manifest(reference, accept))
        location, manifest = fetched
        self.sources[manifest.digest] = location
        return manifest

    def signature_sources(self, digest):
        """[(location, RegistryClient)] to look up the signatures of ``digest`` at: the mirror that
        served it, if one did, then the upstream."""
        served = self.sources.get(digest)
        sources = [(location, client) for location, client in self.mirrors if location == served]
        return sources + [(str(self.repository.registry), self.upstream)]

    def download_blob(self, digest, size, fileobj):
        def attempt(client):
            try:
                return client.download_blob(digest, size, fileobj)
            except FleetError:
                # Start the next source on an empty file.
                fileobj.seek(0)
                fileobj.truncate()
                raise

        fetched = self._first(self.mirrors, attempt)
        if fetched is None:
            fetched = (str(self.repository.registry), self.upstream.download_blob(digest, size, fileobj))
        self.sources[digest] = fetched[0]
        return fetched[1]

    def _first(self, mirrors, call):
        """(location, result) of the first mirror that answers, or None."""
        for location, client in mirrors:
            try:
                return location, call(client)
            except FleetError as exc:
                self.mirror_errors.append(f"{location}: {exc}")
        return None
