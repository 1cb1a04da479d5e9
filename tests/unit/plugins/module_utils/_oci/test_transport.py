# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTTP plumbing (_transport): transport errors, size-capped bodies, retries and redirects,
through a RegistryClient on a fake session or on a real session over a fake adapter (no network)."""

from __future__ import annotations

import io

import pytest
import requests
import urllib3

from ansible_collections.kubesolo.fleet.plugins.module_utils import _reference
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    AuthenticationError,
    ManifestError,
    NotFoundError,
    RegistryConnectionError,
    RegistryResponseError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _client, _manifests, _transport
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils._oci.registry_fakes import (
    BASE_URL,
    BLOB,
    BLOB_DIGEST,
    CHALLENGE,
    MANIFEST_BYTES,
    MANIFEST_DIGEST,
    REPOSITORY,
    ROBOT,
    error_response,
    guarded_policy,
    make_client,
    manifest_response,
    retrying,
    unauthorized,
    unexpected_sleep,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import FakeAdapter, FakeRaw, FakeResponse

# -- Transport errors ------------------------------------------------------


@pytest.mark.parametrize(
    "exception, message",
    [
        (
            requests.exceptions.SSLError("certificate verify failed"),
            "TLS with registry.example.com failed: certificate verify failed (set ca_path",
        ),
        (
            requests.exceptions.SSLError("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            "TLS with registry.example.com failed: [SSL: WRONG_VERSION_NUMBER] wrong version number (if the "
            "registry speaks plain HTTP, set plain_http=true)",
        ),
        (requests.exceptions.ReadTimeout("read timed out"), "timed out after 30s talking to registry.example.com"),
        (
            requests.exceptions.ConnectionError("Connection refused"),
            "cannot reach registry registry.example.com: Connection refused",
        ),
    ],
)
def test_transport_errors_become_registry_connection_errors(exception, message):
    client = make_client([exception], retry=RetryPolicy(retries=0, sleep=unexpected_sleep))
    with pytest.raises(RegistryConnectionError) as raised:
        client.get_manifest("stable")
    assert str(raised.value).startswith(message)
    assert raised.value.code == "registry_unreachable"
    assert len(client.session.sent) == 1


def test_transport_error_message_names_the_cause_not_the_retry_chain():
    refused = urllib3.exceptions.NewConnectionError(
        "HTTPSConnection(host=registry.example.com, port=443)",
        "Failed to establish a new connection: [Errno 111] Connection refused",
    )
    exception = requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, "/v2/kubesolo/os/manifests/stable", reason=refused)
    )
    client = make_client([exception], retry=RetryPolicy(retries=0, sleep=unexpected_sleep))
    with pytest.raises(RegistryConnectionError) as raised:
        client.get_manifest("stable")
    message = str(raised.value)
    assert message.startswith("cannot reach registry registry.example.com: ")
    assert message.endswith("Failed to establish a new connection: [Errno 111] Connection refused")
    assert "Max retries exceeded" not in message


def test_transport_error_message_quotes_the_cause_printably():
    exception = requests.exceptions.ConnectionError("Connection broken: \x1b[2J\u202e" + "x" * 1000)
    client = make_client([exception], retry=RetryPolicy(retries=0, sleep=unexpected_sleep))
    with pytest.raises(RegistryConnectionError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == (
        "cannot reach registry registry.example.com: Connection broken: \\x1b[2J\\u202e" + "x" * 265 + "..."
    )


# -- Size caps -------------------------------------------------------------


def test_read_capped_refuses_an_announced_oversize_body_before_reading():
    response = FakeResponse(200, b"x" * 11, {"Content-Length": "11"})
    with pytest.raises(RegistryResponseError) as raised:
        _transport.read_capped(response, 10, "token response")
    assert str(raised.value) == "token response is 11 bytes, over the 10 byte limit"
    assert response.chunks_served == 0


def test_read_capped_stops_a_body_growing_past_the_cap():
    response = FakeResponse(200, chunks=[b"a" * 6, b"b" * 6, b"c" * 6, b"d" * 6])
    with pytest.raises(ManifestError) as raised:
        _transport.read_capped(response, 10, "manifest stable", error=ManifestError)
    assert str(raised.value) == "manifest stable is over the 10 byte limit"
    assert response.chunks_served == 2


def test_read_capped_does_not_trust_a_small_content_length():
    response = FakeResponse(200, chunks=[b"a" * 8, b"b" * 8], headers={"Content-Length": "5"})
    with pytest.raises(RegistryResponseError, match="is over the 10 byte limit"):
        _transport.read_capped(response, 10, "error body")


@pytest.mark.parametrize(
    "chunks, headers",
    [
        ([b"0123", b"45678", b"9"], {"Content-Length": "10"}),
        ([b"0123", b"45678", b"9"], {}),
        ([b"0123456789"], {"Content-Length": "garbage"}),
    ],
)
def test_read_capped_returns_a_body_within_the_cap(chunks, headers):
    assert _transport.read_capped(FakeResponse(200, chunks=chunks, headers=headers), 10, "body") == b"0123456789"


def test_read_capped_turns_a_broken_stream_into_a_connection_error():
    def broken():
        yield b"abc"
        raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")

    with pytest.raises(RegistryConnectionError) as raised:
        _transport.read_capped(FakeResponse(200, chunks=broken()), 10, "manifest stable")
    assert str(raised.value) == "reading manifest stable failed: Connection broken: IncompleteRead"


# -- Retries ---------------------------------------------------------------


def sent_requests(client):
    return [(sent.method, sent.url) for sent in client.session.sent]


@pytest.mark.parametrize("status", [503, 429, 408, 500, 502, 504])
def test_a_get_is_retried_after_a_status_worth_it_then_succeeds(status):
    policy, sleeps = retrying()
    failed = error_response(status)
    client = make_client([failed, manifest_response()], retry=policy)
    assert client.get_manifest("stable").digest == MANIFEST_DIGEST
    assert sent_requests(client) == [("GET", BASE_URL + "/manifests/stable")] * 2
    assert len(sleeps) == 1
    assert failed.closed
    assert client.transfer_summary() == {
        "retries": 1,
        "last_error": f"registry registry.example.com answered HTTP {status}",
        "resumed_bytes": 0,
        "fetched_bytes": 0,
    }


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_waited_for(status):
    policy, sleeps = retrying()
    client = make_client([FakeResponse(status, b"{}", {"Retry-After": "7"}), manifest_response()], retry=policy)
    client.get_manifest("stable")
    assert sleeps == [7.0]


def test_a_long_retry_after_is_capped_at_max_wait():
    policy, sleeps = retrying(max_wait=60)
    client = make_client([FakeResponse(429, b"{}", {"Retry-After": "3600"}), manifest_response()], retry=policy)
    client.get_manifest("stable")
    assert sleeps == [60]


def test_retries_stop_after_the_configured_number():
    policy, sleeps = retrying(retries=2)
    client = make_client([error_response(503)] * 3 + [manifest_response()], retry=policy)
    with pytest.raises(RegistryResponseError, match="answered HTTP 503"):
        client.get_manifest("stable")
    assert len(client.session.sent) == 3
    assert len(sleeps) == 2
    assert client.transfer_summary()["retries"] == 2


@pytest.mark.parametrize(
    "answer, error",
    [
        (error_response(400), RegistryResponseError),
        (unauthorized(challenge=None), AuthenticationError),
        (error_response(403), AuthenticationError),
        (error_response(404), NotFoundError),
    ],
    ids=["400", "401", "403", "404"],
)
def test_other_client_errors_fail_at_once(answer, error):
    policy, sleeps = retrying()
    client = make_client([answer], retry=policy)
    with pytest.raises(error):
        client.get_manifest("stable")
    assert len(client.session.sent) == 1
    assert sleeps == []
    assert client.transfer_summary()["retries"] == 0


@pytest.mark.parametrize(
    "exception",
    [
        requests.exceptions.ConnectionError("Connection refused"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ConnectTimeout("connect timed out"),
    ],
)
def test_a_connection_error_is_retried_then_succeeds(exception):
    policy, sleeps = retrying()
    client = make_client([exception, manifest_response()], retry=policy)
    assert client.get_manifest("stable").digest == MANIFEST_DIGEST
    assert len(client.session.sent) == 2
    assert len(sleeps) == 1
    assert client.transfer_summary()["retries"] == 1


def test_connection_errors_past_the_retries_raise_the_last_error():
    policy, sleeps = retrying(retries=2)
    client = make_client(
        [
            requests.exceptions.ConnectionError("Connection refused"),
            requests.exceptions.ConnectionError("Connection reset by peer"),
            requests.exceptions.ConnectionError("Network is unreachable"),
        ],
        retry=policy,
    )
    with pytest.raises(RegistryConnectionError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "cannot reach registry registry.example.com: Network is unreachable"
    assert raised.value.code == "registry_unreachable"
    assert len(client.session.sent) == 3
    assert len(sleeps) == 2
    assert client.transfer_summary() == {
        "retries": 2,
        "last_error": "cannot reach registry registry.example.com: Network is unreachable",
        "resumed_bytes": 0,
        "fetched_bytes": 0,
    }


def test_a_tls_error_is_not_retried():
    policy, sleeps = retrying()
    client = make_client([requests.exceptions.SSLError("certificate verify failed")], retry=policy)
    with pytest.raises(RegistryConnectionError, match="TLS with registry.example.com failed"):
        client.get_manifest("stable")
    assert len(client.session.sent) == 1
    assert sleeps == []


def test_a_retried_blob_request_keeps_its_headers():
    policy, sleeps = retrying()
    client = make_client([error_response(503), FakeResponse(200, raw=FakeRaw(BLOB, max_read=1000))], retry=policy)
    sink = io.BytesIO()
    client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert sink.getvalue() == BLOB
    assert [sent.headers for sent in client.session.sent] == [{"Accept-Encoding": "identity"}] * 2
    assert len(sleeps) == 1


# -- Redirects -------------------------------------------------------------


BLOB_URL = BASE_URL + "/blobs/" + BLOB_DIGEST


def redirected(from_url, to_url, authorization="Bearer tok"):
    """(the request requests prepared for the redirect target, the redirect response)."""
    previous = requests.Request("GET", from_url, headers={"Authorization": authorization}).prepare()
    response = FakeResponse(307, b"", {"Location": to_url})
    response.request = previous
    target = requests.Request("GET", to_url, headers={"Authorization": authorization}).prepare()
    return target, response


@pytest.mark.parametrize(
    "from_url, to_url",
    [
        ("http://registry.example.com/v2/x", "https://registry.example.com/v2/x"),
        ("https://registry.example.com/v2/x", "https://cdn.example.net/blob?sig=1"),
        ("https://registry.example.com/v2/x", "https://registry.example.com:8443/v2/x"),
        ("http://registry.example.com:5000/v2/x", "http://registry.example.com:5001/v2/x"),
        ("https://registry.example.com/v2/x", "https://sub.registry.example.com/v2/x"),
    ],
)
def test_rebuild_auth_drops_authorization_for_another_origin(from_url, to_url):
    target, response = redirected(from_url, to_url)
    session = _transport.OriginBoundSession()
    session.rebuild_auth(target, response)
    assert "Authorization" not in target.headers


@pytest.mark.parametrize(
    "to_url",
    ["http://registry.example.com/v2/x", "http://cdn.example.net/blob?sig=1", "ftp://registry.example.com/x"],
)
def test_rebuild_auth_refuses_to_leave_https(to_url):
    target, response = redirected("https://registry.example.com/v2/x", to_url)
    session = _transport.OriginBoundSession()
    with pytest.raises(_transport.RedirectRefused, match="redirected an HTTPS request to .*; refusing to leave HTTPS"):
        session.rebuild_auth(target, response)
    assert "Authorization" not in target.headers


def test_a_refused_redirect_quotes_its_target_capped():
    # requests has percent-encoded the Location's control characters by then.
    target, response = redirected("https://registry.example.com/v2/x", "http://cdn.example.net/\x1b[2J" + "p" * 500)
    with pytest.raises(_transport.RedirectRefused) as raised:
        _transport.OriginBoundSession().rebuild_auth(target, response)
    assert str(raised.value) == (
        "registry.example.com:443 redirected an HTTPS request to http://cdn.example.net/%1B%5B2J"
        + "p" * 166
        + "...; refusing to leave HTTPS"
    )


@pytest.mark.parametrize(
    "from_url, to_url",
    [
        ("https://registry.example.com/v2/x", "https://registry.example.com/v2/y"),
        ("https://registry.example.com/v2/x", "https://REGISTRY.EXAMPLE.COM:443/v2/y"),
        ("http://registry.example.com:5000/v2/x", "http://registry.example.com:5000/other"),
        ("http://registry.example.com/v2/x", "http://registry.example.com:80/v2/y"),
    ],
)
def test_rebuild_auth_keeps_authorization_for_the_same_origin(from_url, to_url):
    target, response = redirected(from_url, to_url)
    session = _transport.OriginBoundSession()
    session.rebuild_auth(target, response)
    assert target.headers["Authorization"] == "Bearer tok"


def test_rebuild_auth_adds_no_netrc_credentials(monkeypatch):
    monkeypatch.setattr(requests.sessions, "get_netrc_auth", lambda url, raise_errors=False: ("netrc", "pw"))
    target, response = redirected("https://registry.example.com/v2/x", "https://cdn.example.net/blob")
    _transport.OriginBoundSession().rebuild_auth(target, response)
    assert "Authorization" not in target.headers


def real_client(adapter, monkeypatch, tmp_path, netrc=None, **kwargs):
    """A client on its real session, whose transport is ``adapter``; netrc from ``netrc`` only."""
    netrc_path = tmp_path / "netrc"
    if netrc is not None:
        netrc_path.write_text(netrc)
        netrc_path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_path))
    kwargs.setdefault("retry", guarded_policy())
    client = _client.RegistryClient(_reference.parse_repository(kwargs.pop("repository", REPOSITORY)), **kwargs)
    client.session.mount("https://", adapter)
    client.session.mount("http://", adapter)
    return client


def test_a_blob_redirect_to_a_cdn_carries_no_authorization(monkeypatch, tmp_path):
    adapter = FakeAdapter(
        {
            BLOB_URL: [
                (401, {"WWW-Authenticate": CHALLENGE}, b""),
                (307, {"Location": "https://cdn.example.net/blob?sig=1"}, b""),
            ],
            "https://auth.example/token": [(200, {}, b'{"token": "tok"}')],
            "https://cdn.example.net/blob": [(200, {"Content-Length": str(len(BLOB))}, BLOB)],
        }
    )
    client = real_client(adapter, monkeypatch, tmp_path, credentials=ROBOT)
    sink = io.BytesIO()
    client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert sink.getvalue() == BLOB
    assert [(sent.url.split("?")[0], sent.headers.get("Authorization")) for sent in adapter.sent] == [
        (BLOB_URL, None),
        ("https://auth.example/token", requests.auth._basic_auth_str("robot", "s3cret-pw")),
        (BLOB_URL, "Bearer tok"),
        ("https://cdn.example.net/blob", None),
    ]


def test_an_http_to_https_redirect_of_the_same_host_drops_authorization(monkeypatch, tmp_path):
    url = "http://registry.example.com/v2/kubesolo/os/blobs/" + BLOB_DIGEST
    adapter = FakeAdapter(
        {
            url: [
                (401, {"WWW-Authenticate": 'Bearer realm="http://registry.example.com/token"'}, b""),
                (301, {"Location": url.replace("http:", "https:", 1)}, b""),
            ],
            "http://registry.example.com/token": [(200, {}, b'{"token": "tok"}')],
            url.replace("http:", "https:", 1): [(200, {}, BLOB)],
        }
    )
    client = real_client(adapter, monkeypatch, tmp_path, plain_http=True)
    client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert [sent.headers.get("Authorization") for sent in adapter.sent] == [None, None, "Bearer tok", None]
    assert adapter.sent[-1].url.startswith("https://registry.example.com/")


def test_netrc_does_not_replace_the_registry_token(monkeypatch, tmp_path):
    # The class promises netrc credentials are not wanted; requests applies
    # netrc to every request made without ``auth`` and lets it override the
    # Authorization header the client set.
    adapter = FakeAdapter(
        {
            BASE_URL + "/manifests/stable": [
                (401, {"WWW-Authenticate": CHALLENGE}, b""),
                (200, {"Content-Type": _manifests.MEDIA_OCI_MANIFEST}, MANIFEST_BYTES),
            ],
            "https://auth.example/token": [(200, {}, b'{"token": "tok"}')],
        }
    )
    client = real_client(
        adapter,
        monkeypatch,
        tmp_path,
        credentials=ROBOT,
        netrc="machine registry.example.com login netrc-user password netrc-pw\n",
    )
    client.get_manifest("stable")
    assert adapter.sent[-1].headers.get("Authorization") == "Bearer tok"
