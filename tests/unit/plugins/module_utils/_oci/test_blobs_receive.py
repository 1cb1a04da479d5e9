# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Blob bodies received straight into a BlobFile's buffers, from a real http.client response.

The registry client reads a body framed by Content-Length past urllib3, through the standard
library response under it; these tests feed such a response from a socket pair, with urllib3's
own read methods refusing to be used, so only that path can pass.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _blobfile, _reference
from ansible_collections.kubesolo.fleet.plugins.module_utils._blobfile import BlobFile
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import RegistryConnectionError
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _client
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    FakeResponse,
    FakeSession,
    sha256_digest,
)

BLOB = os.urandom(5 * 1024 * 1024 + 321)  # over two BlobFile buffers, with a tail
BLOB_DIGEST = sha256_digest(BLOB)


class Urllib3Raw:
    """urllib3's response as far as the client sees it: the standard library response in ``_fp``.

    Its own reads copy every byte; here they fail the test, unless ``allow_reads``.
    """

    def __init__(self, response, allow_reads=False):
        self._fp = response
        self.allow_reads = allow_reads

    def read1(self, amount):
        assert self.allow_reads, "the body was read through urllib3, not into the buffer"
        return self._fp.read1(amount)

    read = read1


def served(head, body, pause=0.0, chunk=None):
    """A started http.client response reading ``head`` + ``body`` from a socket pair.

    With ``chunk``, the body is sent ``chunk`` bytes at a time, ``pause`` seconds apart.
    """
    ours, theirs = socket.socketpair()
    ours.settimeout(5)

    def send():
        with theirs:
            try:
                theirs.sendall(head)
                step = chunk or len(body) or 1
                for offset in range(0, len(body), step):
                    theirs.sendall(body[offset : offset + step])
                    time.sleep(pause)
            except OSError:
                pass  # the client gave up and closed its end

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    response = http.client.HTTPResponse(ours)
    response.begin()
    return response


def with_length(body, status=b"200 OK", declared=None):
    length = len(body) if declared is None else declared
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, length)


def client_for(answer, timeout=5):
    """A registry client whose one request is answered with ``answer`` (a FakeResponse)."""
    client = _client.RegistryClient(
        _reference.parse_repository("registry.example.com/kubesolo/os"), timeout=timeout, retry=RetryPolicy(retries=0)
    )
    client.session = FakeSession([answer])
    return client


def answer(raw, status=200, **headers):
    return FakeResponse(
        status, headers=dict((name.replace("_", "-"), value) for name, value in headers.items()), raw=raw
    )


@pytest.fixture
def no_copies(monkeypatch):
    """BlobFile.write (the copying path) fails the test."""

    def refuse(_self, _data):
        raise AssertionError("the body was copied through BlobFile.write")

    monkeypatch.setattr(_blobfile.BlobFile, "write", refuse)


def framed_answer(body=BLOB):
    """A 200 answer with a Content-Length, and urllib3's view of it."""
    raw = Urllib3Raw(served(with_length(body), body, chunk=256 * 1024))
    return answer(raw, Content_Length=str(len(body))), raw


def resumed_answer(start, body=BLOB):
    """A 206 answer with the bytes of ``body`` from ``start`` on."""
    rest = body[start:]
    content_range = f"bytes {start}-{len(body) - 1}/{len(body)}"
    head = b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\nContent-Range: %s\r\n\r\n" % (
        len(rest),
        content_range.encode("ascii"),
    )
    return answer(Urllib3Raw(served(head, rest)), 206, Content_Length=str(len(rest)), Content_Range=content_range)


def download(client, path):
    """download_blob of BLOB into a BlobFile at ``path``; the bytes then in the file."""
    with BlobFile(str(path)) as handle:
        client.download_blob(BLOB_DIGEST, len(BLOB), handle)
        handle.sync()
    with open(str(path), "rb") as result:
        return result.read()


def test_a_framed_body_is_received_straight_into_the_buffers(tmp_path, no_copies):
    reply, raw = framed_answer()
    assert download(client_for(reply), tmp_path / "blob") == BLOB
    assert raw._fp.length == 0


def test_a_resumed_part_continues_in_the_buffers(tmp_path, no_copies):
    half = len(BLOB) // 2 + 7
    (tmp_path / "blob").write_bytes(BLOB[:half])
    client = client_for(resumed_answer(half))
    assert download(client, tmp_path / "blob") == BLOB
    assert client.transfer_summary()["resumed_bytes"] == half


def test_a_trickle_is_still_found_stalled(tmp_path, no_copies):
    # One receive per read: 100 bytes every 0.1 s stay far below 64 KiB within the 0.5 s timeout.
    raw = Urllib3Raw(served(with_length(BLOB), BLOB, pause=0.1, chunk=100))
    client = client_for(answer(raw, Content_Length=str(len(BLOB))), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RegistryConnectionError, match="stalled at"):
        download(client, tmp_path / "blob")
    assert time.monotonic() - started < 3


def test_a_framed_body_that_ends_early_broke_off_and_is_resumed(tmp_path, no_copies):
    # The registry promised every byte: an early end is a broken connection, tried again with
    # Range from what arrived, not a blob of the wrong size.
    cut = 700000
    first = answer(Urllib3Raw(served(with_length(BLOB), BLOB[:cut])), Content_Length=str(len(BLOB)))
    client = client_for(first)
    client.session.responses.append(resumed_answer(cut))
    client.retry = RetryPolicy(retries=1, sleep=lambda _seconds: None)
    assert download(client, tmp_path / "blob") == BLOB
    assert client.session.sent[1].headers["Range"] == f"bytes={cut}-"
    assert client.transfer_summary()["retries"] == 1
    assert client.transfer_summary()["last_error"] == (
        f"download of blob {BLOB_DIGEST} broke off after {cut} of {len(BLOB)} bytes: the connection closed {len(BLOB) - cut} bytes before the "
        f"announced end of the body"
    )


def test_a_chunked_body_goes_through_urllib3(tmp_path):
    body = (
        b"".join(
            b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (BLOB[i : i + 65536] for i in range(0, len(BLOB), 65536))
        )
        + b"0\r\n\r\n"
    )
    raw = Urllib3Raw(served(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", body), allow_reads=True)
    assert download(client_for(answer(raw)), tmp_path / "blob") == BLOB
