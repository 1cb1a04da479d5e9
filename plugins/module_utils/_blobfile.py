# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The file a blob download is written to.

A release is hundreds of MiB that must reach the disk before it is published
(the stager fsyncs). Written through the page cache, all of it is still dirty
when the fsync comes, so the disk only starts when the network is done, and
the copy evicts the node's page cache on the way. ``BlobFile`` instead
gathers what arrives in page-aligned buffers and hands each full buffer to a
writer thread that writes it with ``O_DIRECT``: the disk works while the next
buffer fills, and the fsync at the end has almost nothing left to do. Where
the file system refuses ``O_DIRECT`` (or the platform has none), and for the
unaligned ends of a file, the same buffers go through the page cache.

It behaves like a file opened with ``'a+b'``, as much as the registry client
uses: ``write`` appends; ``seek``, ``tell``, ``read`` and ``truncate`` see
every byte written so far. ``reserve`` and ``commit`` let a reader receive
straight into the buffers instead. ``sync`` writes everything out and fsyncs.
"""

from __future__ import annotations

import concurrent.futures
import errno
import mmap
import os
import queue
import threading

# O_DIRECT wants file offsets, lengths and memory aligned to the device's
# logical block size: 4 KiB suits 512-byte and 4 KiB sector disks alike.
ALIGNMENT = 4096
# Two buffers of 2 MiB per file: one fills while the other is written. More or
# larger buffers measured no faster, and memory stays small.
BUFFER_BYTES = 2 * 1024 * 1024
BUFFERS = 2

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class TransferCancelled(Exception):
    """Raised by ``reserve`` and ``write`` once the download was cancelled (another layer failed)."""


def download_in_parallel(download, calls):
    """``download(*args, cancel)`` for every ``args`` of ``calls`` at once, one thread each;
    their results in order.

    Parallel streams let one blob's hashing overlap another's network and disk
    time. The first download to fail sets ``cancel``, so the others stop at
    their next BlobFile write and keep what they wrote for the next run; its
    error (the first in call order, when several fail on their own) is raised.
    """
    cancel = threading.Event()

    def run(args):
        try:
            return download(*args, cancel)
        except BaseException:
            cancel.set()
            raise

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(run, args) for args in calls]
        concurrent.futures.wait(futures)
    errors = [future.exception() for future in futures]
    first = next((error for error in errors if error and not isinstance(error, TransferCancelled)), None)
    if first is not None:
        raise first
    return [future.result() for future in futures]


class BlobFile:
    """A blob's file, written through aligned buffers by a writer thread.

    ``cancel`` (a threading.Event) makes the next ``reserve`` or ``write``
    raise TransferCancelled; what was written before stays in the file.
    """

    def __init__(self, path, cancel=None, new=False):
        self.path = path
        self._cancel = cancel
        # Never through a symbolic link; ``new`` refuses a file that appeared since the caller looked.
        flags = os.O_RDWR | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW | (os.O_EXCL if new else 0)
        self._fd = os.open(path, flags, 0o644)
        self._direct_fd = _open_direct(path)
        self._end = os.fstat(self._fd).st_size  # where the next byte lands, written or buffered
        self._pos = 0
        self.appended = 0  # bytes written through this object
        self._buffer = None
        self._fill = 0
        self._capacity = 0
        self._buffers = []
        self._free = queue.Queue()
        self._pending = queue.Queue()
        self._writer = None
        self._error = None

    @property
    def direct(self):
        """Whether full buffers go to the disk with O_DIRECT."""
        return self._direct_fd is not None

    # -- the file interface of the registry client ---------------------------------

    def reserve(self, size):
        """A writable view of up to ``size`` bytes at the end of the file, for ``commit``.

        A reader can receive straight into it, which saves copying every byte.
        """
        if self._cancel is not None and self._cancel.is_set():
            raise TransferCancelled(f"download of {self.path} cancelled")
        self._raise_writer_error()
        if self._buffer is None:
            self._buffer = self._take_buffer()
            # A buffer ends on an aligned offset, so the next one starts on one.
            self._capacity = BUFFER_BYTES - self._end % ALIGNMENT
        return memoryview(self._buffer)[self._fill : min(self._capacity, self._fill + size)]

    def commit(self, length):
        """Add the first ``length`` bytes of the view ``reserve`` returned to the file."""
        self._fill += length
        self._pos = self._end + self._fill
        self.appended += length
        if self._fill == self._capacity:
            self._hand_over()

    def write(self, data):
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            target = self.reserve(len(view) - done)
            target[:] = view[done : done + len(target)]
            self.commit(len(target))
            done += len(target)
        return done

    def seek(self, offset, whence=os.SEEK_SET):
        self._drain()
        if whence == os.SEEK_END:
            offset += self._end
        elif whence == os.SEEK_CUR:
            offset += self._pos
        if offset < 0:
            raise OSError(errno.EINVAL, "negative seek position", self.path)
        self._pos = offset
        return offset

    def tell(self):
        return self._pos

    def read(self, size=-1):
        self._drain()
        if size is None or size < 0:
            size = max(0, self._end - self._pos)
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        return data

    def truncate(self, size=None):
        self._drain()
        size = self._pos if size is None else size
        os.ftruncate(self._fd, size)
        self._end = size
        return size

    # -- finishing -------------------------------------------------------------------

    def sync(self):
        """Write out every byte and fsync; raises what writing raised."""
        self._drain()
        os.fsync(self._fd)

    def close(self):
        """Write out what is buffered (best effort: a failed write was reported already) and close."""
        try:
            self._drain()
        except OSError:
            pass
        finally:
            if self._writer is not None:
                self._pending.put(None)
                self._writer.join()
                self._writer = None
            for fd in (self._fd, self._direct_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._direct_fd = None
            # Unmapped once nothing refers to them: views from reserve() may live on in a traceback.
            self._buffers = []

    def __enter__(self):
        return self

    def __exit__(self, *_exc_info):
        self.close()

    # -- the writer ------------------------------------------------------------------

    def _take_buffer(self):
        if len(self._buffers) < BUFFERS:
            buffer = mmap.mmap(-1, BUFFER_BYTES)  # anonymous memory is page-aligned
            self._buffers.append(buffer)
            return buffer
        buffer = self._free.get()
        self._raise_writer_error()
        return buffer

    def _hand_over(self):
        """Queue the current buffer for writing at the end of the file."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_pending, name="kubesolo-fleet-writer")
            self._writer.daemon = True
            self._writer.start()
        self._pending.put((self._buffer, self._fill, self._end))
        self._end += self._fill
        self._buffer = None
        self._fill = 0

    def _drain(self):
        """Queue a partly filled buffer, wait until everything queued is written."""
        if self._buffer is not None:
            if self._fill:
                self._hand_over()
            else:
                self._free.put(self._buffer)
                self._buffer = None
        self._pending.join()
        self._raise_writer_error()

    def _raise_writer_error(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write_pending(self):
        while True:
            item = self._pending.get()
            try:
                if item is None:
                    return
                buffer, length, offset = item
                if self._error is None:
                    try:
                        self._write_at(memoryview(buffer)[:length], offset)
                    except OSError as exc:
                        # Without its traceback: its frames would hold a view of the buffer.
                        self._error = exc.with_traceback(None)
                self._free.put(buffer)
            finally:
                self._pending.task_done()

    def _write_at(self, view, offset):
        if self._direct_fd is not None and offset % ALIGNMENT == 0 and len(view) % ALIGNMENT == 0:
            try:
                _pwrite_all(self._direct_fd, view, offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # Opened, but the file system will not write this directly after all.
                os.close(self._direct_fd)
                self._direct_fd = None
        _pwrite_all(self._fd, view, offset)


def _open_direct(path):
    """A second, O_DIRECT descriptor of ``path``, or None where that is refused."""
    if not _O_DIRECT:
        return None
    try:
        return os.open(path, os.O_WRONLY | _O_DIRECT | _O_CLOEXEC | _O_NOFOLLOW)
    except OSError:
        return None


def _pwrite_all(fd, view, offset):
    while len(view):
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
