# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""A KubeSolo OS node's A/B system slots and grubenv, driven from the controller over its shell.

ABNode reads the node's state (inspect), writes a staged release into a
slot, verified against the manifest's digests by reading it back from the
disk (write_slot), and switches grubenv (write_grubenv). Every step is one
sh script of _ab_scripts.py; nothing needs Python on the node. The plan_*
functions decide, from what inspect found, what a state of the ab_slot
action asks of the node (a SlotChange), so that every state is idempotent
and resumes whatever an earlier run left.

A switch also records the boot id it was made in (``SWITCH_VARIABLE``), so
a later run can tell "switched, not rebooted yet" from "booted into the new
slot and not verified yet", whatever happened to the controller in between.
"""

from __future__ import annotations

import base64
import hashlib
import json

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest
from ansible_collections.kubesolo.fleet.plugins.module_utils._release import STAGED_FILE_NAMES, STAGED_FILES
from ansible_collections.kubesolo.fleet.plugins.module_utils._store import space_needed
from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _ab_scripts as scripts
from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _grubenv
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_scripts import error_reason, parse_fields, quote
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_scripts import render as render_script

SLOT_RECORD = "kubesolo-fleet-release.json"
SWITCH_VARIABLE = "kubesolo_fleet_switch_boot"
_MAX_RECORD_BYTES = 65536


class SlotError(FleetError):
    """Writing or switching a slot failed on the node; the known-good slot is untouched."""

    code = "slot_failed"


class TrialBootError(SlotError):
    """The node runs an unverified boot: its other slot is the only known-good system."""

    code = "trial_boot"


class Layout:
    """Where a node keeps its slots and grubenv (the role's kubesolo_fleet_* layout variables)."""

    def __init__(self, slot_labels, efi_label, grubenv_path, version_file="/etc/os-release"):
        self.slot_labels = dict(slot_labels)
        self.efi_label = efi_label
        self.grubenv_path = "/" + grubenv_path.lstrip("/")
        self.version_file = version_file


class ReleaseFiles:
    """What a slot must hold for one release: file name -> (sha256 hex, size), from its manifest."""

    def __init__(self, release):
        try:
            self.manifest_digest = release["manifest_digest"]
            self.version = release.get("metadata", {}).get("version", "")
            layers = release["layers"]
            self.files = {}
            for media_type, name in STAGED_FILES:
                (layer,) = [entry for entry in layers if entry.get("media_type") == media_type]
                algorithm, hexdigest = parse_digest(layer["digest"])
                if algorithm != "sha256":
                    raise SlotError(f"{name} has a {algorithm} digest; slots are verified with sha256sum only")
                self.files[name] = (hexdigest, int(layer["size"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SlotError(f"release must be update_stage's result (manifest_digest, layers): {exc}")

    def record(self):
        return {
            "manifest_digest": self.manifest_digest,
            "version": self.version,
            "files": {name: {"sha256": sha, "size": size} for name, (sha, size) in self.files.items()},
        }

    @property
    def total(self):
        return sum(size for _sha, size in self.files.values())


class SlotContent:
    """What inspect found in one slot: its record (or None) and its file sizes."""

    def __init__(self, record=None, sizes=None):
        self.record = record
        self.sizes = sizes or {}

    @property
    def manifest_digest(self):
        return (self.record or {}).get("manifest_digest")

    @property
    def version(self):
        return (self.record or {}).get("version")

    def matches_sizes(self, release):
        return self.manifest_digest == release.manifest_digest and all(
            self.sizes.get(name) == size for name, (_sha, size) in release.files.items()
        )


class NodeState:
    """inspect()'s answer."""

    def __init__(self, boot_id, version, boot, slots):
        self.boot_id = boot_id
        self.version = version
        self.boot = boot  # a _grubenv.BootState
        self.slots = slots  # {"A": SlotContent, "B": SlotContent}

    @property
    def switch_pending(self):
        """grubenv was switched in this very boot: the node has not rebooted into it yet."""
        return not self.boot.boot_success and self.boot.values.get(SWITCH_VARIABLE) == self.boot_id

    @property
    def running_slot(self):
        """The slot the node runs: grubenv's, unless a switch is pending."""
        return self.boot.passive_slot if self.switch_pending else self.boot.active_slot

    def summary(self):
        return dict(
            self.boot.summary(),
            running_slot=self.running_slot,
            switch_pending=self.switch_pending,
            boot_id=self.boot_id,
            version=self.version,
            slots={
                slot: {"version": c.version, "manifest_digest": c.manifest_digest} for slot, c in self.slots.items()
            },
        )


class ABNode:
    """One node's slots. ``shell(script)`` returns (rc, stdout, stderr) of the node's /bin/sh."""

    def __init__(self, shell, layout):
        self._shell = shell
        self.layout = layout

    def _run(self, template, what, error=SlotError, **values):
        script = render_script(
            template,
            efi_label=quote(self.layout.efi_label),
            grubenv=quote(self.layout.grubenv_path),
            names=" ".join(STAGED_FILE_NAMES),
            record=SLOT_RECORD,
            **values,
        )
        rc, stdout, stderr = self._shell(script)
        if rc != 0:
            reason = error_reason(stdout, stderr)
            raise error(f"{what} failed on the node (exit {rc}){': ' + reason if reason else ''}")
        return parse_fields(stdout)

    def inspect(self):
        fields = self._run(
            scripts.INSPECT,
            "reading the A/B state",
            label_a=quote(self.layout.slot_labels["A"]),
            label_b=quote(self.layout.slot_labels["B"]),
            version_file=quote(self.layout.version_file),
        )
        values = dict(fields)
        if values.get("efi") != "1":
            raise _grubenv.GrubenvError(
                f"the node has no partition labelled {self.layout.efi_label} (not a KubeSolo A/B node)"
            )
        if "grubenv" not in values:
            raise _grubenv.GrubenvError(
                f"the node has no grubenv at {self.layout.grubenv_path} on {self.layout.efi_label}"
            )
        missing = [self.layout.slot_labels[slot] for slot in _grubenv.SLOTS if values.get(f"slot_{slot}") != "1"]
        if missing:
            raise _grubenv.GrubenvError(
                f"the node has no partition labelled {' or '.join(missing)} (not a KubeSolo A/B node)"
            )
        boot = _grubenv.BootState(_grubenv.parse(_decode(values["grubenv"])))
        slots = {}
        for slot in _grubenv.SLOTS:
            record = None
            if f"slot_{slot}_record" in values:
                try:
                    record = json.loads(_decode(values[f"slot_{slot}_record"]))
                except ValueError:
                    record = None
            sizes = {}
            for field, value in fields:
                if field == f"slot_{slot}_size":
                    name, _sep, size = value.partition(" ")
                    sizes[name] = int(size) if size.strip().isascii() and size.strip().isdigit() else None
            slots[slot] = SlotContent(record if isinstance(record, dict) else None, sizes)
        return NodeState(values.get("boot_id", ""), values.get("version", ""), boot, slots)

    def slot_verified(self, state, slot, release):
        """Whether ``slot`` holds ``release``, every file checked against the manifest (a full read)."""
        if not state.slots[slot].matches_sizes(release):
            return False
        fields = self._run(scripts.HASH_SLOT, f"verifying slot {slot}", label=quote(self.layout.slot_labels[slot]))
        hashes = dict(value.partition(" ")[::2] for field, value in fields if field == "slot_sha256")
        return all(hashes.get(name) == sha for name, (sha, _size) in release.files.items())

    @staticmethod
    def check_writable(state, slot):
        """Raise unless ``slot`` may be written: the passive slot of a node whose boot is verified."""
        if slot != state.boot.passive_slot or state.switch_pending:
            raise SlotError(f"slot {slot} is not the passive slot of a settled node; refusing to write it")
        if not state.boot.boot_success:
            raise TrialBootError(
                f"the node runs an unverified boot of slot {state.boot.active_slot} (boot_success is not 1): "
                f"slot {slot} is the only known-good system, so it is not overwritten; verify or roll back first"
            )

    def write_slot(self, state, slot, release, source):
        """Write the staged files at ``source`` into ``slot`` (the passive one) and verify them there."""
        self.check_writable(state, slot)
        checks = "\n".join(f"check {sha} {name}" for name, (sha, _size) in sorted(release.files.items()))
        record = base64.b64encode(json.dumps(release.record(), sort_keys=True).encode("utf-8")).decode("ascii")
        self._run(
            scripts.WRITE_SLOT,
            f"writing slot {slot}",
            label=quote(self.layout.slot_labels[slot]),
            active=state.boot.active_slot,
            source=quote(source),
            needed_kib=int(space_needed(release.total) / 1024) + 1,
            checks=checks,
            record_data=quote(record),
        )

    def write_grubenv(self, values):
        """Replace grubenv with ``values`` atomically and check what the disk holds afterwards."""
        block = _grubenv.render(values)
        fields = dict(
            self._run(
                scripts.WRITE_GRUBENV,
                "writing grubenv",
                block=quote(base64.b64encode(block).decode("ascii")),
            )
        )
        if fields.get("env_written") != hashlib.sha256(block).hexdigest():
            raise SlotError(f"grubenv on {self.layout.efi_label} does not read back as written")

    def boot_id(self):
        rc, stdout, _stderr = self._shell(scripts.BOOT_ID)
        return stdout.strip() if rc == 0 else ""


class SlotChange:
    """What reaching a state takes: the slot concerned, whether to write the release into it,
    and the grubenv variables afterwards (None: grubenv stays as it is)."""

    def __init__(self, state, slot, write=False, values=None):
        self.state = state
        self.slot = slot
        self.write = write
        self.values = values

    @property
    def switches(self):
        return self.values is not None and self.values != self.state.boot.values

    @property
    def changed(self):
        return self.write or self.switches


def plan_staged(node, state, release):
    """The release in a slot: one grubenv boots already, or the passive one, written unless it
    holds the verified release. Refused (also in check mode) when the passive slot may not be written."""
    if _boots_already(state, release):
        return SlotChange(state, state.boot.active_slot)
    passive = state.boot.passive_slot
    node.check_writable(state, passive)
    return SlotChange(state, passive, write=not node.slot_verified(state, passive, release))


def plan_active(node, state, release, check_mode=False):
    """grubenv boots the slot that holds the verified release next, with three unverified attempts.

    In check mode the slot may not be written yet: the plan is the switch that would follow."""
    if _boots_already(state, release):
        return SlotChange(state, state.boot.active_slot)
    passive = state.boot.passive_slot
    if not check_mode and not node.slot_verified(state, passive, release):
        raise SlotError(f"slot {passive} does not hold the verified release {release.manifest_digest}; stage it first")
    return SlotChange(state, passive, values=_switched(state, passive))


def plan_committed(state):
    """The boot the node runs marked good, and no switch pending any more."""
    if state.switch_pending:
        raise SlotError("grubenv was switched in this boot and the node has not rebooted yet; nothing to commit")
    values = state.boot.committed()
    values.pop(SWITCH_VARIABLE, None)
    return SlotChange(state, state.boot.active_slot, values=values)


def plan_rolled_back(state):
    """grubenv boots the other slot again (the known-good one), for a release that failed its checks."""
    other = state.boot.passive_slot
    return SlotChange(state, other, values=_switched(state, other))


def _boots_already(state, release):
    """grubenv boots the release: the node runs it, or an earlier run switched to it."""
    return state.slots[state.boot.active_slot].manifest_digest == release.manifest_digest


def _switched(state, slot):
    values = state.boot.activated(slot)
    values[SWITCH_VARIABLE] = state.boot_id  # tells "switched, not rebooted" from "booted, not verified"
    return values


def _decode(text):
    try:
        return base64.b64decode(text)
    except ValueError:
        return b""
