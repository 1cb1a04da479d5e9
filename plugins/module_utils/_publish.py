# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build and push a KubeSolo OS release: per-architecture manifests and an index.

Documents are serialised deterministically, so publishing the same files and
metadata twice yields the same digests and the second push changes nothing.
"""

from __future__ import annotations

import json
import os

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import ManifestError, ParameterError
from ansible_collections.kubesolo.fleet.plugins.module_utils._io import file_sha256
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import (
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._platform import parse_platform
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import digest_of, validate_tag
from ansible_collections.kubesolo.fleet.plugins.module_utils._release import (
    ANNOTATION_PREFIX,
    MEDIA_INITRAMFS,
    MEDIA_KERNEL,
    metadata_from_annotations,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._version import InvalidVersion, Version

MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"


class Blob:
    """A blob to push: in memory (``data``) or a file (``path``)."""

    def __init__(self, media_type, digest, size, data=None, path=None):
        self.media_type = media_type
        self.digest = digest
        self.size = size
        self.data = data
        self.path = path

    @classmethod
    def from_bytes(cls, media_type, data):
        return cls(media_type, digest_of(data), len(data), data=data)

    @classmethod
    def from_file(cls, media_type, path):
        try:
            return cls(media_type, "sha256:" + file_sha256(path), os.path.getsize(path), path=path)
        except OSError as exc:
            raise ParameterError(f"cannot read {path}: {exc.strerror}")

    def descriptor(self):
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class Document:
    """A manifest or index to push, with its canonical bytes (and, for a manifest, its platform name)."""

    def __init__(self, media_type, content, platform=None):
        self.media_type = media_type
        self.platform = platform
        self.data = canonical_json(content)
        self.digest = digest_of(self.data)


def canonical_json(content):
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class ReleasePlan:
    """Everything a publish pushes, in dependency order: blobs, manifests, index, tags."""

    def __init__(self, blobs, manifests, index, tags):
        self.blobs = blobs
        self.manifests = manifests  # a Document with its platform for each build
        self.index = index
        self.tags = tags

    @property
    def platforms(self):
        return [manifest.platform for manifest in self.manifests]

    def manifest_digests(self):
        """{platform: manifest digest}, as update_publish returns them."""
        return dict((manifest.platform, manifest.digest) for manifest in self.manifests)


def plan_release(artifacts, metadata, tags):
    """Hash the files and build the documents of a release.

    ``artifacts`` is a list of dicts with ``architecture``, ``kernel`` and
    ``initramfs`` (paths); ``metadata`` holds the annotation values (without
    ``architecture``, which comes from each artifact).
    """
    _check_metadata(metadata)
    if not artifacts:
        raise ParameterError("artifacts must list at least one architecture")
    if not tags:
        raise ParameterError("tags must name at least one tag")
    for tag in tags:
        validate_tag(tag)
    blobs, manifests, entries, seen = [], [], [], []
    for artifact in artifacts:
        platform = parse_platform(artifact["architecture"])
        if platform in seen:
            raise ParameterError(f"artifacts list architecture {platform} twice")
        seen.append(platform)
        platform_doc = {"os": "linux", "architecture": platform.architecture}
        if platform.variant:
            platform_doc["variant"] = platform.variant
        config = Blob.from_bytes(MEDIA_CONFIG, canonical_json(platform_doc))
        layers = [
            Blob.from_file(MEDIA_KERNEL, artifact["kernel"]),
            Blob.from_file(MEDIA_INITRAMFS, artifact["initramfs"]),
        ]
        annotations = _annotations(dict(metadata, architecture=platform.architecture))
        manifest = Document(
            MEDIA_OCI_MANIFEST,
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor() for layer in layers],
                "annotations": annotations,
            },
            platform=str(platform),
        )
        blobs.extend([config] + layers)
        manifests.append(manifest)
        entries.append(
            {
                "mediaType": MEDIA_OCI_MANIFEST,
                "digest": manifest.digest,
                "size": len(manifest.data),
                "platform": platform_doc,
            }
        )
    index_annotations = _annotations(metadata)
    index = Document(
        MEDIA_OCI_INDEX,
        {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": entries, "annotations": index_annotations},
    )
    unique_blobs = list(dict((blob.digest, blob) for blob in blobs).values())
    return ReleasePlan(unique_blobs, manifests, index, list(tags))


def publish(client, plan, check_mode=False, sign=None):
    """Push what the registry lacks; returns a dict of what was (or would be) pushed.

    ``sign`` (digests -> the digests it signed) signs the index and the manifests
    before any tag moves, so a tag never points at a release without its signatures.
    """
    pushed = {"blobs": upload_missing(client, plan.blobs, check_mode), "manifests": [], "tags": [], "signed": []}
    for document in plan.manifests + [plan.index]:
        if client.exists("manifests", document.digest) is None:
            pushed["manifests"].append(document.digest)
            if not check_mode:
                client.put_manifest(document.digest, document.data, document.media_type)
    if sign is not None:
        pushed["signed"] = sign([plan.index.digest] + [manifest.digest for manifest in plan.manifests])
    for tag in plan.tags:
        if _tag_digest(client, tag) != plan.index.digest:
            pushed["tags"].append(tag)
            if not check_mode:
                client.put_manifest(tag, plan.index.data, plan.index.media_type)
    return pushed


def upload_missing(client, blobs, check_mode=False):
    """Upload those of ``blobs`` the registry lacks; their digests."""
    missing = []
    for blob in blobs:
        if client.exists("blobs", blob.digest) is None:
            missing.append(blob.digest)
            if not check_mode:
                _upload(client, blob)
    return missing


def _tag_digest(client, tag):
    """What ``tag`` points at now, or None; hashes the manifest when the registry sends no digest."""
    digest = client.exists("manifests", tag)
    if digest == "":
        digest = client.get_manifest(tag).digest
    return digest


def _upload(client, blob):
    if blob.data is not None:
        client.upload_blob(blob.digest, blob.size, blob.data)
        return
    with open(blob.path, "rb") as handle:
        client.upload_blob(blob.digest, blob.size, handle)


def _annotations(metadata):
    return dict((ANNOTATION_PREFIX + key, value) for key, value in metadata.items() if value)


def _check_metadata(metadata):
    for field in ("version", "min_compatible_version"):
        if metadata.get(field):
            try:
                Version(metadata[field])
            except InvalidVersion as exc:
                raise ParameterError(f"{field}: {exc}")
    if not metadata.get("version"):
        raise ParameterError("version is required")
    # Refuse what the stager would refuse (control characters and such).
    try:
        metadata_from_annotations(_annotations(metadata), "the release")
    except ManifestError as exc:
        raise ParameterError(str(exc))
