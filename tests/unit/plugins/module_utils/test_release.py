# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release resolution: index -> per-architecture manifest -> metadata and layers."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _release
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    ArchitectureMismatchError,
    ArchitectureNotShippedError,
    LayerMissingError,
    ManifestError,
    SizeMismatchError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _manifests
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    INITRAMFS,
    KERNEL,
    FakeManifestClient,
    descriptor,
    fetched,
    image_index,
    image_manifest,
    index_entry,
    release_annotations,
    release_layers,
    sha256_digest,
)

ALL_MANIFEST_TYPES = _manifests.INDEX_MEDIA_TYPES + _manifests.MANIFEST_MEDIA_TYPES
METADATA = {
    "version": "v0.3.0",
    "channel": "stable",
    "min_compatible_version": "v0.2.0",
    "architecture": "amd64",
    "release_notes": "Fixes.",
    "release_date": "2025-01-31T12:00:00Z",
}


def arch_manifest(architecture, media_type=_manifests.MEDIA_OCI_MANIFEST, layers=None, **annotations):
    """A per-architecture release manifest; ``annotations`` override the defaults."""
    if layers is None:
        layers = release_layers(b"kernel for " + architecture.encode(), b"initramfs for " + architecture.encode())
    values = release_annotations(architecture=architecture)
    values.update(("io.kubesolo.os." + key, value) for key, value in annotations.items())
    return fetched(image_manifest(layers, values, media_type))


def index_release(
    platforms=(("amd64", None), ("arm64", "v8")),
    index_type=_manifests.MEDIA_OCI_INDEX,
    manifest_type=_manifests.MEDIA_OCI_MANIFEST,
    tag="stable",
):
    """A client serving an index at ``tag`` plus its per-architecture manifests."""
    manifests = dict((architecture, arch_manifest(architecture, manifest_type)) for architecture, _variant in platforms)
    index = fetched(
        image_index(
            [index_entry(manifests[architecture], architecture, variant) for architecture, variant in platforms],
            index_type,
        )
    )
    served = dict((m.digest, m) for m in manifests.values())
    served[tag] = index
    return FakeManifestClient(served), index, manifests


def single_release(manifest, tag="v0.3.0-amd64"):
    return FakeManifestClient({tag: manifest}), tag


def index_with_entries(entries):
    """A client serving an index made of raw ``entries`` at 'stable' (children not served)."""
    return FakeManifestClient({"stable": fetched(image_index(entries))})


# -- Indexes ---------------------------------------------------------------


def test_resolve_picks_the_manifest_of_the_architecture_from_an_oci_index():
    client, index, manifests = index_release()
    release = _release.resolve(client, "aarch64", tag="stable")
    arm64 = manifests["arm64"]
    assert release.manifest is arm64
    assert release.manifest_digest == arm64.digest
    assert release.index_digest == index.digest
    assert str(release.platform) == "arm64"
    assert release.available_architectures == ["amd64", "arm64"]
    assert release.metadata == dict(METADATA, architecture="arm64")
    assert release.layers == [
        {"media_type": KERNEL, "digest": sha256_digest(b"kernel for arm64"), "size": len(b"kernel for arm64")},
        {"media_type": INITRAMFS, "digest": sha256_digest(b"initramfs for arm64"), "size": len(b"initramfs for arm64")},
    ]
    assert client.calls == [("stable", ALL_MANIFEST_TYPES), (arm64.digest, _manifests.MANIFEST_MEDIA_TYPES)]


def test_resolve_summary():
    client, index, manifests = index_release()
    release = _release.resolve(client, "x86_64", tag="stable")
    assert release.summary() == {
        "manifest_digest": manifests["amd64"].digest,
        "index_digest": index.digest,
        "architecture": "amd64",
        "available_architectures": ["amd64", "arm64"],
        "metadata": METADATA,
        "layers": release.layers,
        "signature": None,
    }


def test_resolve_docker_manifest_list():
    client, index, manifests = index_release(
        index_type=_manifests.MEDIA_DOCKER_LIST, manifest_type=_manifests.MEDIA_DOCKER_MANIFEST
    )
    release = _release.resolve(client, "amd64", tag="stable")
    assert release.manifest_digest == manifests["amd64"].digest
    assert release.manifest.media_type == _manifests.MEDIA_DOCKER_MANIFEST
    assert release.index_digest == index.digest


