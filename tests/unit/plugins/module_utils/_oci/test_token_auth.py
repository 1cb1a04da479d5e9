# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Answering a registry's challenge (_token_auth): Basic, bearer tokens from the token service,
the token cache, through a RegistryClient on a fake session (no network)."""

from __future__ import annotations

import json

import pytest
import requests

from ansible_collections.kubesolo.fleet.plugins.module_utils._credentials import Credentials
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import AuthenticationError, RegistryConnectionError
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _token_auth
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils._oci.registry_fakes import (
    BASE_URL,
    CHALLENGE,
    MANIFEST_BYTES,
    MANIFEST_DIGEST,
    ROBOT,
    authorizations,
    error_response,
    make_client,
    manifest_response,
    unauthorized,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import FakeResponse, json_response

# -- WWW-Authenticate ------------------------------------------------------


@pytest.mark.parametrize(
    "header, scheme, params",
    [
        (CHALLENGE, "bearer", {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:x:pull"}),
        (
            'Bearer realm="https://auth/token",scope="repository:a/b:pull,push"',
            "bearer",
            {"realm": "https://auth/token", "scope": "repository:a/b:pull,push"},
        ),
        (
            'Bearer realm="https://auth/token", error="insufficient_scope, really"',
            "bearer",
            {"realm": "https://auth/token", "error": "insufficient_scope, really"},
        ),
        (
            r'Bearer realm="a \"quoted\" realm",service="x\\y"',
            "bearer",
            {"realm": 'a "quoted" realm', "service": "x\\y"},
        ),
        ("Bearer realm=https://auth/token,service=reg", "bearer", {"realm": "https://auth/token", "service": "reg"}),
        (
            'Bearer Realm = "https://auth/token" , Service = reg',
            "bearer",
            {"realm": "https://auth/token", "service": "reg"},
        ),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ('BEARER realm="r"', "bearer", {"realm": "r"}),
        ("bAsIc", "basic", {}),
        ("  Basic realm=x  ", "basic", {"realm": "x"}),
    ],
)
def test_parse_challenge(header, scheme, params):
    assert _token_auth.parse_challenge(header) == (scheme, params)


@pytest.mark.parametrize("header", ["", "   ", None])
def test_parse_challenge_empty(header):
    assert _token_auth.parse_challenge(header) == (None, {})


# -- Authentication --------------------------------------------------------


def test_a_rejected_token_is_replaced_once():
    client = make_client(
        [unauthorized(), manifest_response(), unauthorized(), manifest_response()],
        [json_response({"token": "old"}), json_response({"token": "new"})],
    )
    client.get_manifest("stable")
    client.get_manifest("stable")
    assert [sent.headers.get("Authorization") for sent in client.session.sent] == [
        None,
        "Bearer old",
        "Bearer old",
        "Bearer new",
    ]
    assert len(client.session.token_gets) == 2


def test_token_request_defaults_the_scope_and_sends_credentials():
    client = make_client(
        [unauthorized('Bearer realm="https://auth.example/token"'), manifest_response()],
        [json_response({"token": "tok"})],
        credentials=Credentials("robot", "s3cret"),
    )
    client.get_manifest("stable")
    [token_get] = client.session.token_gets
    assert token_get.kwargs["params"] == {"scope": "repository:kubesolo/os:pull"}
    assert token_get.kwargs["auth"] == ("robot", "s3cret")


@pytest.mark.parametrize(
    "document, token",
    [
        ({"access_token": "acc-1"}, "acc-1"),
        ({"token": "tok-1", "access_token": "acc-1"}, "tok-1"),
        ({"token": "", "access_token": "acc-1"}, "acc-1"),
    ],
)
def test_token_field_names(document, token):
    client = make_client([unauthorized(), manifest_response()], [json_response(document)])
    client.get_manifest("stable")
    assert client.session.sent[1].headers["Authorization"] == f"Bearer {token}"


@pytest.mark.parametrize("status_code", [401, 403])
def test_token_service_refusal(status_code):
    client = make_client([unauthorized()], [error_response(status_code)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "the token service of registry.example.com refused anonymous access to kubesolo/os (no credentials were given)"
    )
    assert raised.value.code == "authentication_failed"


def test_token_service_refusal_with_credentials_names_the_user():
    client = make_client([unauthorized()], [error_response(401)], credentials=Credentials("robot", "wrong"))
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "the token service of registry.example.com refused the credentials of 'robot' for kubesolo/os"
    )
    assert "wrong" not in str(raised.value)


def test_token_service_server_error():
    client = make_client([unauthorized()], [error_response(502)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "the token service of registry.example.com answered HTTP 502"
    assert raised.value.code == "authentication_failed"


def test_token_service_unreachable():
    client = make_client([unauthorized()], [requests.exceptions.ConnectionError("Name or service not known")])
    with pytest.raises(RegistryConnectionError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == ("cannot reach the token service of registry.example.com: Name or service not known")


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"token": ""}',
        b'{"token": 42}',
        b'{"token": null}',
        b'["tok"]',
        b"not json",
        b"",
    ],
)
def test_token_response_without_a_token(body):
    client = make_client([unauthorized()], [FakeResponse(200, body)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "the token service of registry.example.com answered without a token"


def test_oversized_token_response_is_refused():
    token_response = FakeResponse(200, b"x", {"Content-Length": str(64 * 1024 + 1)})
    client = make_client([unauthorized()], [token_response])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == ("token response of registry.example.com is 65537 bytes, over the 65536 byte limit")
    assert token_response.reads == 0
    assert len(client.session.sent) == 1


@pytest.mark.parametrize(
    "challenge",
    [
        'Bearer realm="ftp://auth.example/token"',
        'Bearer realm="file:///etc/passwd"',
        'Bearer realm="/token"',
        'Bearer service="reg"',
    ],
)
def test_bearer_challenge_without_a_usable_realm(challenge):
    client = make_client([unauthorized(challenge)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "registry registry.example.com sent a bearer challenge without a usable realm"
    assert client.session.token_gets == []


def test_basic_challenge_without_credentials():
    client = make_client([unauthorized('Basic realm="Registry"')])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "registry registry.example.com requires authentication (basic challenge) "
        "to read kubesolo/os and no credentials were given"
    )
    assert len(client.session.sent) == 1


def test_basic_challenge_with_credentials():
    client = make_client(
        [unauthorized('Basic realm="Registry"'), manifest_response()], credentials=Credentials("user", "pass")
    )
    client.get_manifest("stable")
    assert client.session.sent[1].headers["Authorization"] == "Basic dXNlcjpwYXNz"


def test_unauthorized_without_a_challenge():
    client = make_client([unauthorized(None)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "registry registry.example.com requires authentication (no challenge) "
        "to read kubesolo/os and no credentials were given"
    )


def test_an_unknown_challenge_scheme_is_quoted_printably():
    client = make_client([unauthorized("\x1b]8;;http://evil\x07Negotiate" + "x" * 100 + ' realm="x"')])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "registry registry.example.com requires authentication (\\x1b]8;;http://evil\\x07negotiatexxxxx... challenge) "
        "to read kubesolo/os and no credentials were given"
    )


# -- Token cache, credentials and origins ----------------------------------


PULL = "repository:kubesolo/os:pull"
PUSH = "repository:kubesolo/os:pull,push"


def bearer(scope=None, realm="https://auth.example/token", service="reg"):
    parts = [f'realm="{realm}"']
    if service is not None:
        parts.append(f'service="{service}"')
    if scope is not None:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ",".join(parts)


def test_tokens_are_cached_per_scope():
    client = make_client(
        [
            unauthorized(bearer(PULL)),
            manifest_response(),  # pull: token fetched
            unauthorized(bearer(PUSH)),
            FakeResponse(201),  # push: another scope, another token
            unauthorized(bearer(PULL)),
            manifest_response(),  # pull again: the cached pull token
            manifest_response(),
        ],
        [json_response({"token": "tok-pull"}), json_response({"token": "tok-push"})],
    )
    client.get_manifest("stable")
    assert client.request("PUT", BASE_URL + "/manifests/v0.3.0", data=MANIFEST_BYTES).status_code == 201
    client.get_manifest("stable")
    client.get_manifest("stable")
    assert [get.kwargs["params"]["scope"] for get in client.session.token_gets] == [PULL, PUSH]
    assert authorizations(client) == [
        None,
        "Bearer tok-pull",
        "Bearer tok-pull",
        "Bearer tok-push",
        "Bearer tok-push",
        "Bearer tok-pull",
        "Bearer tok-pull",
    ]


def test_a_challenge_without_scope_shares_the_token_of_the_default_scope():
    client = make_client(
        [
            unauthorized(bearer(None)),
            manifest_response(),
            unauthorized(bearer(PUSH)),
            FakeResponse(201),
            unauthorized(bearer(PULL)),
            manifest_response(),
        ],
        [json_response({"token": "tok-pull"}), json_response({"token": "tok-push"})],
    )
    client.get_manifest("stable")
    client.request("PUT", BASE_URL + "/manifests/v0.3.0", data=MANIFEST_BYTES)
    client.get_manifest("stable")
    assert len(client.session.token_gets) == 2
    assert authorizations(client)[-1] == "Bearer tok-pull"


@pytest.mark.parametrize(
    "other",
    [
        bearer(PULL, service="other-service"),
        bearer(PULL, realm="https://auth2.example/token"),
    ],
)
def test_the_token_cache_key_includes_realm_and_service(other):
    client = make_client(
        [
            unauthorized(bearer(PULL)),
            manifest_response(),
            unauthorized(other),
            manifest_response(),
        ],
        [json_response({"token": "first"}), json_response({"token": "second"})],
    )
    client.get_manifest("stable")
    client.get_manifest("stable")
    assert len(client.session.token_gets) == 2
    assert authorizations(client) == [None, "Bearer first", "Bearer first", "Bearer second"]


def test_a_rejected_cached_token_is_fetched_again_once_then_succeeds():
    client = make_client(
        [unauthorized(), manifest_response(), unauthorized(), manifest_response()],
        [json_response({"token": "old"}), json_response({"token": "new"})],
        credentials=ROBOT,
    )
    client.get_manifest("stable")
    assert client.get_manifest("stable").digest == MANIFEST_DIGEST
    assert authorizations(client) == [None, "Bearer old", "Bearer old", "Bearer new"]
    assert [get.kwargs["auth"] for get in client.session.token_gets] == [("robot", "s3cret-pw")] * 2
    assert client.session.sent[3].url == client.session.sent[2].url == BASE_URL + "/manifests/stable"
    # The new token is the one kept for later requests.
    client.session.responses.append(manifest_response())
    client.get_manifest("stable")
    assert authorizations(client)[-1] == "Bearer new"
    assert len(client.session.token_gets) == 2


def test_a_refused_replacement_token_names_the_user_and_not_the_password():
    refused = unauthorized()
    client = make_client(
        [unauthorized(), manifest_response(), unauthorized(), refused],
        [json_response({"token": "old"}), json_response({"token": "new"})],
        credentials=ROBOT,
    )
    client.get_manifest("stable")
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    message = str(raised.value)
    assert message == "registry registry.example.com refused the credentials of 'robot' for kubesolo/os"
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(raised.value)
    assert refused.closed
    assert len(client.session.token_gets) == 2
    assert len(client.session.sent) == 4


def test_a_fresh_token_refused_is_not_fetched_again():
    client = make_client([unauthorized(), unauthorized()], [json_response({"token": "tok"})], credentials=ROBOT)
    with pytest.raises(AuthenticationError, match="refused the credentials of 'robot'"):
        client.get_manifest("stable")
    assert len(client.session.token_gets) == 1
    assert authorizations(client) == [None, "Bearer tok"]


def test_basic_credentials_are_sent_again_on_later_requests():
    client = make_client(
        [unauthorized('Basic realm="Registry"'), manifest_response(), manifest_response()],
        credentials=Credentials("user", "pass"),
    )
    client.get_manifest("stable")
    client.get_manifest("stable")
    assert authorizations(client) == [None, "Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"]
    assert client.session.token_gets == []


def test_basic_refusal_after_the_first_answer():
    refused = unauthorized('Basic realm="Registry"')
    client = make_client([unauthorized('Basic realm="Registry"'), refused], credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "registry registry.example.com refused the credentials of 'robot' for kubesolo/os"
    assert "s3cret-pw" not in str(raised.value)
    assert len(client.session.sent) == 2
    assert refused.closed


def test_basic_credentials_refused_later_are_not_sent_twice():
    client = make_client(
        [unauthorized('Basic realm="Registry"'), manifest_response(), unauthorized('Basic realm="Registry"')],
        credentials=ROBOT,
    )
    client.get_manifest("stable")
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "registry registry.example.com refused the credentials of 'robot' for kubesolo/os"
    # The refused request carried the credentials already: no identical retry.
    assert len(client.session.sent) == 3
    assert authorizations(client)[2] == requests.auth._basic_auth_str("robot", "s3cret-pw")


def test_basic_challenge_with_only_an_identity_token():
    client = make_client(
        [unauthorized('Basic realm="Registry"')], credentials=Credentials("<token>", identity_token="refresh-me")
    )
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "registry registry.example.com requires authentication (basic challenge) to read kubesolo/os"
    )
    assert len(client.session.sent) == 1


def test_an_identity_token_is_exchanged_with_an_oauth2_refresh_grant():
    client = make_client(
        [unauthorized(), manifest_response()],
        [json_response({"access_token": "acc-9"})],
        credentials=Credentials("<token>", identity_token="refresh-me"),
    )
    client.get_manifest("stable")
    assert client.session.token_gets == []
    [post] = client.session.token_posts
    assert post.url == "https://auth.example/token"
    assert post.kwargs["data"] == {
        "grant_type": "refresh_token",
        "refresh_token": "refresh-me",
        "service": "reg",
        "scope": "repository:x:pull",
        "client_id": "kubesolo.fleet",
    }
    assert post.kwargs["allow_redirects"] is False
    assert "auth" not in post.kwargs or post.kwargs["auth"] is None
    assert authorizations(client) == [None, "Bearer acc-9"]
    assert not any("refresh-me" in str(sent.headers) for sent in client.session.sent)


def test_an_identity_token_grant_without_service_defaults_the_scope():
    client = make_client(
        [unauthorized('Bearer realm="https://auth.example/token"'), manifest_response()],
        [json_response({"access_token": "acc"})],
        credentials=Credentials("<token>", identity_token="refresh-me"),
    )
    client.get_manifest("stable")
    [post] = client.session.token_posts
    assert post.kwargs["data"] == {
        "grant_type": "refresh_token",
        "refresh_token": "refresh-me",
        "scope": PULL,
        "client_id": "kubesolo.fleet",
    }


def test_a_refused_identity_token():
    client = make_client(
        [unauthorized()], [error_response(401)], credentials=Credentials("<token>", identity_token="refresh-me")
    )
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "the token service of registry.example.com refused the credentials of '<token>' for kubesolo/os"
    )
    assert "refresh-me" not in str(raised.value)


def test_the_docker_token_fetch_does_not_follow_redirects():
    client = make_client([unauthorized(), manifest_response()], [json_response({"token": "tok"})])
    client.get_manifest("stable")
    [token_get] = client.session.token_gets
    assert token_get.kwargs["allow_redirects"] is False
    assert "Authorization" not in token_get.headers


def test_a_token_service_redirect_is_not_followed():
    client = make_client([unauthorized()], [FakeResponse(302, b"", {"Location": "https://elsewhere.example/"})])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "the token service of registry.example.com answered HTTP 302"


def test_the_cached_token_is_not_sent_to_the_token_service():
    client = make_client(
        [unauthorized(bearer(PULL)), manifest_response(), unauthorized(bearer(PUSH)), FakeResponse(201)],
        [json_response({"token": "tok-pull"}), json_response({"token": "tok-push"})],
    )
    client.get_manifest("stable")
    client.request("PUT", BASE_URL + "/manifests/v0.3.0", data=MANIFEST_BYTES)
    assert [get.headers for get in client.session.token_gets] == [{}, {}]
    assert [get.kwargs["auth"] for get in client.session.token_gets] == [None, None]


def test_a_plain_http_realm_is_refused_for_an_https_registry():
    client = make_client([unauthorized('Bearer realm="http://auth.example/token",service="reg"')], credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "registry registry.example.com sent a plain-HTTP token realm "
        "http://auth.example/token; refusing to send credentials or take tokens over it"
    )
    assert client.session.token_gets == [] and client.session.token_posts == []


def test_a_refused_realm_is_quoted_printably():
    challenge = 'Bearer realm="http://auth.example/token\x1b[2J\u202e",service="reg"'
    client = make_client([unauthorized(challenge)], credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert "token realm http://auth.example/token\\x1b[2J\\u202e; refusing" in str(raised.value)


@pytest.mark.parametrize("realm", ["http://127.0.0.1:5001/token", "https://auth.example/token"])
def test_a_plain_http_registry_may_use_either_realm(realm):
    client = make_client(
        [unauthorized(f'Bearer realm="{realm}"'), manifest_response()],
        [json_response({"token": "tok"})],
        repository="127.0.0.1:5000/kubesolo/os",
        plain_http=True,
        credentials=ROBOT,
    )
    client.get_manifest("stable")
    [token_get] = client.session.token_gets
    assert token_get.url == realm
    assert token_get.kwargs["auth"] == ("robot", "s3cret-pw")
    assert authorizations(client) == [None, "Bearer tok"]


@pytest.mark.parametrize(
    "challenge",
    [
        'Bearer realm="https:///token"',
        'Bearer realm="javascript:alert(1)"',
        'Bearer realm="ldap://auth.example/token"',
        'Bearer realm=""',
    ],
)
def test_more_realms_that_are_not_usable(challenge):
    client = make_client([unauthorized(challenge)], credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "registry registry.example.com sent a bearer challenge without a usable realm"
    assert client.session.token_gets == [] and client.session.token_posts == []


@pytest.mark.parametrize(
    "challenge",
    [
        'Bearer realm="https://auth.example:99999/token"',
        'Bearer realm="https://auth.example:port/token"',
        'Bearer realm="https://[::1/token"',
    ],
)
def test_a_malformed_realm_is_an_authentication_error(challenge):
    # The realm comes from the registry: a malformed one must be refused
    # like any unusable realm, never escape as a bare ValueError.
    client = make_client([unauthorized(challenge)], credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert "without a usable realm" in str(raised.value)
    assert client.session.token_gets == []


def test_a_streamed_token_body_over_the_cap_is_refused():
    chunks = [b'{"token": "' + b"a" * 40000, b"b" * 40000, b"c" * 40000]
    token_response = FakeResponse(200, chunks=chunks)
    client = make_client([unauthorized()], [token_response])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "token response of registry.example.com is over the 65536 byte limit"
    assert token_response.reads == 2
    assert len(client.session.sent) == 1


def test_a_token_body_of_exactly_the_cap_is_accepted():
    body = json.dumps({"token": "tok"}).encode("utf-8")
    body += b" " * (64 * 1024 - len(body))
    client = make_client([unauthorized(), manifest_response()], [FakeResponse(200, body)])
    client.get_manifest("stable")
    assert authorizations(client) == [None, "Bearer tok"]


# -- Secrets ---------------------------------------------------------------


def test_credentials_never_go_to_a_second_token_service():
    client = make_client(
        [
            unauthorized(bearer(PULL)),
            manifest_response(),
            unauthorized(bearer(PULL, realm="https://auth2.example/token")),
        ],
        [json_response({"token": "first"})],
        credentials=ROBOT,
    )
    client.get_manifest("stable")
    with pytest.raises(AuthenticationError, match="refusing to send credentials to a second token service"):
        client.get_manifest("stable")
    assert [sent.url for sent in client.session.token_gets] == ["https://auth.example/token"]


@pytest.mark.parametrize(
    "realm, cert",
    [
        ("https://auth.example/token", None),
        ("https://registry.example.com/token", ("/etc/kubesolo/client.pem", "/etc/kubesolo/client.key")),
    ],
)
def test_the_token_service_gets_the_client_certificate_only_at_the_registry_origin(realm, cert):
    client = make_client(
        [unauthorized(f'Bearer realm="{realm}",service="reg"'), manifest_response()],
        [json_response({"token": "tok"})],
        client_cert="/etc/kubesolo/client.pem",
        client_key="/etc/kubesolo/client.key",
    )
    client.get_manifest("stable")
    assert [sent.kwargs["cert"] for sent in client.session.token_gets] == [cert]
    assert [sent.kwargs["cert"] for sent in client.session.sent] == [client.client_cert] * 2
