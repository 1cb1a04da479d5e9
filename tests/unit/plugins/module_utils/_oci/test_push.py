# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pushing (_push): existence checks, blob uploads and manifest puts, through a RegistryClient
on a fake session (no network)."""

from __future__ import annotations

import io

import pytest
import requests

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    RegistryConnectionError,
    RegistryResponseError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _manifests
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils._oci.registry_fakes import (
    BASE_URL,
    BLOB,
    BLOB_DIGEST,
    MANIFEST_BYTES,
    ROBOT,
    client_with_a_token,
    error_response,
    make_client,
    retrying,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import FakeResponse

# -- Existence checks ------------------------------------------------------


def test_a_head_is_retried_too():
    policy, sleeps = retrying()
    client = make_client(
        [FakeResponse(503), FakeResponse(200, headers={"Docker-Content-Digest": BLOB_DIGEST})], retry=policy
    )
    assert client.exists("blobs", BLOB_DIGEST) == BLOB_DIGEST
    assert [sent.method for sent in client.session.sent] == ["HEAD", "HEAD"]
    assert len(sleeps) == 1


# -- Uploads ---------------------------------------------------------------


def test_an_upload_request_post_is_not_retried():
    policy, sleeps = retrying()
    client = make_client([error_response(503)], retry=policy)
    with pytest.raises(RegistryResponseError, match="answered HTTP 503 to an upload request"):
        client.upload_blob(BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB))
    assert [sent.method for sent in client.session.sent] == ["POST"]
    assert sleeps == []


def test_a_manifest_put_is_not_retried():
    policy, sleeps = retrying()
    client = make_client([error_response(503)], retry=policy)
    with pytest.raises(RegistryResponseError, match="answered HTTP 503 when pushing manifest v1"):
        client.put_manifest("v1", MANIFEST_BYTES, _manifests.MEDIA_OCI_MANIFEST)
    assert [sent.method for sent in client.session.sent] == ["PUT"]
    assert sleeps == []


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_writes_are_not_retried_after_a_connection_error(method):
    policy, sleeps = retrying()
    client = make_client([requests.exceptions.ConnectionError("Connection reset by peer")], retry=policy)
    with pytest.raises(RegistryConnectionError, match="Connection reset by peer"):
        if method == "POST":
            client.upload_blob(BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB))
        else:
            client.put_manifest("v1", MANIFEST_BYTES, _manifests.MEDIA_OCI_MANIFEST)
    assert [sent.method for sent in client.session.sent] == [method]
    assert sleeps == []


def test_an_upload_location_on_another_host_gets_no_authorization():
    client = client_with_a_token(credentials=ROBOT)
    client.session.responses += [
        FakeResponse(202, b"", {"Location": "https://uploads.example.net/session/1?state=x"}),
        FakeResponse(201),
    ]
    client.upload_blob(BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB))
    post, put = client.session.sent[-2:]
    assert (post.method, post.url, post.headers["Authorization"]) == (
        "POST",
        BASE_URL + "/blobs/uploads/",
        "Bearer tok",
    )
    assert (put.method, put.url) == ("PUT", "https://uploads.example.net/session/1?state=x&digest=" + BLOB_DIGEST)
    assert "Authorization" not in put.headers
    assert put.body == BLOB
