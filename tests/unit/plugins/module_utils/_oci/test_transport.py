# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTTP plumbing (_transport): transport errors, size-capped bodies, retries and redirects,
through a RegistryClient on a fake session or on a real session over a fake adapter (no network)."""

from __future__ import annotations

import datetime
import gzip
import io
from types import SimpleNamespace

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


# -- Size caps and the small-body deadline ----------------------------------


def test_read_capped_refuses_an_announced_oversize_body_before_reading():
    response = FakeResponse(200, b"x" * 11, {"Content-Length": "11"})
    with pytest.raises(RegistryResponseError) as raised:
        _transport.read_capped(make_client(), response, 10, "token response")
    assert str(raised.value) == "token response is 11 bytes, over the 10 byte limit"
    assert response.reads == 0


@pytest.mark.parametrize("announced", ["\u00b2", "\u0663", "-1", "1e3"])
def test_a_content_length_that_is_not_ascii_digits_is_ignored_not_a_crash(announced):
    response = FakeResponse(200, b"{}", {"Content-Length": announced})
    assert _transport.read_capped(make_client(), response, 10, "token response") == b"{}"


def test_read_capped_stops_a_body_growing_past_the_cap():
    response = FakeResponse(200, chunks=[b"a" * 6, b"b" * 6, b"c" * 6, b"d" * 6])
    with pytest.raises(ManifestError) as raised:
        _transport.read_capped(make_client(), response, 10, "manifest stable", error=ManifestError)
    assert str(raised.value) == "manifest stable is over the 10 byte limit"
    assert response.reads == 2


def test_read_capped_does_not_trust_a_small_content_length():
    response = FakeResponse(200, chunks=[b"a" * 8, b"b" * 8], headers={"Content-Length": "5"})
    with pytest.raises(RegistryResponseError, match="is over the 10 byte limit"):
        _transport.read_capped(make_client(), response, 10, "error body")


@pytest.mark.parametrize(
    "chunks, headers",
    [
        ([b"0123", b"45678", b"9"], {"Content-Length": "10"}),
        ([b"0123", b"45678", b"9"], {}),
        ([b"0123456789"], {"Content-Length": "garbage"}),
    ],
)
def test_read_capped_returns_a_body_within_the_cap(chunks, headers):
    response = FakeResponse(200, chunks=chunks, headers=headers)
    assert _transport.read_capped(make_client(), response, 10, "body") == b"0123456789"
    # Small reads that return what has arrived, decoded (a gzipped manifest stays readable).
    assert response.raw.amounts == [_transport.SMALL_READ_BYTES] * (len(chunks) + 1)
    assert response.raw.decoded == [True] * (len(chunks) + 1)


def test_read_capped_turns_a_broken_stream_into_a_connection_error():
    raw = FakeRaw(b"abcdef", error=urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead"), fail_after=3)
    with pytest.raises(RegistryConnectionError) as raised:
        _transport.read_capped(make_client(), FakeResponse(200, raw=raw), 10, "manifest stable")
    assert str(raised.value) == "reading manifest stable failed: Connection broken: IncompleteRead"


def test_read_capped_decodes_a_gzipped_body_through_urllib3():
    body = MANIFEST_BYTES * 50
    raw = urllib3.HTTPResponse(
        body=io.BytesIO(gzip.compress(body)),
        headers={"Content-Encoding": "gzip"},
        status=200,
        preload_content=False,
        decode_content=False,  # as requests makes them
    )
    response = FakeResponse(200, raw=raw, headers={"Content-Encoding": "gzip"})
    assert _transport.read_capped(make_client(), response, len(body), "manifest stable") == body


class Clock:
    """A fake time.monotonic for _transport; each dripped byte moves it on."""

    def __init__(self, monkeypatch):
        self.now = 1000.0
        monkeypatch.setattr(_transport, "time", SimpleNamespace(monotonic=lambda: self.now))

    def drip(self, body, every):
        for byte in body:
            self.now += every
            yield bytes((byte,))


def test_a_dripping_body_ends_at_the_deadline_as_a_connection_error(monkeypatch):
    clock = Clock(monkeypatch)
    response = FakeResponse(200, chunks=clock.drip(MANIFEST_BYTES, every=0.4), headers={"Content-Length": "300"})
    started = clock.now
    with pytest.raises(RegistryConnectionError) as raised:
        _transport.read_capped(make_client(timeout=1), response, 4096, "manifest stable", error=ManifestError)
    assert str(raised.value) == (
        "manifest stable did not arrive whole from registry.example.com within 3s (3 times timeout=1); "
        "a registry this slow counts as unreachable"
    )
    assert raised.value.code == "registry_unreachable"
    # Over by less than one read.
    assert 3 < clock.now - started <= 3.4
    assert response.reads == 8


def test_the_deadline_counts_from_the_request_so_slow_headers_use_it_up(monkeypatch):
    clock = Clock(monkeypatch)
    response = FakeResponse(200, chunks=clock.drip(b"0123456789", every=0.1))
    response.elapsed = datetime.timedelta(seconds=89.45)
    response.url = "https://cdn.example.net/manifest"
    with pytest.raises(RegistryConnectionError, match=r"from cdn.example.net:443 within 90s \(3 times timeout=30\)"):
        _transport.read_capped(make_client(), response, 4096, "manifest stable")
    assert response.reads == 6


def test_a_slow_body_that_is_whole_before_the_deadline_is_read(monkeypatch):
    clock = Clock(monkeypatch)
    response = FakeResponse(200, chunks=clock.drip(b"0123456789", every=0.25))
    assert _transport.read_capped(make_client(timeout=1), response, 4096, "manifest stable") == b"0123456789"


def test_a_dripping_token_response_is_a_connection_error(monkeypatch):
    clock = Clock(monkeypatch)
    token_response = FakeResponse(200, chunks=clock.drip(b'{"token": "tok"}', every=0.9))
    client = make_client([unauthorized()], [token_response], timeout=1)
    with pytest.raises(RegistryConnectionError, match="^token response of registry.example.com did not arrive whole"):
        client.get_manifest("stable")


def test_a_dripping_error_body_costs_the_message_only(monkeypatch):
    clock = Clock(monkeypatch)
    body = b'{"errors": [{"code": "DENIED", "message": "slow"}]}'
    client = make_client([FakeResponse(400, chunks=clock.drip(body, every=0.9))], timeout=1)
    with pytest.raises(RegistryResponseError) as raised:
        client.get_manifest("stable")
    assert str(raised.value) == "the registry answered HTTP 400 for manifest stable of registry.example.com/kubesolo/os"


class OldUrllib3Raw:
    """urllib3 1.26's response: no read1, a read that waits for ``amount``; the standard
    library's response underneath as ``_fp``."""

    def __init__(self, body, encoding=None):
        self._fp = FakeRaw(body, max_read=3)
        self.headers = {"Content-Encoding": encoding} if encoding else {}
        self.reads = []

    def read(self, amount, decode_content=None):
        self.reads.append((amount, decode_content))
        rest = self._fp.body[self._fp.served :]
        self._fp.served += len(rest)
        return rest

    def close(self):
        pass


