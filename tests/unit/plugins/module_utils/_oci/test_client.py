# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""RegistryClient as a whole, against a fake session (no network): set-up, TLS options, the
request/challenge flow and what goes to other origins."""

from __future__ import annotations

import io

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _about, _reference
from ansible_collections.kubesolo.fleet.plugins.module_utils._credentials import Credentials
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import AuthenticationError
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _client, _transport
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils._oci.registry_fakes import (
    BASE_URL,
    CHALLENGE,
    MANIFEST_BYTES,
    MANIFEST_DIGEST,
    REPOSITORY,
    ROBOT,
    authorizations,
    client_with_a_token,
    make_client,
    manifest_response,
    unauthorized,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import FakeResponse, json_response

# -- Client set-up ---------------------------------------------------------


def test_user_agent_names_the_collection_and_its_version():
    assert _transport.USER_AGENT == f"kubesolo.fleet/{_about.COLLECTION_VERSION}"
    client = _client.RegistryClient(_reference.parse_repository(REPOSITORY))
    assert client.session.headers["User-Agent"] == f"kubesolo.fleet/{_about.COLLECTION_VERSION}"


@pytest.mark.parametrize(
    "validate_certs, ca_path, verify",
    [
        (True, None, True),
        (True, "/etc/ssl/private-ca.pem", "/etc/ssl/private-ca.pem"),
        (False, None, False),
        (False, "/etc/ssl/private-ca.pem", False),
    ],
)
def test_tls_options_go_with_every_request(validate_certs, ca_path, verify):
    # Per request, not on the session: a session-level value loses to REQUESTS_CA_BUNDLE.
    client = make_client(
        [manifest_response(), unauthorized(), manifest_response()],
        token_responses=[json_response({"token": "tok"})],
        validate_certs=validate_certs,
        ca_path=ca_path,
    )
    client.get_manifest("stable")
    client.get_manifest("stable")
    assert [sent.kwargs["verify"] for sent in client.session.sent] == [verify] * 3
    assert [sent.kwargs["verify"] for sent in client.session.token_gets] == [verify]


@pytest.mark.parametrize(
    "repository, plain_http, url",
    [
        (REPOSITORY, False, BASE_URL + "/manifests/stable"),
        ("127.0.0.1:5000/kubesolo/os", True, "http://127.0.0.1:5000/v2/kubesolo/os/manifests/stable"),
        ("docker.io/library/kubesolo", False, "https://registry-1.docker.io/v2/library/kubesolo/manifests/stable"),
    ],
)
def test_manifest_url(repository, plain_http, url):
    client = make_client([manifest_response()], repository=repository, plain_http=plain_http, timeout=12.5)
    client.get_manifest("stable")
    sent = client.session.sent[0]
    assert (sent.method, sent.url) == ("GET", url)
    assert (sent.kwargs["stream"], sent.kwargs["timeout"]) == (True, 12.5)


@pytest.mark.parametrize(
    "client_cert, client_key, cert",
    [
        (
            "/etc/kubesolo/client.pem",
            "/etc/kubesolo/client.key",
            ("/etc/kubesolo/client.pem", "/etc/kubesolo/client.key"),
        ),
        ("/etc/kubesolo/client-with-key.pem", None, "/etc/kubesolo/client-with-key.pem"),
        (None, None, None),
    ],
)
def test_client_certificate_options_map_to_the_cert_of_the_registry_origin_only(client_cert, client_key, cert):
    client = _client.RegistryClient(
        _reference.parse_repository(REPOSITORY), client_cert=client_cert, client_key=client_key
    )
    assert client.session.cert is None
    assert client.certificate_for(BASE_URL + "/blobs/sha256:abc") == cert
    assert client.certificate_for("https://REGISTRY.example.com:443/v2/") == cert
    for elsewhere in (
        "https://cdn.example.net/blob",
        "https://registry.example.com:8443/v2/",
        "http://registry.example.com/v2/",
        "https://auth.example/token",
    ):
        assert client.certificate_for(elsewhere) is None


def test_the_session_follows_no_redirects_and_applies_no_netrc():
    client = _client.RegistryClient(_reference.parse_repository(REPOSITORY))
    assert client.session.auth is _transport._no_netrc
    assert client.session.headers["User-Agent"] == _transport.USER_AGENT


def test_the_default_retry_policy_is_the_documented_one():
    client = _client.RegistryClient(_reference.parse_repository(REPOSITORY))
    assert (client.retry.retries, client.retry.max_wait, client.retry.budget) == (5, 60.0, 300.0)
    assert client.transfer_summary() == {"retries": 0, "last_error": "", "resumed_bytes": 0, "fetched_bytes": 0}


# -- Requests and challenges -----------------------------------------------


def test_a_request_body_is_sent_again_whole_after_a_challenge():
    client = make_client([unauthorized(), FakeResponse(201)], [json_response({"token": "tok"})])
    response = client.request("PUT", BASE_URL + "/manifests/v0.3.0", data=io.BytesIO(MANIFEST_BYTES))
    assert response.status_code == 201
    assert [sent.body for sent in client.session.sent] == [MANIFEST_BYTES, MANIFEST_BYTES]
    assert client.session.sent[1].headers["Authorization"] == "Bearer tok"


def test_bearer_challenge_fetches_a_token_and_retries_with_it():
    challenged = unauthorized()
    client = make_client([challenged, manifest_response()], [json_response({"token": "tok-123"})])
    assert client.get_manifest("stable").digest == MANIFEST_DIGEST
    first, retry = client.session.sent
    assert "Authorization" not in first.headers
    assert retry.headers["Authorization"] == "Bearer tok-123"
    assert retry.url == first.url == BASE_URL + "/manifests/stable"
    assert retry.headers["Accept"] == first.headers["Accept"]
    [token_get] = client.session.token_gets
    assert token_get.url == "https://auth.example/token"
    assert token_get.kwargs["params"] == {"scope": "repository:x:pull", "service": "reg"}
    assert token_get.kwargs["auth"] is None
    assert challenged.closed


def test_a_token_is_reused_for_later_requests():
    client = make_client(
        [unauthorized(), manifest_response(), manifest_response()], [json_response({"token": "tok-123"})]
    )
    client.get_manifest("stable")
    client.get_manifest("stable")
    assert client.session.sent[2].headers["Authorization"] == "Bearer tok-123"
    assert len(client.session.token_gets) == 1


@pytest.mark.parametrize(
    "credentials, message",
    [
        (None, "registry registry.example.com refused anonymous access to kubesolo/os (no credentials were given)"),
        (
            Credentials("robot", "s3cret"),
            "registry registry.example.com refused the credentials of 'robot' for kubesolo/os",
        ),
    ],
)
def test_second_unauthorized_after_the_token(credentials, message):
    refused = unauthorized()
    client = make_client([unauthorized(), refused], [json_response({"token": "tok"})], credentials=credentials)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == message
    assert refused.closed
    assert len(client.session.sent) == 2


# -- Requests to other origins ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.net/blobs/x?sig=1",
        "https://registry.example.com:8443/v2/kubesolo/os/blobs/x",
        "http://registry.example.com/v2/kubesolo/os/blobs/x",
        "https://registry.example.com.evil.example/v2/kubesolo/os/blobs/x",
    ],
)
def test_no_authorization_goes_to_another_origin(url):
    client = client_with_a_token(credentials=ROBOT)
    client.session.responses.append(FakeResponse(401, b"", {"WWW-Authenticate": CHALLENGE}))
    response = client.request("GET", url)
    # Not answered either: a 401 from another origin is the caller's to handle.
    assert response.status_code == 401
    sent = client.session.sent[-1]
    assert sent.url == url
    assert "Authorization" not in sent.headers
    assert len(client.session.token_gets) == 1
    assert len(client.session.sent) == 3


@pytest.mark.parametrize(
    "url",
    [
        "https://registry.example.com:443/v2/kubesolo/os/blobs/x",
        "https://REGISTRY.example.com/v2/kubesolo/os/blobs/x",
    ],
)
def test_the_same_origin_written_otherwise_gets_the_authorization(url):
    client = client_with_a_token()
    client.session.responses.append(FakeResponse(200))
    client.request("GET", url)
    assert client.session.sent[-1].headers["Authorization"] == "Bearer tok"


def test_a_401_from_another_origin_after_a_redirect_is_not_answered():
    """A redirect to a CDN that then asks for credentials must not get them (nor a token fetched for it)."""
    challenge = unauthorized('Bearer realm="https://attacker.example/token",service="x"')
    challenge.url = "https://cdn.example.net/blobs/x?sig=1"
    client = make_client([challenge], credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "https://cdn.example.net:443 asked for authentication after registry registry.example.com redirected "
        "there; credentials are only sent to the registry itself"
    )
    assert client.session.token_gets == [] and client.session.token_posts == []
    assert authorizations(client) == [None]


def test_a_401_from_the_registry_itself_is_answered():
    challenge = unauthorized()
    challenge.url = f"{BASE_URL}/manifests/stable"
    client = make_client([challenge, manifest_response()], [json_response({"token": "tok"})], credentials=ROBOT)
    client.get_manifest("stable")
    assert authorizations(client) == [None, "Bearer tok"]
