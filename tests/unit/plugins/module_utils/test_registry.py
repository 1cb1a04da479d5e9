# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OCI distribution client, against a fake session (no network)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import re
from types import SimpleNamespace

import pytest
import requests
import urllib3

from ansible_collections.kubesolo.fleet.plugins.module_utils import _about, _reference, _registry
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
from ansible_collections.kubesolo.fleet.plugins.module_utils._auth import Credentials
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    AuthenticationError,
    DigestMismatchError,
    InvalidReferenceError,
    ManifestError,
    NotFoundError,
    RegistryConnectionError,
    RegistryResponseError,
    SizeMismatchError,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    FakeAdapter,
    FakeRaw,
    FakeResponse,
    FakeSession,
    Sent,
    json_response,
    sha256_digest,
)

REPOSITORY = 'registry.example.com/kubesolo/os'
BASE_URL = 'https://registry.example.com/v2/kubesolo/os'
CHALLENGE = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:x:pull"'
ALL_MANIFEST_TYPES = _registry.INDEX_MEDIA_TYPES + _registry.MANIFEST_MEDIA_TYPES
MANIFEST = {
    'schemaVersion': 2,
    'mediaType': _registry.MEDIA_OCI_MANIFEST,
    'config': {'mediaType': 'application/vnd.oci.empty.v1+json',
               'digest': sha256_digest(b'{}'), 'size': 2},
    'layers': [],
}
MANIFEST_BYTES = json.dumps(MANIFEST).encode('utf-8')
MANIFEST_DIGEST = sha256_digest(MANIFEST_BYTES)
BLOB = bytes(range(256)) * 12  # 3072 bytes
BLOB_DIGEST = sha256_digest(BLOB)


def unexpected_sleep(seconds):
    raise AssertionError('unexpected retry: the client wanted to sleep %ss' % seconds)


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
    kwargs.setdefault('retry', guarded_policy())
    client = _registry.RegistryClient(_reference.parse_repository(repository), **kwargs)
    client.session = FakeSession(responses, token_responses)
    return client


def manifest_response(data=MANIFEST_BYTES, content_type=_registry.MEDIA_OCI_MANIFEST, headers=None):
    all_headers = {'Content-Type': content_type, 'Content-Length': str(len(data))}
    all_headers.update(headers or {})
    return FakeResponse(200, data, all_headers)


def unauthorized(challenge=CHALLENGE):
    return FakeResponse(401, b'', {'WWW-Authenticate': challenge} if challenge is not None else {})


def error_response(status, document=None):
    return FakeResponse(status, json.dumps(document or {}).encode('utf-8'))


# -- Client set-up ---------------------------------------------------------


def test_user_agent_names_the_collection_and_its_version():
    assert _registry.USER_AGENT == 'kubesolo.fleet/%s' % _about.COLLECTION_VERSION
    client = _registry.RegistryClient(_reference.parse_repository(REPOSITORY))
    assert client.session.headers['User-Agent'] == 'kubesolo.fleet/%s' % _about.COLLECTION_VERSION


@pytest.mark.parametrize('validate_certs, ca_path, verify', [
    (True, None, True),
    (True, '/etc/ssl/private-ca.pem', '/etc/ssl/private-ca.pem'),
    (False, None, False),
    (False, '/etc/ssl/private-ca.pem', False),
])
def test_tls_options_go_with_every_request(validate_certs, ca_path, verify):
    # Per request, not on the session: a session-level value loses to REQUESTS_CA_BUNDLE.
    client = make_client([manifest_response(), unauthorized(), manifest_response()],
                         token_responses=[json_response({'token': 'tok'})],
                         validate_certs=validate_certs, ca_path=ca_path)
    client.get_manifest('stable')
    client.get_manifest('stable')
    assert [sent.kwargs['verify'] for sent in client.session.sent] == [verify] * 3
    assert [sent.kwargs['verify'] for sent in client.session.token_gets] == [verify]


@pytest.mark.parametrize('repository, plain_http, url', [
    (REPOSITORY, False, BASE_URL + '/manifests/stable'),
    ('127.0.0.1:5000/kubesolo/os', True, 'http://127.0.0.1:5000/v2/kubesolo/os/manifests/stable'),
    ('docker.io/library/kubesolo', False, 'https://registry-1.docker.io/v2/library/kubesolo/manifests/stable'),
])
def test_manifest_url(repository, plain_http, url):
    client = make_client([manifest_response()], repository=repository, plain_http=plain_http, timeout=12.5)
    client.get_manifest('stable')
    sent = client.session.sent[0]
    assert (sent.method, sent.url) == ('GET', url)
    assert (sent.kwargs['stream'], sent.kwargs['timeout']) == (True, 12.5)


@pytest.mark.parametrize('exception, message', [
    (requests.exceptions.SSLError('certificate verify failed'),
     'TLS with registry.example.com failed: certificate verify failed (set ca_path'),
    (requests.exceptions.SSLError('[SSL: WRONG_VERSION_NUMBER] wrong version number'),
     'TLS with registry.example.com failed: [SSL: WRONG_VERSION_NUMBER] wrong version number (if the '
     'registry speaks plain HTTP, set plain_http=true)'),
    (requests.exceptions.ReadTimeout('read timed out'),
     'timed out after 30s talking to registry.example.com'),
    (requests.exceptions.ConnectionError('Connection refused'),
     'cannot reach registry registry.example.com: Connection refused'),
])
def test_transport_errors_become_registry_connection_errors(exception, message):
    client = make_client([exception], retry=RetryPolicy(retries=0, sleep=unexpected_sleep))
    with pytest.raises(RegistryConnectionError) as raised:
        client.get_manifest('stable')
    assert str(raised.value).startswith(message)
    assert raised.value.code == 'registry_unreachable'
    assert len(client.session.sent) == 1


def test_transport_error_message_names_the_cause_not_the_retry_chain():
    refused = urllib3.exceptions.NewConnectionError(
        'HTTPSConnection(host=registry.example.com, port=443)',
        'Failed to establish a new connection: [Errno 111] Connection refused')
    exception = requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, '/v2/kubesolo/os/manifests/stable', reason=refused))
    client = make_client([exception], retry=RetryPolicy(retries=0, sleep=unexpected_sleep))
    with pytest.raises(RegistryConnectionError) as raised:
        client.get_manifest('stable')
    message = str(raised.value)
    assert message.startswith('cannot reach registry registry.example.com: ')
    assert message.endswith('Failed to establish a new connection: [Errno 111] Connection refused')
    assert 'Max retries exceeded' not in message


def test_a_request_body_is_sent_again_whole_after_a_challenge():
    client = make_client([unauthorized(), FakeResponse(201)], [json_response({'token': 'tok'})])
    response = client.request('PUT', BASE_URL + '/manifests/v0.3.0', data=io.BytesIO(MANIFEST_BYTES))
    assert response.status_code == 201
    assert [sent.body for sent in client.session.sent] == [MANIFEST_BYTES, MANIFEST_BYTES]
    assert client.session.sent[1].headers['Authorization'] == 'Bearer tok'


# -- WWW-Authenticate ------------------------------------------------------


@pytest.mark.parametrize('header, scheme, params', [
    (CHALLENGE, 'bearer',
     {'realm': 'https://auth.example/token', 'service': 'reg', 'scope': 'repository:x:pull'}),
    ('Bearer realm="https://auth/token",scope="repository:a/b:pull,push"', 'bearer',
     {'realm': 'https://auth/token', 'scope': 'repository:a/b:pull,push'}),
    ('Bearer realm="https://auth/token", error="insufficient_scope, really"', 'bearer',
     {'realm': 'https://auth/token', 'error': 'insufficient_scope, really'}),
    (r'Bearer realm="a \"quoted\" realm",service="x\\y"', 'bearer',
     {'realm': 'a "quoted" realm', 'service': 'x\\y'}),
    ('Bearer realm=https://auth/token,service=reg', 'bearer',
     {'realm': 'https://auth/token', 'service': 'reg'}),
    ('Bearer Realm = "https://auth/token" , Service = reg', 'bearer',
     {'realm': 'https://auth/token', 'service': 'reg'}),
    ('Basic realm="Registry Realm"', 'basic', {'realm': 'Registry Realm'}),
    ('BEARER realm="r"', 'bearer', {'realm': 'r'}),
    ('bAsIc', 'basic', {}),
    ('  Basic realm=x  ', 'basic', {'realm': 'x'}),
])
def test_parse_challenge(header, scheme, params):
    assert _registry.parse_challenge(header) == (scheme, params)


@pytest.mark.parametrize('header', ['', '   ', None])
def test_parse_challenge_empty(header):
    assert _registry.parse_challenge(header) == (None, {})


# -- Media types -----------------------------------------------------------


@pytest.mark.parametrize('content_type, media_type', [
    ('application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.index.v1+json'),
    ('application/vnd.oci.image.manifest.v1+json; charset=utf-8', 'application/vnd.oci.image.manifest.v1+json'),
    (' Application/JSON ', 'application/json'),
    ('', ''),
    (None, ''),
])
def test_media_type_of(content_type, media_type):
    assert _registry.media_type_of(content_type) == media_type


