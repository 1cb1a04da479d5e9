# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Staging a release on disk so that ``dest`` always holds one complete release.

Layout (``dest`` = /var/lib/kubesolo/staged)::

    /var/lib/kubesolo/.staged.kubesolo-fleet/sha256-<hex>/vmlinuz
                                                          kubesolo-os.gz
                                                          release.json
    /var/lib/kubesolo/staged -> .staged.kubesolo-fleet/sha256-<hex>

A release is downloaded into ``partial-<digest>/`` in the store, verified,
renamed to its digest-named directory and then published by atomically
replacing the ``dest`` symlink: two files can only be swapped together that
way. A failure before the swap leaves ``dest`` and the previous release as
they were; what was downloaded and verified so far is kept for the next run
to resume.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time

from ansible_collections.kubesolo.fleet.plugins.module_utils._about import (
    COLLECTION_NAME,
    COLLECTION_VERSION,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._blobfile import BlobFile, download_in_parallel
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    SizeMismatchError,
    StageError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest

RECORD_NAME = 'release.json'
RECORD_SCHEMA = 1
LOCK_NAME = '.lock'
# The node agent asks for the image size plus 10 % before it updates.
SPACE_MARGIN = 0.10
MAX_RECORD_BYTES = 1024 * 1024
_HASH_CHUNK_BYTES = 1024 * 1024


def store_dir(dest):
    """The hidden sibling directory that holds the releases behind ``dest``."""
    parent, name = os.path.split(dest.rstrip('/'))
    return os.path.join(parent, '.%s.kubesolo-fleet' % name)


def release_dir_name(manifest_digest):
    return manifest_digest.replace(':', '-')


def current_release(dest, rehash=False):
    """The record of the release ``dest`` holds, or None when it holds none.

    Refuses (StageError) a ``dest`` that exists and was not made by this
    collection, so nothing of the user's is ever replaced. A managed ``dest``
    whose files no longer match their record counts as holding nothing.
    ``rehash`` compares sha256 digests instead of sizes.
    """
    dest = dest.rstrip('/')
    if os.path.islink(dest):
        return intact_record(managed_release_dir(dest, os.readlink(dest)), rehash)
    if not os.path.lexists(dest):
        return None
    if os.path.isdir(dest) and not os.listdir(dest):
        return None
    raise_foreign(dest)


def intact_record(release_dir, rehash=False):
    """The record of ``release_dir`` when its files match it, else None."""
    try:
        with open(os.path.join(release_dir, RECORD_NAME), 'rb') as handle:
            record = parse_record(handle.read(MAX_RECORD_BYTES))
    except OSError:
        return None
    if record and files_intact(release_dir, record, rehash):
        return record
    return None


def managed_release_dir(dest, link_target):
    """The release directory a ``dest`` symlink names; refuses links we did not make."""
    release_dir = os.path.normpath(os.path.join(os.path.dirname(dest), link_target))
    if os.path.dirname(release_dir) != os.path.normpath(store_dir(dest)):
        raise StageError('%s is a symbolic link to %s, which kubesolo.fleet did not create; '
                         'refusing to replace it' % (dest, link_target))
    return release_dir


def raise_foreign(dest):
    raise StageError('%s exists and is not a release staged by kubesolo.fleet; refusing to '
                     'replace it (remove it or choose another dest)' % dest)


def parse_record(data):
    """A release.json record from its bytes, or None when it is not one."""
    try:
        record = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get('schema') != RECORD_SCHEMA:
        return None
    if not isinstance(record.get('files'), dict):
        return None
    return record


def files_intact(release_dir, record, rehash=False):
    """Whether every file of the record is present with its size (and sha256)."""
    for name, entry in record['files'].items():
        path = os.path.join(release_dir, name)
        if os.path.basename(name) != name or not isinstance(entry, dict):
            return False
        try:
            if not os.path.isfile(path) or os.path.getsize(path) != entry.get('size'):
                return False
            if rehash and file_sha256(path) != entry.get('sha256'):
                return False
        except OSError:
            return False
    return True


def file_sha256(path):
    return file_digest(path, 'sha256')


def file_digest(path, algorithm):
    hasher = hashlib.new(algorithm)
    with open(path, 'rb', buffering=0) as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b''):
            hasher.update(chunk)
    return hasher.hexdigest()


