# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The lock of a store on a node, one protocol for both deliveries.

A node may have no ``flock`` (busybox builds without it), and controller
delivery works through separate shell commands, so the lock is a directory:
``<store>/.lock/owner`` names the process that holds it, by pid, its start
time (field 22 of /proc/<pid>/stat) and the boot id. A holder is made ready
beside the store and renamed into place in one step, so ``.lock`` never
exists without its owner. A lock whose process is gone (or whose boot id is
not the current one) is stale: the next run moves it aside, checks it moved
the owner it judged, and takes the lock. With host delivery the holder is
the module's own process; with controller delivery a keeper process on the
node (_node_scripts.py) that the controller renews at every step.

This module is the Python side (host delivery); _node_scripts.py has the
same protocol in sh.
"""

from __future__ import annotations

import errno
import os
import shutil
import time

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import StageError
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

LOCK_NAME = ".lock"
OWNER_NAME = "owner"
# Entries beside .lock while a run takes or breaks it; the leftovers sweep removes dead ones.
TAKING_PREFIX = ".lock-new-"
BREAKING_PREFIX = ".lock-stale-"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_POLL_SECONDS = 0.2
_MAX_OWNER_BYTES = 4096


def boot_id():
    """This boot's id, or '' where the kernel does not tell."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, ValueError):
        return ""


def process_start(pid):
    """When process ``pid`` started (clock ticks since boot, as text), or None when it is not running."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="utf-8", errors="replace") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None
    # After "pid (comm)", the state is field 3, so field 22 (starttime) is at index 19.
    return fields[19] if len(fields) > 19 else None


def owner_text(pid, start, by):
    """The owner file of a holder."""
    return f"pid={pid}\nstart={start}\nboot={boot_id()}\nsince={int(time.time())}\nby={by}\n"


def parse_owner(text):
    """The ``key=value`` fields of an owner file."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def owner_is_alive(owner):
    """Whether the process an owner file names still runs (on this machine, in this boot).

    A boot id or start time this machine cannot read counts as alive: only a
    holder proven gone is ever displaced.
    """
    current_boot = boot_id()
    if owner.get("boot") and current_boot and owner["boot"] != current_boot:
        return False
    pid = owner.get("pid", "")
    if not (pid.isascii() and pid.isdigit()):
        return False
    start = process_start(pid)
    if start is not None:
        return not owner.get("start") or start == owner["start"]
    # No /proc entry: gone, or /proc is not mounted here (a chroot); the kernel still knows.
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def describe_owner(owner):
    """The holder, for an error message."""
    if not owner:
        return "a run whose owner file could not be read"
    since = owner.get("since", "")
    when = (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(since)))
        if since.isascii() and since.isdigit()
        else "an unknown time"
    )
    # What the owner file says came from whoever wrote it: quoted, never raw.
    return f"pid {printable(owner.get('pid', '?'), 20)} ({printable(owner.get('by', 'unknown'), 60)}) since {when}"


def read_owner(lock_dir):
    """The owner fields of the lock directory ``lock_dir``, {} when there is none to read."""
    try:
        fd = os.open(os.path.join(lock_dir, OWNER_NAME), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return {}
    with os.fdopen(fd, "rb") as handle:
        return parse_owner(handle.read(_MAX_OWNER_BYTES).decode("utf-8", "replace"))


class StoreLock:
    """The store's lock, held by this process; waited for at most ``timeout`` seconds.

    Raises StageError naming the holder when it is still held after that.
    """

    def __init__(self, store, timeout, by="host delivery"):
        self.store = store
        self.path = os.path.join(store, LOCK_NAME)
        self.timeout = timeout
        self.by = by
        self._owner = None

    def __enter__(self):
        deadline = time.monotonic() + self.timeout
        while True:
            owner = self._try_take()
            if owner is None:
                return self
            if owner and not owner_is_alive(owner):
                self._break(owner)
                continue
            if time.monotonic() >= deadline:
                raise StageError(
                    f"another run is staging into {self.store}: the lock {self.path} is held by "
                    f"{describe_owner(owner)}, for over {self.timeout}s (lock_timeout)"
                )
            time.sleep(_POLL_SECONDS)

    def __exit__(self, *_exc_info):
        if read_owner(self.path) == self._owner:
            released = os.path.join(self.store, f"{BREAKING_PREFIX}{os.getpid()}-released")
            try:
                os.rename(self.path, released)
            except OSError:
                return
            shutil.rmtree(released, ignore_errors=True)

    def _try_take(self):
        """None when this process now holds the lock; else the owner fields of the holder."""
        pid = os.getpid()
        text = owner_text(pid, process_start(pid) or "", self.by)
        taking = os.path.join(self.store, f"{TAKING_PREFIX}{pid}")
        try:
            if os.path.lexists(taking):
                shutil.rmtree(taking, ignore_errors=True)
            os.mkdir(taking, 0o700)
            fd = os.open(os.path.join(taking, OWNER_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.rename(taking, self.path)
        except OSError as exc:
            shutil.rmtree(taking, ignore_errors=True)
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR, errno.ENOENT):
                raise StageError(f"cannot take the lock {self.path}: {exc.strerror}")
            if os.path.lexists(self.path) and not os.path.isdir(self.path) or os.path.islink(self.path):
                # A lock file of an earlier release (or something planted): never ours to follow.
                os.unlink(self.path)
                return self._try_take()
            return read_owner(self.path)
        self._owner = parse_owner(text)
        return None

    def _break(self, judged):
        """Move a stale lock aside; put it back if, in between, it became another run's."""
        moved = os.path.join(self.store, f"{BREAKING_PREFIX}{os.getpid()}")
        try:
            os.rename(self.path, moved)
        except OSError:
            return  # someone else moved it first
        if read_owner(moved) != judged:
            try:
                os.rename(moved, self.path)
            except OSError:
                pass
            return
        shutil.rmtree(moved, ignore_errors=True)
