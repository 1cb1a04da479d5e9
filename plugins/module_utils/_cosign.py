# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""Cosign "simple signing" signatures: keys, payloads, signature manifests; no network.

What ``cosign sign --key`` writes (up to cosign 2.x, and cosign 3 with
``--new-bundle-format=false``): for a manifest or index ``<alg>:<hex>``, an OCI
image manifest at tag ``<alg>-<hex>.sig`` of the same repository, with one
layer per signature. A layer's blob is the signed payload (compact JSON naming
the repository and the digest), and its ``dev.cosignproject.cosign/signature``
annotation is base64 of the signature over the payload's bytes exactly as
stored. Keys are verified as cosign and containers/image verify them: ECDSA
with SHA-256 (DER signatures), RSA PKCS#1 v1.5 with SHA-256, and Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import traceback

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import ParameterError
from ansible_collections.kubesolo.fleet.plugins.module_utils._json import parse_json
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import MEDIA_OCI_MANIFEST
from ansible_collections.kubesolo.fleet.plugins.module_utils._publish import canonical_json
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import digest_of, parse_digest
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

MEDIA_SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
MEDIA_SIGNATURE_CONFIG = "application/vnd.oci.image.config.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"

# A payload names a repository and a digest: a few hundred bytes, a few KiB with annotations.
MAX_PAYLOAD_BYTES = 64 * 1024
# Signatures of one digest that are looked at; a registry can append without limit.
MAX_SIGNATURES = 32
# Registries that stand for the same Docker Hub.
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


class TrustedKey:
    """A public key that may sign releases, and its fingerprint (sha256 of its DER SubjectPublicKeyInfo)."""

    def __init__(self, public_key):
        self.public_key = public_key
        der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()

    @classmethod
    def from_pem(cls, data, where):
        try:
            public_key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ParameterError(f"{where} is not a PEM public key: {printable(exc, limit=200)}")
        if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
            raise ParameterError(f"{where} is a {type(public_key).__name__}; ECDSA, RSA and Ed25519 keys are supported")
        return cls(public_key)

    def verifies(self, payload, signature):
        """Whether ``signature`` (raw bytes) is this key's over ``payload`` (raw bytes)."""
        try:
            if isinstance(self.public_key, ec.EllipticCurvePublicKey):
                self.public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self.public_key, rsa.RSAPublicKey):
                self.public_key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
            else:
                self.public_key.verify(signature, payload)
        except (InvalidSignature, ValueError):
            return False
        return True


class SigningKey:
    """A private key that signs payloads the way its TrustedKey verifies them."""

    def __init__(self, private_key):
        self.private_key = private_key
        self.trusted = TrustedKey(private_key.public_key())

    @classmethod
    def from_pem(cls, data, passphrase, where):
        if b"SIGSTORE PRIVATE KEY" in data or b"COSIGN PRIVATE KEY" in data:
            raise ParameterError(
                f"{where} is in cosign's own encrypted key format, which is not supported; "
                "give a PEM (PKCS#8) private key"
            )
        try:
            private_key = serialization.load_pem_private_key(
                data, password=passphrase.encode("utf-8") if passphrase else None
            )
        except TypeError:
            # Said without the library's words, which may name what was given.
            raise ParameterError(
                f"{where} is encrypted and needs a passphrase"
                if not passphrase
                else f"{where} is not encrypted; give no passphrase"
            )
        except (ValueError, UnsupportedAlgorithm):
            raise ParameterError(f"{where} is not a PEM private key, or the passphrase is wrong")
        if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise ParameterError(
                f"{where} is a {type(private_key).__name__}; ECDSA, RSA and Ed25519 keys are supported"
            )
        return cls(private_key)

    def sign(self, payload):
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return self.private_key.sign(payload, ec.ECDSA(hashes.SHA256()))
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return self.private_key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return self.private_key.sign(payload)


def signature_tag(digest):
    """The tag cosign stores the signatures of ``digest`` under."""
    algorithm, hex_digest = parse_digest(digest)
    return f"{algorithm}-{hex_digest}.sig"