def test_resolve_by_digest_ignores_the_tag():
    client, index, manifests = index_release(tag="pinned")
    client.manifests[index.digest] = index
    release = _release.resolve(client, "amd64", tag="stable", digest=index.digest)
    assert release.manifest_digest == manifests["amd64"].digest
    assert client.calls[0] == (index.digest, ALL_MANIFEST_TYPES)


def test_resolve_arm_variants_are_distinct():
    client, _index, manifests = index_release(platforms=(("arm", "v6"), ("arm64", None)))
    assert _release.resolve(client, "armv6l", tag="stable").manifest is manifests["arm"]
    with pytest.raises(ArchitectureNotShippedError) as raised:
        _release.resolve(client, "armv7l", tag="stable")
    assert raised.value.available == ["arm/v6", "arm64"]


def test_resolve_architecture_not_shipped_fetches_no_child_manifest():
    client, _index, _manifests = index_release()
    with pytest.raises(ArchitectureNotShippedError) as raised:
        _release.resolve(client, "riscv64", tag="stable")
    assert str(raised.value) == "the release does not ship for architecture riscv64 (it ships: amd64, arm64)"
    assert raised.value.available == ["amd64", "arm64"]
    assert client.calls == [("stable", ALL_MANIFEST_TYPES)]


@pytest.mark.parametrize(
    "architecture, variant",
    [("amd64\x1b[31m", None), ("amd64\u202e", None), ("\u009bamd64", None), ("amd64", "v1\x07"), ("a" * 40, None)],
)
def test_resolve_ignores_an_index_entry_with_a_malformed_platform(architecture, variant):
    manifest = arch_manifest("amd64")
    client = FakeManifestClient({"stable": fetched(image_index([index_entry(manifest, architecture, variant)]))})
    with pytest.raises(ArchitectureNotShippedError) as raised:
        _release.resolve(client, "amd64", tag="stable")
    assert str(raised.value) == "the release does not ship for architecture amd64 (it ships: none)"
    assert raised.value.available == []


