# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the _oci unit tests share: a registry client on a FakeSession, canned answers and
retry policies, for one repository of registry.example.com (no network).
"""

from __future__ import annotations

import json

from ansible_collections.kubesolo.fleet.plugins.module_utils import _reference
from ansible_collections.kubesolo.fleet.plugins.module_utils._credentials import Credentials
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _client, _manifests
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    FakeResponse,
    FakeSession,
    json_response,
    sha256_digest,
)

REPOSITORY = "registry.example.com/kubesolo/os"
BASE_URL = "https://registry.example.com/v2/kubesolo/os"
CHALLENGE = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:x:pull"'
MANIFEST = {
    "schemaVersion": 2,
    "mediaType": _manifests.MEDIA_OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256_digest(b"{}"), "size": 2},
    "layers": [],
}
MANIFEST_BYTES = json.dumps(MANIFEST).encode("utf-8")
MANIFEST_DIGEST = sha256_digest(MANIFEST_BYTES)
BLOB = bytes(range(256)) * 12  # 3072 bytes
BLOB_DIGEST = sha256_digest(BLOB)
ROBOT = Credentials("robot", "s3cret-pw")


def unexpected_sleep(seconds):
    raise AssertionError(f"unexpected retry: the client wanted to sleep {seconds}s")


def guarded_policy():
    """The default policy, except that any retry fails the test instead of sleeping."""
    return RetryPolicy(sleep=unexpected_sleep)


class Sleeps(list):
    """A fake ``sleep`` for a RetryPolicy: records the delays, never sleeps."""

    def __call__(self, seconds):
        self.append(seconds)


def retrying(retries=3, **kwargs):
    """(policy with a fake sleep, its recorded delays)."""
    sleeps = Sleeps()
    return RetryPolicy(retries=retries, sleep=sleeps, **kwargs), sleeps


def make_client(responses=(), token_responses=(), repository=REPOSITORY, **kwargs):
    kwargs.setdefault("retry", guarded_policy())
    client = _client.RegistryClient(_reference.parse_repository(repository), **kwargs)
    client.session = FakeSession(responses, token_responses)
    return client


def manifest_response(data=MANIFEST_BYTES, content_type=_manifests.MEDIA_OCI_MANIFEST, headers=None):
    all_headers = {"Content-Type": content_type, "Content-Length": str(len(data))}
    all_headers.update(headers or {})
    return FakeResponse(200, data, all_headers)


def unauthorized(challenge=CHALLENGE):
    return FakeResponse(401, b"", {"WWW-Authenticate": challenge} if challenge is not None else {})


def error_response(status, document=None):
    return FakeResponse(status, json.dumps(document or {}).encode("utf-8"))


def authorizations(client):
    return [sent.headers.get("Authorization") for sent in client.session.sent]


def client_with_a_token(**kwargs):
    client = make_client([unauthorized(), manifest_response()], [json_response({"token": "tok"})], **kwargs)
    client.get_manifest("stable")
    assert authorizations(client)[-1] == "Bearer tok"
    return client
