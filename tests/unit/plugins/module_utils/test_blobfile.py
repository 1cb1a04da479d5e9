# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""BlobFile on a real temporary file system: content, O_DIRECT use and its fallbacks, errors."""

from __future__ import annotations

import errno
import os
import random
import threading

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _blobfile
from ansible_collections.kubesolo.fleet.plugins.module_utils._blobfile import (
    ALIGNMENT,
    BUFFER_BYTES,
    BlobFile,
    TransferCancelled,
)

MIB = 1024 * 1024


def random_bytes(size, seed):
    return random.Random(seed).randbytes(size)


def write_in_pieces(handle, data, seed, largest=MIB):
    """Write ``data`` in pieces of random sizes (1 byte to ``largest``)."""
    pieces = random.Random(seed)
    done = 0
    while done < len(data):
        step = pieces.randint(1, largest)
        assert handle.write(data[done : done + step]) == len(data[done : done + step])
        done += step


def direct_io_possible(directory):
    try:
        fd = os.open(os.path.join(str(directory), "probe"), os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True


@pytest.fixture
def pwrites(monkeypatch):
    """Every os.pwrite of BlobFile as (fd, length, offset)."""
    calls = []
    real = os.pwrite

    def recording(fd, data, offset):
        calls.append((fd, len(data), offset))
        return real(fd, data, offset)

    monkeypatch.setattr(_blobfile.os, "pwrite", recording)
    return calls


@pytest.mark.parametrize("size", [0, 1, ALIGNMENT, BUFFER_BYTES - 1, BUFFER_BYTES, 3 * BUFFER_BYTES + 12345])
def test_the_file_holds_exactly_what_was_written(tmp_path, size):
    data = random_bytes(size, size)
    path = str(tmp_path / "blob")
    with BlobFile(path) as handle:
        write_in_pieces(handle, data, seed=size)
        assert handle.tell() == size
        handle.sync()
        assert handle.appended == size
    with open(path, "rb") as handle:
        assert handle.read() == data


def test_full_buffers_go_to_the_disk_with_o_direct_where_the_file_system_takes_it(tmp_path, pwrites):
    if not direct_io_possible(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    data = random_bytes(2 * BUFFER_BYTES + 100, 1)
    with BlobFile(str(tmp_path / "blob")) as handle:
        assert handle.direct
        direct_fd = handle._direct_fd
        handle.write(data)
        handle.sync()
    direct = [(length, offset) for fd, length, offset in pwrites if fd == direct_fd]
    assert direct == [(BUFFER_BYTES, 0), (BUFFER_BYTES, BUFFER_BYTES)]
    # The unaligned tail goes through the page cache.
    assert [(length, offset) for fd, length, offset in pwrites if fd != direct_fd] == [(100, 2 * BUFFER_BYTES)]


def test_appending_to_an_unaligned_file_realigns_after_one_buffer(tmp_path, pwrites):
    if not direct_io_possible(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    path = str(tmp_path / "blob")
    head, rest = random_bytes(1000, 2), random_bytes(2 * BUFFER_BYTES, 3)
    with open(path, "wb") as handle:
        handle.write(head)
    with BlobFile(path) as handle:
        direct_fd = handle._direct_fd
        handle.seek(0, os.SEEK_END)
        assert handle.tell() == 1000
        handle.write(rest)
        handle.sync()
    assert pwrites[0] == (pwrites[0][0], BUFFER_BYTES - 1000, 1000)
    assert pwrites[0][0] != direct_fd
    assert pwrites[1] == (direct_fd, BUFFER_BYTES, BUFFER_BYTES)
    with open(path, "rb") as handle:
        assert handle.read() == head + rest


def test_a_file_system_without_o_direct_is_written_through_the_page_cache(tmp_path, monkeypatch):
    real_open = os.open

    def refusing(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(_blobfile.os, "open", refusing)
    data = random_bytes(BUFFER_BYTES * 2 + 7, 4)
    path = str(tmp_path / "blob")
    with BlobFile(path) as handle:
        assert not handle.direct
        write_in_pieces(handle, data, seed=4)
        handle.sync()
    with open(path, "rb") as handle:
        assert handle.read() == data


def test_a_platform_without_o_direct_is_written_through_the_page_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(_blobfile, "_O_DIRECT", 0)
    data = random_bytes(BUFFER_BYTES + 1, 5)
    path = str(tmp_path / "blob")
    with BlobFile(path) as handle:
        assert not handle.direct
        handle.write(data)
        handle.sync()
    with open(path, "rb") as handle:
        assert handle.read() == data


def test_a_direct_write_refused_after_opening_falls_back_for_the_rest(tmp_path, monkeypatch):
    if not direct_io_possible(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    real = os.pwrite
    refused = []

    def refuse_direct(fd, data, offset):
        if handle._direct_fd is not None and fd == handle._direct_fd:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(_blobfile.os, "pwrite", refuse_direct)
    data = random_bytes(3 * BUFFER_BYTES, 6)
    path = str(tmp_path / "blob")
    handle = BlobFile(path)
    with handle:
        handle.write(data)
        handle.sync()
        assert not handle.direct
    assert refused == [0]
    with open(path, "rb") as result:
        assert result.read() == data


def test_a_write_error_is_raised_and_the_file_keeps_a_prefix(tmp_path, monkeypatch):
    real = os.pwrite
    written = []

    def full_after_one_buffer(fd, data, offset):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        return real(fd, data, offset)

    monkeypatch.setattr(_blobfile.os, "pwrite", full_after_one_buffer)
    data = random_bytes(4 * BUFFER_BYTES, 7)
    path = str(tmp_path / "blob")
    with pytest.raises(OSError) as raised:
        with BlobFile(path) as handle:
            write_in_pieces(handle, data, seed=7)
            handle.sync()
    assert raised.value.errno == errno.ENOSPC
    with open(path, "rb") as result:
        kept = result.read()
    assert kept == data[: written[0]]


def test_a_cancelled_download_stops_at_the_next_write_and_keeps_what_came_before(tmp_path):
    cancel = threading.Event()
    data = random_bytes(BUFFER_BYTES + 5000, 8)
    path = str(tmp_path / "blob")
    with BlobFile(path, cancel) as handle:
        handle.write(data)
        cancel.set()
        with pytest.raises(TransferCancelled):
            handle.write(b"more")
    with open(path, "rb") as result:
        assert result.read() == data


def test_close_releases_the_descriptors_and_stops_the_writer(tmp_path):
    handle = BlobFile(str(tmp_path / "blob"))
    handle.write(random_bytes(BUFFER_BYTES * 2, 9))
    descriptors = [fd for fd in (handle._fd, handle._direct_fd) if fd is not None]
    writer = handle._writer
    handle.close()
    assert not writer.is_alive()
    for fd in descriptors:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_it_reads_seeks_and_truncates_like_a_file_opened_for_appending(tmp_path):
    """The same calls on a BlobFile and on open('a+b') give the same answers and the same file."""
    head = random_bytes(3000, 10)
    body = random_bytes(BUFFER_BYTES + 3 * ALIGNMENT, 11)
    answers = []
    for name, opener in (("blob", BlobFile), ("reference", lambda path: open(path, "a+b", buffering=0))):
        path = str(tmp_path / name)
        with open(path, "wb") as handle:
            handle.write(head)
        with opener(path) as handle:
            steps = [
                handle.seek(0, os.SEEK_END),
                handle.tell(),
                handle.seek(0),
                handle.read(100),
                handle.tell(),
                handle.read(),
                handle.write(body),
                handle.tell(),
                handle.seek(10),
                handle.read(5),
                handle.seek(0),
                handle.truncate(),
                handle.tell(),
                handle.write(body[:5000]),
                handle.seek(0, os.SEEK_END),
                handle.seek(0),
                handle.read(),
            ]
        with open(path, "rb") as handle:
            answers.append((steps, handle.read()))
    assert answers[0] == answers[1]


def test_reserve_and_commit_receive_in_place_what_write_would_copy(tmp_path, pwrites):
    """A reader fills the views reserve() gives (less than asked, at times), commit() takes them."""
    data = random_bytes(3 * BUFFER_BYTES + 999, 12)
    pieces = random.Random(12)
    path = str(tmp_path / "blob")
    with BlobFile(path) as handle:
        done = 0
        while done < len(data):
            view = handle.reserve(pieces.randint(1, MIB))
            assert 0 < len(view) <= BUFFER_BYTES
            filled = pieces.randint(1, min(len(view), len(data) - done))
            view[:filled] = data[done : done + filled]
            handle.commit(filled)
            done += filled
        handle.sync()
        assert handle.appended == len(data)
    with open(path, "rb") as result:
        assert result.read() == data
    # Whole buffers still go out as whole, aligned writes.
    assert [(length, offset) for _fd, length, offset in pwrites][:3] == [
        (BUFFER_BYTES, 0),
        (BUFFER_BYTES, BUFFER_BYTES),
        (BUFFER_BYTES, 2 * BUFFER_BYTES),
    ]


def test_a_cancelled_download_stops_at_the_next_reserve(tmp_path):
    cancel = threading.Event()
    with BlobFile(str(tmp_path / "blob"), cancel) as handle:
        handle.reserve(10)
        cancel.set()
        with pytest.raises(TransferCancelled):
            handle.reserve(10)
