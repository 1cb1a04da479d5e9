# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""Streaming one blob into a file: resume with Range, verify while writing, notice stalls."""

from __future__ import annotations

import hashlib
import re
import time

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    NotFoundError,
    RegistryConnectionError,
    SizeMismatchError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._transport import (
    arrived_reader,
    check_status,
    exception_reason,
    requests,
    urllib3,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest

# Blobs are streamed in chunks this large; hashlib releases the GIL on them.
BLOB_CHUNK_BYTES = 1024 * 1024
# Less than this many bytes within the client's timeout counts as a stalled transfer.
STALL_BYTES = 64 * 1024


class TransferBroken(Exception):
    """The connection broke mid-blob; what arrived until then is safely in the file."""


class BlobDownload:
    """Blob ``digest`` of ``size`` bytes streamed into ``fileobj`` through ``client`` (a RegistryClient).

    ``fileobj`` is opened for reading and appending; bytes it already holds
    (a partial download of an earlier attempt) are hashed first and the rest
    is asked for with a Range request. A broken transfer is resumed the same
    way within the client's retry policy; a server that ignores Range
    restarts the file. The bytes are hashed while they are written and
    reading stops at the declared size. The download owns its hashers and
    its count of the bytes in the file, so a restart can never mix them up.
    """

    def __init__(self, client, digest, size, fileobj):
        self.client = client
        self.digest = digest
        self.size = size
        self.fileobj = fileobj
        self.algorithm, self.expected_hex = parse_digest(digest)
        self.hashers = {}
        self.received = 0

    def run(self):
        """Download the rest of the blob; returns its sha256 hex digest.

        sha256 whatever the descriptor names, because the on-node check uses
        it. Raises on any size or digest mismatch; the caller owns removing
        the file.
        """
        self._rehash()
        attempt = 0
        while self.received < self.size:
            attempt += 1
            try:
                self._fetch_rest()
                break
            except TransferBroken as exc:
                if not self.client.retry.wait(attempt, str(exc)):
                    raise RegistryConnectionError(str(exc))
        actual = self.hashers[self.algorithm].hexdigest()
        if actual != self.expected_hex:
            raise DigestMismatchError(
                f"blob {self.digest} has wrong content: its bytes hash to {self.algorithm}:{actual}"
            )
        return self.hashers["sha256"].hexdigest()

    def _rehash(self):
        """Fresh hashers fed with what the file holds; a file longer than the blob is emptied."""
        fileobj = self.fileobj
        self.hashers = {self.algorithm: hashlib.new(self.algorithm)}
        self.hashers.setdefault("sha256", hashlib.sha256())
        fileobj.seek(0, 2)
        if fileobj.tell() > self.size:
            fileobj.truncate(0)
        fileobj.seek(0)
        self.received = 0
        for chunk in iter(lambda: fileobj.read(BLOB_CHUNK_BYTES), b""):
            self._add(chunk)

    def _restart(self):
        """Empty the file and start the blob again."""
        self.fileobj.seek(0)
        self.fileobj.truncate()
        self._rehash()

    def _add(self, chunk):
        for hasher in self.hashers.values():
            hasher.update(chunk)
        self.received += len(chunk)

    def _fetch_rest(self):
        """GET the blob from what the file holds on."""
        client = self.client
        headers = {"Accept-Encoding": "identity"}
        if self.received:
            headers["Range"] = f"bytes={self.received}-"
        response = client.request("GET", f"{client.base_url}/blobs/{self.digest}", headers=headers)
        with response:
            if response.status_code == 404:
                raise NotFoundError(f"blob {self.digest} of {client.repository} was not found in the registry")
            partial = self.received and response.status_code == 206
            resumed = partial and _range_start(response) == self.received
            if partial and not resumed:
                # A part from somewhere else: ask for the whole blob instead.
                response.close()
                self._restart()
                return self._fetch_rest()
            if resumed:
                client.count_bytes(resumed=self.received)
            else:
                check_status(client, response, f"blob {self.digest}")
                if self.received:
                    # The server ignored Range and sends the whole blob: start the file again.
                    self._restart()
            remaining = self.size - self.received
            announced = response.headers.get("Content-Length")
            if announced is not None and announced.isascii() and announced.isdigit() and int(announced) != remaining:
                raise SizeMismatchError(
                    f"blob {self.digest}: the registry announced {announced} bytes, the manifest declares {remaining}"
                )
            self._stream(response.raw)
        return None

    def _stream(self, raw):
        """Copy the body into the file up to the blob's size, counting what arrives in the client."""
        fileobj, size, digest = self.fileobj, self.size, self.digest
        framed = _framed_response(raw, size - self.received) if hasattr(fileobj, "reserve") else None
        # What has arrived comes back at once, so a stall is noticed; blob bytes are never decoded.
        read = arrived_reader(raw, decode_content=False)
        timeout = self.client.timeout
        window_start, window_bytes = time.monotonic(), 0
        while self.received < size:
            wanted = min(BLOB_CHUNK_BYTES, size - self.received)
            view = fileobj.reserve(wanted) if framed is not None else None
            try:
                chunk = view[: _receive_into(framed, view)] if view is not None else read(wanted)
            except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
                raise TransferBroken(
                    f"download of blob {digest} broke off after {self.received} of {size} bytes: {exception_reason(exc)}"
                )
            if not chunk:
                raise SizeMismatchError(
                    f"blob {digest} ended after {self.received} bytes, the manifest declares {size}"
                )
            self.client.count_bytes(fetched=len(chunk))
            self._add(chunk)
            if view is not None:
                fileobj.commit(len(chunk))
            else:
                fileobj.write(chunk)
            window_bytes += len(chunk)
            if window_bytes >= STALL_BYTES:
                window_start, window_bytes = time.monotonic(), 0
            elif time.monotonic() - window_start > timeout:
                raise TransferBroken(
                    f"download of blob {digest} stalled at {self.received} of {size} bytes (less than {STALL_BYTES} bytes in {timeout}s)"
                )
        if framed is not None:
            return  # its Content-Length ended the body
        try:
            extra = read(1)
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError):
            extra = b""
        if extra:
            raise SizeMismatchError(f"blob {digest} is longer than the {size} bytes the manifest declares")


def _range_start(response):
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _framed_response(raw, remaining):
    """The http.client response under urllib3's ``raw`` when its body can be received straight
    into a buffer: exactly ``remaining`` bytes by Content-Length, not chunked. Else None.

    urllib3 reads only through bytes objects, which costs a copy of every byte; its response
    wraps the standard library's, whose buffered socket file can read into a buffer with one
    receive a call (what a stall check needs).
    """
    response = getattr(raw, "_fp", None)
    if getattr(response, "chunked", True) or getattr(response, "length", None) != remaining:
        return None
    if not hasattr(getattr(response, "fp", None), "readinto1"):
        return None
    return response


def _receive_into(response, view):
    """One receive into ``view``; keeps the response's count of what is left, as its own reads do.

    The end of the stream before the announced length is a broken connection (resumable), as
    urllib3 reports it, not a short blob.
    """
    count = response.fp.readinto1(view)
    if not count and len(view):
        raise ConnectionError(f"the connection closed {response.length} bytes before the announced end of the body")
    response.length -= count
    return count