def test_without_read1_a_plain_body_is_read_as_it_arrives_underneath():
    raw = OldUrllib3Raw(b"0123456789")
    assert _transport.read_capped(make_client(), FakeResponse(200, raw=raw), 100, "manifest stable") == b"0123456789"
    assert raw.reads == []
    assert raw._fp.amounts == [_transport.SMALL_READ_BYTES] * 5


def test_without_read1_an_encoded_body_is_decoded_by_urllib3():
    raw = OldUrllib3Raw(b"0123456789", encoding="gzip")
    _transport.read_capped(make_client(), FakeResponse(200, raw=raw), 100, "manifest stable")
    assert raw.reads == [(_transport.SMALL_READ_BYTES, True)] * 2


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


def redirect_hops(monkeypatch, tmp_path, answers, url, method="GET", data=None, **kwargs):
    """(response, adapter) of send() from ``url`` with Authorization, on a real session over
    a FakeAdapter answering ``answers``."""
    adapter = FakeAdapter(answers)
    client = real_client(adapter, monkeypatch, tmp_path, **kwargs)
    response = _transport.send(client, method, url, headers={"Authorization": "Bearer tok"}, data=data)
    return response, adapter


def hop_authorizations(adapter):
    return [(sent.url, sent.headers.get("Authorization")) for sent in adapter.sent]


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
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_drops_authorization(monkeypatch, tmp_path, from_url, to_url, status):
    answers = {from_url: [(status, {"Location": to_url}, b"")], to_url.split("?")[0]: [(200, {}, b"ok")]}
    response, adapter = redirect_hops(monkeypatch, tmp_path, answers, from_url)
    assert response.status_code == 200
    assert hop_authorizations(adapter) == [(from_url, "Bearer tok"), (to_url, None)]
    assert [sent.method for sent in adapter.sent] == ["GET", "GET"]


