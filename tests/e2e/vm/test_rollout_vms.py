"""``ansible-playbook kubesolo.fleet.rollout`` over three VM nodes that boot like KubeSolo OS (UEFI
firmware, GRUB picking slot KSOLOA or KSOLOB from grubenv, real reboots): a release published to a
real registry with kubesolo.fleet.update_publish reaches the Python-less nodes by controller
delivery, goes into slot B and is committed, canary first, through a refusal, check mode and a
controller killed mid-rollout. About 5 minutes (VM boots take 20-30 s under TCG)."""

from __future__ import annotations

import time

import pytest

from tests.support.playbook import kill_playbook, start_playbook
from tests.support.vm import read_grubenv, read_slot_file
from tests.support.vm.node import close_control_masters
from tests.support.vm.rollout import (
    COMMIT,
    PROBE,
    REBOOT,
    STAGE,
    SWITCH,
    TEST_TIMEOUT,
    WRITE_SLOT,
    boot_vms,
    changed_tasks,
    disk_digest,
    fleet_inventory,
    mark_booted_good,
    publish,
    ran,
    report,
    rollout,
    rollout_options,
)


@pytest.mark.timeout(TEST_TIMEOUT)
def test_three_nodes_update_to_slot_b_canary_first_and_a_rerun_changes_nothing(
    vm_kit, vm_factory, registry, run_playbook, tmp_path
):
    target = vm_kit.release("v0.3.0")
    publish(run_playbook, registry, "kubesolo/vm-os", target, tmp_path)
    vms = boot_vms(vm_factory, ["vm1", "vm2", "vm3"], slot_a="v0.2.0")
    names = [vm.name for vm in vms]
    # The layers go through the nodes' shell (dropbear's sftp server would take them too).
    inv = fleet_inventory(vms, registry, "kubesolo/vm-os", tmp_path, kubesolo_fleet_node_transfer="shell")

    # 1. Every boot starts unverified (GRUB sets boot_success=0) until the node's agent marks it: the
    #    other slot is then the only known-good system, and nothing is written.
    refused = rollout(run_playbook, inv, tmp_path, "refused")
    assert refused.rc == 0, refused
    rows = report(tmp_path, "refused")
    for name in names:
        assert (rows[name]["action"], [r["code"] for r in rows[name]["reasons"]]) == ("blocked", ["trial_boot"])
        assert rows[name]["slot"] == "A" and rows[name]["rollout"] == "unchanged"
        assert ran(refused, STAGE, name) == [] and ran(refused, WRITE_SLOT, name) == []
    mark_booted_good(run_playbook, vms, tmp_path)

    # 2. Check mode says what would happen, per node, and leaves every disk byte-identical.
    before = {vm.name: disk_digest(vm) for vm in vms}
    checked = rollout(run_playbook, inv, tmp_path, "check", args=["--check", "--diff"])
    assert checked.rc == 0, checked
    assert {vm.name: disk_digest(vm) for vm in vms} == before
    for name in names:
        predicted = checked.result(WRITE_SLOT, name)
        assert (predicted["changed"], predicted["slot"], predicted["written"]) == (True, "B", False), predicted
        switch = checked.result(SWITCH, name)
        assert "active_slot=B\n" in switch["diff"]["after"] and "active_slot=A\n" in switch["diff"]["before"]
        assert report(tmp_path, "check")[name]["rollout"] == "would_activate"

    # 3. The controller dies in the canary's reboot wait, after the grubenv switch (its reboot
    #    command does nothing, so the switch is all that happened).
    process, command = start_playbook(
        "kubesolo.fleet.rollout",
        inventory=fleet_inventory(
            vms,
            registry,
            "kubesolo/vm-os",
            tmp_path,
            kubesolo_fleet_reboot_command="true",
            kubesolo_fleet_node_transfer="shell",
        ),
        **rollout_options(tmp_path, "killed"),
    )
    deadline = time.monotonic() + 400
    while not any(r["task"] == SWITCH and r["status"] == "changed" for r in command.results()):
        assert process.poll() is None, (command.cwd / "playbook.log").read_text(encoding="utf-8")
        assert time.monotonic() < deadline, "the canary was never switched"
        time.sleep(0.5)
    time.sleep(3)  # inside the reboot wait now
    kill_playbook(process)
    # The SSH connection masters outlive the kill (they detach); a controller that died takes them
    # along, and one left mid-reset once broke the rerun's first copy on a loaded machine.
    for vm in vms:
        close_control_masters(vm.control_path_dir)
    killed = command.results()
    assert [r["host"] for r in killed if r["task"] == SWITCH and r["status"] != "skipped"] == ["vm1"]
    for name in names:  # all three were staged into slot B before the first batch, through the shell
        assert [r["status"] for r in killed if r["task"] == WRITE_SLOT and r["host"] == name] == ["changed"]
        (staged,) = [r["result"] for r in killed if r["task"] == STAGE and r["host"] == name]
        assert staged["transfer"]["method"] == "shell", staged["transfer"]
        assert staged["transfer"]["sent_bytes"] == staged["bytes_transferred"] > 0

    # 4. The rerun finishes the canary (its switch is pending: reboot, verify, commit), then the rest,
    #    without a second transfer.
    mark = registry.mark()
    done = rollout(run_playbook, inv, tmp_path, "rerun")
    assert done.rc == 0, done
    assert registry.blob_gets(since=mark) == []
    canary_probe = done.result(PROBE, "vm1")["node"]
    assert (canary_probe["switch_pending"], canary_probe["active_slot"]) == (True, "B"), canary_probe
    rows = report(tmp_path, "rerun")
    assert [r["code"] for r in rows["vm1"]["reasons"]] == ["reboot_pending"]
    for name in names:
        assert done.result(STAGE, name)["changed"] is False
        assert done.result(WRITE_SLOT, name)["changed"] is False
        assert done.result(REBOOT, name)["rebooted"] is True
        assert done.status(COMMIT, name) == "changed"
        assert (rows[name]["rollout"], rows[name]["slot"]) == ("committed", "B"), rows[name]
        assert rows[name]["activation_seconds"] > rows[name]["reboot_seconds"] > 0, rows[name]
    assert [r["host"] for r in done.results if r["task"] == REBOOT][0] == "vm1"  # the canary first
    for vm in vms:
        assert vm.os_release()["VERSION_ID"] == "v0.3.0"
    table = (tmp_path / "report-rerun" / "report.md").read_text(encoding="utf-8")
    assert "| Slot | Rollout | Time |" in table and "| committed |" in table

    # 5. A second rollout finds every node current and committed: nothing changes (its report
    #    replaces the last one, in the same directory).
    again = rollout(run_playbook, inv, tmp_path, "again", report_as="rerun")
    assert again.rc == 0, again
    assert changed_tasks(again) == []
    assert {name: row["action"] for name, row in report(tmp_path, "rerun").items()} == dict.fromkeys(names, "current")

    # 6. On the disks, as Debian's grub-editenv reads them: slot B, booted and marked good.
    for vm in vms:
        vm.stop()
        env = read_grubenv(vm.disk)
        assert (env["active_slot"], env["boot_success"], env["boot_counter"]) == ("B", "1", "3"), (vm.name, env)
        assert read_slot_file(vm.disk, "KSOLOB", "vmlinuz") == target.vmlinuz.read_bytes()
        assert read_slot_file(vm.disk, "KSOLOB", "kubesolo-os.gz") == target.initramfs.read_bytes()
