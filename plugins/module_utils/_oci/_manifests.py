# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""Manifests and indexes: media types, fetching one by tag or digest, and validating what came back."""

from __future__ import annotations

import hashlib
import re

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    ManifestError,
    NotFoundError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._json import parse_json
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._transport import check_status, read_capped
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_MEDIA_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
MANIFEST_MEDIA_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
ANY_MANIFEST_MEDIA_TYPES = INDEX_MEDIA_TYPES + MANIFEST_MEDIA_TYPES

# Same cap as oras-go and skopeo: a manifest is metadata, never megabytes.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

# RFC 6838 type/subtype (a +suffix is part of the subtype's characters), then RFC 9110 parameters.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MEDIA_TYPE_RE = re.compile(
    rf"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"[ !#-\[\]-~]*\"))*",
    re.ASCII,
)


class ManifestDocument:
    """A manifest or index as the registry served it: raw bytes, media type, digest and JSON."""

    def __init__(self, data, media_type, digest, document):
        self.data = data
        self.media_type = media_type
        self.digest = digest
        self.document = document

    @property
    def is_index(self):
        return self.media_type in INDEX_MEDIA_TYPES


def media_type_of(content_type):
    """The bare media type of a Content-Type header value."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_media_type(value):
    """Whether ``value`` is a media type by its grammar (RFC 6838), parameters allowed."""
    return isinstance(value, str) and _MEDIA_TYPE_RE.fullmatch(value) is not None


def fetch_manifest(client, reference, accept=ANY_MANIFEST_MEDIA_TYPES):
    """Fetch a manifest or index by tag or digest through ``client`` (a RegistryClient).

    A digest reference is verified against the bytes received; so is the
    registry's Docker-Content-Digest header when it uses the same algorithm.
    """
    url = f"{client.base_url}/manifests/{reference}"
    response = client.request("GET", url, headers={"Accept": ", ".join(accept)})
    with response:
        if response.status_code == 404:
            separator = "@" if ":" in reference else ":"
            raise NotFoundError(f"{client.repository}{separator}{reference} was not found in the registry")
        check_status(client, response, f"manifest {reference} of {client.repository}")
        data = read_capped(client, response, MAX_MANIFEST_BYTES, f"manifest {reference}", error=ManifestError)
        content_type = media_type_of(response.headers.get("Content-Type"))
        header_digest = response.headers.get("Docker-Content-Digest", "")
    if ":" in reference:
        digest = verify_bytes(data, reference, "manifest")
    else:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    if header_digest.startswith(digest.split(":", 1)[0] + ":") and header_digest != digest:
        raise DigestMismatchError(
            f"the registry says manifest {reference} has digest {printable(header_digest)}, "
            f"but its bytes hash to {digest}"
        )
    document = parse_manifest_json(data, reference)
    return ManifestDocument(data, manifest_media_type(document, content_type, reference), digest, document)


def verify_bytes(data, digest, what):
    """``digest`` when ``data`` hashes to it; DigestMismatchError otherwise."""
    algorithm, expected_hex = parse_digest(digest)
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected_hex:
        raise DigestMismatchError(f"{what} {digest} has wrong content: its bytes hash to {algorithm}:{actual}")
    return digest


def parse_manifest_json(data, reference):
    try:
        document = parse_json(data)
    except ValueError as exc:
        raise ManifestError(f"manifest {reference} is not valid JSON: {exc}")
    if not isinstance(document, dict):
        raise ManifestError(f"manifest {reference} is not a JSON object")
    if document.get("schemaVersion") != 2:
        raise ManifestError(
            "manifest {} has schemaVersion {}, only 2 is supported".format(
                reference, printable(repr(document.get("schemaVersion")))
            )
        )
    return document


def manifest_media_type(document, content_type, reference):
    """The media type of a manifest; body and Content-Type must agree."""
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError(f"manifest {reference} has a non-string mediaType")
    if declared and not is_media_type(declared):
        raise ManifestError(f"manifest {reference} has the malformed mediaType {printable(repr(declared))}")
    if content_type and not is_media_type(content_type):
        raise ManifestError(
            f"manifest {reference} was served with the malformed Content-Type {printable(repr(content_type))}"
        )
    generic = ("", "application/json", "application/octet-stream")
    if declared and content_type not in generic and declared != content_type:
        raise ManifestError(f"manifest {reference} says its mediaType is {declared} but was served as {content_type}")
    media_type = declared or (content_type if content_type not in generic else "")
    if not media_type:
        media_type = MEDIA_OCI_INDEX if "manifests" in document else MEDIA_OCI_MANIFEST
    if media_type not in ANY_MANIFEST_MEDIA_TYPES:
        raise ManifestError(
            f"unsupported media type {media_type} at {reference} (expected an OCI or Docker index or manifest)"
        )
    return media_type