def stage(client, release, dest, lock_timeout=300):
    """Download, verify and publish ``release`` at ``dest``.

    Runs under the store's lock, so concurrent runs on one node take turns.
    Downloads go to ``partial-<digest>/`` in the store and survive an
    interrupted run (a network fault, a kill, a power loss): the next run
    resumes them, and a verified release directory that was never published
    is published without downloading again. Returns (record,
    bytes_downloaded). ``dest`` must have been accepted by current_release().
    """
    dest = dest.rstrip('/')
    layers = release.staged_layers()
    store = store_dir(dest)
    name = release_dir_name(release.manifest_digest)
    final = os.path.join(store, name)
    work = os.path.join(store, 'partial-' + name)
    try:
        os.makedirs(store, mode=0o755, exist_ok=True)
        os.chmod(store, 0o755)  # makedirs' mode is reduced by the umask
    except OSError as exc:
        raise StageError('cannot create the staging directory %s: %s' % (store, exc.strerror))
    with StoreLock(store, lock_timeout):
        previous = os.path.realpath(dest) if os.path.islink(dest) else None
        _remove_leftovers(store, keep=(os.path.basename(work), name, os.path.basename(previous or '')))
        record = _verified_release(final, release.manifest_digest)
        downloaded = 0
        if record is None:
            record, downloaded = _download_release(client, release, layers, dest, store, work, final)
        try:
            _publish(dest, final, store)
        except StageError:
            if previous != os.path.realpath(final):
                shutil.rmtree(final, ignore_errors=True)
            raise
        if previous and os.path.dirname(previous) == os.path.realpath(store) and \
                previous != os.path.realpath(final):
            shutil.rmtree(previous, ignore_errors=True)
    return record, downloaded


def _download_release(client, release, layers, dest, store, work, final):
    """Fill ``work`` with the verified layers and the record, then rename it to ``final``."""
    try:
        os.makedirs(work, mode=0o755, exist_ok=True)
        os.chmod(work, 0o755)
        # Only the layers (whole or partial) carry over from a killed run; a
        # half-written record or anything else would end up in the release.
        wanted = set(name for file_name, _layer in layers for name in (file_name, file_name + '.part'))
        for entry in os.listdir(work):
            if entry not in wanted:
                _remove(os.path.join(work, entry))
        _check_space(work, layers, dest)
        downloads = download_in_parallel(functools.partial(_download, client),
                                         [(layer, os.path.join(work, name)) for name, layer in layers])
        files = dict((file_name, {'media_type': layer['media_type'], 'digest': layer['digest'],
                                  'size': layer['size'], 'sha256': sha256})
                     for (file_name, layer), (sha256, _fetched) in zip(layers, downloads))
        record = build_record(release, client.repository, files)
        write_atomic(os.path.join(work, RECORD_NAME),
                     json.dumps(record, indent=2, sort_keys=True).encode('utf-8'))
        fsync_dir(work)
        _discard(final, store)
        os.rename(work, final)
        fsync_dir(store)
    except OSError as exc:
        raise StageError(_os_error_message(exc, dest))
    return record, sum(fetched for _sha256, fetched in downloads)


def _download(client, layer, path, cancel):
    """Stream one layer to ``path`` via ``path.part``, resuming a partial one.

    Returns (sha256 hex, bytes fetched now). Network faults and cancellation
    (``cancel``, another layer failed) keep the verified part for the next
    run; wrong content removes it. A resumed part that turns out wrong is
    fetched once more from the start.
    """
    if os.path.exists(path):
        # Verified and renamed by a run that was interrupted later on.
        algorithm, expected = parse_digest(layer['digest'])
        if os.path.getsize(path) == layer['size'] and file_digest(path, algorithm) == expected:
            return file_sha256(path) if algorithm != 'sha256' else expected, 0
        os.unlink(path)
    part = path + '.part'
    for attempt in (1, 2):
        resumed = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            with BlobFile(part, cancel) as handle:
                sha256 = client.download_blob(layer['digest'], layer['size'], handle)
                handle.sync()
                fetched = handle.appended
        except (DigestMismatchError, SizeMismatchError):
            os.unlink(part)
            if resumed and attempt == 1:
                continue
            raise
        break
    os.chmod(part, 0o644)
    os.rename(part, path)
    return sha256, fetched


