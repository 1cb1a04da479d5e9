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
import tempfile

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError, StageError
from ansible_collections.kubesolo.fleet.plugins.module_utils._release import STAGED_FILE_NAMES
from ansible_collections.kubesolo.fleet.plugins.module_utils._store import (
    MAX_RECORD_BYTES,
    RECORD_NAME,
    SPACE_MARGIN_PERCENT,
    digest_name,
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


class NodeCommandError(FleetError):
    code = "node_command_failed"


class NodeStore:
    """The store behind ``dest`` on one node.

    ``shell(script)`` runs a script with the node's /bin/sh and returns (rc,
    stdout, stderr); ``put_file(local, remote)`` copies a file there.
    """

    def __init__(self, shell, put_file, dest):
        self._shell = shell
        self._put_file = put_file
        self.dest = dest.rstrip("/")
        self.store = store_dir(self.dest)

    def run(self, script, what, error=NodeCommandError):
        """The stdout of ``script``; ``error`` (with the script's reason) when it fails."""
        rc, stdout, stderr = self._shell(script)
        if rc != 0:
            reason = scripts.error_reason(stdout, stderr)
            raise error("{} failed on the node (exit {}){}".format(what, rc, ": " + reason if reason else ""))
        return stdout

    def architecture(self):
        return self.run(scripts.ARCHITECTURE, "reading the architecture").strip()

    def current_release(self, rehash=False):
        """The record of the release dest holds on the node, or None.

        Its files must have their recorded sizes (``wc -c``), or with ``rehash``
        their recorded sha256 (``sha256sum``, a full read of the release).
        Refuses a dest that kubesolo.fleet did not create.
        """
        key, measure = ("sha256", scripts.MEASURE_SHA256) if rehash else ("size", scripts.MEASURE_SIZE)
        script = scripts.render(
            scripts.INSPECT_DEST,
            dest=quote(self.dest),
            record=RECORD_NAME,
            max_record=MAX_RECORD_BYTES,
            names=" ".join(STAGED_FILE_NAMES),
            key=key,
            measure=measure,
        )
        state, link, record, measured = None, None, None, {}
        for field, value in scripts.parse_fields(self.run(script, f"inspecting {self.dest}")):
            if field == "state":
                state = value
            elif field == "link":
                link = value
            elif field == "record":
                try:
                    record = parse_record(base64.b64decode(value))
                except ValueError:
                    record = None
            elif field == key:
                name, _sep, found = value.partition(" ")
                measured[name] = found.strip()
        if state == "foreign":
            refuse_foreign(self.dest)
        if link is None:
            return None
        managed_release_dir(self.dest, link)
        if not record:
            return None
        files = record["files"]
        if set(files) != set(measured) or any(
            not isinstance(entry, dict) or str(entry.get(key)) != measured[name] for name, entry in files.items()
        ):
            return None
        return record

    def prepare(self, total):
        """A new work directory in the store, after checking there is room for ``total`` bytes plus 10 %."""
        needed_kib = int(space_needed(total) / 1024) + 1
        script = scripts.render(scripts.PREPARE, store=quote(self.store), needed_kib=needed_kib)
        values = dict(scripts.parse_fields(self.run(script, f"preparing {self.store}")))
        if "space" in values:
            raise StageError(
                f"not enough space on the node for {self.dest}: {printable(values['space'])} KiB free, "
                f"{needed_kib} KiB needed "
                f"(the release is {total} bytes, plus {SPACE_MARGIN_PERCENT}% margin); nothing was transferred"
            )
        work = values.get("work", "")
        if not work.startswith(self.store + "/tmp-"):
            raise NodeCommandError(f"the node did not create a staging directory in {self.store}")
        return work

    def put(self, local_path, work, name):
        """Copy a file of the controller into the work directory as ``name``."""
        self._put_file(local_path, f"{work}/{name}")

    def put_record(self, work, record):
        with tempfile.NamedTemporaryFile("wb", suffix=".json") as record_file:
            record_file.write(record_bytes(record))
            record_file.flush()
            self.put(record_file.name, work, RECORD_NAME)

    def remove_work(self, work):
        """Best effort: the work directory of a copy that failed."""
        self._shell(scripts.render(scripts.REMOVE_WORK, work=quote(work)))

    def publish(self, work, manifest_digest, files):
        """Check the copied ``files`` (name -> record entry) by sha256 and publish them at dest."""
        name = digest_name(manifest_digest)
        link_target = f"{os.path.basename(self.store)}/{name}"
        checks = "\n".join(
            "check {} {}".format(quote(entry["sha256"]), quote(file_name)) for file_name, entry in sorted(files.items())
        )
        script = scripts.render(
            scripts.PUBLISH,
            work=quote(work),
            store=quote(self.store),
            dest=quote(self.dest),
            name=name,
            checks=checks,
            names=" ".join(quote(n) for n in sorted(files)),
            target=quote(link_target),
            storebase=quote(os.path.basename(self.store)),
        )
        self.run(script, f"publishing the release at {self.dest}", error=StageError)
