# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's blob cache on a real temporary file system, with fake blob clients."""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import threading
import time

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import DigestMismatchError, StageError
from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _blob_cache
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    INITRAMFS,
    KERNEL,
    FakeBlobClient,
    RendezvousBlobClient,
    sha256_digest,
)

KERNEL_1 = b"kernel v0.3.0\n" * 300
INITRAMFS_1 = b"initramfs v0.3.0\n" * 500
KERNEL_2 = b"kernel v0.4.0\n" * 310
INITRAMFS_2 = b"initramfs v0.4.0\n" * 520
KERNEL_3 = b"kernel v0.5.0\n" * 320


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def sha512_digest(data):
    return "sha512:" + hashlib.sha512(data).hexdigest()


def layer(data, media_type=KERNEL, digest=None):
    return {"media_type": media_type, "digest": digest or sha256_digest(data), "size": len(data)}


def manifest_digest(number):
    return "sha256:" + (f"{number:02x}") * 32


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def as_tuple(blob):
    """(path, sha256, downloaded) of a CachedBlob, which fetch() and fetch_all() return."""
    assert isinstance(blob, _blob_cache.CachedBlob), blob
    return blob.path, blob.sha256, blob.downloaded


def blob_path(root, digest):
    algorithm, encoded = digest.split(":", 1)
    return os.path.join(str(root), "blobs", algorithm, encoded)


def all_files(root):
    """Every cached file, lock files (bookkeeping, not content) left out."""
    found = []
    for directory, _dirs, files in os.walk(str(root)):
        found.extend(os.path.relpath(os.path.join(directory, name), str(root)) for name in files)
    return sorted(path for path in found if not path.startswith("locks" + os.sep))


class DigestKeyedClient:
    """``download_blob`` for blobs keyed by any digest; returns the sha256 hex like the registry client."""

    def __init__(self, blobs):
        self.blobs = dict(blobs)
        self.downloaded = []

    def download_blob(self, digest, size, fileobj):
        self.downloaded.append(digest)
        data = self.blobs[digest]
        assert len(data) == size
        fileobj.write(data)
        return sha256_hex(data)


class SlowCountingClient:
    """Writes a blob in pieces with pauses and logs every download to a file (shared by processes)."""

    def __init__(self, data, log_path, pause=0.05, pieces=4):
        self.data = data
        self.log_path = log_path
        self.pause = pause
        self.pieces = pieces

    def download_blob(self, digest, size, fileobj):
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (f"{os.getpid()} {digest}\n").encode("ascii"))
        finally:
            os.close(fd)
        step = len(self.data) // self.pieces + 1
        for start in range(0, len(self.data), step):
            fileobj.write(self.data[start : start + step])
            time.sleep(self.pause)
        return sha256_hex(self.data)


def download_count(log_path):
    if not os.path.exists(log_path):
        return 0
    with open(log_path) as handle:
        return len(handle.read().splitlines())


# -- fetch -----------------------------------------------------------------