def test_a_refused_redirect_quotes_its_target_capped():
    with pytest.raises(RegistryResponseError) as raised:
        _transport._next_hop(
            "GET", "https://registry.example.com/v2/x", 302, "http://cdn.example.net/\x1b[2J" + "p" * 500
        )
    message = str(raised.value)
    assert message.startswith("registry.example.com:443 redirected an HTTPS request to http://cdn.example.net/\\x1b[2J")
    assert message.endswith("p...; refusing to leave HTTPS")
    assert "\x1b" not in message and len(message) < 300


@pytest.mark.parametrize(
    "from_url, to_url",
    [
        ("https://registry.example.com/v2/x", "https://registry.example.com/v2/y"),
        ("https://registry.example.com/v2/x", "https://REGISTRY.EXAMPLE.COM:443/v2/y"),
        ("http://registry.example.com:5000/v2/x", "http://registry.example.com:5000/other"),
        ("http://registry.example.com/v2/x", "http://registry.example.com:80/v2/y"),
    ],
)
def test_a_redirect_within_the_origin_keeps_authorization(monkeypatch, tmp_path, from_url, to_url):
    answers = {from_url: [(307, {"Location": to_url}, b"")], to_url.lower(): [(200, {}, b"ok")]}
    response, adapter = redirect_hops(monkeypatch, tmp_path, answers, from_url)
    assert [authorization for _url, authorization in hop_authorizations(adapter)] == ["Bearer tok", "Bearer tok"]


def test_a_relative_location_stays_at_the_origin(monkeypatch, tmp_path):
    answers = {
        BLOB_URL: [(307, {"Location": "/storage/blob?sig=1"}, b"")],
        "https://registry.example.com/storage/blob": [(200, {}, b"ok")],
    }
    _response, adapter = redirect_hops(monkeypatch, tmp_path, answers, BLOB_URL)
    assert hop_authorizations(adapter)[1] == ("https://registry.example.com/storage/blob?sig=1", "Bearer tok")


def test_once_dropped_authorization_is_not_sent_back_to_the_registry(monkeypatch, tmp_path):
    answers = {
        BLOB_URL: [(302, {"Location": "https://cdn.example.net/blob"}, b"")],
        "https://cdn.example.net/blob": [(302, {"Location": BLOB_URL + "?again=1"}, b"")],
    }
    answers[BLOB_URL].append((200, {}, b"ok"))
    _response, adapter = redirect_hops(monkeypatch, tmp_path, answers, BLOB_URL)
    assert [authorization for _url, authorization in hop_authorizations(adapter)] == ["Bearer tok", None, None]


@pytest.mark.parametrize(
    "to_url, refusal",
    [
        (
            "http://registry.example.com/v2/x",
            "redirected an HTTPS request to http://registry.example.com/v2/x; refusing",
        ),
        (
            "http://cdn.example.net/blob?sig=1",
            "redirected an HTTPS request to http://cdn.example.net/blob?sig=1; refusing",
        ),
        ("ftp://registry.example.com/x", "redirected a request to ftp://registry.example.com/x, which is not an HTTP"),
    ],
)
def test_a_redirect_off_https_is_refused_before_it_is_followed(monkeypatch, tmp_path, to_url, refusal):
    answers = {BLOB_URL: [(307, {"Location": to_url}, b"")]}
    with pytest.raises(RegistryResponseError) as raised:
        redirect_hops(monkeypatch, tmp_path, answers, BLOB_URL)
    assert str(raised.value).startswith(f"registry.example.com:443 {refusal}")
    assert raised.value.code == "registry_error"


