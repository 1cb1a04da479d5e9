# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The signature policy over an in-memory registry: releases published and signed by the
collection, then resolved and verified, tampered with in every way the policy must catch."""

from __future__ import annotations

import copy
import functools
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.kubesolo.fleet.plugins.module_utils import _cosign, _options, _publish, _release, _signatures
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    ManifestError,
    ParameterError,
    RegistryConnectionError,
    SignatureInvalidError,
    SignatureMissingError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._mirrors import MirroredClient
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import MEDIA_OCI_MANIFEST
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_repository
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import FakePushRegistry, sha256_digest

REPOSITORY = "registry.example.com/kubesolo/os"


def new_key():
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _cosign.SigningKey(private_key), pem.decode()


@pytest.fixture(name="artifacts")
def fixture_artifacts(tmp_path):
    files = []
    for architecture in ("amd64", "arm64"):
        kernel, initramfs = tmp_path / f"{architecture}-vmlinuz", tmp_path / f"{architecture}-initramfs.gz"
        kernel.write_bytes(b"kernel " + architecture.encode())
        initramfs.write_bytes(b"initramfs " + architecture.encode())
        files.append(dict(architecture=architecture, kernel=str(kernel), initramfs=str(initramfs)))
    return files


def publish(registry, artifacts, key=None, version="v1.0.0", tags=("stable",)):
    plan = _publish.plan_release(artifacts, {"version": version, "channel": "stable"}, list(tags))
    sign = functools.partial(_signatures.sign_digests, registry, key) if key else None
    pushed = _publish.publish(registry, plan, sign=sign)
    return plan, pushed


def policy(mode, *pems):
    return _signatures.SignaturePolicy.from_params({"signature_policy": mode, "signature_keys": list(pems)})


def verify(client, mode, *pems, reference="stable", architecture="amd64"):
    digest = reference if ":" in reference else None
    release = _release.resolve(client, architecture, tag=None if digest else reference, digest=digest)
    return release, _signatures.verify_release(client, release, policy(mode, *pems))


def signature_calls(registry):
    return [call for call in registry.calls if call[0] == "get_manifest" and call[1].endswith(".sig")]


def test_a_release_signed_on_publish_verifies_by_its_index(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    plan, pushed = publish(registry, artifacts, key)
    assert pushed["signed"] == [plan.index.digest] + [manifest.digest for manifest in plan.manifests]
    # Signed before the tag moved: the tag's put comes last.
    assert registry.pushes()[-1] == ("put_manifest", "stable", "application/vnd.oci.image.index.v1+json")
    release, check = verify(registry, "required", pem)
    assert check.as_result() == {
        "policy": "required",
        "verified": True,
        "digest": plan.index.digest,
        "key_fingerprint": key.trusted.fingerprint,
        "source": "registry.example.com",
        "problems": [],
    }
    assert release.manifest_digest == plan.manifest_digests()["amd64"]


def test_a_signature_on_the_platform_manifest_alone_verifies(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    plan, _pushed = publish(registry, artifacts, key)
    del registry.tags[_cosign.signature_tag(plan.index.digest)]
    _release_, check = verify(registry, "required", pem)
    assert check.verified and check.digest == plan.manifest_digests()["amd64"]
    # Staged by the manifest digest itself, the index is not involved.
    _release_, check = verify(
        registry, "required", pem, reference=plan.manifest_digests()["arm64"], architecture="arm64"
    )
    assert check.digest == plan.manifest_digests()["arm64"]


def test_any_trusted_key_is_enough(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    _other_key, other_pem = new_key()
    publish(registry, artifacts, key)
    _release_, check = verify(registry, "required", other_pem, pem)
    assert check.key_fingerprint == key.trusted.fingerprint


def test_an_unsigned_release_is_missing_under_required_and_passes_if_present(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    _key, pem = new_key()
    plan, _pushed = publish(registry, artifacts)
    with pytest.raises(SignatureMissingError) as missing:
        verify(registry, "required", pem)
    assert missing.value.code == "signature_missing"
    assert _cosign.signature_tag(plan.index.digest) in str(missing.value)
    assert missing.value.details()["signature"]["verified"] is False
    _release_, check = verify(registry, "if_present", pem)
    assert check.as_result()["policy"] == "if_present" and not check.verified


def test_policy_off_looks_for_nothing(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    publish(registry, artifacts)
    _release_, check = verify(registry, "off")
    assert check.as_result()["policy"] == "off"
    assert signature_calls(registry) == []


@pytest.mark.parametrize("mode", ["required", "if_present"])
def test_a_signature_by_another_key_is_refused(artifacts, mode):
    registry = FakePushRegistry(REPOSITORY)
    key, _pem = new_key()
    _other_key, other_pem = new_key()
    publish(registry, artifacts, key)
    with pytest.raises(SignatureInvalidError) as invalid:
        verify(registry, mode, other_pem)
    assert invalid.value.code == "signature_invalid"
    assert "verifies with no trusted key" in str(invalid.value)
    assert len(invalid.value.details()["signature"]["problems"]) == 2  # the index's and the manifest's


def _rewrite_signature(registry, digest, change):
    """Apply ``change(layer, payload) -> payload`` to the first signature of ``digest``, as a registry could."""
    tag = _cosign.signature_tag(digest)
    document = json.loads(registry.manifests[registry.tags[tag]][0])
    layer = document["layers"][0]
    payload = change(layer, registry.blobs[layer["digest"]])
    registry.blobs[sha256_digest(payload)] = payload
    layer.update(digest=sha256_digest(payload), size=len(payload))
    registry.put_manifest(tag, json.dumps(document).encode(), MEDIA_OCI_MANIFEST)


def _drop_manifest_signatures(registry, plan):
    for manifest in plan.manifests:
        del registry.tags[_cosign.signature_tag(manifest.digest)]


def test_a_tampered_payload_is_refused(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    plan, _pushed = publish(registry, artifacts, key)
    _drop_manifest_signatures(registry, plan)
    _rewrite_signature(
        registry, plan.index.digest, lambda layer, payload: payload.replace(b'"optional":null', b'"optional":{}')
    )
    with pytest.raises(SignatureInvalidError, match="verifies with no trusted key"):
        verify(registry, "required", pem)


def test_a_signature_of_another_digest_is_refused(artifacts, tmp_path):
    registry = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    old, _pushed = publish(registry, artifacts, key)
    (tmp_path / "amd64-vmlinuz").write_bytes(b"another kernel")
    new, _pushed = publish(registry, artifacts, version="v1.1.0")
    # The old release's valid signatures, copied to the tags of the new one.
    registry.tags[_cosign.signature_tag(new.index.digest)] = registry.tags[_cosign.signature_tag(old.index.digest)]
    registry.tags[_cosign.signature_tag(new.manifest_digests()["amd64"])] = registry.tags[
        _cosign.signature_tag(old.manifest_digests()["amd64"])
    ]
    with pytest.raises(SignatureInvalidError, match=f"is by a trusted key, but its payload signs '{old.index.digest}'"):
        verify(registry, "required", pem)


def test_a_signature_for_another_repository_is_refused(artifacts):
    key, pem = new_key()
    other = FakePushRegistry("registry.example.com/someone/else")
    publish(other, artifacts, key)
    # The same release, signed for another repository, copied here with its signatures.
    registry = copy.deepcopy(other)
    registry.repository = parse_repository(REPOSITORY)
    with pytest.raises(SignatureInvalidError, match="names the repository 'registry.example.com/someone/else'"):
        verify(registry, "required", pem)


def test_a_tag_moved_to_an_unsigned_index_is_missing(artifacts, tmp_path):
    registry = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    publish(registry, artifacts, key)
    assert verify(registry, "required", pem)[1].verified
    (tmp_path / "arm64-initramfs.gz").write_bytes(b"unsigned initramfs")
    publish(registry, artifacts, version="v1.0.1")
    with pytest.raises(SignatureMissingError):
        verify(registry, "required", pem)


def _mirrored(upstream):
    mirror = copy.deepcopy(upstream)
    mirror.calls, upstream.calls = [], []
    mirror.repository = parse_repository("mirror.example.com/kubesolo/os")
    return mirror, MirroredClient(upstream, [("mirror.example.com", mirror)])


def test_a_mirror_serving_the_release_is_asked_for_signatures_first(artifacts):
    upstream = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    plan, _pushed = publish(upstream, artifacts, key)
    mirror, client = _mirrored(upstream)
    _release_, check = verify(client, "required", pem, reference=plan.index.digest)
    assert check.source == "mirror.example.com"
    assert signature_calls(mirror) and not signature_calls(upstream)


def test_a_mirror_cannot_hide_a_signature_or_make_a_forged_one_pass(artifacts):
    upstream = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    plan, _pushed = publish(upstream, artifacts, key)
    mirror, client = _mirrored(upstream)
    for digest in [plan.index.digest] + [m.digest for m in plan.manifests]:
        del mirror.tags[_cosign.signature_tag(digest)]
    _release_, check = verify(client, "required", pem, reference=plan.index.digest)
    assert check.source == "registry.example.com"

    unsigned = FakePushRegistry(REPOSITORY)
    plan, _pushed = publish(unsigned, artifacts)
    mirror, client = _mirrored(unsigned)
    forger, _forger_pem = new_key()
    _signatures.sign_digests(mirror, forger, [plan.index.digest])
    with pytest.raises(SignatureInvalidError, match="mirror.example.com: signature"):
        verify(client, "required", pem, reference=plan.index.digest)
    with pytest.raises(SignatureInvalidError):
        verify(client, "if_present", pem, reference=plan.index.digest)


class FlakyUpstream(FakePushRegistry):
    """Serves the release, but its signature tags fail like a registry that went away."""

    def get_manifest(self, reference, accept=()):
        if reference.endswith(".sig"):
            raise RegistryConnectionError("cannot reach registry.example.com")
        return super().get_manifest(reference, accept) if accept else super().get_manifest(reference)


def test_a_lookup_fault_at_the_upstream_is_not_read_as_unsigned(artifacts):
    upstream = FlakyUpstream(REPOSITORY)
    _key, pem = new_key()
    publish(upstream, artifacts)
    for mode in ("required", "if_present"):
        with pytest.raises(RegistryConnectionError):
            verify(upstream, mode, pem)


def test_a_failing_mirror_is_noted_and_the_upstream_decides(artifacts):
    upstream = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    plan, _pushed = publish(upstream, artifacts, key)
    mirror, client = _mirrored(upstream)

    def broken(reference, accept=()):
        if reference.endswith(".sig"):
            raise RegistryConnectionError("mirror down")
        return FakePushRegistry.get_manifest(mirror, reference, accept)

    mirror.get_manifest = broken
    _release_, check = verify(client, "required", pem, reference=plan.index.digest)
    assert check.source == "registry.example.com"
    assert client.mirror_errors == ["mirror.example.com: mirror down"]


def test_signing_again_with_the_same_key_changes_nothing_and_other_signers_are_kept(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    second, second_pem = new_key()
    plan, _pushed = publish(registry, artifacts, key)
    registry.calls = []
    _plan, pushed = publish(registry, artifacts, key)
    assert pushed["signed"] == [] and registry.pushes() == []
    assert _signatures.sign_digests(registry, second, [plan.index.digest], check_mode=True) == [plan.index.digest]
    assert registry.pushes() == []
    assert _signatures.sign_digests(registry, second, [plan.index.digest]) == [plan.index.digest]
    layers = json.loads(registry.manifests[registry.tags[_cosign.signature_tag(plan.index.digest)]][0])["layers"]
    assert len(layers) == 2
    for pem_text in (pem, second_pem):
        _release_, check = verify(registry, "required", pem_text)
        assert check.digest == plan.index.digest


def test_policy_options():
    _key, pem = new_key()
    assert _signatures.SignaturePolicy.from_params({"signature_policy": "auto", "signature_keys": []}).mode == "off"
    assert (
        _signatures.SignaturePolicy.from_params({"signature_policy": "auto", "signature_keys": [pem]}).mode
        == "required"
    )
    for mode in ("required", "if_present"):
        with pytest.raises(ParameterError, match=f"signature_policy={mode} needs at least one key"):
            _signatures.SignaturePolicy.from_params({"signature_policy": mode, "signature_keys": []})
    with pytest.raises(ParameterError, match=r"signature_keys\[1\] is not a PEM public key"):
        policy("required", pem, "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


def test_key_files_are_read(tmp_path):
    _key, pem = new_key()
    path = tmp_path / "release.pub"
    path.write_text(pem)
    assert len(policy("required", str(path)).keys) == 1
    assert _signatures.read_key_files([str(path), pem]) == [pem, pem]
    with pytest.raises(ParameterError, match="cannot read the key file .*missing.pub.*No such file"):
        policy("required", str(tmp_path / "missing.pub"))
    (tmp_path / "garbage.pub").write_text("garbage")
    with pytest.raises(ParameterError, match="signature key file .*garbage.pub is not a PEM public key"):
        policy("required", str(tmp_path / "garbage.pub"))


def test_a_bad_key_fails_before_the_registry_is_asked(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    publish(registry, artifacts)
    registry.calls = []
    params = dict(
        _options.default_params(_options.registry_argument_spec()),
        repository=REPOSITORY,
        signature_keys=["not a key file"],
    )
    with pytest.raises(ParameterError):
        _options.resolve_from_params(registry, params, "amd64")
    assert registry.calls == []


def test_resolve_from_params_checks_the_policy(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    key, pem = new_key()
    plan, _pushed = publish(registry, artifacts, key)
    params = dict(_options.default_params(_options.registry_argument_spec()), repository=REPOSITORY)
    release = _options.resolve_from_params(registry, dict(params, signature_keys=[pem]), "amd64")
    assert release.summary()["signature"]["digest"] == plan.index.digest
    assert _options.resolve_from_params(registry, params, "amd64").summary()["signature"]["policy"] == "off"
    _other, other_pem = new_key()
    with pytest.raises(SignatureInvalidError):
        _options.resolve_from_params(registry, dict(params, signature_keys=[other_pem]), "amd64")


def test_a_new_signature_goes_first_so_a_crowd_of_others_cannot_hide_it(artifacts):
    registry = FakePushRegistry(REPOSITORY)
    plan, _pushed = publish(registry, artifacts)
    for _signer in range(_cosign.MAX_SIGNATURES):
        _signatures.sign_digests(registry, new_key()[0], [plan.index.digest])
    key, pem = new_key()
    assert _signatures.sign_digests(registry, key, [plan.index.digest]) == [plan.index.digest]
    layers = json.loads(registry.manifests[registry.tags[_cosign.signature_tag(plan.index.digest)]][0])["layers"]
    assert len(layers) == _cosign.MAX_SIGNATURES
    registry.calls = []
    assert _signatures.sign_digests(registry, key, [plan.index.digest]) == []
    assert registry.pushes() == []
    _drop_manifest_signatures_of(registry, plan)
    assert verify(registry, "required", pem)[1].digest == plan.index.digest


def _drop_manifest_signatures_of(registry, plan):
    for manifest in plan.manifests:
        registry.tags.pop(_cosign.signature_tag(manifest.digest), None)


class UnusableSignatures(FakePushRegistry):
    """Answers at a signature tag with something that is not a signature manifest, as fetch_manifest reports it."""

    def __init__(self, error, repository=REPOSITORY):
        super().__init__(repository)
        self.error = error

    def get_manifest(self, reference, accept=()):
        if reference.endswith(".sig"):
            raise self.error
        return super().get_manifest(reference, accept) if accept else super().get_manifest(reference)


@pytest.mark.parametrize(
    "error",
    [
        ManifestError("manifest sha256-x.sig is not valid JSON: Expecting value"),
        ManifestError("manifest sha256-x.sig has schemaVersion 1, only 2 is supported"),
        DigestMismatchError("the registry says manifest sha256-x.sig has digest sha256:00, but its bytes hash to ..."),
    ],
    ids=["not-json", "schema-1", "digest-header"],
)
@pytest.mark.parametrize("mode", ["required", "if_present"])
def test_an_unusable_signature_manifest_is_an_invalid_signature_not_a_fault(artifacts, error, mode):
    registry = UnusableSignatures(error)
    _key, pem = new_key()
    publish(registry, artifacts)
    with pytest.raises(
        SignatureInvalidError, match=r"\.sig is unusable: (manifest|the registry says manifest) sha256-x\.sig"
    ):
        verify(registry, mode, pem)


def test_key_files_that_are_not_regular_files_or_are_private_keys_are_refused(tmp_path):
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ParameterError, match="is not a regular file"):
        policy("required", str(fifo))
    with pytest.raises(ParameterError, match="not a valid path"):
        policy("required", "a\x00b.pub")
    private_key = ec.generate_private_key(ec.SECP256R1())
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    (tmp_path / "release.key").write_text(private_pem)
    for entry in (private_pem, str(tmp_path / "release.key")):
        with pytest.raises(
            ParameterError, match=r"signature_keys\[0\] is a private key; give the public key"
        ) as refused:
            policy("required", entry)
        assert "BEGIN" not in str(refused.value)
    with pytest.raises(ParameterError, match="is not a regular file"):
        _signatures.load_signing_key(str(fifo), None)
    with pytest.raises(ParameterError, match="not a valid path"):
        _signatures.load_signing_key("a\x00b", None)
