# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ABNode's reading of a node and its refusals, against scripted node answers.

The scripts themselves run against real VM nodes in tests/e2e/vm; here the node is a function that
answers each script the way a node would.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _ab_node, _grubenv

KERNEL = b"kernel" * 100
INITRAMFS = b"initramfs" * 100
BOOT_ID = "1e0c8a7e-0000-4000-8000-000000000001"


def release():
    return {
        "manifest_digest": "sha256:" + "a" * 64,
        "metadata": {"version": "v0.3.0"},
        "layers": [
            {
                "media_type": "application/vnd.kubesolo.os.kernel.v1+octet-stream",
                "digest": digest(KERNEL),
                "size": len(KERNEL),
            },
            {
                "media_type": "application/vnd.kubesolo.os.initramfs.v1+gzip",
                "digest": digest(INITRAMFS),
                "size": len(INITRAMFS),
            },
        ],
    }


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64(data):
    return base64.b64encode(data).decode()


class Node:
    """Answers the A/B scripts from ``env`` (grubenv variables) and ``slots`` ({slot: (record, files)})."""

    def __init__(self, env, slots=None, labels=("KSOLOEFI", "KSOLOA", "KSOLOB")):
        self.env = env
        self.slots = slots or {}
        self.labels = labels
        self.scripts = []

    def __call__(self, script):
        self.scripts.append(script)
        if script.startswith("set -u") and 'echo "boot_id=' in script:
            return 0, self.inspect(), ""
        if "slot_sha256=" in script:
            slot = "A" if "KSOLOA" in script.split("mount_label", 2)[2] else "B"
            files = self.slots.get(slot, (None, {}))[1]
            return (
                0,
                "".join(f"slot_sha256={name} {hashlib.sha256(data).hexdigest()}\n" for name, data in files.items()),
                "",
            )
        return 0, "", ""

    def inspect(self):
        lines = [f"boot_id={BOOT_ID}", "version=v0.2.0", f"efi={int('KSOLOEFI' in self.labels)}"]
        if self.env is not None:
            lines.append("grubenv=" + b64(_grubenv.render(self.env)))
        for slot in "AB":
            present = f"KSOLO{slot}" in self.labels
            lines.append(f"slot_{slot}={int(present)}")
            record, files = self.slots.get(slot, (None, {}))
            if record is not None:
                lines.append(f"slot_{slot}_record=" + b64(json.dumps(record).encode()))
            lines += [f"slot_{slot}_size={name} {len(data)}" for name, data in files.items()]
        return "\n".join(lines) + "\n"


def node_of(fake):
    return _ab_node.ABNode(fake, _ab_node.Layout({"A": "KSOLOA", "B": "KSOLOB"}, "KSOLOEFI", "boot/grub/grubenv"))