@pytest.mark.parametrize('document, content_type, expected', [
    ({'mediaType': _registry.MEDIA_OCI_MANIFEST}, _registry.MEDIA_OCI_MANIFEST, _registry.MEDIA_OCI_MANIFEST),
    ({'mediaType': _registry.MEDIA_OCI_INDEX}, _registry.MEDIA_OCI_INDEX, _registry.MEDIA_OCI_INDEX),
    ({'mediaType': _registry.MEDIA_DOCKER_LIST}, 'application/json', _registry.MEDIA_DOCKER_LIST),
    ({'mediaType': _registry.MEDIA_DOCKER_MANIFEST}, 'application/octet-stream', _registry.MEDIA_DOCKER_MANIFEST),
    ({'mediaType': _registry.MEDIA_OCI_INDEX}, '', _registry.MEDIA_OCI_INDEX),
    ({'layers': []}, _registry.MEDIA_DOCKER_MANIFEST, _registry.MEDIA_DOCKER_MANIFEST),
    ({'manifests': []}, _registry.MEDIA_OCI_INDEX, _registry.MEDIA_OCI_INDEX),
    ({'manifests': []}, '', _registry.MEDIA_OCI_INDEX),
    ({'manifests': []}, 'application/json', _registry.MEDIA_OCI_INDEX),
    ({'layers': []}, '', _registry.MEDIA_OCI_MANIFEST),
])
def test_manifest_media_type(document, content_type, expected):
    assert _registry.manifest_media_type(document, content_type, 'stable') == expected


@pytest.mark.parametrize('document, content_type, message', [
    ({'mediaType': _registry.MEDIA_OCI_INDEX}, _registry.MEDIA_OCI_MANIFEST,
     'manifest stable says its mediaType is %s but was served as %s'
     % (_registry.MEDIA_OCI_INDEX, _registry.MEDIA_OCI_MANIFEST)),
    ({'mediaType': _registry.MEDIA_OCI_MANIFEST}, _registry.MEDIA_DOCKER_MANIFEST,
     'manifest stable says its mediaType is %s but was served as %s'
     % (_registry.MEDIA_OCI_MANIFEST, _registry.MEDIA_DOCKER_MANIFEST)),
    ({'mediaType': 'application/vnd.docker.distribution.manifest.v1+prettyjws'}, '',
     'unsupported media type application/vnd.docker.distribution.manifest.v1+prettyjws at stable '
     '(expected an OCI or Docker index or manifest)'),
    ({'layers': []}, 'text/html',
     'unsupported media type text/html at stable (expected an OCI or Docker index or manifest)'),
    ({'mediaType': 7}, _registry.MEDIA_OCI_MANIFEST, 'manifest stable has a non-string mediaType'),
])
def test_manifest_media_type_rejects(document, content_type, message):
    with pytest.raises(ManifestError) as raised:
        _registry.manifest_media_type(document, content_type, 'stable')
    assert str(raised.value) == message
    assert raised.value.code == 'invalid_manifest'


@pytest.mark.parametrize('fetched_type, is_index', [
    (_registry.MEDIA_OCI_INDEX, True),
    (_registry.MEDIA_DOCKER_LIST, True),
    (_registry.MEDIA_OCI_MANIFEST, False),
    (_registry.MEDIA_DOCKER_MANIFEST, False),
])
def test_fetched_is_index(fetched_type, is_index):
    assert _registry.Fetched(b'{}', fetched_type, 'sha256:x', {}).is_index is is_index


# -- Manifest JSON ---------------------------------------------------------


def test_parse_manifest_json_returns_the_object():
    assert _registry.parse_manifest_json(MANIFEST_BYTES, 'stable') == MANIFEST


@pytest.mark.parametrize('data, message', [
    (b'{"schemaVersion": 2', 'manifest stable is not valid JSON: '),
    (b'\xff\xfe{}', 'manifest stable is not valid JSON: '),
    (b'', 'manifest stable is not valid JSON: '),
    (b'[{"schemaVersion": 2}]', 'manifest stable is not a JSON object'),
    (b'"manifest"', 'manifest stable is not a JSON object'),
    (b'{"schemaVersion": 1, "fsLayers": []}', 'manifest stable has schemaVersion 1, only 2 is supported'),
    (b'{"schemaVersion": "2"}', "manifest stable has schemaVersion '2', only 2 is supported"),
    (b'{"layers": []}', 'manifest stable has schemaVersion None, only 2 is supported'),
])
def test_parse_manifest_json_rejects(data, message):
    with pytest.raises(ManifestError) as raised:
        _registry.parse_manifest_json(data, 'stable')
    assert str(raised.value).startswith(message)


# -- Size caps -------------------------------------------------------------


def test_read_capped_refuses_an_announced_oversize_body_before_reading():
    response = FakeResponse(200, b'x' * 11, {'Content-Length': '11'})
    with pytest.raises(RegistryResponseError) as raised:
        _registry.read_capped(response, 10, 'token response')
    assert str(raised.value) == 'token response is 11 bytes, over the 10 byte limit'
    assert response.chunks_served == 0


def test_read_capped_stops_a_body_growing_past_the_cap():
    response = FakeResponse(200, chunks=[b'a' * 6, b'b' * 6, b'c' * 6, b'd' * 6])
    with pytest.raises(ManifestError) as raised:
        _registry.read_capped(response, 10, 'manifest stable', error=ManifestError)
    assert str(raised.value) == 'manifest stable is over the 10 byte limit'
    assert response.chunks_served == 2


def test_read_capped_does_not_trust_a_small_content_length():
    response = FakeResponse(200, chunks=[b'a' * 8, b'b' * 8], headers={'Content-Length': '5'})
    with pytest.raises(RegistryResponseError, match='is over the 10 byte limit'):
        _registry.read_capped(response, 10, 'error body')


@pytest.mark.parametrize('chunks, headers', [
    ([b'0123', b'45678', b'9'], {'Content-Length': '10'}),
    ([b'0123', b'45678', b'9'], {}),
    ([b'0123456789'], {'Content-Length': 'garbage'}),
])
def test_read_capped_returns_a_body_within_the_cap(chunks, headers):
    assert _registry.read_capped(FakeResponse(200, chunks=chunks, headers=headers), 10, 'body') == b'0123456789'


def test_read_capped_turns_a_broken_stream_into_a_connection_error():
    def broken():
        yield b'abc'
        raise requests.exceptions.ChunkedEncodingError('Connection broken: IncompleteRead')

    with pytest.raises(RegistryConnectionError) as raised:
        _registry.read_capped(FakeResponse(200, chunks=broken()), 10, 'manifest stable')
    assert str(raised.value) == 'reading manifest stable failed: Connection broken: IncompleteRead'


# -- Digests ---------------------------------------------------------------


@pytest.mark.parametrize('digest', [
    sha256_digest(b'payload'),
    'sha512:' + hashlib.sha512(b'payload').hexdigest(),
])
def test_verify_bytes_accepts_matching_content(digest):
    assert _registry.verify_bytes(b'payload', digest, 'manifest') == digest


def test_verify_bytes_rejects_other_content():
    digest = sha256_digest(b'payload')
    with pytest.raises(DigestMismatchError) as raised:
        _registry.verify_bytes(b'tampered', digest, 'manifest')
    assert str(raised.value) == 'manifest %s has wrong content: its bytes hash to %s' % (
        digest, sha256_digest(b'tampered'))
    assert raised.value.code == 'digest_mismatch'


def test_verify_bytes_rejects_an_invalid_digest():
    with pytest.raises(InvalidReferenceError):
        _registry.verify_bytes(b'payload', 'md5:' + hashlib.md5(b'payload').hexdigest(), 'manifest')


# -- Blob downloads --------------------------------------------------------


def blob_client(body=BLOB, headers=None, raw=None, status_code=200):
    """A client whose one blob request is answered with ``body`` (1000 bytes per read)."""
    raw = raw if raw is not None else FakeRaw(body, max_read=1000)
    response = FakeResponse(status_code, headers=headers, raw=raw)
    return make_client([response]), response


def test_download_blob_writes_and_returns_the_sha256_hex():
    client, response = blob_client(headers={'Content-Length': str(len(BLOB))})
    sink = io.BytesIO()
    assert client.download_blob(BLOB_DIGEST, len(BLOB), sink) == hashlib.sha256(BLOB).hexdigest()
    assert sink.getvalue() == BLOB
    sent = client.session.sent[0]
    assert (sent.method, sent.url) == ('GET', BASE_URL + '/blobs/' + BLOB_DIGEST)
    assert sent.headers == {'Accept-Encoding': 'identity'}
    assert sent.kwargs['stream'] is True
    assert response.closed


def test_download_blob_reads_in_chunks_of_at_most_blob_chunk_bytes(monkeypatch):
    monkeypatch.setattr(_registry, 'BLOB_CHUNK_BYTES', 1024)
    amounts = []
    raw = FakeRaw(BLOB)
    original_read1 = raw.read1
    raw.read1 = lambda amount: amounts.append(amount) or original_read1(amount)
    raw.read = lambda amount: pytest.fail('blobs are read with read1, which returns what has arrived')
    client, _response = blob_client(raw=raw)
    client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert amounts == [1024, 1024, 1024, 1]


def test_download_blob_verifies_a_sha512_descriptor_and_returns_sha256():
    digest = 'sha512:' + hashlib.sha512(BLOB).hexdigest()
    client, _response = blob_client()
    assert client.download_blob(digest, len(BLOB), io.BytesIO()) == hashlib.sha256(BLOB).hexdigest()


