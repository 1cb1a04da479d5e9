# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small fakes shared by the module_utils unit tests.

HTTP responses and a ``requests.Session`` stand-in for the registry client,
OCI document builders, and registry clients for the release resolver and the
stager. Nothing here opens a socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import requests
from requests.structures import CaseInsensitiveDict

from ansible_collections.kubesolo.fleet.plugins.module_utils import _errors, _reference, _release
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _manifests

KERNEL = _release.MEDIA_KERNEL
INITRAMFS = _release.MEDIA_INITRAMFS


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- HTTP ---------------------------------------------------------------


class FakeRaw:
    """``response.raw``: serves ``body`` at most ``max_read`` bytes per read, or ``chunks``
    (an iterable of bytes) one per read.

    With ``error`` set, a read raises it once ``fail_after`` bytes were served.
    ``served`` counts every byte handed out, ``amounts`` what every read asked for and
    ``decoded`` its ``decode_content``. ``read1`` (what the client uses) and ``read`` behave alike.
    """

    def __init__(self, body=b"", max_read=None, error=None, fail_after=0, chunks=None):
        self.body = body
        self.max_read = max_read
        self.error = error
        self.fail_after = fail_after
        self.chunks = iter(chunks) if chunks is not None else None
        self.served = 0
        self.amounts = []
        self.decoded = []

    def read(self, amount, decode_content=None):
        return self._serve(amount, decode_content)

    def close(self):
        pass

    def read1(self, amount, decode_content=None):
        return self._serve(amount, decode_content)

    def _serve(self, amount, decode_content):
        self.amounts.append(amount)
        self.decoded.append(decode_content)
        if self.chunks is not None:
            chunk = next(self.chunks, b"")
            self.served += len(chunk)
            return chunk
        if self.error is not None and self.served >= self.fail_after:
            raise self.error
        amount = min(amount, self.max_read or amount)
        if self.error is not None:
            amount = min(amount, self.fail_after - self.served)
        chunk = self.body[self.served : self.served + amount]
        self.served += len(chunk)
        return chunk


class FakeResponse:
    """A streamed ``requests.Response``: status, headers, ``raw`` (a FakeRaw of ``body`` or ``chunks``)."""

    def __init__(self, status_code=200, body=b"", headers=None, raw=None, chunks=None):
        self.status_code = status_code
        self.headers = CaseInsensitiveDict(headers or {})
        self.raw = raw if raw is not None else FakeRaw(body, chunks=chunks)
        self.closed = False

    @property
    def reads(self):
        """How many reads of the body were made."""
        return len(self.raw.amounts)

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


def json_response(document, status_code=200, headers=None):
    return FakeResponse(status_code, json.dumps(document).encode("utf-8"), headers)


class Sent:
    """One recorded call of the fake session; ``body`` is what a file-like ``data`` gave."""

    def __init__(self, method, url, headers, kwargs):
        self.method = method
        self.url = url
        self.headers = headers
        self.kwargs = kwargs
        data = kwargs.get("data")
        self.body = data.read() if hasattr(data, "read") else data