def test_resolve_refuses_a_nested_index():
    client = index_with_entries(
        [
            {
                "mediaType": _manifests.MEDIA_OCI_INDEX,
                "digest": sha256_digest(b"nested"),
                "size": 100,
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ]
    )
    with pytest.raises(ManifestError) as raised:
        _release.resolve(client, "amd64", tag="stable")
    assert str(raised.value) == (
        "index stable points at application/vnd.oci.image.index.v1+json for amd64; only image "
        "manifests are supported there (no nested indexes)"
    )
    assert len(client.calls) == 1


@pytest.mark.parametrize("delta", [1, -1])
def test_resolve_refuses_a_child_manifest_of_another_size(delta):
    child = arch_manifest("amd64")
    entry = index_entry(child, "amd64")
    entry["size"] += delta
    client = index_with_entries([entry])
    client.manifests[child.digest] = child
    with pytest.raises(SizeMismatchError) as raised:
        _release.resolve(client, "amd64", tag="stable")
    assert (
        str(raised.value)
        == f"manifest {child.digest} is {len(child.data)} bytes, the index declares {len(child.data) + delta}"
    )


def test_resolve_refuses_a_child_served_as_an_index():
    child = arch_manifest("amd64")
    as_index = _manifests.ManifestDocument(child.data, _manifests.MEDIA_OCI_INDEX, child.digest, child.document)
    client = index_with_entries([index_entry(child, "amd64")])
    client.manifests[child.digest] = as_index
    with pytest.raises(ManifestError) as raised:
        _release.resolve(client, "amd64", tag="stable")
    assert (
        str(raised.value)
        == f"index stable entry {child.digest} is a {_manifests.MEDIA_OCI_INDEX}, not an image manifest"
    )


# -- Descriptors -----------------------------------------------------------

GOOD_ENTRY = {
    "mediaType": _manifests.MEDIA_OCI_MANIFEST,
    "digest": sha256_digest(b"child"),
    "size": 500,
    "platform": {"os": "linux", "architecture": "amd64"},
}

_DELETE = object()


def _with(entry, **changes):
    """A copy of ``entry`` with keys changed, or removed when set to _DELETE."""
    changed = copy.deepcopy(entry)
    for key, value in changes.items():
        if value is _DELETE:
            del changed[key]
        else:
            changed[key] = value
    return changed


@pytest.mark.parametrize(
    "entry, message",
    [
        (_with(GOOD_ENTRY, mediaType=_DELETE), "stable lists a manifests entry without a mediaType"),
        (_with(GOOD_ENTRY, mediaType=""), "stable lists a manifests entry without a mediaType"),
        (_with(GOOD_ENTRY, mediaType=5), "stable lists a manifests entry without a mediaType"),
        (
            _with(GOOD_ENTRY, mediaType="application/vnd.oci.image.manifest.v1+json\x07"),
            "stable lists a manifests entry with the malformed mediaType "
            "'application/vnd.oci.image.manifest.v1+json\\x07'",
        ),
        (
            _with(GOOD_ENTRY, digest="sha256:\x1b[2J" + "a" * 5000),
            "stable lists a manifests entry with a bad digest: digest 'sha256:\\x1b[2J" + "a" * 182 + "... is not",
        ),
        (_with(GOOD_ENTRY, digest=_DELETE), "stable lists a manifests entry with a bad digest: digest None"),
        (
            _with(GOOD_ENTRY, digest="sha256:abc"),
            "stable lists a manifests entry with a bad digest: digest 'sha256:abc'",
        ),
        (_with(GOOD_ENTRY, digest="sha256:../../etc"), "stable lists a manifests entry with a bad digest"),
        (
            _with(GOOD_ENTRY, size=-1),
            "stable lists {} with an invalid size -1 (0 to 4194304 bytes allowed)".format(GOOD_ENTRY["digest"]),
        ),
        (_with(GOOD_ENTRY, size=True), "with an invalid size True"),
        (_with(GOOD_ENTRY, size="500"), "with an invalid size '500'"),
        (_with(GOOD_ENTRY, size=500.0), "with an invalid size 500.0"),
        (_with(GOOD_ENTRY, size=_DELETE), "with an invalid size None"),
        (_with(GOOD_ENTRY, size=4 * 1024 * 1024 + 1), "with an invalid size 4194305 (0 to 4194304 bytes allowed)"),
        ("sha256:abc", "stable lists a manifests entry that is not an object"),
    ],
)
def test_resolve_refuses_an_invalid_index_entry(entry, message):
    client = index_with_entries([GOOD_ENTRY, entry])
    with pytest.raises(ManifestError) as raised:
        _release.resolve(client, "amd64", tag="stable")
    assert message in str(raised.value)
    assert raised.value.code == "invalid_manifest"


@pytest.mark.parametrize(
    "document",
    [
        {"schemaVersion": 2, "mediaType": _manifests.MEDIA_OCI_INDEX},
        {"schemaVersion": 2, "mediaType": _manifests.MEDIA_OCI_INDEX, "manifests": {"amd64": GOOD_ENTRY}},
    ],
)
def test_resolve_refuses_an_index_without_a_manifests_list(document):
    client = FakeManifestClient({"stable": fetched(document)})
    with pytest.raises(ManifestError, match="^stable has no manifests list$"):
        _release.resolve(client, "amd64", tag="stable")


GOOD_LAYER = descriptor(KERNEL, b"kernel")


@pytest.mark.parametrize(
    "layer, message",
    [
        (_with(GOOD_LAYER, mediaType=_DELETE), "lists a layers entry without a mediaType"),
        (_with(GOOD_LAYER, digest="sha384:" + "a" * 96), "lists a layers entry with a bad digest: digest 'sha384:"),
        (_with(GOOD_LAYER, digest="sha256:" + "A" * 64), "lists a layers entry with a bad digest"),
        (_with(GOOD_LAYER, size=-6), "with an invalid size -6 (0 to 17179869184 bytes allowed)"),
        (_with(GOOD_LAYER, size=False), "with an invalid size False"),
        (_with(GOOD_LAYER, size=16 * 1024**3 + 1), "with an invalid size 17179869185"),
        (_with(GOOD_LAYER, size="9" * 5000), "with an invalid size '" + "9" * 196 + "... (0 to"),
        ([GOOD_LAYER], "lists a layers entry that is not an object"),
        (
            _with(GOOD_LAYER, mediaType="application/vnd.kubesolo.os.kernel.v1+octet-stream\x1b[2J"),
            "lists a layers entry with the malformed mediaType "
            "'application/vnd.kubesolo.os.kernel.v1+octet-stream\\x1b[2J'",
        ),
        (
            _with(GOOD_LAYER, mediaType="text/plain\u202e"),
            "lists a layers entry with the malformed mediaType 'text/plain\\u202e'",
        ),
    ],
)
def test_resolve_refuses_an_invalid_layer(layer, message):
    manifest = arch_manifest("amd64", layers=[descriptor(INITRAMFS, b"initramfs"), layer])
    client, tag = single_release(manifest)
    with pytest.raises(ManifestError) as raised:
        _release.resolve(client, "amd64", tag=tag)
    assert str(raised.value).startswith(manifest.digest + " ")
    assert message in str(raised.value)


def test_resolve_accepts_a_layer_of_the_maximum_size():
    huge = _with(GOOD_LAYER, size=16 * 1024**3)
    client, tag = single_release(arch_manifest("amd64", layers=[huge]))
    assert _release.resolve(client, "amd64", tag=tag).layers[0]["size"] == 16 * 1024**3


def test_resolve_refuses_a_manifest_without_layers():
    document = image_manifest(None, release_annotations())
    del document["layers"]
    manifest = fetched(document)
    client, tag = single_release(manifest)
    with pytest.raises(ManifestError, match=f"^{manifest.digest} has no layers list$"):
        _release.resolve(client, "amd64", tag=tag)


# -- Single manifests ------------------------------------------------------


def test_resolve_single_manifest_of_the_right_architecture():
    manifest = arch_manifest("amd64")
    client, tag = single_release(manifest)
    release = _release.resolve(client, "x86_64", tag=tag)
    assert release.manifest is manifest
    assert release.index_digest is None
    assert release.available_architectures == ["amd64"]
    assert release.metadata == METADATA
    assert client.calls == [(tag, ALL_MANIFEST_TYPES)]


def test_resolve_single_manifest_annotated_with_a_machine_name():
    client, tag = single_release(arch_manifest("aarch64"))
    release = _release.resolve(client, "arm64", tag=tag)
    assert release.available_architectures == ["arm64"]
    assert release.metadata["architecture"] == "aarch64"


def test_resolve_single_manifest_of_another_architecture():
    client, tag = single_release(arch_manifest("arm64"))
    with pytest.raises(ArchitectureMismatchError) as raised:
        _release.resolve(client, "amd64", tag=tag)
    assert str(raised.value) == ("the manifest at this reference is for architecture arm64, but amd64 was wanted")
    assert (raised.value.declared, raised.value.wanted) == ("arm64", "amd64")
    assert raised.value.code == "architecture_mismatch"


@pytest.mark.parametrize("annotations", [{}, {"architecture": ""}])
def test_resolve_single_manifest_without_an_architecture_annotation(annotations):
    values = release_annotations(architecture=None)
    values.update(("io.kubesolo.os." + key, value) for key, value in annotations.items())
    manifest = fetched(image_manifest(release_layers(b"k", b"i"), values))
    client, tag = single_release(manifest)
    release = _release.resolve(client, "riscv64", tag=tag)
    assert release.manifest is manifest
    assert release.available_architectures == []
    assert release.metadata["architecture"] == ""


def test_resolve_single_manifest_with_a_garbage_architecture_annotation_is_a_manifest_error():
    # The annotation comes from the registry, not from the user: it is the manifest that is invalid.
    manifest = fetched(image_manifest(release_layers(b"k", b"i"), release_annotations(architecture="amd64; reboot")))
    client, tag = single_release(manifest)
    with pytest.raises(ManifestError):
        _release.resolve(client, "amd64", tag=tag)


# -- Annotations -----------------------------------------------------------


def test_missing_annotations_are_empty_strings():
    manifest = fetched(image_manifest(release_layers(b"k", b"i"), None))
    client, tag = single_release(manifest)
    assert _release.resolve(client, "amd64", tag=tag).metadata == dict((key, "") for key in METADATA)


def test_some_missing_annotations_are_empty_strings():
    values = {"io.kubesolo.os.version": "v1.0.0", "org.opencontainers.image.title": "kubesolo-os"}
    assert _release.metadata_from_annotations(values, "here") == {
        "version": "v1.0.0",
        "channel": "",
        "min_compatible_version": "",
        "architecture": "",
        "release_notes": "",
        "release_date": "",
    }


def test_release_notes_may_span_lines():
    notes = "Fixes:\n\t- the boot counter\n\t- the maintenance window\n"
    values = release_annotations(release_notes=notes)
    assert _release.metadata_from_annotations(values, "here")["release_notes"] == notes


@pytest.mark.parametrize(
    "annotations, message",
    [
        ([], "annotations of sha256:m are not a JSON object"),
        ("io.kubesolo.os.version=v1", "annotations of sha256:m are not a JSON object"),
        ({"io.kubesolo.os.version": 1}, "annotation io.kubesolo.os.version of sha256:m is not a string"),
        ({"io.kubesolo.os.channel": None}, "annotation io.kubesolo.os.channel of sha256:m is not a string"),
        (
            {"io.kubesolo.os.release_notes": ["a"]},
            "annotation io.kubesolo.os.release_notes of sha256:m is not a string",
        ),
        (
            {"io.kubesolo.os.version": "v0.3.0\n"},
            "annotation io.kubesolo.os.version of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.channel": "\x1b[31mstable"},
            "annotation io.kubesolo.os.channel of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.min_compatible_version": "v0.2.0\t"},
            "annotation io.kubesolo.os.min_compatible_version of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.release_date": "2025-01-31\x7f"},
            "annotation io.kubesolo.os.release_date of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.architecture": "amd64\x00"},
            "annotation io.kubesolo.os.architecture of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.release_notes": "line\x00"},
            "annotation io.kubesolo.os.release_notes of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.release_notes": "bell\x07"},
            "annotation io.kubesolo.os.release_notes of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.version": "v1.0.0\u009b2J"},
            "annotation io.kubesolo.os.version of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.channel": "\u202estable"},
            "annotation io.kubesolo.os.channel of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.release_notes": "isolated \u2066text\u2069"},
            "annotation io.kubesolo.os.release_notes of sha256:m contains control characters",
        ),
        (
            {"io.kubesolo.os.release_notes": "one\u2028two"},
            "annotation io.kubesolo.os.release_notes of sha256:m contains control characters",
        ),
    ],
)
def test_invalid_annotations(annotations, message):
    with pytest.raises(ManifestError) as raised:
        _release.metadata_from_annotations(annotations, "sha256:m")
    assert str(raised.value) == message


