# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The controller's content-addressed blob cache for controller delivery.

Layout under the cache root::

    blobs/sha256/<hex>           verified blob bytes
    blobs/sha256/<hex>.sha256    sha256 hex of the bytes (also for sha512 blobs)
    locks/sha256-<hex>.lock      flock()ed while the blob is fetched (waits end after lock_timeout)
    releases/sha256-<hex>.json   the layers of a staged manifest, touched on use

Forks staging the same release take the blob's lock in turn: the first
downloads and verifies, the others find the blob in place. Entries are only
renamed into place after verification, so the cache never holds partial
bytes; whether an entry was altered later is caught on the node, where the
transferred bytes are checked against the layer's sha256.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile

from ansible_collections.kubesolo.fleet.plugins.module_utils._blobfile import BlobFile, download_in_parallel
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import StageError
from ansible_collections.kubesolo.fleet.plugins.module_utils._io import (
    FileLock,
    LockTimeout,
    unlink_if_present,
    write_atomic,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._json import parse_json
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest
from ansible_collections.kubesolo.fleet.plugins.module_utils._store import digest_name

# A release note (releases/*.json) lists a few digests; anything far larger is not one.
MAX_NOTE_BYTES = 64 * 1024


def default_cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kubesolo-fleet")


class CachedBlob:
    """A verified blob in the cache: its path, its sha256 and the bytes downloaded to get it now."""

    def __init__(self, path, sha256, downloaded):
        self.path = path
        self.sha256 = sha256
        self.downloaded = downloaded


class BlobCache:
    """The cache under ``root`` (see the layout above).

    Private to the user that runs Ansible: directories 0700, files 0600, so nobody else can read
    a private release or plant a blob. Every lock wait ends after ``lock_timeout`` seconds.
    """

    def __init__(self, root, lock_timeout=300):
        self.root = root
        self.lock_timeout = lock_timeout

    def _private_dir(self, path):
        """``path`` (below the root) made, and the root and it kept 0700."""
        os.makedirs(path, mode=0o700, exist_ok=True)
        # makedirs gives only the last directory the mode; the ones between get the umask's.
        directory = root = os.path.normpath(self.root)
        for part in [""] + os.path.relpath(path, root).split(os.sep):
            directory = os.path.join(directory, part) if part and part != "." else directory
            if os.stat(directory).st_uid == os.geteuid():
                os.chmod(directory, 0o700)

    def _lock(self, lock_path, holder):
        """A FileLock of the cache; StageError naming ``holder`` and the lock after lock_timeout."""
        return _CacheLock(lock_path, self.lock_timeout, holder)

    def _blob_path(self, digest):
        algorithm, encoded = parse_digest(digest)
        return os.path.join(self.root, "blobs", algorithm, encoded)

    def fetch_all(self, client, layers):
        """[CachedBlob] of every layer, fetched at once (see _blobfile.download_in_parallel)."""
        return download_in_parallel(functools.partial(self.fetch, client), [(layer,) for layer in layers])

    def fetch(self, client, layer, cancel=None):
        """The CachedBlob of ``layer``, downloading it if needed.

        ``cancel`` stops a download at its next write (TransferCancelled).
        """
        digest, size = layer["digest"], layer["size"]
        path = self._blob_path(digest)
        lock_path = self._lock_path(digest)
        try:
            self._private_dir(os.path.dirname(path))
            self._private_dir(os.path.dirname(lock_path))
            with self._lock(lock_path, f"another run is fetching blob {digest} into the controller cache"):
                cached = self._cached_sha256(path, digest, size)
                if cached:
                    return CachedBlob(path, cached, 0)
                return CachedBlob(path, self._download(client, digest, size, path, cancel), size)
        except OSError as exc:
            raise StageError(f"controller cache {self.root}: {exc.strerror or exc} ({exc.filename or path})")

    def _lock_path(self, digest):
        return os.path.join(self.root, "locks", digest_name(digest) + ".lock")

    @staticmethod
    def _cached_sha256(path, digest, size):
        """The sha256 hex the node checks the blob against, or None when it must be fetched (again).

        For a sha256 layer that is the manifest's digest itself, never what the cache says: an
        entry whose side file disagrees is fetched again, and bytes changed in place fail the
        node's check. Only a sha512 layer needs the sha256 the download computed.
        """
        algorithm, encoded = parse_digest(digest)
        try:
            if os.path.getsize(path) != size:
                return None
            with open(path + ".sha256") as handle:
                recorded = handle.read(64).strip()
        except OSError:
            return None
        if algorithm == "sha256":
            return encoded if recorded == encoded else None
        return recorded or None

    @staticmethod
    def _download(client, digest, size, path, cancel):
        fd, tmp = tempfile.mkstemp(prefix=".download-", dir=os.path.dirname(path))
        os.close(fd)
        try:
            with BlobFile(tmp, cancel) as handle:
                sha256 = client.download_blob(digest, size, handle)
                handle.sync()
            os.chmod(tmp, 0o600)
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        write_atomic(path + ".sha256", sha256.encode("ascii"), mode=0o600)
        return sha256

    def remember(self, manifest_digest, layers):
        """Note that a release was used (for prune)."""
        path = os.path.join(self.root, "releases", digest_name(manifest_digest) + ".json")
        self._private_dir(os.path.dirname(path))
        note = {"manifest_digest": manifest_digest, "blobs": [layer["digest"] for layer in layers]}
        write_atomic(path, json.dumps(note).encode("utf-8"), mode=0o600)

    def prune(self, keep):
        """Keep the blobs of the ``keep`` most recently used releases; remove the rest.

        Forks finishing together prune one after the other. Returns the
        digests of the removed blobs.
        """
        if not os.path.isdir(self.root):
            return []
        self._private_dir(os.path.join(self.root, "locks"))
        with self._lock(os.path.join(self.root, "locks", "prune.lock"), "another run is pruning the controller cache"):
            return self._prune(keep)

    def _prune(self, keep):
        releases_dir = os.path.join(self.root, "releases")
        releases = []
        for name in os.listdir(releases_dir) if os.path.isdir(releases_dir) else []:
            path = os.path.join(releases_dir, name)
            try:
                with open(path, "rb") as handle:
                    blobs = parse_json(handle.read(MAX_NOTE_BYTES))["blobs"]
                releases.append((os.path.getmtime(path), path, blobs))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        releases.sort(reverse=True)
        wanted = set()
        for _mtime, _path, blobs in releases[:keep]:
            wanted.update(blobs)
        for _mtime, path, _blobs in releases[keep:]:
            unlink_if_present(path)
        removed = []
        blobs_dir = os.path.join(self.root, "blobs")
        for algorithm in os.listdir(blobs_dir) if os.path.isdir(blobs_dir) else []:
            for entry in os.listdir(os.path.join(blobs_dir, algorithm)):
                digest = f"{algorithm}:{entry}"
                if entry.startswith(".") or entry.endswith(".sha256") or digest in wanted:
                    continue
                path = os.path.join(blobs_dir, algorithm, entry)
                with self._lock(self._lock_path(digest), f"another run is fetching blob {digest}"):
                    unlink_if_present(path)
                    unlink_if_present(path + ".sha256")
                removed.append(digest)
        return sorted(removed)


class _CacheLock(FileLock):
    def __init__(self, path, timeout, holder):
        super().__init__(path, timeout)
        self.holder = holder

    def __enter__(self):
        try:
            return super().__enter__()
        except LockTimeout:
            raise StageError(f"{self.holder} (lock {self.path} held for over {self.timeout}s)")