def test_download_blob_rejects_wrong_bytes_under_a_sha512_descriptor():
    digest = 'sha512:' + hashlib.sha512(b'another blob').hexdigest()
    client, _response = blob_client()
    with pytest.raises(DigestMismatchError) as raised:
        client.download_blob(digest, len(BLOB), io.BytesIO())
    assert str(raised.value) == 'blob %s has wrong content: its bytes hash to sha512:%s' % (
        digest, hashlib.sha512(BLOB).hexdigest())


def test_download_blob_rejects_a_short_body():
    client, _response = blob_client(body=BLOB[:-5])
    with pytest.raises(SizeMismatchError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert str(raised.value) == 'blob %s ended after 3067 bytes, the manifest declares 3072' % BLOB_DIGEST
    assert raised.value.code == 'size_mismatch'


def test_download_blob_rejects_a_longer_body_and_stops_reading():
    raw = FakeRaw(BLOB + b'\0' * 100000, max_read=1000)
    client, _response = blob_client(raw=raw)
    sink = io.BytesIO()
    with pytest.raises(SizeMismatchError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert str(raised.value) == 'blob %s is longer than the 3072 bytes the manifest declares' % BLOB_DIGEST
    assert raw.served == len(BLOB) + 1
    assert sink.getvalue() == BLOB


def test_download_blob_rejects_wrong_bytes_of_the_right_size():
    tampered = b'\xff' + BLOB[1:]
    client, _response = blob_client(body=tampered)
    with pytest.raises(DigestMismatchError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert str(raised.value) == 'blob %s has wrong content: its bytes hash to %s' % (
        BLOB_DIGEST, sha256_digest(tampered))


def test_download_blob_refuses_a_disagreeing_content_length_before_reading():
    raw = FakeRaw(BLOB)
    client, _response = blob_client(raw=raw, headers={'Content-Length': str(len(BLOB) + 1)})
    sink = io.BytesIO()
    with pytest.raises(SizeMismatchError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert str(raised.value) == (
        'blob %s: the registry announced 3073 bytes, the manifest declares 3072' % BLOB_DIGEST)
    assert raw.served == 0
    assert sink.getvalue() == b''


@pytest.mark.parametrize('error', [
    ConnectionResetError(errno.ECONNRESET, 'Connection reset by peer'),
    urllib3.exceptions.ProtocolError('Connection broken: IncompleteRead(1000 bytes read)'),
    urllib3.exceptions.ReadTimeoutError(None, None, 'Read timed out.'),
])
def test_download_blob_network_failure_names_the_byte_count(error):
    # No retry left: the break is the final error (resuming is tested below).
    raw = FakeRaw(BLOB, max_read=1000, error=error, fail_after=2000)
    client = make_client([FakeResponse(200, raw=raw)], retry=RetryPolicy(retries=0, sleep=unexpected_sleep))
    sink = io.BytesIO()
    with pytest.raises(RegistryConnectionError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert str(raised.value).startswith(
        'download of blob %s broke off after 2000 of 3072 bytes: ' % BLOB_DIGEST)
    assert raised.value.code == 'registry_unreachable'
    assert sink.getvalue() == BLOB[:2000]  # kept for a later resume
    assert len(client.session.sent) == 1


def test_download_blob_lets_a_local_write_error_through():
    class FullDisk(io.BytesIO):
        def write(self, _data):
            raise OSError(errno.ENOSPC, 'No space left on device')

    client, _response = blob_client()
    with pytest.raises(OSError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), FullDisk())
    assert raised.value.errno == errno.ENOSPC
    assert not isinstance(raised.value, RegistryConnectionError)


def test_download_blob_not_found():
    client, _response = blob_client(status_code=404)
    with pytest.raises(NotFoundError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert str(raised.value) == 'blob %s of %s was not found in the registry' % (BLOB_DIGEST, REPOSITORY)
    assert raised.value.code == 'not_found'


def test_download_blob_forbidden():
    client = make_client([error_response(403)])
    with pytest.raises(AuthenticationError, match=re.escape('refused access to blob %s (HTTP 403)' % BLOB_DIGEST)):
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())


def test_download_blob_refuses_an_invalid_digest_without_a_request():
    client = make_client([])
    with pytest.raises(InvalidReferenceError):
        client.download_blob('sha256:../../etc/passwd', 10, io.BytesIO())
    assert client.session.sent == []


# -- Retries -----------------------------------------------------------------


def test_the_default_retry_policy_is_the_documented_one():
    client = _registry.RegistryClient(_reference.parse_repository(REPOSITORY))
    assert (client.retry.retries, client.retry.max_wait, client.retry.budget) == (5, 60.0, 300.0)
    assert client.transfer_summary() == {'retries': 0, 'last_error': '', 'resumed_bytes': 0, 'fetched_bytes': 0}


def sent_requests(client):
    return [(sent.method, sent.url) for sent in client.session.sent]


@pytest.mark.parametrize('status', [503, 429, 408, 500, 502, 504])
def test_a_get_is_retried_after_a_status_worth_it_then_succeeds(status):
    policy, sleeps = retrying()
    failed = error_response(status)
    client = make_client([failed, manifest_response()], retry=policy)
    assert client.get_manifest('stable').digest == MANIFEST_DIGEST
    assert sent_requests(client) == [('GET', BASE_URL + '/manifests/stable')] * 2
    assert len(sleeps) == 1
    assert failed.closed
    assert client.transfer_summary() == {
        'retries': 1, 'last_error': 'registry registry.example.com answered HTTP %d' % status, 'resumed_bytes': 0,
        'fetched_bytes': 0}


def test_a_head_is_retried_too():
    policy, sleeps = retrying()
    client = make_client([FakeResponse(503), FakeResponse(200, headers={'Docker-Content-Digest': BLOB_DIGEST})],
                         retry=policy)
    assert client.exists('blobs', BLOB_DIGEST) == BLOB_DIGEST
    assert [sent.method for sent in client.session.sent] == ['HEAD', 'HEAD']
    assert len(sleeps) == 1


@pytest.mark.parametrize('status', [429, 503])
def test_retry_after_is_waited_for(status):
    policy, sleeps = retrying()
    client = make_client([FakeResponse(status, b'{}', {'Retry-After': '7'}), manifest_response()], retry=policy)
    client.get_manifest('stable')
    assert sleeps == [7.0]


def test_a_long_retry_after_is_capped_at_max_wait():
    policy, sleeps = retrying(max_wait=60)
    client = make_client([FakeResponse(429, b'{}', {'Retry-After': '3600'}), manifest_response()], retry=policy)
    client.get_manifest('stable')
    assert sleeps == [60]


def test_retries_stop_after_the_configured_number():
    policy, sleeps = retrying(retries=2)
    client = make_client([error_response(503)] * 3 + [manifest_response()], retry=policy)
    with pytest.raises(RegistryResponseError, match='answered HTTP 503'):
        client.get_manifest('stable')
    assert len(client.session.sent) == 3
    assert len(sleeps) == 2
    assert client.transfer_summary()['retries'] == 2


@pytest.mark.parametrize('answer, error', [
    (error_response(400), RegistryResponseError),
    (unauthorized(challenge=None), AuthenticationError),
    (error_response(403), AuthenticationError),
    (error_response(404), NotFoundError),
], ids=['400', '401', '403', '404'])
def test_other_client_errors_fail_at_once(answer, error):
    policy, sleeps = retrying()
    client = make_client([answer], retry=policy)
    with pytest.raises(error):
        client.get_manifest('stable')
    assert len(client.session.sent) == 1
    assert sleeps == []
    assert client.transfer_summary()['retries'] == 0


def test_a_missing_blob_is_not_retried():
    policy, sleeps = retrying()
    client = make_client([FakeResponse(404)], retry=policy)
    with pytest.raises(NotFoundError):
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert len(client.session.sent) == 1
    assert sleeps == []


def test_an_upload_request_post_is_not_retried():
    policy, sleeps = retrying()
    client = make_client([error_response(503)], retry=policy)
    with pytest.raises(RegistryResponseError, match='answered HTTP 503 to an upload request'):
        client.upload_blob(BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB))
    assert [sent.method for sent in client.session.sent] == ['POST']
    assert sleeps == []


def test_a_manifest_put_is_not_retried():
    policy, sleeps = retrying()
    client = make_client([error_response(503)], retry=policy)
    with pytest.raises(RegistryResponseError, match='answered HTTP 503 when pushing manifest v1'):
        client.put_manifest('v1', MANIFEST_BYTES, _registry.MEDIA_OCI_MANIFEST)
    assert [sent.method for sent in client.session.sent] == ['PUT']
    assert sleeps == []


@pytest.mark.parametrize('method', ['POST', 'PUT'])
def test_writes_are_not_retried_after_a_connection_error(method):
    policy, sleeps = retrying()
    client = make_client([requests.exceptions.ConnectionError('Connection reset by peer')], retry=policy)
    with pytest.raises(RegistryConnectionError, match='Connection reset by peer'):
        if method == 'POST':
            client.upload_blob(BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB))
        else:
            client.put_manifest('v1', MANIFEST_BYTES, _registry.MEDIA_OCI_MANIFEST)
    assert [sent.method for sent in client.session.sent] == [method]
    assert sleeps == []


@pytest.mark.parametrize('exception', [
    requests.exceptions.ConnectionError('Connection refused'),
    requests.exceptions.ReadTimeout('read timed out'),
    requests.exceptions.ConnectTimeout('connect timed out'),
])
def test_a_connection_error_is_retried_then_succeeds(exception):
    policy, sleeps = retrying()
    client = make_client([exception, manifest_response()], retry=policy)
    assert client.get_manifest('stable').digest == MANIFEST_DIGEST
    assert len(client.session.sent) == 2
    assert len(sleeps) == 1
    assert client.transfer_summary()['retries'] == 1


def test_connection_errors_past_the_retries_raise_the_last_error():
    policy, sleeps = retrying(retries=2)
    client = make_client([requests.exceptions.ConnectionError('Connection refused'),
                          requests.exceptions.ConnectionError('Connection reset by peer'),
                          requests.exceptions.ConnectionError('Network is unreachable')], retry=policy)
    with pytest.raises(RegistryConnectionError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == 'cannot reach registry registry.example.com: Network is unreachable'
    assert raised.value.code == 'registry_unreachable'
    assert len(client.session.sent) == 3
    assert len(sleeps) == 2
    assert client.transfer_summary() == {
        'retries': 2, 'last_error': 'cannot reach registry registry.example.com: Network is unreachable',
        'resumed_bytes': 0, 'fetched_bytes': 0}


def test_a_tls_error_is_not_retried():
    policy, sleeps = retrying()
    client = make_client([requests.exceptions.SSLError('certificate verify failed')], retry=policy)
    with pytest.raises(RegistryConnectionError, match='TLS with registry.example.com failed'):
        client.get_manifest('stable')
    assert len(client.session.sent) == 1
    assert sleeps == []


def test_a_retried_blob_request_keeps_its_headers():
    policy, sleeps = retrying()
    client = make_client([error_response(503), FakeResponse(200, raw=FakeRaw(BLOB, max_read=1000))], retry=policy)
    sink = io.BytesIO()
    client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert sink.getvalue() == BLOB
    assert [sent.headers for sent in client.session.sent] == [{'Accept-Encoding': 'identity'}] * 2
    assert len(sleeps) == 1


# -- Resuming blob downloads ---------------------------------------------------


def part_file(tmp_path, content=b''):
    """A partial download holding ``content``, as an earlier attempt left it."""
    path = tmp_path / 'blob.part'
    path.write_bytes(content)
    return path


def download_into(client, path, digest=BLOB_DIGEST, size=len(BLOB)):
    """download_blob into ``path`` opened the way the stager opens it (read and append)."""
    with open(str(path), 'a+b', buffering=0) as handle:
        return client.download_blob(digest, size, handle)


def ranged(start, raw=None, body=BLOB):
    """A 206 answer with the bytes of ``body`` from ``start`` on and the right Content-Range."""
    rest = body[start:]
    headers = {'Content-Range': 'bytes %d-%d/%d' % (start, len(body) - 1, len(body)),
               'Content-Length': str(len(rest))}
    return FakeResponse(206, headers=headers, raw=raw if raw is not None else FakeRaw(rest, max_read=1000))


def whole(raw=None, body=BLOB):
    return FakeResponse(200, headers={'Content-Length': str(len(body))},
                        raw=raw if raw is not None else FakeRaw(body, max_read=1000))


def ranges(client):
    return [sent.headers.get('Range') for sent in client.session.sent]


SHA256_HEX = hashlib.sha256(BLOB).hexdigest()


@pytest.mark.parametrize('error', [
    urllib3.exceptions.ProtocolError('Connection broken: IncompleteRead(2000 bytes read, 1072 more expected)'),
    ConnectionResetError(errno.ECONNRESET, 'Connection reset by peer'),
    urllib3.exceptions.ReadTimeoutError(None, None, 'Read timed out.'),
], ids=['protocol-error', 'reset', 'read-timeout'])
def test_a_broken_download_resumes_with_one_range_request(tmp_path, error):
    policy, sleeps = retrying()
    first = whole(FakeRaw(BLOB, max_read=1000, error=error, fail_after=2000))
    client = make_client([first, ranged(2000)], retry=policy)
    path = part_file(tmp_path)
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client) == [None, 'bytes=2000-']
    assert client.session.sent[1].headers == {'Accept-Encoding': 'identity', 'Range': 'bytes=2000-'}
    assert first.closed
    assert len(sleeps) == 1
    summary = client.transfer_summary()
    assert summary['resumed_bytes'] == 2000
    assert summary['retries'] == 1
    assert summary['last_error'].startswith(
        'download of blob %s broke off after 2000 of 3072 bytes: ' % BLOB_DIGEST)


def test_a_download_broken_twice_resumes_twice(tmp_path):
    policy, sleeps = retrying()
    broken = urllib3.exceptions.ProtocolError('Connection broken')
    client = make_client([
        whole(FakeRaw(BLOB, max_read=1000, error=broken, fail_after=1000)),
        ranged(1000, FakeRaw(BLOB[1000:], max_read=1000, error=broken, fail_after=1500)),
        ranged(2500),
    ], retry=policy)
    path = part_file(tmp_path)
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client) == [None, 'bytes=1000-', 'bytes=2500-']
    assert len(sleeps) == 2


def test_a_download_broken_past_the_retries_keeps_what_arrived(tmp_path):
    policy, sleeps = retrying(retries=1)
    broken = urllib3.exceptions.ProtocolError('Connection broken')
    client = make_client([
        whole(FakeRaw(BLOB, max_read=1000, error=broken, fail_after=1000)),
        ranged(1000, FakeRaw(BLOB[1000:], max_read=1000, error=broken, fail_after=1000)),
    ], retry=policy)
    path = part_file(tmp_path)
    with pytest.raises(RegistryConnectionError) as raised:
        download_into(client, path)
    assert str(raised.value) == (
        'download of blob %s broke off after 2000 of 3072 bytes: Connection broken' % BLOB_DIGEST)
    assert path.read_bytes() == BLOB[:2000]
    assert ranges(client) == [None, 'bytes=1000-']
    assert len(sleeps) == 1


def test_a_partial_file_of_an_earlier_run_is_completed_with_one_range_request(tmp_path):
    path = part_file(tmp_path, BLOB[:1234])
    client = make_client([ranged(1234)])
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client) == ['bytes=1234-']
    assert client.transfer_summary()['resumed_bytes'] == 1234