class FakeSession:
    """Replaces ``RegistryClient.session``.

    ``request()`` answers from ``responses``; ``get()`` and ``post()`` (the
    token fetch, docker token or OAuth2 refresh) from ``token_responses``, in
    order; an item that is an exception is raised instead. Every call is
    recorded (a file-like body is read, as requests would); an unexpected one
    fails the test.
    """

    def __init__(self, responses=(), token_responses=()):
        self.responses = list(responses)
        self.token_responses = list(token_responses)
        self.sent = []
        self.token_gets = []
        self.token_posts = []
        self.headers = {}
        self.verify = True
        self.cert = None

    def request(self, method, url, headers=None, **kwargs):
        self.sent.append(Sent(method, url, dict(headers or {}), kwargs))
        return self._answer(self.responses, f"{method} {url}")

    def get(self, url, headers=None, **kwargs):
        self.token_gets.append(Sent("GET", url, dict(headers or {}), kwargs))
        return self._answer(self.token_responses, f"token GET {url}")

    def post(self, url, headers=None, **kwargs):
        self.token_posts.append(Sent("POST", url, dict(headers or {}), kwargs))
        return self._answer(self.token_responses, f"token POST {url}")

    @staticmethod
    def _answer(queue, what):
        if not queue:
            raise AssertionError(f"unexpected request: {what}")
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeAdapter(requests.adapters.BaseAdapter):
    """A transport for a real ``requests.Session`` (mount it for http:// and https://).

    ``answers`` maps a URL without its query to a list of (status, headers,
    body), served in order; every prepared request that reaches the transport
    is recorded in ``sent`` (its keyword arguments in ``kwargs``, the client certificate in
    ``certs``, what a file-like body gave in ``bodies``), so what requests itself did to the headers (netrc) is visible. An unexpected
    request fails the test.
    """

    def __init__(self, answers):
        super().__init__()
        self.answers = dict((url, list(items)) for url, items in answers.items())
        self.sent = []
        self.kwargs = []
        self.certs = []
        self.bodies = []

    def send(self, request, **kwargs):  # pylint: disable=arguments-differ
        self.sent.append(request)
        self.kwargs.append(kwargs)
        self.certs.append(kwargs.get("cert"))
        self.bodies.append(request.body.read() if hasattr(request.body, "read") else request.body)
        queue = self.answers.get(request.url.split("?", 1)[0])
        if not queue:
            raise AssertionError(f"unexpected request: {request.method} {request.url}")
        status, headers, body = queue.pop(0)
        response = requests.Response()
        response.status_code = status
        response.reason = "fake"
        response.headers = CaseInsensitiveDict(headers or {})
        response.raw = FakeRaw(body)
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


# -- OCI documents ------------------------------------------------------


def descriptor(media_type, data, **extra):
    entry = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
    entry.update(extra)
    return entry


def release_annotations(
    version="v0.3.0",
    channel="stable",
    min_compatible_version="v0.2.0",
    architecture="amd64",
    release_notes="Fixes.",
    release_date="2025-01-31T12:00:00Z",
):
    values = {
        "version": version,
        "channel": channel,
        "min_compatible_version": min_compatible_version,
        "architecture": architecture,
        "release_notes": release_notes,
        "release_date": release_date,
    }
    return dict(("io.kubesolo.os." + key, value) for key, value in values.items() if value is not None)


def image_manifest(layers, annotations=None, media_type=_manifests.MEDIA_OCI_MANIFEST):
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor("application/vnd.oci.empty.v1+json", b"{}"),
        "layers": layers,
    }
    if annotations is not None:
        document["annotations"] = annotations
    return document


def image_index(entries, media_type=_manifests.MEDIA_OCI_INDEX):
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}


def fetched(document, media_type=None):
    """A ``ManifestDocument`` as the registry client returns it, digest computed from the bytes."""
    data = json.dumps(document, sort_keys=True).encode("utf-8")
    return _manifests.ManifestDocument(data, media_type or document["mediaType"], sha256_digest(data), document)


def index_entry(manifest, architecture, variant=None, os_name="linux"):
    """The index descriptor of a ``ManifestDocument`` for one platform."""
    platform = {"os": os_name, "architecture": architecture}
    if variant:
        platform["variant"] = variant
    return {
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": len(manifest.data),
        "platform": platform,
    }


def release_layers(kernel, initramfs):
    return [descriptor(KERNEL, kernel), descriptor(INITRAMFS, initramfs)]


# -- Clients ------------------------------------------------------------


