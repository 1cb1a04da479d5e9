# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The store behind ``dest`` on a node without Python, driven from the controller over the connection.

Every step is one sh script (_node_scripts.py) run through the connection's
shell, and files arrive through its file transfer. The layout and the release
record are those of host delivery (module_utils/_store.py), so either
delivery can take over a store the other wrote.
"""

from __future__ import annotations

import base64
import os
import socket
import time

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError, StageError
from ansible_collections.kubesolo.fleet.plugins.module_utils._node_lock import (
    describe_owner,
    owner_is_alive,
    process_start,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest
from ansible_collections.kubesolo.fleet.plugins.module_utils._release import STAGED_FILE_NAMES
from ansible_collections.kubesolo.fleet.plugins.module_utils._store import (
    MAX_RECORD_BYTES,
    PARTIAL_PREFIX,
    RECORD_NAME,
    SPACE_MARGIN_PERCENT,
    PathFacts,
    check_location,
    digest_name,
    file_expectations,
    managed_release_dir,
    parse_record,
    record_bytes,
    refuse_foreign,
    space_needed,
    store_dir,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable
from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _node_scripts as scripts
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_scripts import quote

# A controller run renews its lock at every step; one killed without a chance to release
# it holds the node for at most this long (less when it reruns from the same controller).
LOCK_LEASE_SECONDS = 1800
_LOCK_POLL_SECONDS = 1.0
_MAX_CLEARED_LOCKS = 5


class NodeCommandError(FleetError):
    code = "node_command_failed"


class NodeStore:
    """The store behind ``dest`` on one node.

    ``shell(script, data=None)`` runs a script with the node's /bin/sh, ``data``
    (bytes) on its stdin, and returns (rc, stdout, stderr); it raises
    _node_transfer.NodeLinkError when the connection breaks.
    """

    def __init__(self, shell, dest):
        self._shell = shell
        self.dest = dest.rstrip("/")
        self.store = store_dir(self.dest)

    def shell(self, script):
        """(rc, stdout, stderr) of ``script``, whatever its exit status."""
        return self._shell(script)

    def run(self, script, what, error=NodeCommandError, data=None):
        """The stdout of ``script`` (``data`` on its stdin); ``error`` (with the script's reason) when it fails."""
        rc, stdout, stderr = self._shell(script, data)
        if rc != 0:
            reason = scripts.error_reason(stdout, stderr)
            raise error("{} failed on the node (exit {}){}".format(what, rc, ": " + reason if reason else ""))
        return stdout

    def architecture(self):
        return self.run(scripts.ARCHITECTURE, "reading the architecture").strip()

    def current_release(self, rehash=False, layers=None):
        """The record of the release dest holds on the node, or None.

        Its files must have their recorded sizes (``stat -c %s``, which reads
        no data, where busybox ``wc -c`` would read every byte), or with
        ``rehash`` their digests (``sha256sum``, a full read of the release):
        for the release being staged (``layers``), the manifest's. Refuses a dest that
        kubesolo.fleet did not create, and a store another account could change.
        """
        algorithms = sorted({"sha256"} | {parse_digest(staged.layer["digest"])[0] for staged in layers or ()})
        script = scripts.render(
            scripts.INSPECT_DEST,
            dest=quote(self.dest),
            store=quote(self.store),
            record=RECORD_NAME,
            max_record=MAX_RECORD_BYTES,
            names=" ".join(STAGED_FILE_NAMES),
            algorithms=" ".join(algorithms) if rehash else "",
        )
        state, link, record, measured = None, None, None, {}
        fields = scripts.parse_fields(self.run(script, f"inspecting {self.dest}"))
        self.check_location(fields)
        for field, value in fields:
            if field == "state":
                state = value
            elif field == "link":
                link = value
            elif field == "record":
                try:
                    record = parse_record(base64.b64decode(value))
                except ValueError:
                    record = None
            elif field == "size" or field in algorithms:
                name, _sep, found = value.partition(" ")
                measured[(field, name)] = found.strip()
        if state == "foreign":
            refuse_foreign(self.dest)
        if link is None:
            return None
        managed_release_dir(self.dest, link)
        if not record:
            return None
        expected = file_expectations(record, layers)
        if expected is None:
            return None
        for name, (size, algorithm, hexdigest) in expected.items():
            if measured.get(("size", name)) != str(size):
                return None
            if rehash and measured.get((algorithm, name)) != hexdigest:
                return None
        if {name for _field, name in measured} != set(expected):
            return None
        return record

    def check_location(self, fields):
        """Refuse a store another account could change, from the facts a script printed."""
        chain, store_facts, euid = [], None, None
        for field, value in fields:
            if field in ("stat", "store"):
                parts = value.split(" ", 2)
                try:
                    uid, mode = int(parts[0]), int(parts[1], 16)
                except (IndexError, ValueError):
                    raise NodeCommandError(
                        f"the node described {self.store} in a way that cannot be read: {value[:100]}"
                    )
                if field == "stat":
                    chain.append(PathFacts(parts[2] if len(parts) > 2 else "?", uid, mode))
                else:
                    store_facts = PathFacts(self.store, uid, mode)
            elif field == "euid" and value.strip().isascii() and value.strip().isdigit():
                euid = int(value)
        if euid is None:
            raise NodeCommandError("the node did not say which user runs the staging commands (id -u)")
        check_location(self.store, chain, store_facts, euid)

    def lock(self, timeout):
        """The store's lock on the node (a NodeLock), waited for at most ``timeout`` seconds."""
        return NodeLock(self, timeout)

    def prepare(self, total, manifest_digest):
        """The release's work directory in the store (``partial-<digest>``, where what an
        interrupted run transferred waits), after checking there is room for ``total`` bytes
        plus 10 % beyond what it holds.

        Call it holding the lock: it removes what dead runs left in the store, and the partial
        directories of other releases.
        """
        needed_kib = int(space_needed(total) / 1024) + 1
        work = f"{self.store}/{PARTIAL_PREFIX}{digest_name(manifest_digest)}"
        keep = " ".join(name + suffix for name in STAGED_FILE_NAMES for suffix in ("", ".part"))
        script = scripts.render(
            scripts.PREPARE, store=quote(self.store), work=quote(work), keep=keep, needed_kib=needed_kib
        )
        values = dict(scripts.parse_fields(self.run(script, f"preparing {self.store}")))
        if "space" in values:
            raise StageError(
                f"not enough space on the node for {self.dest}: {printable(values['space'])} KiB free, "
                f"{needed_kib} KiB needed "
                f"(the release is {total} bytes, plus {SPACE_MARGIN_PERCENT}% margin); nothing was transferred"
            )
        if values.get("work") != work:
            raise NodeCommandError(f"the node did not create the staging directory {work}")
        return work

    def layer_state(self, work, name, size):
        """What ``work`` holds of layer file ``name``: {"done" or "part": (bytes, sha256 hex)}."""
        script = scripts.render(scripts.LAYER_STATE, work=quote(work), name=quote(name), size=int(size))
        state = {}
        for kind, value in scripts.parse_fields(self.run(script, f"inspecting {work}/{name}")):
            held, _sep, sha256 = value.partition(" ")
            if kind in ("done", "part") and held.isascii() and held.isdigit():
                state[kind] = (int(held), sha256.strip())
        return state

    def append(self, work, name, offset, chunk):
        """Append ``chunk`` to ``work/name.part`` at ``offset``: (bytes the part holds, sha256 hex of what arrived)."""
        part = f"{work}/{name}.part"
        script = scripts.render(scripts.APPEND_CHUNK, part=quote(part), offset=int(offset))
        rc, stdout, stderr = self._shell(script, chunk)
        fields = dict(scripts.parse_fields(stdout))
        held = fields.get("size", "")
        if rc != 0 or not (held.isascii() and held.isdigit()):
            reason = scripts.error_reason(stdout, stderr)
            raise StageError(f"writing {part} failed on the node (exit {rc}){': ' + reason if reason else ''}")
        held = int(held)
        if "sum" in fields and held < offset + len(chunk):
            # The whole chunk arrived (the link held), but not all of it reached the disk.
            reason = scripts.error_reason("", stderr) or "the node wrote less than it received"
            raise StageError(f"writing {part} failed on the node: {reason}")
        return held, fields.get("sum", "")

    def complete_layer(self, work, name, size):
        """``work/name.part`` (or an already renamed ``work/name``) becomes ``work/name`` of ``size`` bytes."""
        script = scripts.render(scripts.COMPLETE_LAYER, work=quote(work), name=quote(name), size=int(size))
        self.run(script, f"completing {work}/{name}", error=StageError)

    def remove(self, work, file_name):
        self.run(scripts.render(scripts.REMOVE_FILE, path=quote(f"{work}/{file_name}")), f"removing {work}/{file_name}")

    def put_record(self, work, record):
        """Write the release record into the work directory (through the shell: it is small)."""
        data = record_bytes(record)
        script = scripts.render(scripts.WRITE_FILE, path=quote(f"{work}/{RECORD_NAME}"))
        self.run(script, f"writing {work}/{RECORD_NAME}", error=StageError, data=data)

    def publish(self, work, manifest_digest, files, verified=()):
        """Check the ``files`` (name -> record entry) and publish them at dest: by sha256, or by
        size for those in ``verified`` (hashed as they arrived)."""
        name = digest_name(manifest_digest)
        link_target = f"{os.path.basename(self.store)}/{name}"
        checks = "\n".join(
            "check_size {} {}".format(int(entry["size"]), quote(file_name))
            if file_name in verified
            else "check {} {}".format(quote(entry["sha256"]), quote(file_name))
            for file_name, entry in sorted(files.items())
        )
        script = scripts.render(
            scripts.PUBLISH,
            work=quote(work),
            store=quote(self.store),
            dest=quote(self.dest),
            name=name,
            checks=checks,
            hashed=" ".join(quote(n) for n in sorted(files) if n not in verified),
            target=quote(link_target),
            storebase=quote(os.path.basename(self.store)),
        )
        self.run(script, f"publishing the release at {self.dest}", error=StageError)


class NodeLock:
    """The store's lock on a node (module_utils/_node_lock.py has the protocol), held by a keeper
    process there on behalf of this controller process; ``renew()`` before every long step."""

    def __init__(self, node, timeout):
        self.node = node
        self.timeout = timeout
        self.keeper = None  # (pid, start) of the keeper on the node
        pid = os.getpid()
        self.controller = f"{socket.gethostname()} {pid} {process_start(pid) or ''}"

    def _render(self, template, keeper=None):
        pid, start = keeper or self.keeper or ("", "")
        return scripts.render(
            template,
            store=quote(self.node.store),
            lease=LOCK_LEASE_SECONDS,
            controller=quote(self.controller),
            # Digits or nothing (checked), so they can stand inside the scripts' double quotes.
            pid=pid if pid.isascii() and pid.isdigit() else "",
            start=start if start.isascii() and start.isdigit() else "",
        )

    def _run(self, template, what, keeper=None):
        return dict(scripts.parse_fields(self.node.run(self._render(template, keeper), what)))

    def __enter__(self):
        deadline = time.monotonic() + self.timeout
        cleared = 0  # stale locks cleared: each is progress, but a bounded number of them
        while True:
            fields = self._run(scripts.ACQUIRE_LOCK, f"locking {self.node.store}")
            if "store" not in fields:
                raise NodeCommandError(f"the node did not create {self.node.store}")
            self.node.check_location(fields.items())
            if "held" in fields:
                self.keeper = _keeper(fields["held"])
                return self
            owner = {key[len("owner_") :]: value for key, value in fields.items() if key.startswith("owner_")}
            if cleared < _MAX_CLEARED_LOCKS and ("retry" in fields or _controller_gone(owner)):
                if "retry" not in fields:
                    what = f"clearing a stale lock in {self.node.store}"
                    self._run(scripts.BREAK_LOCK, what, (owner["pid"], owner.get("start", "")))
                cleared += 1
                continue
            if time.monotonic() >= deadline:
                raise StageError(
                    f"another run is staging into {self.node.store} on the node: its lock is held by "
                    f"{describe_owner(owner)}, for over {self.timeout}s (lock_timeout)"
                )
            time.sleep(_LOCK_POLL_SECONDS)

    def renew(self):
        """A fresh lease for the lock; StageError when it is no longer ours."""
        fields = self._run(scripts.RENEW_LOCK, f"renewing the lock of {self.node.store}")
        if "held" not in fields:
            self.keeper = None
            raise StageError(
                f"lost the lock of {self.node.store} on the node (not renewed for {LOCK_LEASE_SECONDS}s, "
                f"or removed by hand); nothing was published"
            )
        self.keeper = _keeper(fields["held"])

    def __exit__(self, *_exc_info):
        if self.keeper:
            self.node.shell(self._render(scripts.RELEASE_LOCK))  # best effort: a lost lock goes stale
            self.keeper = None


def _keeper(held):
    pid, _sep, start = held.partition(" ")
    return pid, start


def _controller_gone(owner):
    """Whether the lock's holder is a controller run on this machine that is gone: the keeper
    it left on the node would otherwise hold the lock for the rest of its lease."""
    host, _sep, rest = owner.get("controller", "").partition(" ")
    pid, _sep, start = rest.partition(" ")
    if (
        not owner.get("pid")
        or host != socket.gethostname()
        or not (pid.isascii() and pid.isdigit())
        or int(pid) == os.getpid()
    ):
        return False
    return not owner_is_alive({"pid": pid, "start": start})