def _verified_release(final, manifest_digest):
    """The record of a complete, verified release directory left by an earlier run, or None."""
    record = intact_record(final, rehash=True)
    return record if record and record.get('manifest_digest') == manifest_digest else None


def _check_space(work, layers, dest):
    """Refuse before downloading when the file system cannot hold the rest plus 10 %."""
    missing = 0
    for file_name, layer in layers:
        have = 0
        for candidate in (file_name, file_name + '.part'):
            path = os.path.join(work, candidate)
            if os.path.exists(path):
                have = max(have, os.path.getsize(path))
        missing += max(0, layer['size'] - have)
    needed = int(missing * (1 + SPACE_MARGIN))
    stats = os.statvfs(work)
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise StageError('not enough space for %s: %d bytes free, %d needed (the rest of the release '
                         'plus %d%% margin); nothing was downloaded and the previous release is kept'
                         % (dest, free, needed, SPACE_MARGIN * 100))


def _remove_leftovers(store, keep):
    """Remove what dead runs left in the store (the lock is held, so nobody else is at work)."""
    for entry in os.listdir(store):
        if entry in keep or entry == LOCK_NAME:
            continue
        _remove(os.path.join(store, entry))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


class StoreLock:
    """An exclusive flock on the store; released by the kernel if the holder dies."""

    def __init__(self, store, timeout):
        self.path = os.path.join(store, LOCK_NAME)
        self.timeout = timeout
        self._handle = None

    def __enter__(self):
        self._handle = open(self.path, 'a')
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._handle.close()
                    raise StageError('another run is staging into %s (lock %s held for over %ss)'
                                     % (os.path.dirname(self.path), self.path, self.timeout))
                time.sleep(0.2)

    def __exit__(self, *_exc_info):
        self._handle.close()


def build_record(release, repository, files):
    """The release.json content; ``files`` maps file names to media_type/digest/size/sha256."""
    return {
        'schema': RECORD_SCHEMA,
        'staged_by': '%s %s' % (COLLECTION_NAME, COLLECTION_VERSION),
        'staged_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'repository': str(repository),
        'manifest_digest': release.manifest_digest,
        'index_digest': release.index_digest,
        'architecture': str(release.platform),
        'version': release.metadata['version'],
        'metadata': release.metadata,
        'files': files,
    }


def _discard(path, store):
    """Remove a leftover directory at ``path`` by renaming it out of the way first."""
    if not os.path.lexists(path):
        return
    trash = tempfile.mkdtemp(prefix='trash-', dir=store)
    os.rename(path, os.path.join(trash, 'old'))
    shutil.rmtree(trash, ignore_errors=True)


def _publish(dest, release_dir, store):
    """Point ``dest`` at ``release_dir`` with one atomic rename of a symlink."""
    link = os.path.join(store, 'link-%d' % os.getpid())
    try:
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.relpath(release_dir, os.path.dirname(dest)), link)
        if os.path.isdir(dest) and not os.path.islink(dest):
            os.rmdir(dest)  # the empty directory current_release() accepted
        os.replace(link, dest)
        fsync_dir(os.path.dirname(dest))
    except OSError as exc:
        if os.path.lexists(link):
            os.unlink(link)
        raise StageError(_os_error_message(exc, dest))


def write_atomic(path, data, mode=0o644):
    """Write ``data`` to ``path`` via a temporary sibling, fsync and rename."""
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error_message(exc, dest):
    if exc.errno == errno.ENOSPC:
        return 'no space left on the device of %s while staging; the previous release is kept' % dest
    where = ' (%s)' % exc.filename if exc.filename else ''
    return 'staging at %s failed: %s%s' % (dest, exc.strerror or exc, where)
