# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""Host delivery: the store behind ``dest`` written on this machine, downloading from the registry.

A release is downloaded into ``partial-<digest>/`` in the store (_store.py has
the layout), verified, renamed to its digest-named directory and then
published by atomically replacing the ``dest`` symlink. A failure before the
swap leaves ``dest`` and the previous release as they were; what was
downloaded and verified so far is kept for the next run to resume. All of it
runs under the store's lock, so concurrent runs on one node take turns.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import shutil

from ansible_collections.kubesolo.fleet.plugins.module_utils._blobfile import BlobFile, download_in_parallel
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    SizeMismatchError,
    StageError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._io import (
    discard_dir,
    file_digest,
    file_sha256,
    fsync_dir,
    remove_path,
    write_atomic,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._node_lock import LOCK_NAME, StoreLock
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest
from ansible_collections.kubesolo.fleet.plugins.module_utils._staging import StagedRelease
from ansible_collections.kubesolo.fleet.plugins.module_utils._store import (
    MAX_RECORD_BYTES,
    PARTIAL_PREFIX,
    RECORD_NAME,
    SPACE_MARGIN_PERCENT,
    PathFacts,
    ancestors,
    build_record,
    check_location,
    digest_name,
    file_entry,
    file_expectations,
    managed_release_dir,
    parse_record,
    record_bytes,
    refuse_foreign,
    space_needed,
    store_dir,
)


class HostStore:
    """The store behind ``dest`` on this machine (see _staging.stage_release for the protocol)."""

    delivery = "host"

    def __init__(self, dest, lock_timeout=300):
        self.dest = dest.rstrip("/")
        self.store = store_dir(self.dest)
        self.lock_timeout = lock_timeout

    @staticmethod
    def default_architecture():
        return platform.machine()

    def current_release(self, rehash=False, layers=None):
        """The record of the release ``dest`` holds, or None when it holds none.

        Refuses (StageError) a ``dest`` that exists and was not made by this
        collection, so nothing of the user's is ever replaced, and
        (UnsafePathError) a store another account could change. A managed
        ``dest`` whose files no longer match counts as holding nothing.
        ``rehash`` compares digests instead of sizes: for the release being
        staged (``layers``), the manifest's (see _store.file_expectations).
        """
        self.check_location()
        if os.path.islink(self.dest):
            return intact_record(managed_release_dir(self.dest, os.readlink(self.dest)), rehash, layers)
        if not os.path.lexists(self.dest):
            return None
        if os.path.isdir(self.dest) and not os.listdir(self.dest):
            return None
        refuse_foreign(self.dest)

    def check_location(self):
        """Refuse a store that another account could change (see _store.check_location)."""
        parent = os.path.dirname(os.path.abspath(self.dest))
        chain = []
        try:
            for path in dict.fromkeys(ancestors(parent) + ancestors(os.path.realpath(parent))):
                try:
                    facts = os.lstat(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                chain.append(PathFacts(path, facts.st_uid, facts.st_mode))
            try:
                facts = os.lstat(self.store)
                store_facts = PathFacts(self.store, facts.st_uid, facts.st_mode)
            except (FileNotFoundError, NotADirectoryError):
                store_facts = None
        except OSError as exc:
            raise StageError(f"cannot inspect {exc.filename or parent}: {exc.strerror}")
        check_location(self.store, chain, store_facts, os.geteuid())

    def stage(self, client, release, layers):
        """Download, verify and publish ``release`` (``layers``: its staged_layers()) at ``dest``.

        Downloads survive an interrupted run (a network fault, a kill, a power
        loss): the next run resumes them, and a verified release directory
        that was never published is published without downloading again.
        ``dest`` must have been accepted by current_release().
        """
        dest, store = self.dest, self.store
        name = digest_name(release.manifest_digest)
        final = os.path.join(store, name)
        work = os.path.join(store, PARTIAL_PREFIX + name)
        self.check_location()
        try:
            os.makedirs(os.path.dirname(store), exist_ok=True)
            os.mkdir(store, 0o755)
            os.chmod(store, 0o755)  # mkdir's mode is reduced by the umask
        except FileExistsError:
            pass
        except OSError as exc:
            raise StageError(f"cannot create the staging directory {store}: {exc.strerror}")
        self.check_location()  # again: the store exists now, made by whoever came first
        with StoreLock(store, self.lock_timeout):
            previous = os.path.realpath(dest) if os.path.islink(dest) else None
            _remove_leftovers(store, keep=(os.path.basename(work), name, os.path.basename(previous or "")))
            record = _verified_release(final, release.manifest_digest, layers)
            downloaded = 0
            if record is None:
                record, downloaded = _download_release(client, release, layers, dest, work, final)
            try:
                _publish(dest, final, store)
            except StageError:
                if previous != os.path.realpath(final):
                    shutil.rmtree(final, ignore_errors=True)
                raise
            if (
                previous
                and os.path.dirname(previous) == os.path.realpath(store)
                and previous != os.path.realpath(final)
            ):
                shutil.rmtree(previous, ignore_errors=True)
        return StagedRelease(record, downloaded)


def intact_record(release_dir, rehash=False, layers=None):
    """The record of ``release_dir`` when its files match it (or ``layers``), else None."""
    try:
        with open(os.path.join(release_dir, RECORD_NAME), "rb") as handle:
            record = parse_record(handle.read(MAX_RECORD_BYTES))
    except OSError:
        return None
    if record and files_intact(release_dir, record, rehash, layers):
        return record
    return None


def files_intact(release_dir, record, rehash=False, layers=None):
    """Whether every file of the record is a regular file with its size (and digest)."""
    expected = file_expectations(record, layers)
    if expected is None:
        return False
    for name, (size, algorithm, hexdigest) in expected.items():
        path = os.path.join(release_dir, name)
        try:
            if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) != size:
                return False
            if rehash and file_digest(path, algorithm) != hexdigest:
                return False
        except OSError:
            return False
    return True


def _download_release(client, release, layers, dest, work, final):
    """Fill ``work`` with the verified layers and the record, then rename it to ``final``.

    Returns (record, bytes fetched from the registry).
    """
    store = os.path.dirname(work)
    try:
        if os.path.islink(work) or (os.path.lexists(work) and not os.path.isdir(work)):
            os.unlink(work)  # never follow what a dead run (or anyone) left under this name
        if not os.path.isdir(work):
            os.mkdir(work, 0o755)
        os.chmod(work, 0o755)
        # Only the layers (whole or partial) carry over from a killed run; a
        # half-written record or anything else would end up in the release.
        wanted = set(name for file_name, _layer in layers for name in (file_name, file_name + ".part"))
        for entry in os.listdir(work):
            path = os.path.join(work, entry)
            if entry not in wanted or os.path.islink(path) or not os.path.isfile(path):
                remove_path(path)
        _check_space(work, layers, dest)
        downloads = download_in_parallel(
            functools.partial(_download, client), [(layer, os.path.join(work, name)) for name, layer in layers]
        )
        files = dict(
            (file_name, file_entry(layer, download.sha256)) for (file_name, layer), download in zip(layers, downloads)
        )
        record = build_record(release, client.repository, files)
        write_atomic(os.path.join(work, RECORD_NAME), record_bytes(record))
        fsync_dir(work)
        discard_dir(final, store)
        os.rename(work, final)
        fsync_dir(store)
    except OSError as exc:
        raise StageError(_os_error_message(exc, dest))
    return record, sum(download.fetched for download in downloads)


class _LayerFile:
    """A layer file in the work directory: its sha256 and the bytes fetched for it now."""

    def __init__(self, sha256, fetched):
        self.sha256 = sha256
        self.fetched = fetched


def _download(client, layer, path, cancel):
    """Stream one layer to ``path`` via ``path.part``, resuming a partial one.

    Network faults and cancellation (``cancel``, another layer failed) keep
    the verified part for the next run; wrong content removes it. A resumed
    part that turns out wrong is fetched once more from the start.
    """
    if os.path.exists(path):
        # Verified and renamed by a run that was interrupted later on.
        algorithm, expected = parse_digest(layer["digest"])
        if os.path.getsize(path) == layer["size"] and file_digest(path, algorithm) == expected:
            return _LayerFile(file_sha256(path) if algorithm != "sha256" else expected, 0)
        os.unlink(path)
    part = path + ".part"
    for attempt in (1, 2):
        resumed = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            with BlobFile(part, cancel, new=not os.path.exists(part)) as handle:
                sha256 = client.download_blob(layer["digest"], layer["size"], handle)
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
    return _LayerFile(sha256, fetched)


def _verified_release(final, manifest_digest, layers):
    """The record of a complete, verified release directory left by an earlier run, or None."""
    if os.path.islink(final):
        return None
    record = intact_record(final, rehash=True, layers=layers)
    return record if record and record.get("manifest_digest") == manifest_digest else None


def _check_space(work, layers, dest):
    """Refuse before downloading when the file system cannot hold the rest plus 10 %."""
    missing = 0
    for file_name, layer in layers:
        have = 0
        for candidate in (file_name, file_name + ".part"):
            path = os.path.join(work, candidate)
            if os.path.exists(path):
                have = max(have, os.path.getsize(path))
        missing += max(0, layer["size"] - have)
    needed = space_needed(missing)
    stats = os.statvfs(work)
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise StageError(
            f"not enough space for {dest}: {free} bytes free, {needed} needed (the rest of the release "
            f"plus {SPACE_MARGIN_PERCENT}% margin); nothing was downloaded and the previous release is kept"
        )


def _remove_leftovers(store, keep):
    """Remove what dead runs left in the store (the lock is held, so nobody else is at work)."""
    for entry in os.listdir(store):
        if entry in keep or entry == LOCK_NAME:
            continue
        remove_path(os.path.join(store, entry))


def _publish(dest, release_dir, store):
    """Point ``dest`` at ``release_dir`` with one atomic rename of a symlink."""
    link = os.path.join(store, f"link-{os.getpid()}")
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


def _os_error_message(exc, dest):
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device of {dest} while staging; the previous release is kept"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"staging at {dest} failed: {exc.strerror or exc}{where}"
