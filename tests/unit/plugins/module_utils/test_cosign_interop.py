# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signatures the real cosign made (containers/image's test fixtures, see tests/fixtures/cosign/PROVENANCE.md),
served from an in-memory registry in cosign's layout and checked by the signature policy: accepted where
containers/image accepts them with a repository match, refused where it refuses them, and refused once altered."""

from __future__ import annotations

import base64
import json
import pathlib
import types

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _cosign, _signatures
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import SignatureInvalidError
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import MEDIA_OCI_MANIFEST
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import FakePushRegistry, sha256_digest

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "fixtures" / "cosign"
# containers/image's on-disk signature blob: a marker line, then JSON.
BLOB_PREFIX = b"\x00sigstore-json\n"
# The repository cosign signed these in (the payloads name it, without a tag).
REPOSITORY = "192.168.64.2:5000/cosign-signed-single-sample"


class FixtureSignature:
    """One signature file: its media type, payload bytes and annotations, exactly as cosign stored them."""

    def __init__(self, relative):
        data = (FIXTURES / relative).read_bytes()
        assert data.startswith(BLOB_PREFIX), relative
        document = json.loads(data[len(BLOB_PREFIX) :])
        self.media_type = document["mimeType"]
        self.payload = base64.b64decode(document["payload"])
        self.annotations = document["annotations"]

    def layer(self, registry, payload=None, annotations=None):
        """The signature as a layer of a signature manifest in ``registry``, its payload pushed."""
        payload = self.payload if payload is None else payload
        registry.blobs[sha256_digest(payload)] = payload
        return {
            "mediaType": self.media_type,
            "size": len(payload),
            "digest": sha256_digest(payload),
            "annotations": self.annotations if annotations is None else annotations,
        }


def key(name):
    return (FIXTURES / name).read_text()


def serve(manifest_file, signature_layers, repository=REPOSITORY):
    """A registry holding ``manifest_file`` (by digest) and its signature manifest in cosign's layout."""
    registry = FakePushRegistry(repository)
    data = (FIXTURES / manifest_file).read_bytes()
    digest = sha256_digest(data)
    registry.manifests[digest] = (data, "application/vnd.docker.distribution.manifest.v2+json")
    layers = [build(registry) for build in signature_layers]
    signature_manifest, config = _cosign.signature_manifest(layers)
    registry.blobs[sha256_digest(config)] = config
    registry.put_manifest(_cosign.signature_tag(digest), signature_manifest, MEDIA_OCI_MANIFEST)
    return registry, types.SimpleNamespace(index_digest=None, manifest_digest=digest)


def verify(registry, release, *keys):
    policy = _signatures.SignaturePolicy.from_params({"signature_policy": "required", "signature_keys": list(keys)})
    return _signatures.verify_release(registry, release, policy)


@pytest.mark.parametrize(
    "directory, signatures",
    [
        ("dir-img-cosign-valid", ["signature-1"]),
        ("dir-img-cosign-valid-2", ["signature-1", "signature-2"]),
        ("dir-img-cosign-valid-2", ["signature-2"]),
        # One signature by an unknown key beside a valid one: the valid one is enough.
        ("dir-img-cosign-mixed", ["signature-1", "signature-2"]),
    ],
)
def test_cosign_made_signatures_verify_with_their_key(directory, signatures):
    layers = [FixtureSignature(f"{directory}/{name}").layer for name in signatures]
    registry, release = serve(f"{directory}/manifest.json", layers)
    check = verify(registry, release, key("cosign2.pub"), key("cosign.pub"))
    assert check.verified and check.digest == release.manifest_digest
    assert check.key_fingerprint == _cosign.TrustedKey.from_pem(key("cosign.pub").encode(), "cosign.pub").fingerprint


