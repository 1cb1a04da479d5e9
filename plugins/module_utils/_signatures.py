# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The signature policy of a release: look up its cosign signatures, verify them, and sign on publish.

A release is resolved to digests first (the pinned index, then the platform
manifest it selects, each checked against its bytes); a signature by a trusted
key on either digest passes, since the index names the manifest by digest.
Signatures are looked up where the release was served from and at the
upstream, and must name the upstream repository: a mirror can hide nothing
(the upstream is asked too) and forge nothing (it has no trusted key).
The format itself is in _cosign.
"""

from __future__ import annotations

import io
import os
import stat

from ansible_collections.kubesolo.fleet.plugins.module_utils import _cosign
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    FleetError,
    ManifestError,
    NotFoundError,
    ParameterError,
    SignatureInvalidError,
    SignatureMissingError,
    SizeMismatchError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import (
    MANIFEST_MEDIA_TYPES,
    MEDIA_OCI_MANIFEST,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._publish import Blob, upload_missing
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

POLICY_AUTO = "auto"
POLICY_REQUIRED = "required"
POLICY_IF_PRESENT = "if_present"
POLICY_OFF = "off"
POLICIES = (POLICY_AUTO, POLICY_REQUIRED, POLICY_IF_PRESENT, POLICY_OFF)

PEM_MARKER = "-----BEGIN"

# What a registry can answer at a signature tag that is a refusal, not a fault of the lookup.
UNUSABLE_ANSWERS = (ManifestError, DigestMismatchError, SizeMismatchError)


def signature_argument_spec():
    """The signature options, documented in the kubesolo.fleet.registry.release doc fragment."""
    return dict(
        # Public keys: nothing secret in them.
        signature_keys=dict(type="list", elements="str", default=[], no_log=False),
        signature_policy=dict(type="str", default=POLICY_AUTO, choices=list(POLICIES)),
    )


def effective_policy(params):
    """``signature_policy`` with ``auto`` resolved: required with keys, off without."""
    policy = params.get("signature_policy") or POLICY_AUTO
    if policy == POLICY_AUTO:
        return POLICY_REQUIRED if params.get("signature_keys") else POLICY_OFF
    return policy


def is_pem(entry):
    return isinstance(entry, str) and PEM_MARKER in entry


def _read_key_file(path, limit):
    """The bytes of the key file ``path``; ParameterError (the path named, never the content)."""
    try:
        # A FIFO or a device would block or never end: only a regular file is read.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ParameterError(f"the key file {printable(repr(path))} is not a regular file")
        with open(path, "rb") as handle:
            return handle.read(limit)
    except (OSError, TypeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "not a valid path"
        raise ParameterError(f"cannot read the key file {printable(repr(path))}: {reason}")


def read_key_files(entries):
    """``signature_keys`` with every file named read in: each entry as PEM text (so the controller
    reads the files, wherever the module then runs). A private key is refused, file or inline: it
    would travel in the module's arguments, which are not secret."""
    if isinstance(entries, str):
        entries = [entries]
    texts = []
    for position, entry in enumerate(entries or []):
        text = entry if is_pem(entry) else _read_key_file(entry, 64 * 1024).decode("utf-8", "replace")
        if "PRIVATE KEY" in text:
            raise ParameterError(
                f"signature_keys[{position}] is a private key; give the public key (openssl pkey -pubout)"
            )
        texts.append(text)
    return texts


class SignaturePolicy:
    """What a release must carry: ``mode`` (required, if_present or off) and the trusted ``keys``."""

    def __init__(self, mode, keys):
        self.mode = mode
        self.keys = keys

    @classmethod
    def from_params(cls, params):
        """The policy of the signature options; ParameterError for keys that are not keys."""
        mode = effective_policy(params)
        if mode == POLICY_OFF:
            return cls(mode, [])
        entries = params.get("signature_keys") or []
        if not entries:
            raise ParameterError(f"signature_policy={mode} needs at least one key in signature_keys")
        keys = []
        for position, text in enumerate(read_key_files(entries)):
            entry = entries[position]
            where = f"signature_keys[{position}]" if is_pem(entry) else f"signature key file {printable(entry)}"
            keys.append(_cosign.TrustedKey.from_pem(text.encode("utf-8"), where))
        return cls(mode, keys)


def load_signing_key(value, passphrase):
    """The _cosign.SigningKey of ``signing_key`` (inline PEM or a file's path); ParameterError that
    never quotes the key."""
    if is_pem(value):
        return _cosign.SigningKey.from_pem(value.encode("utf-8"), passphrase, "signing_key")
    return _cosign.SigningKey.from_pem(_read_key_file(value, 1024 * 1024), passphrase, "signing_key file")


class SignatureCheck:
    """What the policy found for a release; ``as_result()`` is the ``signature`` of a module result."""

    def __init__(self, policy, verified=False, digest=None, key_fingerprint=None, source=None, problems=()):
        self.policy = policy
        self.verified = verified
        self.digest = digest  # the digest the verified signature signs: the index's or the manifest's
        self.key_fingerprint = key_fingerprint
        self.source = source  # the registry or mirror that served the verified signature
        self.problems = list(problems)

    def as_result(self):
        return {
            "policy": self.policy,
            "verified": self.verified,
            "digest": self.digest,
            "key_fingerprint": self.key_fingerprint,
            "source": self.source,
            "problems": self.problems,
        }


class _Found:
    """The signatures of one digest at one source: the trusted key that verified one, or why none did."""

    def __init__(self, key=None, problems=()):
        self.key = key
        self.problems = list(problems)