def test_a_redirect_loop_ends_after_max_redirects(monkeypatch, tmp_path):
    loop = [(307, {"Location": BLOB_URL}, b"")] * (_transport.MAX_REDIRECTS + 1)
    with pytest.raises(RegistryConnectionError) as raised:
        redirect_hops(monkeypatch, tmp_path, {BLOB_URL: loop}, BLOB_URL)
    assert str(raised.value) == (
        f"cannot reach registry registry.example.com: more than 10 redirects, the last to {BLOB_URL}"
    )


def test_a_redirect_body_is_never_read(monkeypatch, tmp_path):
    # requests itself reads a redirect's whole body, even with allow_redirects=False.
    answers = {
        BLOB_URL: [(307, {"Location": "https://cdn.example.net/blob"}, b"x" * 100000)],
        "https://cdn.example.net/blob": [(200, {}, b"ok")],
    }
    adapter = FakeAdapter(answers)
    client = real_client(adapter, monkeypatch, tmp_path)
    responses = []
    send = adapter.send
    monkeypatch.setattr(
        adapter, "send", lambda request, **kwargs: responses.append(send(request, **kwargs)) or responses[-1]
    )
    _transport.send(client, "GET", BLOB_URL)
    assert [response.status_code for response in responses] == [307, 200]
    assert responses[0].raw.amounts == []


def test_a_hop_is_retried_on_its_own(monkeypatch, tmp_path):
    policy, sleeps = retrying()
    answers = {
        BLOB_URL: [(307, {"Location": "https://cdn.example.net/blob"}, b"")],
        "https://cdn.example.net/blob": [(503, {}, b""), (200, {}, b"ok")],
    }
    response, adapter = redirect_hops(monkeypatch, tmp_path, answers, BLOB_URL, retry=policy)
    assert response.status_code == 200
    assert [sent.url for sent in adapter.sent] == [BLOB_URL] + ["https://cdn.example.net/blob"] * 2
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [307, 308])
def test_a_write_follows_307_and_308_with_its_method_and_whole_body(monkeypatch, tmp_path, status):
    url = BASE_URL + "/blobs/uploads/abc"
    answers = {
        url: [(status, {"Location": "https://storage.example.net/put"}, b"")],
        "https://storage.example.net/put": [(201, {}, b"")],
    }
    response, adapter = redirect_hops(monkeypatch, tmp_path, answers, url, method="PUT", data=io.BytesIO(BLOB))
    assert response.status_code == 201
    assert [sent.method for sent in adapter.sent] == ["PUT", "PUT"]
    assert adapter.bodies == [BLOB, BLOB]


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_write_is_not_turned_into_a_get_by_a_redirect(monkeypatch, tmp_path, status):
    url = BASE_URL + "/blobs/uploads/"
    answers = {url: [(status, {"Location": "https://storage.example.net/put"}, b"")]}
    with pytest.raises(RegistryResponseError) as raised:
        redirect_hops(monkeypatch, tmp_path, answers, url, method="POST")
    assert str(raised.value) == (
        f"registry.example.com:443 answered a POST with HTTP {status} to https://storage.example.net/put; "
        "only 307 and 308 keep the method and body of a write"
    )


def test_the_client_certificate_goes_to_the_registry_origin_only(monkeypatch, tmp_path):
    answers = {
        BLOB_URL: [(307, {"Location": "https://cdn.example.net/blob"}, b""), (200, {}, b"ok")],
        "https://cdn.example.net/blob": [(307, {"Location": BLOB_URL + "?back=1"}, b"")],
    }
    _response, adapter = redirect_hops(
        monkeypatch, tmp_path, answers, BLOB_URL, client_cert="/etc/kubesolo/client.pem", client_key="/k.key"
    )
    assert adapter.certs == [("/etc/kubesolo/client.pem", "/k.key"), None, ("/etc/kubesolo/client.pem", "/k.key")]
    assert all(kwargs["stream"] is True for kwargs in adapter.kwargs)


def test_a_redirect_adds_no_netrc_credentials(monkeypatch, tmp_path):
    answers = {
        BLOB_URL: [(307, {"Location": "https://cdn.example.net/blob"}, b"")],
        "https://cdn.example.net/blob": [(200, {}, b"ok")],
    }
    _response, adapter = redirect_hops(
        monkeypatch, tmp_path, answers, BLOB_URL, netrc="machine cdn.example.net login netrc-user password netrc-pw\n"
    )
    assert hop_authorizations(adapter)[1] == ("https://cdn.example.net/blob", None)


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