def test_fetch_downloads_a_blob_once_and_returns_its_path_sha256_and_size(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    client = FakeBlobClient([KERNEL_1])
    path, sha256, downloaded = as_tuple(cache.fetch(client, layer(KERNEL_1)))
    assert path == blob_path(tmp_path / "cache", sha256_digest(KERNEL_1))
    assert sha256 == sha256_hex(KERNEL_1)
    assert downloaded == len(KERNEL_1)
    assert read(path) == KERNEL_1
    assert read(path + ".sha256") == sha256_hex(KERNEL_1).encode("ascii")
    assert client.downloaded == [sha256_digest(KERNEL_1)]
    hex_part = sha256_digest(KERNEL_1).split(":")[1]
    assert all_files(tmp_path / "cache") == [
        os.path.join("blobs", "sha256", hex_part),
        os.path.join("blobs", "sha256", hex_part + ".sha256"),
    ]
    assert os.path.isfile(str(tmp_path / "cache" / "locks" / (f"sha256-{hex_part}.lock")))


def test_a_second_fetch_uses_the_cache_without_calling_the_client(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    first = as_tuple(cache.fetch(FakeBlobClient([KERNEL_1]), layer(KERNEL_1)))
    client = FakeBlobClient([KERNEL_1])
    again = as_tuple(cache.fetch(client, layer(KERNEL_1)))
    assert again == (first[0], sha256_hex(KERNEL_1), 0)
    assert client.downloaded == []
    # A new cache object on the same root (another fork) finds it too.
    other = as_tuple(_blob_cache.BlobCache(str(tmp_path / "cache")).fetch(client, layer(KERNEL_1)))
    assert other == (first[0], sha256_hex(KERNEL_1), 0)
    assert client.downloaded == []


@pytest.mark.parametrize("stored", [KERNEL_1[:-1], KERNEL_1 + b"!", b""], ids=["short", "long", "empty"])
def test_a_cached_blob_of_the_wrong_size_is_downloaded_again(tmp_path, stored):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    path = cache.fetch(FakeBlobClient([KERNEL_1]), layer(KERNEL_1)).path
    with open(path, "wb") as handle:
        handle.write(stored)
    client = FakeBlobClient([KERNEL_1])
    assert as_tuple(cache.fetch(client, layer(KERNEL_1))) == (path, sha256_hex(KERNEL_1), len(KERNEL_1))
    assert client.downloaded == [sha256_digest(KERNEL_1)]
    assert read(path) == KERNEL_1


def test_a_blob_without_its_sha256_record_is_downloaded_again(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    path = cache.fetch(FakeBlobClient([KERNEL_1]), layer(KERNEL_1)).path
    os.unlink(path + ".sha256")
    client = FakeBlobClient([KERNEL_1])
    assert as_tuple(cache.fetch(client, layer(KERNEL_1))) == (path, sha256_hex(KERNEL_1), len(KERNEL_1))
    assert client.downloaded == [sha256_digest(KERNEL_1)]
    assert read(path + ".sha256") == sha256_hex(KERNEL_1).encode("ascii")


def test_a_failed_download_leaves_neither_the_blob_nor_a_temporary_file(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    mismatch = DigestMismatchError("blob has wrong content")
    client = FakeBlobClient([KERNEL_1], failures={sha256_digest(KERNEL_1): mismatch})
    with pytest.raises(DigestMismatchError) as raised:
        cache.fetch(client, layer(KERNEL_1))
    assert raised.value is mismatch
    assert client.downloaded == [sha256_digest(KERNEL_1)]
    blobs = os.path.join(str(tmp_path / "cache"), "blobs", "sha256")
    assert os.listdir(blobs) == []
    # The next fetch downloads it for real.
    good = FakeBlobClient([KERNEL_1])
    path, sha256, downloaded = as_tuple(cache.fetch(good, layer(KERNEL_1)))
    assert (read(path), sha256, downloaded) == (KERNEL_1, sha256_hex(KERNEL_1), len(KERNEL_1))
    assert sorted(n for n in os.listdir(blobs) if n.startswith(".download-")) == []


def test_a_failed_download_keeps_an_older_wrong_sized_entry_out_of_use(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    path = blob_path(tmp_path / "cache", sha256_digest(KERNEL_1))
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as handle:
        handle.write(b"partial")
    client = FakeBlobClient([KERNEL_1], failures={sha256_digest(KERNEL_1): DigestMismatchError("bad")})
    with pytest.raises(DigestMismatchError):
        cache.fetch(client, layer(KERNEL_1))
    assert read(path) == b"partial"
    assert not os.path.exists(path + ".sha256")
    assert [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".download-")] == []


def test_sha512_blobs_are_stored_under_their_algorithm_and_report_their_sha256(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    digest = sha512_digest(INITRAMFS_1)
    client = DigestKeyedClient({digest: INITRAMFS_1})
    path, sha256, downloaded = as_tuple(cache.fetch(client, layer(INITRAMFS_1, INITRAMFS, digest=digest)))
    assert path == os.path.join(str(tmp_path / "cache"), "blobs", "sha512", hashlib.sha512(INITRAMFS_1).hexdigest())
    assert sha256 == sha256_hex(INITRAMFS_1)
    assert downloaded == len(INITRAMFS_1)
    assert read(path) == INITRAMFS_1
    assert read(path + ".sha256") == sha256_hex(INITRAMFS_1).encode("ascii")
    assert os.path.exists(
        os.path.join(str(tmp_path / "cache"), "locks", f"sha512-{hashlib.sha512(INITRAMFS_1).hexdigest()}.lock")
    )
    assert as_tuple(cache.fetch(client, layer(INITRAMFS_1, INITRAMFS, digest=digest))) == (path, sha256, 0)
    assert client.downloaded == [digest]


def test_an_unusable_cache_root_is_a_stage_error(tmp_path):
    root = tmp_path / "cache"
    root.write_bytes(b"not a directory")
    client = FakeBlobClient([KERNEL_1])
    with pytest.raises(StageError) as raised:
        _blob_cache.BlobCache(str(root)).fetch(client, layer(KERNEL_1))
    assert str(raised.value).startswith(f"controller cache {root}: ")
    assert "Not a directory" in str(raised.value)
    assert raised.value.code == "stage_failed"
    assert client.downloaded == []


# -- Concurrent fetches ----------------------------------------------------


def test_fetch_all_downloads_the_layers_at_the_same_time(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    client = RendezvousBlobClient([KERNEL_1, INITRAMFS_1])
    fetched = cache.fetch_all(client, [layer(KERNEL_1), layer(INITRAMFS_1, INITRAMFS)])
    assert [(read(path), sha256, size) for path, sha256, size in map(as_tuple, fetched)] == [
        (KERNEL_1, sha256_hex(KERNEL_1), len(KERNEL_1)),
        (INITRAMFS_1, sha256_hex(INITRAMFS_1), len(INITRAMFS_1)),
    ]


def test_threads_fetching_the_same_blob_download_it_once(tmp_path):
    root = str(tmp_path / "cache")
    log_path = str(tmp_path / "downloads.log")
    client = SlowCountingClient(KERNEL_1, log_path)
    start = threading.Barrier(8)
    results, errors = [], []

    def worker():
        try:
            start.wait()
            # One BlobCache per worker: each opens its own lock file description.
            results.append(as_tuple(_blob_cache.BlobCache(root).fetch(client, layer(KERNEL_1))))
        except BaseException as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert download_count(log_path) == 1
    path = blob_path(tmp_path / "cache", sha256_digest(KERNEL_1))
    assert sorted(results) == sorted(
        [(path, sha256_hex(KERNEL_1), len(KERNEL_1))] + [(path, sha256_hex(KERNEL_1), 0)] * 7
    )
    assert read(path) == KERNEL_1
    assert [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".download-")] == []


def _fetch_in_process(root, client, blob_layer, start, queue):
    start.wait()
    try:
        queue.put(as_tuple(_blob_cache.BlobCache(root).fetch(client, blob_layer)))
    except BaseException as exc:  # pylint: disable=broad-except
        queue.put(repr(exc))


def test_processes_fetching_the_same_blob_download_it_once(tmp_path):
    context = multiprocessing.get_context("fork")
    root = str(tmp_path / "cache")
    log_path = str(tmp_path / "downloads.log")
    client = SlowCountingClient(INITRAMFS_1, log_path)
    start = context.Barrier(8)
    queue = context.Queue()
    processes = [
        context.Process(target=_fetch_in_process, args=(root, client, layer(INITRAMFS_1, INITRAMFS), start, queue))
        for _index in range(8)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _process in processes]
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * 8
    assert download_count(log_path) == 1
    path = blob_path(tmp_path / "cache", sha256_digest(INITRAMFS_1))
    assert sorted(results) == sorted(
        [(path, sha256_hex(INITRAMFS_1), len(INITRAMFS_1))] + [(path, sha256_hex(INITRAMFS_1), 0)] * 7
    )
    assert read(path) == INITRAMFS_1


# -- remember and prune ------------------------------------------------------


def fill(cache, releases, mtimes=None):
    """Fetch and remember ``releases`` ({number: [blob, ...]}); set the record mtimes (oldest first)."""
    for number, blobs in releases.items():
        layers = [layer(data) for data in blobs]
        for blob_layer, data in zip(layers, blobs):
            cache.fetch(FakeBlobClient([data]), blob_layer)
        cache.remember(manifest_digest(number), layers)
    base = time.time() - 10000
    for position, number in enumerate(mtimes or releases):
        record = os.path.join(cache.root, "releases", "sha256-%s.json" % (f"{number:02x}" * 32))
        os.utime(record, (base + position * 100, base + position * 100))


def test_remember_records_the_blobs_of_a_release(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    cache.remember(manifest_digest(1), [layer(KERNEL_1), layer(INITRAMFS_1, INITRAMFS)])
    path = os.path.join(str(tmp_path / "cache"), "releases", "sha256-%s.json" % ("01" * 32))
    assert json.loads(read(path)) == {
        "manifest_digest": manifest_digest(1),
        "blobs": [sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)],
    }


def test_prune_keeps_the_blobs_of_the_most_recently_used_releases(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    # Release 3 shares its initramfs with release 1; remembered order (mtime) 1, 2, 3 ... then
    # release 1 is used again, so the least recently used is release 2.
    fill(cache, {1: [KERNEL_1, INITRAMFS_1], 2: [KERNEL_2, INITRAMFS_2], 3: [KERNEL_3, INITRAMFS_1]}, mtimes=[2, 3, 1])
    removed = cache.prune(keep=2)
    assert removed == sorted([sha256_digest(KERNEL_2), sha256_digest(INITRAMFS_2)])
    for data in (KERNEL_1, INITRAMFS_1, KERNEL_3):
        path = blob_path(tmp_path / "cache", sha256_digest(data))
        assert read(path) == data
        assert read(path + ".sha256") == sha256_hex(data).encode("ascii")
    for data in (KERNEL_2, INITRAMFS_2):
        path = blob_path(tmp_path / "cache", sha256_digest(data))
        assert not os.path.exists(path)
        assert not os.path.exists(path + ".sha256")
    assert sorted(os.listdir(os.path.join(cache.root, "releases"))) == sorted(
        "sha256-%s.json" % (f"{n:02x}" * 32) for n in (1, 3)
    )


def test_prune_keep_one_leaves_only_the_newest_release(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    fill(cache, {1: [KERNEL_1, INITRAMFS_1], 2: [KERNEL_2, INITRAMFS_2]})
    assert cache.prune(keep=1) == sorted([sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)])
    assert sorted(os.listdir(os.path.join(cache.root, "blobs", "sha256"))) == sorted(
        [d.split(":")[1] for d in (sha256_digest(KERNEL_2), sha256_digest(INITRAMFS_2))]
        + [d.split(":")[1] + ".sha256" for d in (sha256_digest(KERNEL_2), sha256_digest(INITRAMFS_2))]
    )
    # Nothing more to prune.
    assert cache.prune(keep=1) == []


def test_prune_with_room_for_every_release_removes_nothing(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    fill(cache, {1: [KERNEL_1, INITRAMFS_1], 2: [KERNEL_2, INITRAMFS_2]})
    before = all_files(tmp_path / "cache")
    assert cache.prune(keep=3) == []
    assert all_files(tmp_path / "cache") == before


def test_prune_removes_blobs_of_no_remembered_release_but_not_downloads_in_progress(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    fill(cache, {1: [KERNEL_1, INITRAMFS_1]})
    cache.fetch(FakeBlobClient([KERNEL_2]), layer(KERNEL_2))  # fetched, never remembered
    in_progress = os.path.join(cache.root, "blobs", "sha256", ".download-abc123")
    with open(in_progress, "wb") as handle:
        handle.write(b"half a blob")
    assert cache.prune(keep=1) == [sha256_digest(KERNEL_2)]
    assert read(in_progress) == b"half a blob"
    assert read(blob_path(tmp_path / "cache", sha256_digest(KERNEL_1))) == KERNEL_1


def test_prune_on_an_empty_cache_returns_nothing(tmp_path):
    assert _blob_cache.BlobCache(str(tmp_path / "cache")).prune(keep=3) == []
    assert not os.path.exists(str(tmp_path / "cache"))
    os.makedirs(str(tmp_path / "cache" / "releases"))
    assert _blob_cache.BlobCache(str(tmp_path / "cache")).prune(keep=3) == []


def test_prune_survives_a_concurrent_prune(tmp_path, monkeypatch):
    # Forks finishing their stage at the same time prune the same cache: another fork may remove a
    # release record between this prune listing the records and looking at them.
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    fill(cache, {1: [KERNEL_1, INITRAMFS_1], 2: [KERNEL_2, INITRAMFS_2], 3: [KERNEL_3, INITRAMFS_2]})
    releases_dir = os.path.join(cache.root, "releases")
    oldest = os.path.join(releases_dir, "sha256-%s.json" % ("01" * 32))
    real_listdir = os.listdir

    def listdir_then_other_fork_prunes(path):
        names = real_listdir(path)
        if path == releases_dir and os.path.exists(oldest):
            os.unlink(oldest)  # what the other fork's prune(keep=2) does
        return names

    monkeypatch.setattr(_blob_cache.os, "listdir", listdir_then_other_fork_prunes)
    removed = cache.prune(keep=2)
    monkeypatch.undo()
    assert removed == sorted([sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)])
    assert sorted(os.listdir(releases_dir)) == sorted("sha256-%s.json" % (f"{n:02x}" * 32) for n in (2, 3))
    assert read(blob_path(tmp_path / "cache", sha256_digest(KERNEL_3))) == KERNEL_3


# -- Root --------------------------------------------------------------------


def test_default_cache_root_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _blob_cache.default_cache_root() == os.path.join(str(tmp_path / "xdg"), "kubesolo-fleet")


@pytest.mark.parametrize("xdg", [None, ""], ids=["unset", "empty"])
def test_default_cache_root_falls_back_to_the_home_cache(monkeypatch, tmp_path, xdg):
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _blob_cache.default_cache_root() == os.path.join(str(tmp_path / "home"), ".cache", "kubesolo-fleet")


def mode_of(path):
    return os.stat(path).st_mode & 0o777


def test_the_cache_is_private_to_its_user(tmp_path):
    root = tmp_path / "cache"
    root.mkdir(mode=0o755)
    cache = _blob_cache.BlobCache(str(root))
    path = cache.fetch(FakeBlobClient([KERNEL_1]), layer(KERNEL_1)).path
    cache.remember(manifest_digest(1), [layer(KERNEL_1)])
    cache.prune(1)
    for directory, _dirs, files in os.walk(str(root)):
        assert mode_of(directory) == 0o700, directory
        for name in files:
            assert mode_of(os.path.join(directory, name)) == 0o600, name
    assert read(path) == KERNEL_1


def test_a_sha256_record_that_disagrees_with_the_digest_is_fetched_again(tmp_path):
    """A planted blob with a matching side file must not pass as the layer: the node checks the copy
    against the manifest's digest, and the cache never hands out another value for it."""
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    path = cache.fetch(FakeBlobClient([KERNEL_1]), layer(KERNEL_1)).path
    planted = b"K" + KERNEL_1[1:]
    with open(path, "wb") as handle:
        handle.write(planted)
    with open(path + ".sha256", "w") as handle:
        handle.write(sha256_hex(planted))
    client = FakeBlobClient([KERNEL_1])
    assert as_tuple(cache.fetch(client, layer(KERNEL_1))) == (path, sha256_hex(KERNEL_1), len(KERNEL_1))
    assert client.downloaded == [sha256_digest(KERNEL_1)]
    assert read(path) == KERNEL_1


def test_a_planted_blob_with_the_right_record_is_handed_out_with_the_manifest_digest(tmp_path):
    cache = _blob_cache.BlobCache(str(tmp_path / "cache"))
    path = cache.fetch(FakeBlobClient([KERNEL_1]), layer(KERNEL_1)).path
    with open(path, "wb") as handle:
        handle.write(b"K" + KERNEL_1[1:])
    # The side file still names the real digest: the node's check is against exactly that.
    assert cache.fetch(FakeBlobClient([KERNEL_1]), layer(KERNEL_1)).sha256 == sha256_hex(KERNEL_1)


def test_a_held_blob_lock_is_waited_for_only_lock_timeout_seconds(tmp_path):

    cache = _blob_cache.BlobCache(str(tmp_path / "cache"), lock_timeout=0.5)
    cache.fetch(FakeBlobClient([KERNEL_1]), layer(KERNEL_1))
    lock_path = os.path.join(str(tmp_path / "cache"), "locks", sha256_digest(KERNEL_1).replace(":", "-") + ".lock")
    with open(lock_path, "a") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(StageError) as raised:
            cache.fetch(FakeBlobClient([KERNEL_1]), layer(KERNEL_1))
        waited = time.monotonic() - started
    assert str(raised.value) == (
        f"another run is fetching blob {sha256_digest(KERNEL_1)} into the controller cache "
        f"(lock {lock_path} held for over 0.5s)"
    )
    assert 0.4 < waited < 5