def test_a_complete_partial_file_is_verified_without_a_request(tmp_path):
    path = part_file(tmp_path, BLOB)
    client = make_client([])
    assert download_into(client, path) == SHA256_HEX
    assert client.session.sent == []
    assert path.read_bytes() == BLOB


def test_a_server_ignoring_range_restarts_the_file(tmp_path):
    path = part_file(tmp_path, BLOB[:1000])
    client = make_client([whole()])
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client) == ['bytes=1000-']


def test_bytes_fetched_again_after_a_restart_are_not_counted_as_resumed(tmp_path):
    # resumed_bytes is documented as bytes that did not have to be fetched again.
    path = part_file(tmp_path, BLOB[:1000])
    client = make_client([whole()])
    download_into(client, path)
    assert client.transfer_summary()['resumed_bytes'] == 0


def test_a_partial_answer_from_another_offset_restarts_the_file(tmp_path):
    # The server answers the Range request with bytes from 500 on: they cannot be appended
    # after the 1000 bytes held; the download starts the file again and succeeds.
    path = part_file(tmp_path, BLOB[:1000])
    policy, _sleeps = retrying()
    client = make_client([ranged(500), whole()], retry=policy)
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client)[0] == 'bytes=1000-'


def test_a_partial_file_longer_than_the_blob_is_emptied_and_fetched_whole(tmp_path):
    path = part_file(tmp_path, BLOB + b'left over')
    client = make_client([whole()])
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert client.session.sent[0].headers == {'Accept-Encoding': 'identity'}


def test_a_partial_file_with_wrong_bytes_is_a_digest_mismatch(tmp_path):
    path = part_file(tmp_path, b'X' * 1000)
    client = make_client([ranged(1000)])
    with pytest.raises(DigestMismatchError) as raised:
        download_into(client, path)
    assert str(raised.value) == 'blob %s has wrong content: its bytes hash to %s' % (
        BLOB_DIGEST, sha256_digest(b'X' * 1000 + BLOB[1000:]))
    assert ranges(client) == ['bytes=1000-']


def test_a_complete_partial_file_with_wrong_bytes_is_a_digest_mismatch_without_a_request(tmp_path):
    path = part_file(tmp_path, b'X' + BLOB[1:])
    client = make_client([])
    with pytest.raises(DigestMismatchError):
        download_into(client, path)
    assert client.session.sent == []


def test_a_raw_stream_without_read1_downloads_too():
    # urllib3 1.26 (allowed by requests >= 2.25, and what Debian 12 ships) gives responses a
    # raw stream (an io.IOBase) with read() but no read1().
    class Urllib3v1Raw(io.IOBase):
        def __init__(self, body):
            super().__init__()
            self._fake = FakeRaw(body, max_read=1000)

        def read(self, amt=None, decode_content=None, cache_content=False):
            return self._fake.read(len(self._fake.body) if amt is None else amt)

    assert not hasattr(Urllib3v1Raw(b''), 'read1')
    client = make_client([whole(Urllib3v1Raw(BLOB))])
    sink = io.BytesIO()
    assert client.download_blob(BLOB_DIGEST, len(BLOB), sink) == SHA256_HEX
    assert sink.getvalue() == BLOB


# -- Stalled downloads ---------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


