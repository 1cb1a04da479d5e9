#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ab_slot
short_description: Write, switch, commit and roll back the A/B system slots of a KubeSolo OS node
version_added: 0.1.0
description:
  - Drives the A/B update of a KubeSolo OS node with raw shell commands over the connection (busybox
    is enough; no Python on the node). The node boots GRUB from the partition labelled O(efi_label),
    which boots the system slot named by C(active_slot) in its grubenv (slot C(A) or C(B), partitions
    labelled per O(slot_labels)) and falls back to the other slot by itself after three unverified boots.
  - O(state=staged) writes a release staged by M(kubesolo.fleet.update_stage) at O(source) into the
    passive slot under temporary names, syncs, unmounts, reads both files back from the disk and checks
    them against the manifest's digests, then renames them into place and records the release in the
    slot. It refuses while the node runs an unverified trial boot (C(boot_success) is not 1), because the
    passive slot is then the only known-good system (also in check mode). A slot that already holds the
    verified release (read back and hashed, not trusted by its record) is not written again, nor is
    anything written when grubenv already boots the release.
  - O(state=active) switches grubenv to the passive slot once it holds the verified release
    (C(active_slot=<passive>), C(boot_counter=3), C(boot_success=0), other variables kept), writing the
    whole 1024-byte block beside the old one, syncing and renaming it, and reading it back. It records the
    boot id it switched in, so that a later run tells a switch still waiting for its reboot from a boot of
    the new slot. Nothing changes when grubenv already boots the release. In check mode the switch is
    predicted even before the slot is written.
  - O(state=rebooted) reboots the node so that the reboot survives the end of the session and waits,
    at most O(boot_timeout) seconds, until it answers over the connection with a new boot id (a
    forwarded port keeps accepting connections while the node is down, so port state proves nothing).
  - O(state=committed) marks the boot the node runs good (C(boot_success=1), C(boot_counter=3)); later
    boots are the node's own business. O(state=rolled_back) switches grubenv back to the other slot.
  - O(state=info) reports the slots and grubenv without changing anything.
options:
  state:
    description: What to do (see the description).
    type: str
    default: info
    choices: [info, staged, active, committed, rolled_back, rebooted]
  release:
    description:
      - The release, as M(kubesolo.fleet.update_stage) or M(kubesolo.fleet.update_info) return it
        (C(manifest_digest), C(layers), C(metadata)). Its layer digests are what the slot is checked against.
      - Required with O(state=staged) and O(state=active).
    type: dict
  source:
    description: The O(kubesolo.fleet.update_stage#module:dest) where the release is staged on the node.
      Required with O(state=staged).
    type: path
  slot_labels:
    description: File system labels of the system slots.
    type: dict
    default: {A: KSOLOA, B: KSOLOB}
  efi_label:
    description: File system label of the EFI partition that holds GRUB and grubenv.
    type: str
    default: KSOLOEFI
  grubenv_path:
    description: Path of grubenv on the EFI partition.
    type: str
    default: /boot/grub/grubenv
  version_file:
    description: The node's os-release file, whose C(VERSION_ID) is reported.
    type: path
    default: /etc/os-release
  reboot_command:
    description: How the node is rebooted with O(state=rebooted); it runs in the background with SIGHUP ignored,
      so that it survives the end of the session.
    type: str
    default: "sleep 2; reboot"
  boot_timeout:
    description: Seconds to wait for the node to come back with a new boot id.
    type: int
    default: 600
attributes:
  check_mode:
    support: full
    description: Reports the slot it would write and the grubenv change it would make; writes nothing.
  diff_mode:
    support: full
    description: Shows grubenv before and after a switch.
  platform:
    support: full
    platforms: posix
    description: Runs on the controller; the node needs a POSIX shell with busybox tools only.
notes:
  - Runs only raw shell commands on the node; it needs C(findfs) (or C(blkid)), C(mount), C(sha256sum),
    C(base64) and C(df) there, as busybox provides them.
author:
  - kubesolo.fleet maintainers (@kubesolo)
"""

EXAMPLES = r"""
- name: Write the staged release into the passive slot
  kubesolo.fleet.ab_slot:
    state: staged
    release: "{{ staged }}"
    source: /var/lib/kubesolo/update/staged

- name: Boot it next
  kubesolo.fleet.ab_slot:
    state: active
    release: "{{ staged }}"

- name: Reboot and wait for the new boot
  kubesolo.fleet.ab_slot:
    state: rebooted
    boot_timeout: 300

- name: Mark the boot good once the node is healthy
  kubesolo.fleet.ab_slot:
    state: committed
"""

RETURN = r"""
node:
  description: The node's A/B state when the task started.
  returned: success, except with O(state=rebooted)
  type: dict
  contains:
    active_slot: {description: The slot grubenv boots, type: str, sample: A}
    passive_slot: {description: The other slot, type: str, sample: B}
    running_slot: {description: The slot the node runs (differs from active_slot while a switch waits for a reboot), type: str, sample: A}
    boot_counter: {description: Boot attempts left for an unverified slot, type: str, sample: "3"}
    boot_success: {description: Whether the current boot was marked good, type: bool, sample: true}
    switch_pending: {description: grubenv was switched in this boot and the node has not rebooted yet, type: bool, sample: false}
    boot_id: {description: The node's boot id, type: str, sample: 6f0e1c9a-5b1e-4d57-9b0e-2d0c9b1f4a11}
    version: {description: The node's C(VERSION_ID), type: str, sample: v0.2.0}
    slots:
      description: Per slot, the version and manifest digest recorded there (null when none).
      type: dict
      sample: {A: {version: v0.2.0, manifest_digest: "sha256:4f1b..."}, B: {version: null, manifest_digest: null}}
slot:
  description: The slot written, switched to, committed or left as it is.
  returned: success, except with O(state=info) and O(state=rebooted)
  type: str
  sample: B
written:
  description: With O(state=staged), whether the slot was written by this run.
  returned: success
  type: bool
boot_id:
  description: With O(state=rebooted), the new boot id.
  returned: success
  type: str
elapsed:
  description: With O(state=rebooted), seconds from the reboot command to the node answering again.
  returned: success
  type: float
error_code:
  description:
    - On failure, a stable code. V(not_ab_node) (labels or grubenv missing or malformed), V(trial_boot)
      (refused to write during an unverified boot), V(slot_failed) (writing, verifying or switching failed;
      the known-good slot is untouched), V(internal_error).
  returned: failure
  type: str
"""
