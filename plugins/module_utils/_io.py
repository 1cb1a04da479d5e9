# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""File helpers that survive a crash: atomic writes, directory fsync, digests, removal."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import time

_HASH_CHUNK_BYTES = 1024 * 1024
_LOCK_POLL_SECONDS = 0.2


def write_atomic(path, data, mode=0o644):
    """Write ``data`` to ``path`` via a temporary sibling, fsync and rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as handle:
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
    """Make the entries of directory ``path`` (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path, algorithm):
    """The hex digest of the file at ``path`` by ``algorithm`` (a hashlib name)."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb", buffering=0) as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def file_sha256(path):
    return file_digest(path, "sha256")


def remove_path(path):
    """Remove a file, a symbolic link or a whole directory tree (never following a link)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


def unlink_if_present(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def discard_dir(path, scratch_parent):
    """Remove a directory at ``path`` by first renaming it into a scratch directory of
    ``scratch_parent``, so that it disappears from ``path`` at once even if removal is cut short."""
    if not os.path.lexists(path):
        return
    trash = tempfile.mkdtemp(prefix="trash-", dir=scratch_parent)
    os.rename(path, os.path.join(trash, "old"))
    shutil.rmtree(trash, ignore_errors=True)


class LockTimeout(Exception):
    """FileLock waited ``timeout`` seconds and the lock was still held."""


class FileLock:
    """An exclusive ``flock`` on the file at ``path``, waited for at most ``timeout`` seconds.

    The file is created 0600 (so no other user can take the lock and hold it) and never opened
    through a symbolic link. The kernel releases the lock if its holder dies. Raises LockTimeout
    when another holder keeps it, OSError when the file cannot be opened.
    """

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self._fd = None

    def __enter__(self):
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "the lock file is a symbolic link; refusing to follow it", self.path)
            raise
        if os.fstat(self._fd).st_uid == os.geteuid():
            os.fchmod(self._fd, 0o600)  # a lock file of an older release may be 0644
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    self._fd = None
                    raise LockTimeout(self.path)
                time.sleep(_LOCK_POLL_SECONDS)

    def __exit__(self, *_exc_info):
        os.close(self._fd)
        self._fd = None
