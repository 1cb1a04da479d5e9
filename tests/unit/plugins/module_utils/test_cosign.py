# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cosign simple-signing format: keys, payloads and signature manifests, without a registry."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from ansible_collections.kubesolo.fleet.plugins.module_utils import _cosign
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import ParameterError

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
IDENTITY = "registry.example.com/kubesolo/os"


def public_pem(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private_key, passphrase=None):
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


KEY_MAKERS = {
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ecdsa-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa-2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


def test_the_payload_is_cosigns_compact_json():
    assert _cosign.payload_for(IDENTITY, DIGEST) == (
        b'{"critical":{"identity":{"docker-reference":"registry.example.com/kubesolo/os"},'
        b'"image":{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


def test_signatures_live_at_the_digest_tag():
    assert _cosign.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    assert _cosign.signature_tag("sha512:" + "0" * 128) == "sha512-" + "0" * 128 + ".sig"
    with pytest.raises(ParameterError):
        _cosign.signature_tag("sha256:short")


@pytest.mark.parametrize("kind", sorted(KEY_MAKERS))
def test_each_key_kind_verifies_its_own_signature_and_nothing_else(kind):
    private_key = KEY_MAKERS[kind]()
    signer = _cosign.SigningKey.from_pem(private_pem(private_key), None, "key")
    trusted = _cosign.TrustedKey.from_pem(public_pem(private_key), "key")
    payload = _cosign.payload_for(IDENTITY, DIGEST)
    signature = signer.sign(payload)
    assert trusted.verifies(payload, signature)
    assert not trusted.verifies(payload + b" ", signature)
    assert not trusted.verifies(payload.replace(b"ab", b"ba", 1), signature)
    assert not trusted.verifies(payload, signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not trusted.verifies(payload, b"not a signature")
    other = _cosign.TrustedKey.from_pem(public_pem(KEY_MAKERS[kind]()), "other")
    assert not other.verifies(payload, signature)


def test_ecdsa_is_verified_with_sha256_like_openssl_dgst_sha256():
    # What cosign's docs show for signing a payload outside cosign: the DER ECDSA signature of SHA-256.
    private_key = ec.generate_private_key(ec.SECP256R1())
    signature = private_key.sign(b"payload", ec.ECDSA(hashes.SHA256()))
    assert _cosign.TrustedKey.from_pem(public_pem(private_key), "key").verifies(b"payload", signature)
    signature_384 = private_key.sign(b"payload", ec.ECDSA(hashes.SHA384()))
    assert not _cosign.TrustedKey.from_pem(public_pem(private_key), "key").verifies(b"payload", signature_384)


def test_the_fingerprint_is_the_sha256_of_the_der_public_key():
    private_key = ec.generate_private_key(ec.SECP256R1())
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    trusted = _cosign.TrustedKey.from_pem(public_pem(private_key), "key")
    assert trusted.fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()
    assert _cosign.SigningKey.from_pem(private_pem(private_key), None, "key").trusted.fingerprint == trusted.fingerprint


def test_a_public_key_that_is_not_one_is_a_parameter_error():
    with pytest.raises(ParameterError, match=r"^signature_keys\[0\] is not a PEM public key"):
        _cosign.TrustedKey.from_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "signature_keys[0]"
        )
    dsa_key = dsa.generate_private_key(key_size=2048)
    with pytest.raises(ParameterError, match="ECDSA, RSA and Ed25519 keys are supported"):
        _cosign.TrustedKey.from_pem(public_pem(dsa_key), "key.pub")


def test_private_key_errors_never_quote_the_key():
    private_key = ec.generate_private_key(ec.SECP256R1())
    encrypted = private_pem(private_key, "correct horse")
    with pytest.raises(ParameterError, match="is encrypted and needs a passphrase") as missing:
        _cosign.SigningKey.from_pem(encrypted, None, "signing_key")
    with pytest.raises(ParameterError, match="passphrase is wrong") as wrong:
        _cosign.SigningKey.from_pem(encrypted, "battery staple", "signing_key")
    with pytest.raises(ParameterError, match="is not encrypted") as needless:
        _cosign.SigningKey.from_pem(private_pem(private_key), "correct horse", "signing_key")
    for error in (missing, wrong, needless):
        assert "BEGIN" not in str(error.value) and "correct horse" not in str(error.value)
    assert _cosign.SigningKey.from_pem(encrypted, "correct horse", "signing_key").trusted.fingerprint


@pytest.mark.parametrize(
    "payload, problem",
    [
        (_cosign.payload_for(IDENTITY, DIGEST), None),
        (_cosign.payload_for(IDENTITY + ":v1.0.0", DIGEST), None),
        (_cosign.payload_for(IDENTITY + "@" + DIGEST, DIGEST), None),
        (_cosign.payload_for("REGISTRY.example.com/kubesolo/os", DIGEST), None),
        (_cosign.payload_for(IDENTITY, OTHER_DIGEST), "signs 'sha256:cdcd"),
        (_cosign.payload_for("registry.example.com/kubesolo/other", DIGEST), "names the repository"),
        (_cosign.payload_for("mirror.example.com/kubesolo/os", DIGEST), "names the repository"),
        (_cosign.payload_for("registry.example.com/kubesolo", DIGEST), "names the repository"),
        (b"not json", "is not JSON"),
        (b"[]", "no critical section"),
        (b'{"critical":{"type":"something else"}}', "of type 'something else'"),
        (
            json.dumps(
                {
                    "critical": {
                        "identity": {},
                        "image": {"docker-manifest-digest": DIGEST},
                        "type": _cosign.SIGNATURE_TYPE,
                    }
                }
            ).encode(),
            "names the repository None",
        ),
    ],
)
def test_payload_problems(payload, problem):
    found = _cosign.payload_problem(payload, DIGEST, IDENTITY)
    if problem is None:
        assert found is None
    else:
        assert problem in found


def test_docker_hub_names_are_one_registry():
    assert _cosign.same_repository("index.docker.io/kubesolo/os", "docker.io/kubesolo/os")
    assert _cosign.same_repository("docker.io/kubesolo/os:latest", "registry-1.docker.io/kubesolo/os")
    assert not _cosign.same_repository("index.docker.io/kubesolo/other", "docker.io/kubesolo/os")
    assert not _cosign.same_repository("localhost:5000/kubesolo/os", "localhost:5001/kubesolo/os")


def _layer(payload=b"payload", signature=b"sig", **changes):
    layer = _cosign.signature_descriptor(payload, signature)
    layer.update(changes)
    return layer


def test_signature_layers_keep_the_signatures_and_say_what_is_wrong_with_the_rest():
    good = _layer()
    document = {
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": DIGEST, "size": 3},
            good,
            _layer(annotations={}),
            _layer(annotations={_cosign.SIGNATURE_ANNOTATION: "%%% not base64"}),
            _layer(size=_cosign.MAX_PAYLOAD_BYTES + 1),
            _layer(size=True),
            _layer(digest="sha256:nothex"),
            "not an object",
        ]
    }
    layers, problems = _cosign.signature_layers(document)
    assert [layer.descriptor for layer in layers] == [good]
    assert layers[0].signature == b"sig"
    assert len(problems) == 5
    assert "no base64 dev.cosignproject.cosign/signature annotation" in problems[0]
    assert "no base64" in problems[1]
    assert "(1 to 65536 bytes allowed)" in problems[2]
    assert "declares the size True" in problems[3]
    assert "bad digest" in problems[4]
    assert _cosign.signature_layers({}) == ([], ["the signature manifest has no layers list"])


def test_signature_layers_stop_at_a_bound():
    document = {"layers": [_layer(payload=bytes([n % 256]) * (n + 1)) for n in range(_cosign.MAX_SIGNATURES + 5)]}
    layers, problems = _cosign.signature_layers(document)
    assert len(layers) == _cosign.MAX_SIGNATURES
    assert problems == [f"only the first {_cosign.MAX_SIGNATURES} signatures were looked at"]


def test_a_signature_manifest_is_an_oci_manifest_with_a_config_naming_its_layers():
    layers = [_layer(b"one"), _layer(b"two")]
    manifest_data, config_data = _cosign.signature_manifest(layers)
    manifest = json.loads(manifest_data)
    config = json.loads(config_data)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["layers"] == layers
    assert manifest["config"]["digest"] == "sha256:" + hashlib.sha256(config_data).hexdigest()
    assert manifest["config"]["size"] == len(config_data)
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in layers]
    assert base64.b64decode(layers[0]["annotations"][_cosign.SIGNATURE_ANNOTATION]) == b"sig"


def test_cosigns_own_key_format_is_refused_clearly():
    pem = b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    with pytest.raises(ParameterError, match="cosign's own encrypted key format, which is not supported"):
        _cosign.SigningKey.from_pem(pem, "secret", "signing_key")