COMMITTED_A = {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
TARGET = {"vmlinuz": KERNEL, "kubesolo-os.gz": INITRAMFS}


def test_inspect_reads_grubenv_slots_and_the_running_version():
    old = {"manifest_digest": "sha256:" + "b" * 64, "version": "v0.2.0"}
    state = node_of(Node(COMMITTED_A, {"A": (old, TARGET)})).inspect()
    assert state.summary() == {
        "active_slot": "A",
        "passive_slot": "B",
        "running_slot": "A",
        "boot_counter": "3",
        "boot_success": True,
        "switch_pending": False,
        "boot_id": BOOT_ID,
        "version": "v0.2.0",
        "slots": {
            "A": {"version": "v0.2.0", "manifest_digest": old["manifest_digest"]},
            "B": {"version": None, "manifest_digest": None},
        },
    }


@pytest.mark.parametrize(
    "fake, fragment",
    [
        (Node(COMMITTED_A, labels=("KSOLOA", "KSOLOB")), "no partition labelled KSOLOEFI"),
        (Node(None), "no grubenv at /boot/grub/grubenv on KSOLOEFI"),
        (Node(COMMITTED_A, labels=("KSOLOEFI", "KSOLOA")), "no partition labelled KSOLOB"),
        (Node({"active_slot": "X"}), "active_slot is 'X', not A or B"),
    ],
)
def test_a_node_that_is_not_a_kubesolo_ab_node_is_refused(fake, fragment):
    with pytest.raises(_grubenv.GrubenvError) as raised:
        node_of(fake).inspect()
    assert fragment in str(raised.value)
    assert raised.value.code == "not_ab_node"


def test_a_switch_in_this_boot_is_pending_and_the_node_still_runs_the_other_slot():
    env = {"active_slot": "B", "boot_counter": "3", "boot_success": "0", _ab_node.SWITCH_VARIABLE: BOOT_ID}
    state = node_of(Node(env)).inspect()
    assert state.switch_pending and state.running_slot == "A"
    rebooted = dict(env, **{_ab_node.SWITCH_VARIABLE: "an-earlier-boot"})
    state = node_of(Node(rebooted)).inspect()
    assert not state.switch_pending and state.running_slot == "B"


def test_the_passive_slot_is_never_written_during_a_trial_boot():
    trial = {"active_slot": "B", "boot_counter": "2", "boot_success": "0"}
    fake = Node(trial)
    node = node_of(fake)
    with pytest.raises(_ab_node.TrialBootError) as raised:
        node.write_slot(node.inspect(), "A", _ab_node.ReleaseFiles(release()), "/var/lib/kubesolo/update/staged")
    assert raised.value.code == "trial_boot"
    assert "slot A is the only known-good system" in str(raised.value)
    assert not any("cp " in script for script in fake.scripts)


def test_a_slot_is_verified_by_the_manifests_digests_not_by_its_record():
    wanted = _ab_node.ReleaseFiles(release())
    record = wanted.record()
    good = node_of(Node(COMMITTED_A, {"B": (record, TARGET)}))
    assert good.slot_verified(good.inspect(), "B", wanted)
    swapped = dict(TARGET, vmlinuz=b"x" * len(KERNEL))  # same size, other bytes, same record
    bad = node_of(Node(COMMITTED_A, {"B": (record, swapped)}))
    assert not bad.slot_verified(bad.inspect(), "B", wanted)


def test_a_release_must_name_its_layers_by_sha256():
    other = release()
    other["layers"][0]["digest"] = "sha512:" + "c" * 128
    with pytest.raises(_ab_node.SlotError, match="sha512 digest; slots are verified with sha256sum only"):
        _ab_node.ReleaseFiles(other)
    with pytest.raises(_ab_node.SlotError, match="must be update_stage's result"):
        _ab_node.ReleaseFiles({"manifest_digest": "sha256:" + "a" * 64})


# ---------------------------------------------------------------- what each state asks of the node

OLD = {"manifest_digest": "sha256:" + "b" * 64, "version": "v0.2.0"}
TARGET_RECORD = _ab_node.ReleaseFiles(release()).record()
SWITCHED_TO_B = {"active_slot": "B", "boot_counter": "3", "boot_success": "0", _ab_node.SWITCH_VARIABLE: BOOT_ID}
BOOTED_B = dict(SWITCHED_TO_B, boot_counter="2", **{_ab_node.SWITCH_VARIABLE: "an-earlier-boot"})


def planned(env, slots, plan, *args):
    fake = Node(env, slots)
    node = node_of(fake)
    return plan(node, node.inspect(), *args), fake


def test_staging_writes_the_passive_slot_of_a_committed_node():
    change, _fake = planned(COMMITTED_A, {"A": (OLD, TARGET)}, _ab_node.plan_staged, _ab_node.ReleaseFiles(release()))
    assert (change.slot, change.write, change.values, change.changed) == ("B", True, None, True)


def test_staging_again_reads_the_slot_back_and_writes_nothing():
    slots = {"A": (OLD, TARGET), "B": (TARGET_RECORD, TARGET)}
    change, fake = planned(COMMITTED_A, slots, _ab_node.plan_staged, _ab_node.ReleaseFiles(release()))
    assert (change.slot, change.changed) == ("B", False)
    assert any("slot_sha256=" in script for script in fake.scripts)  # verified by hashing, not by the record


@pytest.mark.parametrize("plan", [_ab_node.plan_staged, _ab_node.plan_active], ids=["staged", "active"])
@pytest.mark.parametrize("env", [SWITCHED_TO_B, BOOTED_B], ids=["switch pending", "booted, not committed"])
def test_staging_or_activation_after_an_earlier_run_switched_to_the_release_changes_nothing(env, plan):
    slots = {"A": (OLD, TARGET), "B": (TARGET_RECORD, TARGET)}
    change, _fake = planned(env, slots, plan, _ab_node.ReleaseFiles(release()))
    assert (change.slot, change.changed) == ("B", False)


def test_staging_is_refused_during_a_trial_boot_before_anything_is_read_or_written():
    trial = dict(COMMITTED_A, boot_success="0")
    with pytest.raises(_ab_node.TrialBootError):
        planned(trial, {"A": (OLD, TARGET)}, _ab_node.plan_staged, _ab_node.ReleaseFiles(release()))


def test_activation_switches_to_the_verified_passive_slot_and_records_the_boot_id():
    slots = {"A": (OLD, TARGET), "B": (TARGET_RECORD, TARGET)}
    change, _fake = planned(COMMITTED_A, slots, _ab_node.plan_active, _ab_node.ReleaseFiles(release()))
    assert change.slot == "B" and change.switches
    assert change.values == {
        "active_slot": "B",
        "boot_counter": "3",
        "boot_success": "0",
        _ab_node.SWITCH_VARIABLE: BOOT_ID,
    }


def test_activation_refuses_a_slot_that_does_not_hold_the_verified_release_except_as_a_prediction():
    swapped = {"A": (OLD, TARGET), "B": (TARGET_RECORD, dict(TARGET, vmlinuz=b"y" * len(KERNEL)))}
    with pytest.raises(_ab_node.SlotError, match="does not hold the verified release"):
        planned(COMMITTED_A, swapped, _ab_node.plan_active, _ab_node.ReleaseFiles(release()))
    change, _fake = planned(
        COMMITTED_A, {"A": (OLD, TARGET)}, _ab_node.plan_active, _ab_node.ReleaseFiles(release()), True
    )
    assert change.values["active_slot"] == "B"


def test_a_commit_marks_the_boot_good_and_forgets_the_switch():
    change, _fake = planned(BOOTED_B, {}, lambda _node, state: _ab_node.plan_committed(state))
    assert change.values == {"active_slot": "B", "boot_counter": "3", "boot_success": "1"}
    again, _fake = planned(change.values, {}, lambda _node, state: _ab_node.plan_committed(state))
    assert not again.changed


def test_nothing_is_committed_before_the_reboot_into_a_switch():
    with pytest.raises(_ab_node.SlotError, match="has not rebooted yet"):
        planned(SWITCHED_TO_B, {}, lambda _node, state: _ab_node.plan_committed(state))


def test_a_rollback_boots_the_other_slot_next():
    change, _fake = planned(BOOTED_B, {}, lambda _node, state: _ab_node.plan_rolled_back(state))
    assert change.slot == "A"
    assert (change.values["active_slot"], change.values["boot_success"]) == ("A", "0")
    assert change.values[_ab_node.SWITCH_VARIABLE] == BOOT_ID