class FakeManifestClient:
    """Serves ``ManifestDocument`` manifests by reference; records (reference, accept)."""

    def __init__(self, manifests):
        self.manifests = dict(manifests)
        self.calls = []

    def get_manifest(self, reference, accept=_manifests.INDEX_MEDIA_TYPES + _manifests.MANIFEST_MEDIA_TYPES):
        self.calls.append((reference, tuple(accept)))
        if reference not in self.manifests:
            raise AssertionError(f"unexpected manifest request for {reference}")
        return self.manifests[reference]


def make_release(kernel, initramfs, version="v0.3.0", architecture="amd64"):
    """A resolved single-manifest release carrying ``kernel`` and ``initramfs``."""
    manifest = fetched(
        image_manifest(
            release_layers(kernel, initramfs), release_annotations(version=version, architecture=architecture)
        )
    )
    return _release.resolve(FakeManifestClient({version: manifest}), architecture, tag=version)


class FakeBlobClient:
    """``download_blob`` serving the bytes of ``blobs`` and resuming like the registry client.

    What ``fileobj`` already holds is kept (a file longer than the blob is emptied) and only the
    rest is written; then the whole file is checked against the blob, a DigestMismatchError for
    wrong bytes. ``failures`` maps a digest to an exception raised once the file holds half of
    the blob (the bytes up to there are written first), on every request for it.

    ``downloaded`` lists the digests asked for and ``offsets`` (digest, bytes the file held when
    asked) every request; ``resumed_bytes`` adds up the bytes found in the files and
    ``fetched_bytes`` the bytes written, as ``transfer_summary()`` reports them.
    """

    def __init__(self, blobs, failures=None, repository="ghcr.io/portainer/kubesolo-os"):
        self.repository = _reference.parse_repository(repository)
        self.blobs = dict((sha256_digest(data), data) for data in blobs)
        self.failures = dict(failures or {})
        self.downloaded = []
        self.offsets = []
        self.resumed_bytes = 0
        self.fetched_bytes = 0
        self.sources = {}
        self.served_by = set()
        self.mirror_errors = []

    def download_blob(self, digest, size, fileobj):
        self.downloaded.append(digest)
        self.served_by.add(f"{self.repository.registry}:443")
        data = self.blobs[digest]
        assert len(data) == size, f"the stager passed the wrong size for {digest}"
        fileobj.seek(0, 2)
        have = fileobj.tell()
        self.offsets.append((digest, have))
        if have > size:
            fileobj.truncate(0)
            fileobj.seek(0)
            have = 0
        self.resumed_bytes += have
        if digest in self.failures:
            self.fetched_bytes += len(data[have : max(have, size // 2)])
            fileobj.write(data[have : max(have, size // 2)])
            raise self.failures[digest]
        self.fetched_bytes += len(data[have:])
        fileobj.write(data[have:])
        fileobj.seek(0)
        if fileobj.read() != data:
            raise _errors.DigestMismatchError(f"blob {digest} has wrong content")
        return hashlib.sha256(data).hexdigest()

    def transfer_summary(self):
        return {
            "retries": 0,
            "last_error": "",
            "resumed_bytes": self.resumed_bytes,
            "fetched_bytes": self.fetched_bytes,
        }


class RendezvousBlobClient(FakeBlobClient):
    """Serves a blob only while every one of ``blobs`` is being asked for at once: code that
    downloads one blob after the other never gets past the first (BrokenBarrierError)."""

    def __init__(self, blobs):
        super().__init__(blobs)
        self.barrier = threading.Barrier(len(blobs), timeout=10)

    def download_blob(self, digest, size, fileobj):
        self.barrier.wait()
        return super().download_blob(digest, size, fileobj)


class FakePushRegistry:
    """An in-memory repository with the push primitives of the registry client.

    ``blobs`` maps digest to bytes, ``manifests`` digest to (bytes, media
    type) and ``tags`` tag to digest. ``exists`` answers like a HEAD (None when
    missing, else the digest), ``get_manifest`` serves what was pushed, so a
    published release can be resolved again. Every call lands in ``calls``.
    """

    def __init__(self, repository="registry.example.com/kubesolo/os"):
        self.repository = _reference.parse_repository(repository)
        self.blobs = {}
        self.manifests = {}
        self.tags = {}
        self.calls = []

    def exists(self, kind, reference):
        self.calls.append(("exists", kind, reference))
        if kind == "blobs":
            return reference if reference in self.blobs else None
        if kind != "manifests":
            raise AssertionError(f"unexpected kind {kind!r}")
        digest = self.tags.get(reference, reference)
        return digest if digest in self.manifests else None

    def upload_blob(self, digest, size, fileobj):
        data = fileobj.read() if hasattr(fileobj, "read") else bytes(fileobj)
        self.calls.append(("upload_blob", digest, size))
        assert len(data) == size, f"blob {digest}: {len(data)} bytes uploaded, {size} declared"
        assert sha256_digest(data) == digest, f"blob {digest} uploaded with other content"
        self.blobs[digest] = data

    def put_manifest(self, reference, data, media_type):
        self.calls.append(("put_manifest", reference, media_type))
        digest = sha256_digest(data)
        if reference.startswith("sha256:"):
            assert reference == digest, f"manifest {reference} pushed with other content"
        else:
            self.tags[reference] = digest
        self.manifests[digest] = (bytes(data), media_type)

    def get_manifest(self, reference, accept=_manifests.INDEX_MEDIA_TYPES + _manifests.MANIFEST_MEDIA_TYPES):
        self.calls.append(("get_manifest", reference))
        digest = self.tags.get(reference, reference)
        if digest not in self.manifests:
            raise _errors.NotFoundError(f"{reference} was not found")
        data, media_type = self.manifests[digest]
        assert media_type in accept
        return _manifests.ManifestDocument(data, media_type, digest, json.loads(data.decode("utf-8")))

    def download_blob(self, digest, size, fileobj):
        """Like the client's: the blob into ``fileobj``, checked against ``size`` and ``digest``."""
        self.calls.append(("download_blob", digest))
        if digest not in self.blobs:
            raise _errors.NotFoundError(f"blob {digest} was not found")
        data = self.blobs[digest]
        if len(data) != size:
            raise _errors.SizeMismatchError(f"blob {digest} is {len(data)} bytes, not {size}")
        if sha256_digest(data) != digest:
            raise _errors.DigestMismatchError(f"blob {digest} has other content")
        fileobj.write(data)
        return hashlib.sha256(data).hexdigest()

    def pushes(self):
        """The calls that changed the repository."""
        return [call for call in self.calls if call[0] in ("upload_blob", "put_manifest")]


# -- Staged records ----------------------------------------------------------


def set_record(dest, content):
    """Replace the release.json of the release ``dest`` holds with ``content``."""
    path = os.path.join(str(dest), "release.json")
    os.chmod(path, 0o644)
    with open(path, "wb") as handle:
        handle.write(content)


def edited_record(dest, **changes):
    """The release.json of ``dest`` with ``changes``, as bytes."""
    with open(os.path.join(str(dest), "release.json"), "rb") as handle:
        record = json.loads(handle.read())
    record.update(changes)
    return json.dumps(record).encode("utf-8")


# Ways a staged record can be missing or broken, which both stores must read as "holds nothing".
CORRUPT_RECORDS = {
    "missing": lambda dest: os.unlink(os.path.join(str(dest), "release.json")),
    "truncated": lambda dest: set_record(dest, b'{"schema": 1, "files": {'),
    "empty": lambda dest: set_record(dest, b""),
    "not-utf8": lambda dest: set_record(dest, b"\xff\xfe"),
    "not-an-object": lambda dest: set_record(dest, b"[1]"),
    "other-schema": lambda dest: set_record(dest, edited_record(dest, schema=2)),
    "entry-not-a-dict": lambda dest: set_record(dest, edited_record(dest, files={"vmlinuz": "size"})),
}