class SlowRaw(FakeRaw):
    """Serves at most ``per_read`` bytes per read1, each read taking ``seconds`` of ``clock``."""

    def __init__(self, body, clock, per_read, seconds):
        super().__init__(body, max_read=per_read)
        self.clock = clock
        self.seconds = seconds

    def read1(self, amount):
        self.clock.now += self.seconds
        return super().read1(amount)


class RangeSession(FakeSession):
    """Serves BLOB, honouring Range; ``raws`` makes the raw stream of each answer from its bytes."""

    def __init__(self, raws):
        super().__init__()
        self.raws = list(raws)

    def request(self, method, url, headers=None, **kwargs):
        self.sent.append(Sent(method, url, dict(headers or {}), kwargs))
        if not self.raws:
            raise AssertionError('unexpected request: %s %s' % (method, url))
        raw_for = self.raws.pop(0)
        match = re.match(r'bytes=(\d+)-$', (headers or {}).get('Range', ''))
        if match:
            return ranged(int(match.group(1)), raw_for(BLOB[int(match.group(1)):]))
        return whole(raw_for(BLOB))


@pytest.fixture
def clock(monkeypatch):
    """Fake monotonic time for the registry module only."""
    fake = FakeClock()
    monkeypatch.setattr(_registry, 'time', SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_a_stalled_download_is_resumed_then_given_up_after_the_retries(clock, tmp_path):
    # 10 bytes a second against a 5 second timeout: far less than STALL_BYTES in time.
    def slow(body):
        return SlowRaw(body, clock, 10, 1.0)

    policy, sleeps = retrying(retries=2)
    client = make_client(timeout=5, retry=policy)
    client.session = RangeSession([slow, slow, slow])
    path = part_file(tmp_path)
    with pytest.raises(RegistryConnectionError) as raised:
        download_into(client, path)
    message = str(raised.value)
    assert message.startswith('download of blob %s stalled at ' % BLOB_DIGEST), message
    assert raised.value.code == 'registry_unreachable'
    assert len(client.session.sent) == 3
    assert len(sleeps) == 2
    held = path.read_bytes()
    assert 0 < len(held) < len(BLOB)
    assert held == BLOB[:len(held)]
    offsets = [int(header[len('bytes='):-1]) for header in ranges(client)[1:]]
    assert ranges(client)[0] is None
    assert 0 < offsets[0] < offsets[1] < len(held)
    assert '%d of 3072 bytes' % len(held) in message


def test_a_stalled_download_resumes_and_completes_when_the_server_recovers(clock, tmp_path):
    policy, sleeps = retrying(retries=2)
    client = make_client(timeout=5, retry=policy)
    client.session = RangeSession([lambda body: SlowRaw(body, clock, 10, 1.0),
                                   lambda body: FakeRaw(body, max_read=1000)])
    path = part_file(tmp_path)
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client)[0] is None
    assert ranges(client)[1].startswith('bytes=') and ranges(client)[1] != 'bytes=0-'
    assert len(sleeps) == 1


def test_a_slow_transfer_that_keeps_moving_is_not_a_stall(clock, monkeypatch, tmp_path):
    # 1000 bytes every 0.4 s with STALL_BYTES 2000 and a 1 s timeout: the whole blob takes
    # longer than the timeout, but no window of it is short of bytes.
    monkeypatch.setattr(_registry, 'STALL_BYTES', 2000)
    client = make_client(timeout=1)
    client.session = RangeSession([lambda body: SlowRaw(body, clock, 1000, 0.4)])
    path = part_file(tmp_path)
    assert download_into(client, path) == SHA256_HEX
    assert clock.now - 1000.0 > 1
    assert len(client.session.sent) == 1


# -- Authentication --------------------------------------------------------


def test_bearer_challenge_fetches_a_token_and_retries_with_it():
    challenged = unauthorized()
    client = make_client([challenged, manifest_response()], [json_response({'token': 'tok-123'})])
    assert client.get_manifest('stable').digest == MANIFEST_DIGEST
    first, retry = client.session.sent
    assert 'Authorization' not in first.headers
    assert retry.headers['Authorization'] == 'Bearer tok-123'
    assert retry.url == first.url == BASE_URL + '/manifests/stable'
    assert retry.headers['Accept'] == first.headers['Accept']
    [token_get] = client.session.token_gets
    assert token_get.url == 'https://auth.example/token'
    assert token_get.kwargs['params'] == {'scope': 'repository:x:pull', 'service': 'reg'}
    assert token_get.kwargs['auth'] is None
    assert challenged.closed


def test_a_token_is_reused_for_later_requests():
    client = make_client([unauthorized(), manifest_response(), manifest_response()],
                         [json_response({'token': 'tok-123'})])
    client.get_manifest('stable')
    client.get_manifest('stable')
    assert client.session.sent[2].headers['Authorization'] == 'Bearer tok-123'
    assert len(client.session.token_gets) == 1


def test_a_rejected_token_is_replaced_once():
    client = make_client([unauthorized(), manifest_response(), unauthorized(), manifest_response()],
                         [json_response({'token': 'old'}), json_response({'token': 'new'})])
    client.get_manifest('stable')
    client.get_manifest('stable')
    assert [sent.headers.get('Authorization') for sent in client.session.sent] == [
        None, 'Bearer old', 'Bearer old', 'Bearer new']
    assert len(client.session.token_gets) == 2


def test_token_request_defaults_the_scope_and_sends_credentials():
    client = make_client([unauthorized('Bearer realm="https://auth.example/token"'), manifest_response()],
                         [json_response({'token': 'tok'})], credentials=Credentials('robot', 's3cret'))
    client.get_manifest('stable')
    [token_get] = client.session.token_gets
    assert token_get.kwargs['params'] == {'scope': 'repository:kubesolo/os:pull'}
    assert token_get.kwargs['auth'] == ('robot', 's3cret')


@pytest.mark.parametrize('document, token', [
    ({'access_token': 'acc-1'}, 'acc-1'),
    ({'token': 'tok-1', 'access_token': 'acc-1'}, 'tok-1'),
    ({'token': '', 'access_token': 'acc-1'}, 'acc-1'),
])
def test_token_field_names(document, token):
    client = make_client([unauthorized(), manifest_response()], [json_response(document)])
    client.get_manifest('stable')
    assert client.session.sent[1].headers['Authorization'] == 'Bearer %s' % token


