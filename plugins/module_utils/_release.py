# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""KubeSolo OS releases in a registry: resolve the per-architecture manifest,
read its metadata annotations and find the layers to stage."""

from __future__ import annotations

import collections

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    ArchitectureMismatchError,
    ArchitectureNotShippedError,
    InvalidReferenceError,
    LayerMissingError,
    ManifestError,
    SizeMismatchError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_BYTES,
    is_media_type,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._platform import (
    available_platforms,
    parse_platform,
    select_manifest,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import has_unprintable, printable

MEDIA_KERNEL = "application/vnd.kubesolo.os.kernel.v1+octet-stream"
MEDIA_INITRAMFS = "application/vnd.kubesolo.os.initramfs.v1+gzip"

# Staged file name of each layer the node boots from, in staging order.
STAGED_FILES = ((MEDIA_KERNEL, "vmlinuz"), (MEDIA_INITRAMFS, "kubesolo-os.gz"))
STAGED_FILE_NAMES = tuple(name for _media_type, name in STAGED_FILES)

# A layer of the release and the file name it is staged as.
StagedLayer = collections.namedtuple("StagedLayer", "name layer")

ANNOTATION_PREFIX = "io.kubesolo.os."
METADATA_FIELDS = ("version", "channel", "min_compatible_version", "architecture", "release_notes", "release_date")

# A KubeSolo OS slot is 512 MB; anything near this is hostile, not a release.
MAX_LAYER_BYTES = 16 * 1024**3


class Release:
    """The resolved per-architecture manifest of a release and what it says."""

    def __init__(self, manifest, index_digest, platform, available, metadata, layers):
        self.manifest = manifest
        self.index_digest = index_digest
        self.platform = platform
        self.available_architectures = available
        self.metadata = metadata
        self.layers = layers
        # The _signatures.SignatureCheck of the release, once it is checked.
        self.signature = None

    @property
    def manifest_digest(self):
        return self.manifest.digest

    def summary(self):
        """The fields update_info and update_stage both return."""
        return {
            "manifest_digest": self.manifest.digest,
            "index_digest": self.index_digest,
            "architecture": str(self.platform),
            "available_architectures": self.available_architectures,
            "metadata": self.metadata,
            "layers": self.layers,
            "signature": self.signature.as_result() if self.signature else None,
        }

    def staged_layers(self):
        """[StagedLayer] for the kernel and the initramfs; raises when one is missing or ambiguous."""
        chosen = []
        for media_type, name in STAGED_FILES:
            found = [layer for layer in self.layers if layer["media_type"] == media_type]
            if not found:
                raise LayerMissingError(f"manifest {self.manifest.digest} has no {media_type} layer")
            if len(found) > 1:
                raise ManifestError(
                    f"manifest {self.manifest.digest} has {len(found)} {media_type} layers; refusing an ambiguous release"
                )
            if found[0]["size"] == 0:
                raise ManifestError(f"manifest {self.manifest.digest} declares an empty {media_type} layer")
            chosen.append(StagedLayer(name, found[0]))
        return chosen


def resolve(client, architecture, tag=None, digest=None):
    """Resolve ``tag`` (or pinned ``digest``) to the release for ``architecture``.

    Fetches the index and one manifest at most; never a blob.
    """
    platform = parse_platform(architecture)
    reference = digest or tag
    top = client.get_manifest(reference)
    if top.is_index:
        entries = _descriptors(top.document, "manifests", reference)
        try:
            entry = select_manifest(entries, platform)
        except ArchitectureNotShippedError as exc:
            exc.index_digest = top.digest
            raise
        if entry["mediaType"] not in MANIFEST_MEDIA_TYPES:
            raise ManifestError(
                "index {} points at {} for {}; only image manifests are supported there (no nested indexes)".format(
                    reference, entry["mediaType"], platform
                )
            )
        manifest = client.get_manifest(entry["digest"], accept=MANIFEST_MEDIA_TYPES)
        if len(manifest.data) != entry["size"]:
            raise SizeMismatchError(
                f"manifest {entry['digest']} is {len(manifest.data)} bytes, the index declares {entry['size']}"
            )
        if manifest.media_type not in MANIFEST_MEDIA_TYPES:
            raise ManifestError(
                "index {} entry {} is a {}, not an image manifest".format(
                    reference, entry["digest"], manifest.media_type
                )
            )
        index_digest = top.digest
        available = available_platforms(entries)
    else:
        manifest = top
        index_digest = None
        available = []
    metadata = metadata_from_annotations(manifest.document.get("annotations"), manifest.digest)
    if not top.is_index:
        declared = metadata["architecture"]
        if declared:
            try:
                declared_platform = parse_platform(declared)
            except InvalidReferenceError:
                raise ManifestError(
                    f"manifest {manifest.digest} declares the invalid architecture {printable(repr(declared))}"
                )
            if declared_platform.architecture != platform.architecture:
                raise ArchitectureMismatchError(declared, str(platform))
            available = [str(declared_platform)]
    layers = [_layer(d) for d in _descriptors(manifest.document, "layers", manifest.digest)]
    return Release(manifest, index_digest, platform, available, metadata, layers)


def metadata_from_annotations(annotations, where):
    """The six io.kubesolo.os.* annotations; missing ones are empty strings."""
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, dict):
        raise ManifestError(f"annotations of {where} are not a JSON object")
    metadata = {}
    for field in METADATA_FIELDS:
        value = annotations.get(ANNOTATION_PREFIX + field, "")
        if not isinstance(value, str):
            raise ManifestError(f"annotation {ANNOTATION_PREFIX}{field} of {where} is not a string")
        # Checked, not escaped: these are shown and compared as they are.
        if has_unprintable(value, allowed="\n\t" if field == "release_notes" else ""):
            raise ManifestError(f"annotation {ANNOTATION_PREFIX}{field} of {where} contains control characters")
        metadata[field] = value
    return metadata


def _descriptors(document, key, where):
    """Validated descriptors under ``key`` ('manifests' or 'layers')."""
    entries = document.get(key)
    if not isinstance(entries, list):
        raise ManifestError(f"{where} has no {key} list")
    for entry in entries:
        if not isinstance(entry, dict):
            raise ManifestError(f"{where} lists a {key} entry that is not an object")
        if not isinstance(entry.get("mediaType"), str) or not entry["mediaType"]:
            raise ManifestError(f"{where} lists a {key} entry without a mediaType")
        if not is_media_type(entry["mediaType"]):
            raise ManifestError(
                f"{where} lists a {key} entry with the malformed mediaType {printable(repr(entry['mediaType']))}"
            )
        try:
            parse_digest(entry.get("digest"))
        except InvalidReferenceError as exc:
            raise ManifestError(f"{where} lists a {key} entry with a bad digest: {exc}")
        size = entry.get("size")
        limit = MAX_MANIFEST_BYTES if key == "manifests" else MAX_LAYER_BYTES
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= limit:
            raise ManifestError(
                f"{where} lists {entry['digest']} with an invalid size {printable(repr(size))} (0 to {limit} bytes allowed)"
            )
    return entries


def _layer(descriptor):
    return {"media_type": descriptor["mediaType"], "digest": descriptor["digest"], "size": descriptor["size"]}