def verify_release(client, release, policy):
    """The SignatureCheck of ``release`` (a _release.Release read through ``client``) under ``policy``.

    Raises SignatureMissingError or SignatureInvalidError when it fails the
    policy, and a lookup fault at the upstream when nothing verified.
    """
    if policy.mode == POLICY_OFF:
        return SignatureCheck(POLICY_OFF)
    identity = str(client.repository)
    digests = [digest for digest in (release.index_digest, release.manifest_digest) if digest]
    problems = []
    lookup_error = None
    for digest in digests:
        for location, source in _sources(client, digest):
            try:
                found = _check_signatures(source, digest, identity, policy.keys)
            except NotFoundError:
                continue
            except UNUSABLE_ANSWERS as exc:
                # The registry answered, with something that is not a signature manifest.
                problems.append(f"{location}: {_cosign.signature_tag(digest)} is unusable: {exc}")
                continue
            except FleetError as exc:
                if source is _upstream(client):
                    lookup_error = lookup_error or exc
                else:
                    client.mirror_errors.append(f"{location}: {exc}")
                continue
            if found.key is not None:
                return SignatureCheck(
                    policy.mode, verified=True, digest=digest, key_fingerprint=found.key.fingerprint, source=location
                )
            problems.extend(f"{location}: {problem}" for problem in found.problems)
    if problems:
        check = SignatureCheck(policy.mode, problems=problems)
        raise SignatureInvalidError(
            "release {} is signed, but no signature verifies with a trusted key ({}): {}".format(
                release.manifest_digest, _key_list(policy.keys), "; ".join(problems)
            ),
            check,
            release,
        )
    if lookup_error is not None:
        raise lookup_error
    if policy.mode == POLICY_REQUIRED:
        raise SignatureMissingError(
            "release {} has no cosign signature (looked for {}) and signature_policy is required".format(
                release.manifest_digest,
                " and ".join(_cosign.signature_tag(digest) for digest in digests),
            ),
            SignatureCheck(policy.mode),
            release,
        )
    return SignatureCheck(policy.mode)


def _upstream(client):
    return getattr(client, "upstream", client)


def _sources(client, digest):
    """[(location, RegistryClient)] to look up the signatures of ``digest`` at."""
    if hasattr(client, "signature_sources"):
        return client.signature_sources(digest)
    return [(str(client.repository.registry), client)]


def _key_list(keys):
    return ", ".join(key.fingerprint for key in keys)


def _signature_manifest(client, digest):
    """The signature manifest of ``digest`` at ``client``; NotFoundError when it has none."""
    return client.get_manifest(_cosign.signature_tag(digest), accept=MANIFEST_MEDIA_TYPES).document


def _check_signatures(client, digest, identity, keys):
    """The _Found of the signatures of ``digest`` at ``client``; NotFoundError when it has none."""
    layers, problems = _cosign.signature_layers(_signature_manifest(client, digest))
    if not layers and not problems:
        problems.append(f"{_cosign.signature_tag(digest)} holds no {_cosign.MEDIA_SIMPLE_SIGNING} layer")
    for layer, payload in _payloads(client, layers, problems):
        key = next((key for key in keys if key.verifies(payload, layer.signature)), None)
        if key is None:
            problems.append(
                f"signature {layer.descriptor['digest']} of {digest} verifies with no trusted key "
                "(another signer, or altered)"
            )
            continue
        problem = _cosign.payload_problem(payload, digest, identity)
        if problem:
            problems.append(f"signature {layer.descriptor['digest']} of {digest} is by a trusted key, but {problem}")
            continue
        return _Found(key)
    return _Found(problems=problems)


def _payloads(client, layers, problems):
    """(layer, payload bytes) of each layer whose payload ``client`` serves intact; the others
    add to ``problems``."""
    for layer in layers:
        buffer = io.BytesIO()
        try:
            client.download_blob(layer.descriptor["digest"], layer.descriptor["size"], buffer)
        except FleetError as exc:
            problems.append(f"the payload of signature {layer.descriptor['digest']} cannot be read: {exc}")
            continue
        yield layer, buffer.getvalue()


def sign_digests(client, signing_key, digests, check_mode=False):
    """Sign each of ``digests`` in ``client``'s repository with ``signing_key`` (a _cosign.SigningKey),
    unless a signature by that key is already among those verifiers look at; returns the digests that
    were (or would be) signed.

    The new signature goes first, so it is among the MAX_SIGNATURES a verifier reads however many
    there are; of the others, those that can still be read stay behind it, up to that bound.
    """
    identity = str(client.repository)
    signed = []
    for digest in digests:
        kept = []
        try:
            document = _signature_manifest(client, digest)
        except NotFoundError:
            document = None
        except UNUSABLE_ANSWERS:
            document = None  # replaced by one that is a signature manifest
        if document is not None:
            # Each payload is read once: to look for this key's signature, and to keep the others.
            layers, _problems = _cosign.signature_layers(document)
            readable = list(_payloads(client, layers, []))
            if any(
                signing_key.trusted.verifies(payload, layer.signature)
                and _cosign.payload_problem(payload, digest, identity) is None
                for layer, payload in readable
            ):
                continue
            kept = [layer.descriptor for layer, _payload in readable]
        signed.append(digest)
        if check_mode:
            continue
        payload = _cosign.payload_for(identity, digest)
        descriptor = _cosign.signature_descriptor(payload, signing_key.sign(payload))
        manifest_data, config_data = _cosign.signature_manifest(([descriptor] + kept)[: _cosign.MAX_SIGNATURES])
        upload_missing(
            client,
            [
                Blob.from_bytes(_cosign.MEDIA_SIMPLE_SIGNING, payload),
                Blob.from_bytes(_cosign.MEDIA_SIGNATURE_CONFIG, config_data),
            ],
        )
        client.put_manifest(_cosign.signature_tag(digest), manifest_data, MEDIA_OCI_MANIFEST)
    return signed
