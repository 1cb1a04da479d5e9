# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Crash-safe file helpers on a real temporary file system."""

from __future__ import annotations

import errno
import fcntl
import os
import stat

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _io
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import sha256_digest

KERNEL_1 = b"kernel v0.3.0\n" * 300


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_file_sha256(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(KERNEL_1)
    assert _io.file_sha256(str(path)) == sha256_digest(KERNEL_1).split(":")[1]


# -- write_atomic ----------------------------------------------------------


def test_write_atomic_writes_the_file(tmp_path):
    path = str(tmp_path / "release.json")
    _io.write_atomic(path, b'{"schema": 1}', mode=0o600)
    assert read(path) == b'{"schema": 1}'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(str(tmp_path)) == ["release.json"]


def test_write_atomic_replaces_an_existing_file(tmp_path):
    path = tmp_path / "release.json"
    path.write_bytes(b"old")
    _io.write_atomic(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_atomic_leaves_no_temporary_file_when_writing_fails(tmp_path):
    path = tmp_path / "release.json"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        _io.write_atomic(str(path), "not bytes")
    assert os.listdir(str(tmp_path)) == ["release.json"]
    assert path.read_bytes() == b"old"


def test_write_atomic_leaves_no_temporary_file_when_fsync_fails(tmp_path, monkeypatch):
    def no_space(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "release.json"
    monkeypatch.setattr(_io.os, "fsync", no_space)
    with pytest.raises(OSError) as raised:
        _io.write_atomic(str(path), b"new")
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC
    assert os.listdir(str(tmp_path)) == []


def test_a_file_lock_is_private_and_exclusive(tmp_path):

    path = str(tmp_path / "lock")
    with _io.FileLock(path, timeout=5):
        assert os.stat(path).st_mode & 0o777 == 0o600
        with open(path, "a") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(path, "a") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit


def test_a_file_lock_of_an_older_release_becomes_private(tmp_path):
    path = tmp_path / "lock"
    path.write_bytes(b"")
    path.chmod(0o644)
    with _io.FileLock(str(path), timeout=5):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_held_file_lock_times_out(tmp_path):

    path = str(tmp_path / "lock")
    with open(path, "a") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        with pytest.raises(_io.LockTimeout):
            with _io.FileLock(path, timeout=0.3):
                pass


def test_a_file_lock_never_follows_a_symbolic_link(tmp_path):
    target = tmp_path / "elsewhere"
    os.symlink(str(target), str(tmp_path / "lock"))
    with pytest.raises(OSError) as raised:
        with _io.FileLock(str(tmp_path / "lock"), timeout=1):
            pass
    assert raised.value.errno == errno.ELOOP
    assert not target.exists()