def test_a_reference_with_a_tag_names_its_repository():
    # Made by containers/image's own signer, which names the reference with its tag.
    signature = FixtureSignature("dir-img-cosign-valid-with-tag/signature-1")
    registry, release = serve(
        "dir-img-cosign-valid-with-tag/manifest.json", [signature.layer], repository="192.168.64.2:5000/skopeo-signed"
    )
    assert verify(registry, release, key("cosign.pub")).verified
    registry, release = serve("dir-img-cosign-valid-with-tag/manifest.json", [signature.layer])
    with pytest.raises(SignatureInvalidError, match="names the repository '192.168.64.2:5000/skopeo-signed:tag'"):
        verify(registry, release, key("cosign.pub"))


@pytest.mark.parametrize(
    "directory, signature, keys, problem",
    [
        ("dir-img-cosign-valid", "signature-1", ["cosign2.pub"], "verifies with no trusted key"),
        ("dir-img-cosign-valid", "signature-1", ["some-rsa-key.pub"], "verifies with no trusted key"),
        ("dir-img-cosign-mixed", "signature-1", ["cosign.pub"], "verifies with no trusted key"),
        # A valid signature of another manifest than the one served.
        ("dir-img-cosign-modified-manifest", "signature-1", ["cosign.pub"], "its payload signs 'sha256:634a8f35"),
        ("dir-img-cosign-manifest-digest-error", "signature-1", ["cosign.pub"], "its payload signs 'sha256:634a8f35"),
        # Not a signature at all (text/plain), whatever its annotation says.
        ("dir-img-cosign-other-attachment", "signature-1", ["cosign.pub"], "holds no application/vnd.dev.cosign"),
    ],
)
def test_what_containers_image_refuses_is_refused(directory, signature, keys, problem):
    registry, release = serve(f"{directory}/manifest.json", [FixtureSignature(f"{directory}/{signature}").layer])
    with pytest.raises(SignatureInvalidError, match=problem):
        verify(registry, release, *[key(name) for name in keys])


def test_an_unknown_keys_signature_in_its_own_file_is_refused():
    signature = FixtureSignature("unknown-cosign-key.signature")
    registry, release = serve("dir-img-cosign-valid/manifest.json", [signature.layer])
    with pytest.raises(SignatureInvalidError, match="verifies with no trusted key"):
        verify(registry, release, key("cosign.pub"))


def _flip(data, position):
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@pytest.mark.parametrize("position", [0, 40, -3])
def test_a_cosign_payload_altered_by_one_bit_is_refused(position):
    signature = FixtureSignature("dir-img-cosign-valid/signature-1")
    altered = _flip(signature.payload, position % len(signature.payload))
    registry, release = serve(
        "dir-img-cosign-valid/manifest.json", [lambda registry: signature.layer(registry, payload=altered)]
    )
    with pytest.raises(SignatureInvalidError, match="verifies with no trusted key"):
        verify(registry, release, key("cosign.pub"))


def test_a_cosign_signature_altered_by_one_bit_is_refused():
    signature = FixtureSignature("dir-img-cosign-valid/signature-1")
    raw = base64.b64decode(signature.annotations[_cosign.SIGNATURE_ANNOTATION])
    annotations = {_cosign.SIGNATURE_ANNOTATION: base64.b64encode(_flip(raw, len(raw) - 5)).decode()}
    registry, release = serve(
        "dir-img-cosign-valid/manifest.json", [lambda registry: signature.layer(registry, annotations=annotations)]
    )
    with pytest.raises(SignatureInvalidError, match="verifies with no trusted key"):
        verify(registry, release, key("cosign.pub"))


def test_the_fixture_index_matches_the_files():
    # fixtures.json describes the files for readers; it must not drift from them.
    for entry in json.loads((FIXTURES / "fixtures.json").read_text()):
        signature = FixtureSignature(entry["file"])
        assert base64.b64decode(entry["payload_b64"]) == signature.payload, entry["file"]
        assert entry["signature_b64"] == signature.annotations[_cosign.SIGNATURE_ANNOTATION], entry["file"]