def test_resolve_refuses_invalid_annotations():
    manifest = arch_manifest("amd64", version="v0.3.0\r\nX-Injected: 1")
    client, tag = single_release(manifest)
    with pytest.raises(ManifestError, match="contains control characters"):
        _release.resolve(client, "amd64", tag=tag)


# -- Staged layers ---------------------------------------------------------


def resolved(layers):
    client, tag = single_release(arch_manifest("amd64", layers=layers))
    return _release.resolve(client, "amd64", tag=tag)


def test_staged_layers_finds_kernel_and_initramfs_and_ignores_the_rest():
    kernel, initramfs = descriptor(KERNEL, b"kernel"), descriptor(INITRAMFS, b"initramfs")
    other = descriptor("application/vnd.kubesolo.os.signature.v1+json", b"{}")
    release = resolved([other, initramfs, kernel])
    assert release.staged_layers() == [
        ("vmlinuz", {"media_type": KERNEL, "digest": kernel["digest"], "size": 6}),
        ("kubesolo-os.gz", {"media_type": INITRAMFS, "digest": initramfs["digest"], "size": 9}),
    ]


@pytest.mark.parametrize(
    "present, missing",
    [
        ([descriptor(KERNEL, b"kernel")], INITRAMFS),
        ([descriptor(INITRAMFS, b"initramfs")], KERNEL),
        ([descriptor("application/octet-stream", b"kernel")], KERNEL),
    ],
)
def test_staged_layers_missing_layer(present, missing):
    release = resolved(present)
    with pytest.raises(LayerMissingError) as raised:
        release.staged_layers()
    assert str(raised.value) == f"manifest {release.manifest_digest} has no {missing} layer"
    assert raised.value.code == "layer_missing"


def test_staged_layers_missing_initramfs_names_its_media_type():
    with pytest.raises(LayerMissingError, match="application/vnd.kubesolo.os.initramfs.v1\\+gzip"):
        resolved([descriptor(KERNEL, b"kernel")]).staged_layers()


def test_staged_layers_refuses_two_kernels():
    release = resolved([descriptor(KERNEL, b"one"), descriptor(KERNEL, b"two"), descriptor(INITRAMFS, b"i")])
    with pytest.raises(ManifestError) as raised:
        release.staged_layers()
    assert (
        str(raised.value) == f"manifest {release.manifest_digest} has 2 {KERNEL} layers; refusing an ambiguous release"
    )


@pytest.mark.parametrize("empty", [KERNEL, INITRAMFS])
def test_staged_layers_refuses_an_empty_layer(empty):
    layers = [
        descriptor(KERNEL, b"" if empty == KERNEL else b"k"),
        descriptor(INITRAMFS, b"" if empty == INITRAMFS else b"i"),
    ]
    release = resolved(layers)
    with pytest.raises(ManifestError) as raised:
        release.staged_layers()
    assert str(raised.value) == f"manifest {release.manifest_digest} declares an empty {empty} layer"
