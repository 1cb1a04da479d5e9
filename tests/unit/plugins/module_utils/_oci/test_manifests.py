# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manifests and indexes (_manifests): media types, JSON, digests, and fetching them through a
RegistryClient on a fake session (no network)."""

from __future__ import annotations

import hashlib
import re

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    InvalidReferenceError,
    ManifestError,
    NotFoundError,
    RegistryResponseError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _manifests
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils._oci.registry_fakes import (
    BASE_URL,
    MANIFEST,
    MANIFEST_BYTES,
    MANIFEST_DIGEST,
    REPOSITORY,
    error_response,
    make_client,
    manifest_response,
    retrying,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import FakeResponse, sha256_digest

ALL_MANIFEST_TYPES = _manifests.INDEX_MEDIA_TYPES + _manifests.MANIFEST_MEDIA_TYPES


# -- Media types -----------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, media_type",
    [
        ("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.index.v1+json"),
        ("application/vnd.oci.image.manifest.v1+json; charset=utf-8", "application/vnd.oci.image.manifest.v1+json"),
        (" Application/JSON ", "application/json"),
        ("", ""),
        (None, ""),
    ],
)
def test_media_type_of(content_type, media_type):
    assert _manifests.media_type_of(content_type) == media_type


@pytest.mark.parametrize(
    "document, content_type, expected",
    [
        ({"mediaType": _manifests.MEDIA_OCI_MANIFEST}, _manifests.MEDIA_OCI_MANIFEST, _manifests.MEDIA_OCI_MANIFEST),
        ({"mediaType": _manifests.MEDIA_OCI_INDEX}, _manifests.MEDIA_OCI_INDEX, _manifests.MEDIA_OCI_INDEX),
        ({"mediaType": _manifests.MEDIA_DOCKER_LIST}, "application/json", _manifests.MEDIA_DOCKER_LIST),
        ({"mediaType": _manifests.MEDIA_DOCKER_MANIFEST}, "application/octet-stream", _manifests.MEDIA_DOCKER_MANIFEST),
        ({"mediaType": _manifests.MEDIA_OCI_INDEX}, "", _manifests.MEDIA_OCI_INDEX),
        ({"layers": []}, _manifests.MEDIA_DOCKER_MANIFEST, _manifests.MEDIA_DOCKER_MANIFEST),
        ({"manifests": []}, _manifests.MEDIA_OCI_INDEX, _manifests.MEDIA_OCI_INDEX),
        ({"manifests": []}, "", _manifests.MEDIA_OCI_INDEX),
        ({"manifests": []}, "application/json", _manifests.MEDIA_OCI_INDEX),
        ({"layers": []}, "", _manifests.MEDIA_OCI_MANIFEST),
    ],
)
def test_manifest_media_type(document, content_type, expected):
    assert _manifests.manifest_media_type(document, content_type, "stable") == expected


@pytest.mark.parametrize(
    "document, content_type, message",
    [
        (
            {"mediaType": _manifests.MEDIA_OCI_INDEX},
            _manifests.MEDIA_OCI_MANIFEST,
            f"manifest stable says its mediaType is {_manifests.MEDIA_OCI_INDEX} but was served as {_manifests.MEDIA_OCI_MANIFEST}",
        ),
        (
            {"mediaType": _manifests.MEDIA_OCI_MANIFEST},
            _manifests.MEDIA_DOCKER_MANIFEST,
            f"manifest stable says its mediaType is {_manifests.MEDIA_OCI_MANIFEST} but was served as {_manifests.MEDIA_DOCKER_MANIFEST}",
        ),
        (
            {"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
            "",
            "unsupported media type application/vnd.docker.distribution.manifest.v1+prettyjws at stable "
            "(expected an OCI or Docker index or manifest)",
        ),
        (
            {"layers": []},
            "text/html",
            "unsupported media type text/html at stable (expected an OCI or Docker index or manifest)",
        ),
        ({"mediaType": 7}, _manifests.MEDIA_OCI_MANIFEST, "manifest stable has a non-string mediaType"),
        (
            {"mediaType": "application/vnd.oci.image.manifest.v1+json\x1b[2J\u202e"},
            "",
            "manifest stable has the malformed mediaType 'application/vnd.oci.image.manifest.v1+json\\x1b[2J\\u202e'",
        ),
        (
            {"layers": []},
            "application/vnd.oci.image.manifest.v1+json\x07",
            "manifest stable was served with the malformed Content-Type 'application/vnd.oci.image.manifest.v1+json\\x07'",
        ),
        (
            {"mediaType": "application/" + "x" * 5000},
            "",
            "manifest stable has the malformed mediaType 'application/" + "x" * 184 + "...",
        ),
    ],
)
def test_manifest_media_type_rejects(document, content_type, message):
    with pytest.raises(ManifestError) as raised:
        _manifests.manifest_media_type(document, content_type, "stable")
    assert str(raised.value) == message
    assert raised.value.code == "invalid_manifest"


@pytest.mark.parametrize(
    "value",
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.kubesolo.os.kernel.v1+octet-stream",
        "application/vnd.in-toto+json",
        "text/plain; charset=utf-8",
        'application/example;profile="a b"',
        "a/b",
    ],
)
def test_is_media_type(value):
    assert _manifests.is_media_type(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "application",
        "application/",
        "/json",
        "application/json/x",
        "application/vnd.evil\x1b]8;;http://evil\x07+json",
        "application/json\u202e",
        "application/js on",
        "application/" + "x" * 128,
        "application/json; charset",
        "application/json\n",
        "аpplication/json",  # a Cyrillic a
        None,
        7,
    ],
)
def test_is_not_media_type(value):
    assert not _manifests.is_media_type(value)


@pytest.mark.parametrize(
    "fetched_type, is_index",
    [
        (_manifests.MEDIA_OCI_INDEX, True),
        (_manifests.MEDIA_DOCKER_LIST, True),
        (_manifests.MEDIA_OCI_MANIFEST, False),
        (_manifests.MEDIA_DOCKER_MANIFEST, False),
    ],
)
def test_fetched_is_index(fetched_type, is_index):
    assert _manifests.ManifestDocument(b"{}", fetched_type, "sha256:x", {}).is_index is is_index


# -- Manifest JSON ---------------------------------------------------------


def test_parse_manifest_json_returns_the_object():
    assert _manifests.parse_manifest_json(MANIFEST_BYTES, "stable") == MANIFEST


@pytest.mark.parametrize(
    "data, message",
    [
        (b'{"schemaVersion": 2', "manifest stable is not valid JSON: "),
        (b"\xff\xfe{}", "manifest stable is not valid JSON: "),
        (b"", "manifest stable is not valid JSON: "),
        (b'[{"schemaVersion": 2}]', "manifest stable is not a JSON object"),
        (b'"manifest"', "manifest stable is not a JSON object"),
        (b'{"schemaVersion": 1, "fsLayers": []}', "manifest stable has schemaVersion 1, only 2 is supported"),
        (b'{"schemaVersion": "2"}', "manifest stable has schemaVersion '2', only 2 is supported"),
        (b'{"layers": []}', "manifest stable has schemaVersion None, only 2 is supported"),
    ],
)
def test_parse_manifest_json_rejects(data, message):
    with pytest.raises(ManifestError) as raised:
        _manifests.parse_manifest_json(data, "stable")
    assert str(raised.value).startswith(message)


# -- Digests ---------------------------------------------------------------


@pytest.mark.parametrize(
    "digest",
    [
        sha256_digest(b"payload"),
        "sha512:" + hashlib.sha512(b"payload").hexdigest(),
    ],
)
def test_verify_bytes_accepts_matching_content(digest):
    assert _manifests.verify_bytes(b"payload", digest, "manifest") == digest


def test_verify_bytes_rejects_other_content():
    digest = sha256_digest(b"payload")
    with pytest.raises(DigestMismatchError) as raised:
        _manifests.verify_bytes(b"tampered", digest, "manifest")
    assert str(raised.value) == "manifest {} has wrong content: its bytes hash to {}".format(
        digest,
        sha256_digest(b"tampered"),
    )
    assert raised.value.code == "digest_mismatch"


def test_verify_bytes_rejects_an_invalid_digest():
    with pytest.raises(InvalidReferenceError):
        _manifests.verify_bytes(b"payload", "md5:" + hashlib.md5(b"payload").hexdigest(), "manifest")


# -- Manifests -------------------------------------------------------------


def test_get_manifest_by_tag():
    client = make_client([manifest_response()])
    result = client.get_manifest("stable")
    assert (result.data, result.media_type, result.digest, result.document) == (
        MANIFEST_BYTES,
        _manifests.MEDIA_OCI_MANIFEST,
        MANIFEST_DIGEST,
        MANIFEST,
    )
    assert client.session.sent[0].headers == {"Accept": ", ".join(ALL_MANIFEST_TYPES)}


def test_get_manifest_sends_the_given_accept_list():
    client = make_client([manifest_response()])
    client.get_manifest(MANIFEST_DIGEST, accept=_manifests.MANIFEST_MEDIA_TYPES)
    assert client.session.sent[0].headers == {"Accept": ", ".join(_manifests.MANIFEST_MEDIA_TYPES)}
    assert client.session.sent[0].url == BASE_URL + "/manifests/" + MANIFEST_DIGEST


@pytest.mark.parametrize(
    "digest",
    [
        MANIFEST_DIGEST,
        "sha512:" + hashlib.sha512(MANIFEST_BYTES).hexdigest(),
    ],
)
def test_get_manifest_by_digest_keeps_the_verified_digest(digest):
    client = make_client([manifest_response(headers={"Docker-Content-Digest": MANIFEST_DIGEST})])
    assert client.get_manifest(digest).digest == digest


def test_get_manifest_by_digest_rejects_other_bytes():
    wanted = sha256_digest(b"another manifest")
    client = make_client([manifest_response()])
    with pytest.raises(DigestMismatchError) as raised:
        client.get_manifest(wanted)
    assert str(raised.value) == f"manifest {wanted} has wrong content: its bytes hash to {MANIFEST_DIGEST}"


def test_get_manifest_rejects_a_disagreeing_docker_content_digest():
    claimed = sha256_digest(b"what the registry claims")
    client = make_client([manifest_response(headers={"Docker-Content-Digest": claimed})])
    with pytest.raises(DigestMismatchError) as raised:
        client.get_manifest("stable")
    assert (
        str(raised.value)
        == f"the registry says manifest stable has digest {claimed}, but its bytes hash to {MANIFEST_DIGEST}"
    )


def test_get_manifest_escapes_a_docker_content_digest_it_quotes():
    client = make_client([manifest_response(headers={"Docker-Content-Digest": "sha256:\x1b[2J\x9b31m" + "0" * 500})])
    with pytest.raises(DigestMismatchError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "the registry says manifest stable has digest sha256:\\x1b[2J\\x9b31m" + "0" * 176 + "..., "
        f"but its bytes hash to {MANIFEST_DIGEST}"
    )


def test_get_manifest_ignores_a_docker_content_digest_of_another_algorithm():
    other = "sha512:" + hashlib.sha512(b"unrelated").hexdigest()
    client = make_client([manifest_response(headers={"Docker-Content-Digest": other})])
    assert client.get_manifest("stable").digest == MANIFEST_DIGEST


def test_get_manifest_refuses_an_announced_oversized_manifest():
    response = FakeResponse(
        200, MANIFEST_BYTES, {"Content-Type": _manifests.MEDIA_OCI_MANIFEST, "Content-Length": str(4 * 1024 * 1024 + 1)}
    )
    client = make_client([response])
    with pytest.raises(ManifestError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "manifest stable is 4194305 bytes, over the 4194304 byte limit"
    assert response.reads == 0


def test_get_manifest_refuses_a_streamed_oversized_manifest():
    body = MANIFEST_BYTES + b" " * (4 * 1024 * 1024 + 1 - len(MANIFEST_BYTES))
    client = make_client([FakeResponse(200, body, {"Content-Type": _manifests.MEDIA_OCI_MANIFEST})])
    with pytest.raises(ManifestError, match="manifest stable is over the 4194304 byte limit"):
        client.get_manifest("stable")


def test_get_manifest_accepts_a_manifest_of_exactly_the_cap():
    body = MANIFEST_BYTES + b" " * (4 * 1024 * 1024 - len(MANIFEST_BYTES))
    client = make_client([manifest_response(body)])
    assert client.get_manifest("stable").digest == sha256_digest(body)


@pytest.mark.parametrize(
    "reference, name",
    [
        ("v9.9.9", REPOSITORY + ":v9.9.9"),
        (MANIFEST_DIGEST, REPOSITORY + "@" + MANIFEST_DIGEST),
    ],
)
def test_get_manifest_not_found(reference, name):
    client = make_client([error_response(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})])
    with pytest.raises(NotFoundError) as raised:
        client.get_manifest(reference)
    assert str(raised.value) == f"{name} was not found in the registry"


@pytest.mark.parametrize(
    "document, detail",
    [
        ({"errors": [{"code": "UNAVAILABLE", "message": "storage backend down"}]}, ": storage backend down"),
        ({"errors": [{"code": "UNAVAILABLE"}]}, ": UNAVAILABLE"),
        ({"errors": [{"message": "bad\x1b[31m\nthing\u202e"}]}, ": bad\\x1b[31m\\nthing\\u202e"),
        ({"errors": [{"message": "x" * 500}]}, ": " + "x" * 197 + "..."),
        ({"errors": []}, ""),
        ({}, ""),
    ],
)
def test_get_manifest_server_error_quotes_the_registry(document, detail):
    # Once the retries are used up, the last answer is the error.
    policy, sleeps = retrying(retries=2)
    answers = [error_response(503), error_response(503), error_response(503, document)]
    client = make_client(list(answers), retry=policy)
    with pytest.raises(RegistryResponseError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (f"the registry answered HTTP 503 for manifest stable of {REPOSITORY}{detail}")
    assert raised.value.code == "registry_error"
    assert len(client.session.sent) == 3
    assert len(sleeps) == 2
    assert all(answer.closed for answer in answers)


def test_get_manifest_rejects_a_content_type_disagreeing_with_the_body():
    client = make_client([manifest_response(content_type=_manifests.MEDIA_OCI_INDEX)])
    with pytest.raises(
        ManifestError,
        match=f"says its mediaType is {re.escape(_manifests.MEDIA_OCI_MANIFEST)} but was served as {re.escape(_manifests.MEDIA_OCI_INDEX)}",
    ):
        client.get_manifest("stable")


def test_get_manifest_rejects_invalid_json():
    client = make_client([manifest_response(b"<html>login</html>", content_type="text/html")])
    with pytest.raises(ManifestError, match="manifest stable is not valid JSON"):
        client.get_manifest("stable")


def test_a_manifest_nested_too_deeply_is_an_invalid_manifest():
    data = b'{"schemaVersion": 2, "layers": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    with pytest.raises(ManifestError, match="manifest stable is not valid JSON: the document is nested too deeply"):
        _manifests.parse_manifest_json(data, "stable")
