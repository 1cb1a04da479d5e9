# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mirrors in front of the upstream registry, with fake clients."""

from __future__ import annotations

import io

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    NotFoundError,
    RegistryConnectionError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._mirrors import MirroredClient
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    FakeBlobClient,
    FakeManifestClient,
    fetched,
    image_manifest,
    release_annotations,
    release_layers,
    sha256_digest,
)

KERNEL_1 = b"kernel v0.3.0\n" * 30
INITRAMFS_1 = b"initramfs v0.3.0\n" * 50
MANIFEST = fetched(image_manifest(release_layers(KERNEL_1, INITRAMFS_1), release_annotations()))


class Source(FakeManifestClient, FakeBlobClient):
    """A registry (upstream or mirror) serving manifests and blobs, or failing with ``error``."""

    def __init__(self, manifests=None, blobs=(), error=None):
        FakeManifestClient.__init__(self, manifests or {})
        FakeBlobClient.__init__(self, blobs)
        self.error = error

    def get_manifest(self, reference, accept=()):
        if self.error:
            raise self.error
        return FakeManifestClient.get_manifest(self, reference, accept)

    def download_blob(self, digest, size, fileobj):
        if self.error:
            fileobj.write(b"garbage from a broken mirror")
            raise self.error
        return FakeBlobClient.download_blob(self, digest, size, fileobj)


def test_a_digest_is_served_by_the_first_mirror_that_has_it():
    upstream = Source({MANIFEST.digest: MANIFEST})
    broken = Source(error=RegistryConnectionError("mirror down"))
    good = Source({MANIFEST.digest: MANIFEST})
    client = MirroredClient(upstream, [("broken.example", broken), ("good.example/cache", good)])
    assert client.get_manifest(MANIFEST.digest) is MANIFEST
    assert client.sources == {MANIFEST.digest: "good.example/cache"}
    assert client.mirror_errors == ["broken.example: mirror down"]
    assert upstream.calls == []


def test_a_tag_is_resolved_at_the_upstream_unless_mirrors_are_trusted_for_tags():
    upstream = Source({"stable": MANIFEST})
    mirror = Source({"stable": MANIFEST})
    assert MirroredClient(upstream, [("mirror.example", mirror)]).get_manifest("stable") is MANIFEST
    assert mirror.calls == []
    trusting = MirroredClient(upstream, [("mirror.example", mirror)], mirror_tags=True)
    trusting.get_manifest("stable")
    assert [reference for reference, _accept in mirror.calls] == ["stable"]
    assert trusting.sources == {MANIFEST.digest: "mirror.example"}


def test_every_mirror_failing_falls_back_to_the_upstream():
    upstream = Source({MANIFEST.digest: MANIFEST})
    mirrors = [
        ("a.example", Source(error=NotFoundError("not here"))),
        ("b.example", Source(error=RegistryConnectionError("down"))),
    ]
    client = MirroredClient(upstream, mirrors)
    assert client.get_manifest(MANIFEST.digest) is MANIFEST
    assert client.sources == {MANIFEST.digest: str(upstream.repository.registry)}
    assert client.mirror_errors == ["a.example: not here", "b.example: down"]


def test_a_failed_mirror_download_leaves_nothing_for_the_next_source():
    digest = sha256_digest(KERNEL_1)
    upstream = Source(blobs=[KERNEL_1])
    client = MirroredClient(upstream, [("broken.example", Source(error=RegistryConnectionError("reset")))])
    fileobj = io.BytesIO()
    assert client.download_blob(digest, len(KERNEL_1), fileobj) == digest.split(":")[1]
    assert fileobj.getvalue() == KERNEL_1
    assert upstream.offsets == [(digest, 0)]  # the mirror's garbage was gone before upstream wrote
    assert client.sources == {digest: str(upstream.repository.registry)}


def test_upstream_errors_are_raised_as_they_are():
    client = MirroredClient(Source(error=RegistryConnectionError("upstream down")), [])
    with pytest.raises(RegistryConnectionError, match="upstream down"):
        client.get_manifest("stable")


def test_the_transfer_summary_counts_bytes_from_every_source():
    upstream, mirror = Source(blobs=[INITRAMFS_1]), Source(blobs=[KERNEL_1])
    client = MirroredClient(upstream, [("mirror.example", mirror)])
    client.download_blob(sha256_digest(KERNEL_1), len(KERNEL_1), io.BytesIO())
    mirror.error = RegistryConnectionError("gone")
    client.download_blob(sha256_digest(INITRAMFS_1), len(INITRAMFS_1), io.BytesIO())
    summary = client.transfer_summary()
    assert summary["fetched_bytes"] == len(KERNEL_1) + len(INITRAMFS_1)
    assert summary["resumed_bytes"] == 0
