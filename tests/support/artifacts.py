"""Builders for KubeSolo OS release artifacts, pushed to a test :class:`~tests.support.registry.Registry`.

Layout (see the KubeSolo OS OCI client): a tag points at an image index (OCI or Docker manifest
list) with one manifest per architecture, or at a single manifest.  Each manifest carries a kernel
and an initramfs layer, found by media type, and its metadata in ``io.kubesolo.os.*`` annotations.
Distribution 2.8.2 accepts these custom layer media types in both OCI and Docker schema2 manifests,
and keeps the manifest bytes as pushed (so annotations survive in Docker manifests too).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .registry import Registry, sha256_digest

KERNEL_MEDIA_TYPE = "application/vnd.kubesolo.os.kernel.v1+octet-stream"
INITRAMFS_MEDIA_TYPE = "application/vnd.kubesolo.os.initramfs.v1+gzip"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

ANN_VERSION = "io.kubesolo.os.version"
ANN_CHANNEL = "io.kubesolo.os.channel"
ANN_MIN_COMPATIBLE = "io.kubesolo.os.min_compatible_version"
ANN_ARCHITECTURE = "io.kubesolo.os.architecture"
ANN_RELEASE_NOTES = "io.kubesolo.os.release_notes"
ANN_RELEASE_DATE = "io.kubesolo.os.release_date"

DEFAULT_KERNEL_SIZE = 4 * 1024
DEFAULT_INITRAMFS_SIZE = 6 * 1024


def deterministic_bytes(seed: str, size: int) -> bytes:
    """Return ``size`` pseudo-random bytes fully determined by ``seed`` (SHAKE-256 stream)."""
    return hashlib.shake_256(seed.encode()).digest(size) if size else b""


def make_layers(
    arch: str,
    version: str,
    kernel_size: int = DEFAULT_KERNEL_SIZE,
    initramfs_size: int = DEFAULT_INITRAMFS_SIZE,
) -> dict[str, bytes]:
    """Return ``{media type: bytes}`` for the kernel and initramfs of ``arch``/``version``.

    The bytes are exact-size, deterministic and distinct per arch, version and layer.  The
    initramfs is *not* valid gzip: nothing in the staging path decompresses it.
    """
    return {
        KERNEL_MEDIA_TYPE: deterministic_bytes(f"kernel/{arch}/{version}", kernel_size),
        INITRAMFS_MEDIA_TYPE: deterministic_bytes(f"initramfs/{arch}/{version}", initramfs_size),
    }


def canonical_json(document: Mapping) -> bytes:
    """Serialise a manifest the way it is pushed (compact, key order kept)."""
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PushedManifest:  # pylint: disable=too-many-instance-attributes
    """A per-architecture manifest as pushed."""

    repo: str
    arch: str
    variant: str | None
    version: str
    digest: str
    size: int
    media_type: str
    body: bytes
    annotations: dict[str, str]
    layers: dict[str, bytes]  # media type -> bytes, in manifest order
    layer_digests: dict[str, str]  # media type -> digest
    config_digest: str
    tag: str | None = None

    @property
    def kernel(self) -> bytes:
        """Kernel layer bytes (KeyError when omitted)."""
        return self.layers[KERNEL_MEDIA_TYPE]

    @property
    def initramfs(self) -> bytes:
        """Initramfs layer bytes (KeyError when omitted)."""
        return self.layers[INITRAMFS_MEDIA_TYPE]

    @property
    def descriptor(self) -> dict:
        """Index entry for this manifest (with ``platform``)."""
        platform = {"architecture": self.arch, "os": "linux"}
        if self.variant:
            platform["variant"] = self.variant
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, "platform": platform}


@dataclass(frozen=True)
class PushedRelease:  # pylint: disable=too-many-instance-attributes
    """An index (or manifest list) and its per-architecture manifests, as pushed."""

    repo: str
    tag: str
    version: str
    digest: str
    size: int
    media_type: str
    body: bytes
    manifests: dict[str, PushedManifest] = field(default_factory=dict)  # arch -> manifest

    @property
    def reference(self) -> str:
        """``repo:tag`` (prefix with ``registry.host + '/'`` for a full image reference)."""
        return f"{self.repo}:{self.tag}"


def push_arch_manifest(  # pylint: disable=too-many-arguments,too-many-locals
    registry: Registry,
    repo: str,
    arch: str,
    version: str,
    *,
    variant: str | None = None,
    channel: str = "stable",
    min_compatible: str = "",
    release_notes: str | None = None,
    release_date: str | None = None,
    layers: Mapping[str, bytes] | None = None,
    extra_layers: Iterable[tuple[str, bytes]] = (),
    omit: Iterable[str] = (),
    annotations: Mapping[str, str | None] | None = None,
    docker: bool = False,
    tag: str | None = None,
    kernel_size: int = DEFAULT_KERNEL_SIZE,
    initramfs_size: int = DEFAULT_INITRAMFS_SIZE,
) -> PushedManifest:
    """Push the layers, a config blob and one manifest for ``arch``; return what was pushed.

    ``layers`` replaces the default kernel+initramfs (``make_layers``); ``extra_layers`` are
    appended; media types in ``omit`` are left out.  ``annotations`` overrides the generated
    ``io.kubesolo.os.*`` ones (a ``None`` value removes a key).  ``docker=True`` pushes a Docker
    schema2 manifest whose layer descriptors still carry the KubeSolo media types.  The manifest
    is pushed by digest, and also under ``tag`` when given.
    """
    omitted = set(omit)
    chosen = dict(layers) if layers is not None else make_layers(arch, version, kernel_size, initramfs_size)
    layer_list = [(mt, data) for mt, data in chosen.items() if mt not in omitted]
    layer_list += [(mt, data) for mt, data in extra_layers if mt not in omitted]

    generated = {
        ANN_VERSION: version,
        ANN_CHANNEL: channel,
        ANN_MIN_COMPATIBLE: min_compatible or None,
        ANN_ARCHITECTURE: arch,
        ANN_RELEASE_NOTES: release_notes,
        ANN_RELEASE_DATE: release_date,
    }
    generated.update(annotations or {})
    final_annotations = {k: v for k, v in generated.items() if v is not None}

    config = {"architecture": arch, "os": "linux"}
    if variant:
        config["variant"] = variant
    config_bytes = canonical_json(config)
    config_digest = registry.push_blob(repo, config_bytes)

    descriptors = []
    layer_digests = {}
    for media_type, data in layer_list:
        digest = registry.push_blob(repo, data)
        layer_digests.setdefault(media_type, digest)
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(data)})

    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": descriptors,
        "annotations": final_annotations,
    }
    body = canonical_json(manifest)
    digest = registry.push_manifest(repo, sha256_digest(body), body, media_type)
    if tag:
        registry.push_manifest(repo, tag, body, media_type)
    return PushedManifest(
        repo=repo,
        arch=arch,
        variant=variant,
        version=version,
        digest=digest,
        size=len(body),
        media_type=media_type,
        body=body,
        annotations=final_annotations,
        layers=dict(layer_list),
        layer_digests=layer_digests,
        config_digest=config_digest,
        tag=tag,
    )


def push_index(
    registry: Registry,
    repo: str,
    tag: str,
    manifests: Iterable[PushedManifest | Mapping],
    *,
    docker: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> tuple[str, bytes]:
    """Push an OCI index (or Docker manifest list) of ``manifests`` under ``tag``.

    Entries may be :class:`PushedManifest` or raw descriptor dicts (to fake odd platforms).
    Returns ``(digest, body)``.
    """
    entries = [m.descriptor if isinstance(m, PushedManifest) else dict(m) for m in manifests]
    media_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
    index: dict = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    if annotations:
        index["annotations"] = dict(annotations)
    body = canonical_json(index)
    return registry.push_manifest(repo, tag, body, media_type), body


def push_release(  # pylint: disable=too-many-arguments
    registry: Registry,
    repo: str,
    tag: str,
    version: str,
    arches: Iterable[str] = ("amd64", "arm64"),
    *,
    docker: bool = False,
    variants: Mapping[str, str] | None = None,
    channel: str = "stable",
    min_compatible: str = "",
    release_notes: str | None = None,
    release_date: str | None = None,
    arch_tags: bool = False,
    **manifest_kwargs,
) -> PushedRelease:
    """Push one manifest per arch and an index tagged ``tag``; return what was pushed.

    ``variants`` maps arch -> platform variant (e.g. ``{"arm": "v7"}``).  With ``arch_tags`` each
    manifest is also tagged ``<tag>-<arch>``.  Other keyword arguments (``layers``, ``omit``,
    ``annotations``, sizes...) go to every :func:`push_arch_manifest` call.
    """
    variants = variants or {}
    manifests = {}
    for arch in arches:
        manifests[arch] = push_arch_manifest(
            registry,
            repo,
            arch,
            version,
            variant=variants.get(arch),
            channel=channel,
            min_compatible=min_compatible,
            release_notes=release_notes,
            release_date=release_date,
            docker=docker,
            tag=f"{tag}-{arch}" if arch_tags else None,
            **manifest_kwargs,
        )
    digest, body = push_index(registry, repo, tag, manifests.values(), docker=docker)
    return PushedRelease(
        repo=repo,
        tag=tag,
        version=version,
        digest=digest,
        size=len(body),
        media_type=DOCKER_MANIFEST_LIST if docker else OCI_INDEX,
        body=body,
        manifests=manifests,
    )