def payload_for(identity, digest):
    """The payload cosign signs for ``digest`` in repository ``identity`` (host/path), as bytes."""
    document = {
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": None,
    }
    # Sorted keys are cosign's field order here, so the bytes are the ones cosign writes.
    return canonical_json(document)


def payload_problem(payload, digest, identity):
    """Why ``payload`` does not sign ``digest`` in repository ``identity``, or None when it does."""
    try:
        document = parse_json(payload)
    except ValueError as exc:
        return f"its payload is not JSON ({printable(exc, limit=120)})"
    critical = document.get("critical") if isinstance(document, dict) else None
    if not isinstance(critical, dict):
        return "its payload has no critical section"
    if critical.get("type") != SIGNATURE_TYPE:
        return f"its payload is of type {printable(repr(critical.get('type')), limit=80)}, not {SIGNATURE_TYPE!r}"
    image = critical.get("image")
    signed_digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if signed_digest != digest:
        return f"its payload signs {printable(repr(signed_digest), limit=160)}, not {digest}"
    reference = critical.get("identity")
    reference = reference.get("docker-reference") if isinstance(reference, dict) else None
    if not isinstance(reference, str) or not same_repository(reference, identity):
        return f"its payload names the repository {printable(repr(reference), limit=300)}, not {identity}"
    return None


def same_repository(reference, identity):
    """Whether the docker reference ``reference`` (a tag or digest allowed) names repository ``identity``."""
    name = reference.split("@", 1)[0]
    host, _sep, path = name.partition("/")
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path = path[: len(path) - len(last)] + last.split(":", 1)[0]
    want_host, _sep, want_path = identity.partition("/")
    if host.lower() in _DOCKER_HUB and want_host.lower() in _DOCKER_HUB:
        return path == want_path
    return host.lower() == want_host.lower() and path == want_path


class SignatureLayer:
    """One signature of a signature manifest: its payload's descriptor and the signature bytes."""

    def __init__(self, descriptor, signature):
        self.descriptor = descriptor
        self.signature = signature


def signature_layers(document):
    """([SignatureLayer], [problem]) of a signature manifest: every simple-signing layer up to
    MAX_SIGNATURES, and why any of them cannot be checked. Other layers are not signatures and are skipped."""
    layers = document.get("layers")
    if not isinstance(layers, list):
        return [], ["the signature manifest has no layers list"]
    found, problems = [], []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != MEDIA_SIMPLE_SIGNING:
            continue
        if len(found) + len(problems) >= MAX_SIGNATURES:
            problems.append(f"only the first {MAX_SIGNATURES} signatures were looked at")
            break
        problem = _layer_problem(layer)
        if problem:
            problems.append(problem)
            continue
        annotations = layer.get("annotations")
        encoded = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        try:
            signature = base64.b64decode(encoded or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            signature = b""
        if not signature:
            problems.append(f"signature layer {layer['digest']} has no base64 {SIGNATURE_ANNOTATION} annotation")
            continue
        found.append(SignatureLayer(dict(layer), signature))
    return found, problems


def _layer_problem(layer):
    try:
        parse_digest(layer.get("digest"))
    except ParameterError as exc:
        return f"a signature layer has a bad digest: {exc}"
    size = layer.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_PAYLOAD_BYTES:
        return (
            f"signature layer {layer['digest']} declares the size {printable(repr(size), limit=40)} "
            f"(1 to {MAX_PAYLOAD_BYTES} bytes allowed)"
        )
    return None


def signature_manifest(layers):
    """The bytes of a signature manifest holding ``layers`` (descriptors with their annotation), and
    its config blob, as cosign writes them: (manifest bytes, config bytes)."""
    config = {
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_data = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_SIGNATURE_CONFIG, "size": len(config_data), "digest": digest_of(config_data)},
        "layers": layers,
    }
    return canonical_json(manifest), config_data


def signature_descriptor(payload, signature):
    """The layer descriptor of a new signature over ``payload``."""
    return {
        "mediaType": MEDIA_SIMPLE_SIGNING,
        "size": len(payload),
        "digest": digest_of(payload),
        "annotations": {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode("ascii")},
    }