@pytest.mark.parametrize('status_code', [401, 403])
def test_token_service_refusal(status_code):
    client = make_client([unauthorized()], [error_response(status_code)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == ('the token service of registry.example.com refused anonymous access to '
                                 'kubesolo/os (no credentials were given)')
    assert raised.value.code == 'authentication_failed'


def test_token_service_refusal_with_credentials_names_the_user():
    client = make_client([unauthorized()], [error_response(401)], credentials=Credentials('robot', 'wrong'))
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == (
        "the token service of registry.example.com refused the credentials of 'robot' for kubesolo/os")
    assert 'wrong' not in str(raised.value)


def test_token_service_server_error():
    client = make_client([unauthorized()], [error_response(502)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == 'the token service of registry.example.com answered HTTP 502'
    assert raised.value.code == 'authentication_failed'


def test_token_service_unreachable():
    client = make_client([unauthorized()], [requests.exceptions.ConnectionError('Name or service not known')])
    with pytest.raises(RegistryConnectionError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == (
        'cannot reach the token service of registry.example.com: Name or service not known')


@pytest.mark.parametrize('body', [
    b'{}', b'{"token": ""}', b'{"token": 42}', b'{"token": null}', b'["tok"]', b'not json', b'',
])
def test_token_response_without_a_token(body):
    client = make_client([unauthorized()], [FakeResponse(200, body)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == 'the token service of registry.example.com answered without a token'


def test_oversized_token_response_is_refused():
    token_response = FakeResponse(200, b'x', {'Content-Length': str(64 * 1024 + 1)})
    client = make_client([unauthorized()], [token_response])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == (
        'token response of registry.example.com is 65537 bytes, over the 65536 byte limit')
    assert token_response.chunks_served == 0
    assert len(client.session.sent) == 1


@pytest.mark.parametrize('challenge', [
    'Bearer realm="ftp://auth.example/token"',
    'Bearer realm="file:///etc/passwd"',
    'Bearer realm="/token"',
    'Bearer service="reg"',
])
def test_bearer_challenge_without_a_usable_realm(challenge):
    client = make_client([unauthorized(challenge)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == 'registry registry.example.com sent a bearer challenge without a usable realm'
    assert client.session.token_gets == []


def test_basic_challenge_without_credentials():
    client = make_client([unauthorized('Basic realm="Registry"')])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == ('registry registry.example.com requires authentication (basic challenge) '
                                 'to read kubesolo/os and no credentials were given')
    assert len(client.session.sent) == 1


def test_basic_challenge_with_credentials():
    client = make_client([unauthorized('Basic realm="Registry"'), manifest_response()],
                         credentials=Credentials('user', 'pass'))
    client.get_manifest('stable')
    assert client.session.sent[1].headers['Authorization'] == 'Basic dXNlcjpwYXNz'


def test_unauthorized_without_a_challenge():
    client = make_client([unauthorized(None)])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == ('registry registry.example.com requires authentication (no challenge) '
                                 'to read kubesolo/os and no credentials were given')


@pytest.mark.parametrize('credentials, message', [
    (None, 'registry registry.example.com refused anonymous access to kubesolo/os (no credentials were given)'),
    (Credentials('robot', 's3cret'),
     "registry registry.example.com refused the credentials of 'robot' for kubesolo/os"),
])
def test_second_unauthorized_after_the_token(credentials, message):
    refused = unauthorized()
    client = make_client([unauthorized(), refused], [json_response({'token': 'tok'})], credentials=credentials)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == message
    assert refused.closed
    assert len(client.session.sent) == 2


# -- Manifests -------------------------------------------------------------


def test_get_manifest_by_tag():
    client = make_client([manifest_response()])
    result = client.get_manifest('stable')
    assert (result.data, result.media_type, result.digest, result.document) == (
        MANIFEST_BYTES, _registry.MEDIA_OCI_MANIFEST, MANIFEST_DIGEST, MANIFEST)
    assert client.session.sent[0].headers == {'Accept': ', '.join(ALL_MANIFEST_TYPES)}


def test_get_manifest_sends_the_given_accept_list():
    client = make_client([manifest_response()])
    client.get_manifest(MANIFEST_DIGEST, accept=_registry.MANIFEST_MEDIA_TYPES)
    assert client.session.sent[0].headers == {'Accept': ', '.join(_registry.MANIFEST_MEDIA_TYPES)}
    assert client.session.sent[0].url == BASE_URL + '/manifests/' + MANIFEST_DIGEST


@pytest.mark.parametrize('digest', [
    MANIFEST_DIGEST,
    'sha512:' + hashlib.sha512(MANIFEST_BYTES).hexdigest(),
])
def test_get_manifest_by_digest_keeps_the_verified_digest(digest):
    client = make_client([manifest_response(headers={'Docker-Content-Digest': MANIFEST_DIGEST})])
    assert client.get_manifest(digest).digest == digest


def test_get_manifest_by_digest_rejects_other_bytes():
    wanted = sha256_digest(b'another manifest')
    client = make_client([manifest_response()])
    with pytest.raises(DigestMismatchError) as raised:
        client.get_manifest(wanted)
    assert str(raised.value) == 'manifest %s has wrong content: its bytes hash to %s' % (wanted, MANIFEST_DIGEST)


def test_get_manifest_rejects_a_disagreeing_docker_content_digest():
    claimed = sha256_digest(b'what the registry claims')
    client = make_client([manifest_response(headers={'Docker-Content-Digest': claimed})])
    with pytest.raises(DigestMismatchError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == 'the registry says manifest stable has digest %s, but its bytes hash to %s' % (
        claimed, MANIFEST_DIGEST)


def test_get_manifest_ignores_a_docker_content_digest_of_another_algorithm():
    other = 'sha512:' + hashlib.sha512(b'unrelated').hexdigest()
    client = make_client([manifest_response(headers={'Docker-Content-Digest': other})])
    assert client.get_manifest('stable').digest == MANIFEST_DIGEST


def test_get_manifest_refuses_an_announced_oversized_manifest():
    response = FakeResponse(200, MANIFEST_BYTES, {'Content-Type': _registry.MEDIA_OCI_MANIFEST,
                                                  'Content-Length': str(4 * 1024 * 1024 + 1)})
    client = make_client([response])
    with pytest.raises(ManifestError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == 'manifest stable is 4194305 bytes, over the 4194304 byte limit'
    assert response.chunks_served == 0


def test_get_manifest_refuses_a_streamed_oversized_manifest():
    body = MANIFEST_BYTES + b' ' * (4 * 1024 * 1024 + 1 - len(MANIFEST_BYTES))
    client = make_client([FakeResponse(200, body, {'Content-Type': _registry.MEDIA_OCI_MANIFEST})])
    with pytest.raises(ManifestError, match='manifest stable is over the 4194304 byte limit'):
        client.get_manifest('stable')


def test_get_manifest_accepts_a_manifest_of_exactly_the_cap():
    body = MANIFEST_BYTES + b' ' * (4 * 1024 * 1024 - len(MANIFEST_BYTES))
    client = make_client([manifest_response(body)])
    assert client.get_manifest('stable').digest == sha256_digest(body)


@pytest.mark.parametrize('reference, name', [
    ('v9.9.9', REPOSITORY + ':v9.9.9'),
    (MANIFEST_DIGEST, REPOSITORY + '@' + MANIFEST_DIGEST),
])
def test_get_manifest_not_found(reference, name):
    client = make_client([error_response(404, {'errors': [{'code': 'MANIFEST_UNKNOWN'}]})])
    with pytest.raises(NotFoundError) as raised:
        client.get_manifest(reference)
    assert str(raised.value) == '%s was not found in the registry' % name


@pytest.mark.parametrize('document, detail', [
    ({'errors': [{'code': 'UNAVAILABLE', 'message': 'storage backend down'}]}, ': storage backend down'),
    ({'errors': [{'code': 'UNAVAILABLE'}]}, ': UNAVAILABLE'),
    ({'errors': [{'message': 'bad\x1b[31m\nthing'}]}, ': bad[31mthing'),
    ({'errors': []}, ''),
    ({}, ''),
])
def test_get_manifest_server_error_quotes_the_registry(document, detail):
    # Once the retries are used up, the last answer is the error.
    policy, sleeps = retrying(retries=2)
    answers = [error_response(503), error_response(503), error_response(503, document)]
    client = make_client(list(answers), retry=policy)
    with pytest.raises(RegistryResponseError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == (
        'the registry answered HTTP 503 for manifest stable of %s%s' % (REPOSITORY, detail))
    assert raised.value.code == 'registry_error'
    assert len(client.session.sent) == 3
    assert len(sleeps) == 2
    assert all(answer.closed for answer in answers)


def test_get_manifest_rejects_a_content_type_disagreeing_with_the_body():
    client = make_client([manifest_response(content_type=_registry.MEDIA_OCI_INDEX)])
    with pytest.raises(ManifestError, match='says its mediaType is %s but was served as %s' % (
            re.escape(_registry.MEDIA_OCI_MANIFEST), re.escape(_registry.MEDIA_OCI_INDEX))):
        client.get_manifest('stable')


def test_get_manifest_rejects_invalid_json():
    client = make_client([manifest_response(b'<html>login</html>', content_type='text/html')])
    with pytest.raises(ManifestError, match='manifest stable is not valid JSON'):
        client.get_manifest('stable')


# -- Token cache, credentials and origins ----------------------------------

ROBOT = Credentials('robot', 's3cret-pw')
PULL = 'repository:kubesolo/os:pull'
PUSH = 'repository:kubesolo/os:pull,push'
BLOB_URL = BASE_URL + '/blobs/' + BLOB_DIGEST


def bearer(scope=None, realm='https://auth.example/token', service='reg'):
    parts = ['realm="%s"' % realm]
    if service is not None:
        parts.append('service="%s"' % service)
    if scope is not None:
        parts.append('scope="%s"' % scope)
    return 'Bearer ' + ','.join(parts)


def authorizations(client):
    return [sent.headers.get('Authorization') for sent in client.session.sent]


def test_tokens_are_cached_per_scope():
    client = make_client([
        unauthorized(bearer(PULL)), manifest_response(),   # pull: token fetched
        unauthorized(bearer(PUSH)), FakeResponse(201),     # push: another scope, another token
        unauthorized(bearer(PULL)), manifest_response(),   # pull again: the cached pull token
        manifest_response(),
    ], [json_response({'token': 'tok-pull'}), json_response({'token': 'tok-push'})])
    client.get_manifest('stable')
    assert client.request('PUT', BASE_URL + '/manifests/v0.3.0', data=MANIFEST_BYTES).status_code == 201
    client.get_manifest('stable')
    client.get_manifest('stable')
    assert [get.kwargs['params']['scope'] for get in client.session.token_gets] == [PULL, PUSH]
    assert authorizations(client) == [
        None, 'Bearer tok-pull',
        'Bearer tok-pull', 'Bearer tok-push',
        'Bearer tok-push', 'Bearer tok-pull',
        'Bearer tok-pull']


def test_a_challenge_without_scope_shares_the_token_of_the_default_scope():
    client = make_client([
        unauthorized(bearer(None)), manifest_response(),
        unauthorized(bearer(PUSH)), FakeResponse(201),
        unauthorized(bearer(PULL)), manifest_response(),
    ], [json_response({'token': 'tok-pull'}), json_response({'token': 'tok-push'})])
    client.get_manifest('stable')
    client.request('PUT', BASE_URL + '/manifests/v0.3.0', data=MANIFEST_BYTES)
    client.get_manifest('stable')
    assert len(client.session.token_gets) == 2
    assert authorizations(client)[-1] == 'Bearer tok-pull'


@pytest.mark.parametrize('other', [
    bearer(PULL, service='other-service'),
    bearer(PULL, realm='https://auth2.example/token'),
])
def test_the_token_cache_key_includes_realm_and_service(other):
    client = make_client([
        unauthorized(bearer(PULL)), manifest_response(),
        unauthorized(other), manifest_response(),
    ], [json_response({'token': 'first'}), json_response({'token': 'second'})])
    client.get_manifest('stable')
    client.get_manifest('stable')
    assert len(client.session.token_gets) == 2
    assert authorizations(client) == [None, 'Bearer first', 'Bearer first', 'Bearer second']


def test_a_rejected_cached_token_is_fetched_again_once_then_succeeds():
    client = make_client([unauthorized(), manifest_response(), unauthorized(), manifest_response()],
                         [json_response({'token': 'old'}), json_response({'token': 'new'})], credentials=ROBOT)
    client.get_manifest('stable')
    assert client.get_manifest('stable').digest == MANIFEST_DIGEST
    assert authorizations(client) == [None, 'Bearer old', 'Bearer old', 'Bearer new']
    assert [get.kwargs['auth'] for get in client.session.token_gets] == [('robot', 's3cret-pw')] * 2
    assert client.session.sent[3].url == client.session.sent[2].url == BASE_URL + '/manifests/stable'
    # The new token is the one kept for later requests.
    client.session.responses.append(manifest_response())
    client.get_manifest('stable')
    assert authorizations(client)[-1] == 'Bearer new'
    assert len(client.session.token_gets) == 2


def test_a_refused_replacement_token_names_the_user_and_not_the_password():
    refused = unauthorized()
    client = make_client([unauthorized(), manifest_response(), unauthorized(), refused],
                         [json_response({'token': 'old'}), json_response({'token': 'new'})], credentials=ROBOT)
    client.get_manifest('stable')
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    message = str(raised.value)
    assert message == "registry registry.example.com refused the credentials of 'robot' for kubesolo/os"
    assert 's3cret-pw' not in message and 's3cret-pw' not in repr(raised.value)
    assert refused.closed
    assert len(client.session.token_gets) == 2
    assert len(client.session.sent) == 4


def test_a_fresh_token_refused_is_not_fetched_again():
    client = make_client([unauthorized(), unauthorized()], [json_response({'token': 'tok'})], credentials=ROBOT)
    with pytest.raises(AuthenticationError, match="refused the credentials of 'robot'"):
        client.get_manifest('stable')
    assert len(client.session.token_gets) == 1
    assert authorizations(client) == [None, 'Bearer tok']


def test_basic_credentials_are_sent_again_on_later_requests():
    client = make_client([unauthorized('Basic realm="Registry"'), manifest_response(), manifest_response()],
                         credentials=Credentials('user', 'pass'))
    client.get_manifest('stable')
    client.get_manifest('stable')
    assert authorizations(client) == [None, 'Basic dXNlcjpwYXNz', 'Basic dXNlcjpwYXNz']
    assert client.session.token_gets == []


def test_basic_refusal_after_the_first_answer():
    refused = unauthorized('Basic realm="Registry"')
    client = make_client([unauthorized('Basic realm="Registry"'), refused], credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == "registry registry.example.com refused the credentials of 'robot' for kubesolo/os"
    assert 's3cret-pw' not in str(raised.value)
    assert len(client.session.sent) == 2
    assert refused.closed


def test_basic_credentials_refused_later_are_not_sent_twice():
    client = make_client([unauthorized('Basic realm="Registry"'), manifest_response(),
                          unauthorized('Basic realm="Registry"')], credentials=ROBOT)
    client.get_manifest('stable')
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == "registry registry.example.com refused the credentials of 'robot' for kubesolo/os"
    # The refused request carried the credentials already: no identical retry.
    assert len(client.session.sent) == 3
    assert authorizations(client)[2] == requests.auth._basic_auth_str('robot', 's3cret-pw')


def test_basic_challenge_with_only_an_identity_token():
    client = make_client([unauthorized('Basic realm="Registry"')],
                         credentials=Credentials('<token>', identity_token='refresh-me'))
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == ('registry registry.example.com requires authentication (basic challenge) '
                                 'to read kubesolo/os')
    assert len(client.session.sent) == 1


def test_an_identity_token_is_exchanged_with_an_oauth2_refresh_grant():
    client = make_client([unauthorized(), manifest_response()], [json_response({'access_token': 'acc-9'})],
                         credentials=Credentials('<token>', identity_token='refresh-me'))
    client.get_manifest('stable')
    assert client.session.token_gets == []
    [post] = client.session.token_posts
    assert post.url == 'https://auth.example/token'
    assert post.kwargs['data'] == {'grant_type': 'refresh_token', 'refresh_token': 'refresh-me',
                                   'service': 'reg', 'scope': 'repository:x:pull', 'client_id': 'kubesolo.fleet'}
    assert post.kwargs['allow_redirects'] is False
    assert 'auth' not in post.kwargs or post.kwargs['auth'] is None
    assert authorizations(client) == [None, 'Bearer acc-9']
    assert not any('refresh-me' in str(sent.headers) for sent in client.session.sent)


def test_an_identity_token_grant_without_service_defaults_the_scope():
    client = make_client([unauthorized('Bearer realm="https://auth.example/token"'), manifest_response()],
                         [json_response({'access_token': 'acc'})],
                         credentials=Credentials('<token>', identity_token='refresh-me'))
    client.get_manifest('stable')
    [post] = client.session.token_posts
    assert post.kwargs['data'] == {'grant_type': 'refresh_token', 'refresh_token': 'refresh-me',
                                   'scope': PULL, 'client_id': 'kubesolo.fleet'}


def test_a_refused_identity_token():
    client = make_client([unauthorized()], [error_response(401)],
                         credentials=Credentials('<token>', identity_token='refresh-me'))
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == (
        "the token service of registry.example.com refused the credentials of '<token>' for kubesolo/os")
    assert 'refresh-me' not in str(raised.value)


def test_the_docker_token_fetch_does_not_follow_redirects():
    client = make_client([unauthorized(), manifest_response()], [json_response({'token': 'tok'})])
    client.get_manifest('stable')
    [token_get] = client.session.token_gets
    assert token_get.kwargs['allow_redirects'] is False
    assert 'Authorization' not in token_get.headers


def test_a_token_service_redirect_is_not_followed():
    client = make_client([unauthorized()], [FakeResponse(302, b'', {'Location': 'https://elsewhere.example/'})])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == 'the token service of registry.example.com answered HTTP 302'


def test_the_cached_token_is_not_sent_to_the_token_service():
    client = make_client([unauthorized(bearer(PULL)), manifest_response(), unauthorized(bearer(PUSH)),
                          FakeResponse(201)],
                         [json_response({'token': 'tok-pull'}), json_response({'token': 'tok-push'})])
    client.get_manifest('stable')
    client.request('PUT', BASE_URL + '/manifests/v0.3.0', data=MANIFEST_BYTES)
    assert [get.headers for get in client.session.token_gets] == [{}, {}]
    assert [get.kwargs['auth'] for get in client.session.token_gets] == [None, None]


def test_a_plain_http_realm_is_refused_for_an_https_registry():
    client = make_client([unauthorized('Bearer realm="http://auth.example/token",service="reg"')],
                         credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == ('registry registry.example.com sent a plain-HTTP token realm '
                                 'http://auth.example/token; refusing to send credentials or take tokens over it')
    assert client.session.token_gets == [] and client.session.token_posts == []


@pytest.mark.parametrize('realm', ['http://127.0.0.1:5001/token', 'https://auth.example/token'])
def test_a_plain_http_registry_may_use_either_realm(realm):
    client = make_client([unauthorized('Bearer realm="%s"' % realm), manifest_response()],
                         [json_response({'token': 'tok'})], repository='127.0.0.1:5000/kubesolo/os',
                         plain_http=True, credentials=ROBOT)
    client.get_manifest('stable')
    [token_get] = client.session.token_gets
    assert token_get.url == realm
    assert token_get.kwargs['auth'] == ('robot', 's3cret-pw')
    assert authorizations(client) == [None, 'Bearer tok']


@pytest.mark.parametrize('challenge', [
    'Bearer realm="https:///token"',
    'Bearer realm="javascript:alert(1)"',
    'Bearer realm="ldap://auth.example/token"',
    'Bearer realm=""',
])
def test_more_realms_that_are_not_usable(challenge):
    client = make_client([unauthorized(challenge)], credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == 'registry registry.example.com sent a bearer challenge without a usable realm'
    assert client.session.token_gets == [] and client.session.token_posts == []


@pytest.mark.parametrize('challenge', [
    'Bearer realm="https://auth.example:99999/token"',
    'Bearer realm="https://auth.example:port/token"',
    'Bearer realm="https://[::1/token"',
])
def test_a_malformed_realm_is_an_authentication_error(challenge):
    # The realm comes from the registry: a malformed one must be refused
    # like any unusable realm, never escape as a bare ValueError.
    client = make_client([unauthorized(challenge)], credentials=ROBOT)
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert 'without a usable realm' in str(raised.value)
    assert client.session.token_gets == []


def test_a_streamed_token_body_over_the_cap_is_refused():
    chunks = [b'{"token": "' + b'a' * 40000, b'b' * 40000, b'c' * 40000]
    token_response = FakeResponse(200, chunks=chunks)
    client = make_client([unauthorized()], [token_response])
    with pytest.raises(AuthenticationError) as raised:
        client.get_manifest('stable')
    assert str(raised.value) == 'token response of registry.example.com is over the 65536 byte limit'
    assert token_response.chunks_served == 2
    assert len(client.session.sent) == 1


def test_a_token_body_of_exactly_the_cap_is_accepted():
    body = json.dumps({'token': 'tok'}).encode('utf-8')
    body += b' ' * (64 * 1024 - len(body))
    client = make_client([unauthorized(), manifest_response()], [FakeResponse(200, body)])
    client.get_manifest('stable')
    assert authorizations(client) == [None, 'Bearer tok']


# -- Requests to other origins ----------------------------------------------


def client_with_a_token(**kwargs):
    client = make_client([unauthorized(), manifest_response()], [json_response({'token': 'tok'})], **kwargs)
    client.get_manifest('stable')
    assert authorizations(client)[-1] == 'Bearer tok'
    return client


@pytest.mark.parametrize('url', [
    'https://cdn.example.net/blobs/x?sig=1',
    'https://registry.example.com:8443/v2/kubesolo/os/blobs/x',
    'http://registry.example.com/v2/kubesolo/os/blobs/x',
    'https://registry.example.com.evil.example/v2/kubesolo/os/blobs/x',
])
def test_no_authorization_goes_to_another_origin(url):
    client = client_with_a_token(credentials=ROBOT)
    client.session.responses.append(FakeResponse(401, b'', {'WWW-Authenticate': CHALLENGE}))
    response = client.request('GET', url)
    # Not answered either: a 401 from another origin is the caller's to handle.
    assert response.status_code == 401
    sent = client.session.sent[-1]
    assert sent.url == url
    assert 'Authorization' not in sent.headers
    assert len(client.session.token_gets) == 1
    assert len(client.session.sent) == 3


@pytest.mark.parametrize('url', [
    'https://registry.example.com:443/v2/kubesolo/os/blobs/x',
    'https://REGISTRY.example.com/v2/kubesolo/os/blobs/x',
])
def test_the_same_origin_written_otherwise_gets_the_authorization(url):
    client = client_with_a_token()
    client.session.responses.append(FakeResponse(200))
    client.request('GET', url)
    assert client.session.sent[-1].headers['Authorization'] == 'Bearer tok'


def test_an_upload_location_on_another_host_gets_no_authorization():
    client = client_with_a_token(credentials=ROBOT)
    client.session.responses += [
        FakeResponse(202, b'', {'Location': 'https://uploads.example.net/session/1?state=x'}),
        FakeResponse(201),
    ]
    client.upload_blob(BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB))
    post, put = client.session.sent[-2:]
    assert (post.method, post.url, post.headers['Authorization']) == (
        'POST', BASE_URL + '/blobs/uploads/', 'Bearer tok')
    assert (put.method, put.url) == ('PUT', 'https://uploads.example.net/session/1?state=x&digest=' + BLOB_DIGEST)
    assert 'Authorization' not in put.headers
    assert put.body == BLOB


# -- Redirects ----------------------------------------------------------------


def redirected(from_url, to_url, authorization='Bearer tok'):
    """(the request requests prepared for the redirect target, the redirect response)."""
    previous = requests.Request('GET', from_url, headers={'Authorization': authorization}).prepare()
    response = FakeResponse(307, b'', {'Location': to_url})
    response.request = previous
    target = requests.Request('GET', to_url, headers={'Authorization': authorization}).prepare()
    return target, response


@pytest.mark.parametrize('from_url, to_url', [
    ('http://registry.example.com/v2/x', 'https://registry.example.com/v2/x'),
    ('https://registry.example.com/v2/x', 'http://registry.example.com/v2/x'),
    ('https://registry.example.com/v2/x', 'https://cdn.example.net/blob?sig=1'),
    ('https://registry.example.com/v2/x', 'https://registry.example.com:8443/v2/x'),
    ('http://registry.example.com:5000/v2/x', 'http://registry.example.com:5001/v2/x'),
    ('https://registry.example.com/v2/x', 'https://sub.registry.example.com/v2/x'),
])
def test_rebuild_auth_drops_authorization_for_another_origin(from_url, to_url):
    target, response = redirected(from_url, to_url)
    session = _registry._OriginBoundSession()
    session.rebuild_auth(target, response)
    assert 'Authorization' not in target.headers


@pytest.mark.parametrize('from_url, to_url', [
    ('https://registry.example.com/v2/x', 'https://registry.example.com/v2/y'),
    ('https://registry.example.com/v2/x', 'https://REGISTRY.EXAMPLE.COM:443/v2/y'),
    ('http://registry.example.com:5000/v2/x', 'http://registry.example.com:5000/other'),
    ('http://registry.example.com/v2/x', 'http://registry.example.com:80/v2/y'),
])
def test_rebuild_auth_keeps_authorization_for_the_same_origin(from_url, to_url):
    target, response = redirected(from_url, to_url)
    session = _registry._OriginBoundSession()
    session.rebuild_auth(target, response)
    assert target.headers['Authorization'] == 'Bearer tok'


def test_rebuild_auth_adds_no_netrc_credentials(monkeypatch):
    monkeypatch.setattr(requests.sessions, 'get_netrc_auth', lambda url, raise_errors=False: ('netrc', 'pw'))
    target, response = redirected('https://registry.example.com/v2/x', 'https://cdn.example.net/blob')
    _registry._OriginBoundSession().rebuild_auth(target, response)
    assert 'Authorization' not in target.headers


def real_client(adapter, monkeypatch, tmp_path, netrc=None, **kwargs):
    """A client on its real session, whose transport is ``adapter``; netrc from ``netrc`` only."""
    netrc_path = tmp_path / 'netrc'
    if netrc is not None:
        netrc_path.write_text(netrc)
        netrc_path.chmod(0o600)
    monkeypatch.setenv('NETRC', str(netrc_path))
    kwargs.setdefault('retry', guarded_policy())
    client = _registry.RegistryClient(_reference.parse_repository(kwargs.pop('repository', REPOSITORY)), **kwargs)
    client.session.mount('https://', adapter)
    client.session.mount('http://', adapter)
    return client


def test_a_blob_redirect_to_a_cdn_carries_no_authorization(monkeypatch, tmp_path):
    adapter = FakeAdapter({
        BLOB_URL: [(401, {'WWW-Authenticate': CHALLENGE}, b''),
                   (307, {'Location': 'https://cdn.example.net/blob?sig=1'}, b'')],
        'https://auth.example/token': [(200, {}, b'{"token": "tok"}')],
        'https://cdn.example.net/blob': [(200, {'Content-Length': str(len(BLOB))}, BLOB)],
    })
    client = real_client(adapter, monkeypatch, tmp_path, credentials=ROBOT)
    sink = io.BytesIO()
    client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert sink.getvalue() == BLOB
    assert [(sent.url.split('?')[0], sent.headers.get('Authorization')) for sent in adapter.sent] == [
        (BLOB_URL, None),
        ('https://auth.example/token', requests.auth._basic_auth_str('robot', 's3cret-pw')),
        (BLOB_URL, 'Bearer tok'),
        ('https://cdn.example.net/blob', None),
    ]


def test_an_http_to_https_redirect_of_the_same_host_drops_authorization(monkeypatch, tmp_path):
    url = 'http://registry.example.com/v2/kubesolo/os/blobs/' + BLOB_DIGEST
    adapter = FakeAdapter({
        url: [(401, {'WWW-Authenticate': 'Bearer realm="http://registry.example.com/token"'}, b''),
              (301, {'Location': url.replace('http:', 'https:', 1)}, b'')],
        'http://registry.example.com/token': [(200, {}, b'{"token": "tok"}')],
        url.replace('http:', 'https:', 1): [(200, {}, BLOB)],
    })
    client = real_client(adapter, monkeypatch, tmp_path, plain_http=True)
    client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert [sent.headers.get('Authorization') for sent in adapter.sent] == [None, None, 'Bearer tok', None]
    assert adapter.sent[-1].url.startswith('https://registry.example.com/')


def test_netrc_does_not_replace_the_registry_token(monkeypatch, tmp_path):
    # The class promises netrc credentials are not wanted; requests applies
    # netrc to every request made without ``auth`` and lets it override the
    # Authorization header the client set.
    adapter = FakeAdapter({
        BASE_URL + '/manifests/stable': [(401, {'WWW-Authenticate': CHALLENGE}, b''),
                                         (200, {'Content-Type': _registry.MEDIA_OCI_MANIFEST}, MANIFEST_BYTES)],
        'https://auth.example/token': [(200, {}, b'{"token": "tok"}')],
    })
    client = real_client(adapter, monkeypatch, tmp_path, credentials=ROBOT,
                         netrc='machine registry.example.com login netrc-user password netrc-pw\n')
    client.get_manifest('stable')
    assert adapter.sent[-1].headers.get('Authorization') == 'Bearer tok'


# -- Transport options and secrets -------------------------------------------


@pytest.mark.parametrize('client_cert, client_key, cert', [
    ('/etc/kubesolo/client.pem', '/etc/kubesolo/client.key', ('/etc/kubesolo/client.pem', '/etc/kubesolo/client.key')),
    ('/etc/kubesolo/client-with-key.pem', None, '/etc/kubesolo/client-with-key.pem'),
    (None, None, None),
])
def test_client_certificate_options_map_to_session_cert(client_cert, client_key, cert):
    client = _registry.RegistryClient(_reference.parse_repository(REPOSITORY),
                                      client_cert=client_cert, client_key=client_key)
    assert client.session.cert == cert


def test_the_session_bounds_authorization_to_its_origin():
    client = _registry.RegistryClient(_reference.parse_repository(REPOSITORY))
    assert isinstance(client.session, _registry._OriginBoundSession)
    assert client.session.max_redirects == 10


@pytest.mark.parametrize('credentials, secret', [
    (Credentials('robot', 's3cret-pw'), 's3cret-pw'),
    (Credentials('<token>', identity_token='refresh-me-please'), 'refresh-me-please'),
])
def test_credentials_repr_hides_the_secret(credentials, secret):
    for text in (repr(credentials), str(credentials), repr([credentials]), '%s' % (credentials,)):
        assert secret not in text
        assert credentials.username in text
    assert repr(credentials) == "Credentials(username=%r, secret=<hidden>)" % credentials.username
