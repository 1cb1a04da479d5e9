# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Blob downloads (_blobs): verification, resume with Range and stall detection, through a
RegistryClient on a fake session (no network)."""

from __future__ import annotations

import errno
import hashlib
import io
import re
from types import SimpleNamespace

import pytest
import urllib3

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    AuthenticationError,
    DigestMismatchError,
    InvalidReferenceError,
    NotFoundError,
    RegistryConnectionError,
    SizeMismatchError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _blobs
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils._oci.registry_fakes import (
    BASE_URL,
    BLOB,
    BLOB_DIGEST,
    REPOSITORY,
    error_response,
    make_client,
    retrying,
    unexpected_sleep,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    FakeRaw,
    FakeResponse,
    FakeSession,
    Sent,
    sha256_digest,
)

# -- Blob downloads --------------------------------------------------------


def blob_client(body=BLOB, headers=None, raw=None, status_code=200):
    """A client whose one blob request is answered with ``body`` (1000 bytes per read)."""
    raw = raw if raw is not None else FakeRaw(body, max_read=1000)
    response = FakeResponse(status_code, headers=headers, raw=raw)
    return make_client([response]), response


def test_download_blob_writes_and_returns_the_sha256_hex():
    client, response = blob_client(headers={"Content-Length": str(len(BLOB))})
    sink = io.BytesIO()
    assert client.download_blob(BLOB_DIGEST, len(BLOB), sink) == hashlib.sha256(BLOB).hexdigest()
    assert sink.getvalue() == BLOB
    sent = client.session.sent[0]
    assert (sent.method, sent.url) == ("GET", BASE_URL + "/blobs/" + BLOB_DIGEST)
    assert sent.headers == {"Accept-Encoding": "identity"}
    assert sent.kwargs["stream"] is True
    assert response.closed


def test_download_blob_reads_in_chunks_of_at_most_blob_chunk_bytes(monkeypatch):
    monkeypatch.setattr(_blobs, "BLOB_CHUNK_BYTES", 1024)
    amounts = []
    raw = FakeRaw(BLOB)
    original_read1 = raw.read1
    raw.read1 = lambda amount: amounts.append(amount) or original_read1(amount)
    raw.read = lambda amount: pytest.fail("blobs are read with read1, which returns what has arrived")
    client, _response = blob_client(raw=raw)
    client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert amounts == [1024, 1024, 1024, 1]


def test_download_blob_verifies_a_sha512_descriptor_and_returns_sha256():
    digest = "sha512:" + hashlib.sha512(BLOB).hexdigest()
    client, _response = blob_client()
    assert client.download_blob(digest, len(BLOB), io.BytesIO()) == hashlib.sha256(BLOB).hexdigest()


def test_download_blob_rejects_wrong_bytes_under_a_sha512_descriptor():
    digest = "sha512:" + hashlib.sha512(b"another blob").hexdigest()
    client, _response = blob_client()
    with pytest.raises(DigestMismatchError) as raised:
        client.download_blob(digest, len(BLOB), io.BytesIO())
    assert (
        str(raised.value)
        == f"blob {digest} has wrong content: its bytes hash to sha512:{hashlib.sha512(BLOB).hexdigest()}"
    )


def test_download_blob_rejects_a_short_body():
    client, _response = blob_client(body=BLOB[:-5])
    with pytest.raises(SizeMismatchError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert str(raised.value) == f"blob {BLOB_DIGEST} ended after 3067 bytes, the manifest declares 3072"
    assert raised.value.code == "size_mismatch"


def test_download_blob_rejects_a_longer_body_and_stops_reading():
    raw = FakeRaw(BLOB + b"\0" * 100000, max_read=1000)
    client, _response = blob_client(raw=raw)
    sink = io.BytesIO()
    with pytest.raises(SizeMismatchError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert str(raised.value) == f"blob {BLOB_DIGEST} is longer than the 3072 bytes the manifest declares"
    assert raw.served == len(BLOB) + 1
    assert sink.getvalue() == BLOB


def test_download_blob_rejects_wrong_bytes_of_the_right_size():
    tampered = b"\xff" + BLOB[1:]
    client, _response = blob_client(body=tampered)
    with pytest.raises(DigestMismatchError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert str(raised.value) == f"blob {BLOB_DIGEST} has wrong content: its bytes hash to {sha256_digest(tampered)}"


def test_download_blob_refuses_a_disagreeing_content_length_before_reading():
    raw = FakeRaw(BLOB)
    client, _response = blob_client(raw=raw, headers={"Content-Length": str(len(BLOB) + 1)})
    sink = io.BytesIO()
    with pytest.raises(SizeMismatchError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert str(raised.value) == (f"blob {BLOB_DIGEST}: the registry announced 3073 bytes, the manifest declares 3072")
    assert raw.served == 0
    assert sink.getvalue() == b""


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(1000 bytes read)"),
        urllib3.exceptions.ReadTimeoutError(None, None, "Read timed out."),
    ],
)
def test_download_blob_network_failure_names_the_byte_count(error):
    # No retry left: the break is the final error (resuming is tested below).
    raw = FakeRaw(BLOB, max_read=1000, error=error, fail_after=2000)
    client = make_client([FakeResponse(200, raw=raw)], retry=RetryPolicy(retries=0, sleep=unexpected_sleep))
    sink = io.BytesIO()
    with pytest.raises(RegistryConnectionError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), sink)
    assert str(raised.value).startswith(f"download of blob {BLOB_DIGEST} broke off after 2000 of 3072 bytes: ")
    assert raised.value.code == "registry_unreachable"
    assert sink.getvalue() == BLOB[:2000]  # kept for a later resume
    assert len(client.session.sent) == 1


def test_download_blob_lets_a_local_write_error_through():
    class FullDisk(io.BytesIO):
        def write(self, _data):
            raise OSError(errno.ENOSPC, "No space left on device")

    client, _response = blob_client()
    with pytest.raises(OSError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), FullDisk())
    assert raised.value.errno == errno.ENOSPC
    assert not isinstance(raised.value, RegistryConnectionError)


def test_download_blob_not_found():
    client, _response = blob_client(status_code=404)
    with pytest.raises(NotFoundError) as raised:
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert str(raised.value) == f"blob {BLOB_DIGEST} of {REPOSITORY} was not found in the registry"
    assert raised.value.code == "not_found"


def test_download_blob_forbidden():
    client = make_client([error_response(403)])
    with pytest.raises(AuthenticationError, match=re.escape(f"refused access to blob {BLOB_DIGEST} (HTTP 403)")):
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())


def test_download_blob_refuses_an_invalid_digest_without_a_request():
    client = make_client([])
    with pytest.raises(InvalidReferenceError):
        client.download_blob("sha256:../../etc/passwd", 10, io.BytesIO())
    assert client.session.sent == []


def test_a_missing_blob_is_not_retried():
    policy, sleeps = retrying()
    client = make_client([FakeResponse(404)], retry=policy)
    with pytest.raises(NotFoundError):
        client.download_blob(BLOB_DIGEST, len(BLOB), io.BytesIO())
    assert len(client.session.sent) == 1
    assert sleeps == []


# -- Resuming blob downloads -----------------------------------------------


def part_file(tmp_path, content=b""):
    """A partial download holding ``content``, as an earlier attempt left it."""
    path = tmp_path / "blob.part"
    path.write_bytes(content)
    return path


def download_into(client, path, digest=BLOB_DIGEST, size=len(BLOB)):
    """download_blob into ``path`` opened the way the stager opens it (read and append)."""
    with open(str(path), "a+b", buffering=0) as handle:
        return client.download_blob(digest, size, handle)


def ranged(start, raw=None, body=BLOB):
    """A 206 answer with the bytes of ``body`` from ``start`` on and the right Content-Range."""
    rest = body[start:]
    headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}", "Content-Length": str(len(rest))}
    return FakeResponse(206, headers=headers, raw=raw if raw is not None else FakeRaw(rest, max_read=1000))


def whole(raw=None, body=BLOB):
    return FakeResponse(
        200, headers={"Content-Length": str(len(body))}, raw=raw if raw is not None else FakeRaw(body, max_read=1000)
    )


def ranges(client):
    return [sent.headers.get("Range") for sent in client.session.sent]


SHA256_HEX = hashlib.sha256(BLOB).hexdigest()


@pytest.mark.parametrize(
    "error",
    [
        urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(2000 bytes read, 1072 more expected)"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        urllib3.exceptions.ReadTimeoutError(None, None, "Read timed out."),
    ],
    ids=["protocol-error", "reset", "read-timeout"],
)
def test_a_broken_download_resumes_with_one_range_request(tmp_path, error):
    policy, sleeps = retrying()
    first = whole(FakeRaw(BLOB, max_read=1000, error=error, fail_after=2000))
    client = make_client([first, ranged(2000)], retry=policy)
    path = part_file(tmp_path)
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client) == [None, "bytes=2000-"]
    assert client.session.sent[1].headers == {"Accept-Encoding": "identity", "Range": "bytes=2000-"}
    assert first.closed
    assert len(sleeps) == 1
    summary = client.transfer_summary()
    assert summary["resumed_bytes"] == 2000
    assert summary["retries"] == 1
    assert summary["last_error"].startswith(f"download of blob {BLOB_DIGEST} broke off after 2000 of 3072 bytes: ")


def test_a_download_broken_twice_resumes_twice(tmp_path):
    policy, sleeps = retrying()
    broken = urllib3.exceptions.ProtocolError("Connection broken")
    client = make_client(
        [
            whole(FakeRaw(BLOB, max_read=1000, error=broken, fail_after=1000)),
            ranged(1000, FakeRaw(BLOB[1000:], max_read=1000, error=broken, fail_after=1500)),
            ranged(2500),
        ],
        retry=policy,
    )
    path = part_file(tmp_path)
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client) == [None, "bytes=1000-", "bytes=2500-"]
    assert len(sleeps) == 2


def test_a_download_broken_past_the_retries_keeps_what_arrived(tmp_path):
    policy, sleeps = retrying(retries=1)
    broken = urllib3.exceptions.ProtocolError("Connection broken")
    client = make_client(
        [
            whole(FakeRaw(BLOB, max_read=1000, error=broken, fail_after=1000)),
            ranged(1000, FakeRaw(BLOB[1000:], max_read=1000, error=broken, fail_after=1000)),
        ],
        retry=policy,
    )
    path = part_file(tmp_path)
    with pytest.raises(RegistryConnectionError) as raised:
        download_into(client, path)
    assert str(raised.value) == (
        f"download of blob {BLOB_DIGEST} broke off after 2000 of 3072 bytes: Connection broken"
    )
    assert path.read_bytes() == BLOB[:2000]
    assert ranges(client) == [None, "bytes=1000-"]
    assert len(sleeps) == 1


def test_a_partial_file_of_an_earlier_run_is_completed_with_one_range_request(tmp_path):
    path = part_file(tmp_path, BLOB[:1234])
    client = make_client([ranged(1234)])
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client) == ["bytes=1234-"]
    assert client.transfer_summary()["resumed_bytes"] == 1234


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
    assert ranges(client) == ["bytes=1000-"]


def test_bytes_fetched_again_after_a_restart_are_not_counted_as_resumed(tmp_path):
    # resumed_bytes is documented as bytes that did not have to be fetched again.
    path = part_file(tmp_path, BLOB[:1000])
    client = make_client([whole()])
    download_into(client, path)
    assert client.transfer_summary()["resumed_bytes"] == 0


def test_a_partial_answer_from_another_offset_restarts_the_file(tmp_path):
    # The server answers the Range request with bytes from 500 on: they cannot be appended
    # after the 1000 bytes held; the download starts the file again and succeeds.
    path = part_file(tmp_path, BLOB[:1000])
    policy, _sleeps = retrying()
    client = make_client([ranged(500), whole()], retry=policy)
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client)[0] == "bytes=1000-"


def test_a_partial_file_longer_than_the_blob_is_emptied_and_fetched_whole(tmp_path):
    path = part_file(tmp_path, BLOB + b"left over")
    client = make_client([whole()])
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert client.session.sent[0].headers == {"Accept-Encoding": "identity"}


def test_a_partial_file_with_wrong_bytes_is_a_digest_mismatch(tmp_path):
    path = part_file(tmp_path, b"X" * 1000)
    client = make_client([ranged(1000)])
    with pytest.raises(DigestMismatchError) as raised:
        download_into(client, path)
    assert str(raised.value) == "blob {} has wrong content: its bytes hash to {}".format(
        BLOB_DIGEST,
        sha256_digest(b"X" * 1000 + BLOB[1000:]),
    )
    assert ranges(client) == ["bytes=1000-"]


def test_a_complete_partial_file_with_wrong_bytes_is_a_digest_mismatch_without_a_request(tmp_path):
    path = part_file(tmp_path, b"X" + BLOB[1:])
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

    assert not hasattr(Urllib3v1Raw(b""), "read1")
    client = make_client([whole(Urllib3v1Raw(BLOB))])
    sink = io.BytesIO()
    assert client.download_blob(BLOB_DIGEST, len(BLOB), sink) == SHA256_HEX
    assert sink.getvalue() == BLOB


# -- Stalled downloads -----------------------------------------------------


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
            raise AssertionError(f"unexpected request: {method} {url}")
        raw_for = self.raws.pop(0)
        match = re.match(r"bytes=(\d+)-$", (headers or {}).get("Range", ""))
        if match:
            return ranged(int(match.group(1)), raw_for(BLOB[int(match.group(1)) :]))
        return whole(raw_for(BLOB))


@pytest.fixture
def clock(monkeypatch):
    """Fake monotonic time for the _blobs module only."""
    fake = FakeClock()
    monkeypatch.setattr(_blobs, "time", SimpleNamespace(monotonic=fake.monotonic))
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
    assert message.startswith(f"download of blob {BLOB_DIGEST} stalled at "), message
    assert raised.value.code == "registry_unreachable"
    assert len(client.session.sent) == 3
    assert len(sleeps) == 2
    held = path.read_bytes()
    assert 0 < len(held) < len(BLOB)
    assert held == BLOB[: len(held)]
    offsets = [int(header[len("bytes=") : -1]) for header in ranges(client)[1:]]
    assert ranges(client)[0] is None
    assert 0 < offsets[0] < offsets[1] < len(held)
    assert f"{len(held)} of 3072 bytes" in message


def test_a_stalled_download_resumes_and_completes_when_the_server_recovers(clock, tmp_path):
    policy, sleeps = retrying(retries=2)
    client = make_client(timeout=5, retry=policy)
    client.session = RangeSession(
        [lambda body: SlowRaw(body, clock, 10, 1.0), lambda body: FakeRaw(body, max_read=1000)]
    )
    path = part_file(tmp_path)
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client)[0] is None
    assert ranges(client)[1].startswith("bytes=") and ranges(client)[1] != "bytes=0-"
    assert len(sleeps) == 1


def test_a_slow_transfer_that_keeps_moving_is_not_a_stall(clock, monkeypatch, tmp_path):
    # 1000 bytes every 0.4 s with STALL_BYTES 2000 and a 1 s timeout: the whole blob takes
    # longer than the timeout, but no window of it is short of bytes.
    monkeypatch.setattr(_blobs, "STALL_BYTES", 2000)
    client = make_client(timeout=1)
    client.session = RangeSession([lambda body: SlowRaw(body, clock, 1000, 0.4)])
    path = part_file(tmp_path)
    assert download_into(client, path) == SHA256_HEX
    assert clock.now - 1000.0 > 1
    assert len(client.session.sent) == 1


@pytest.mark.parametrize("first", ["ignores-range", "other-offset"])
def test_a_restarted_download_that_breaks_resumes_with_the_bytes_now_in_the_file(tmp_path, first):
    """The restart empties the file and starts new hashers; a break after it must resume with those,
    not with the hashers of the partial that was thrown away (a false digest mismatch)."""
    broken = urllib3.exceptions.ProtocolError("Connection broken")
    path = part_file(tmp_path, BLOB[:1000])
    policy, _sleeps = retrying()
    answers = [whole(FakeRaw(BLOB, max_read=1000, error=broken, fail_after=2000)), ranged(2000)]
    if first == "other-offset":
        answers.insert(0, ranged(500))
    client = make_client(answers, retry=policy)
    assert download_into(client, path) == SHA256_HEX
    assert path.read_bytes() == BLOB
    assert ranges(client)[-1] == "bytes=2000-"
