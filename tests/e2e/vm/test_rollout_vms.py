"""``ansible-playbook kubesolo.fleet.rollout`` over VM nodes that boot like KubeSolo OS: UEFI firmware,
GRUB picking slot KSOLOA or KSOLOB from grubenv, real reboots. The releases are published to a real
registry with kubesolo.fleet.update_publish and reach the Python-less nodes by controller delivery.

Wall time: each VM boot takes 20-30 s under TCG, a GRUB fallback four boots; at most three VMs run
at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

from tests.support.playbook import start_playbook
from tests.support.sshnode import inventory
from tests.support.vm import HEALTH_COMMAND, read_grubenv, read_slot_file

ROLE = "kubesolo.fleet.os_update : "
PROBE = ROLE + "Read the slots"
STAGE = ROLE + "Stage the release"
WRITE_SLOT = ROLE + "Write the release into the passive slot"
SWITCH = ROLE + "Switch grubenv to the slot that holds the release"
REBOOT = ROLE + "Reboot and wait for the node to come back"
COMMIT = ROLE + "Mark the boot good"
COMMIT_OLD = ROLE + "Mark the known-good boot good"
#: Generous for TCG: a GRUB fallback is three panicking boots and one more, 60-90 s on an idle
#: machine and 240 s when the other end-to-end tests load both cores.
BOOT_TIMEOUT = 540


def publish(run_playbook, registry, repo, release, tmp_path):
    """Publish the VM release ``release`` as ``repo:stable`` with the collection's own module."""
    task = {
        "name": "publish",
        "kubesolo.fleet.update_publish": {
            "repository": f"{registry.host}/{repo}",
            "plain_http": True,
            "tags": [release.version, "stable"],
            "version": release.version,
            "channel": "stable",
            "artifacts": [
                {"architecture": "amd64", "kernel": str(release.vmlinuz), "initramfs": str(release.initramfs)}
            ],
        },
    }
    run = run_playbook([task], tmp_path=tmp_path / f"publish-{repo.replace('/', '-')}")
    assert run.rc == 0, run
    return run.result("publish")


def fleet_inventory(vms, registry, repo, tmp_path, **group_vars):
    return inventory(
        vms,
        {
            "kubesolo_fleet_repository": f"{registry.host}/{repo}",
            "kubesolo_fleet_plain_http": True,
            "kubesolo_fleet_controller_cache": str(tmp_path / "controller-cache"),
            "kubesolo_fleet_health_command": HEALTH_COMMAND,
            "kubesolo_fleet_health_retries": 1,
            "kubesolo_fleet_health_delay": 2,
            "kubesolo_fleet_boot_timeout": BOOT_TIMEOUT,
            **group_vars,
        },
    )


def rollout_options(tmp_path, name, batches=(1, "100%"), report_as=None):
    """The run ``name`` in its own directory; its report in ``report-<report_as or name>``."""
    return {
        "tmp_path": tmp_path / name,
        "extra_vars": {
            "kubesolo_fleet_report_dir": str(tmp_path / f"report-{report_as or name}"),
            "kubesolo_fleet_rollout_batches": list(batches),
        },
    }


def rollout(run_playbook, inv, tmp_path, name, batches=(1, "100%"), report_as=None, **kwargs):
    options = rollout_options(tmp_path, name, batches, report_as)
    return run_playbook("kubesolo.fleet.rollout", inventory=inv, **options, **kwargs)


def report(tmp_path, name):
    rows = json.loads((tmp_path / f"report-{name}" / "report.json").read_text(encoding="utf-8"))
    return {row["host"]: row for row in rows}


def boot_vms(vm_factory, names, **kwargs):
    vms = [vm_factory(name, wait=False, **kwargs) for name in names]
    for vm in vms:
        vm.wait_for_ssh()
    return vms


def mark_booted_good(run_playbook, vms, tmp_path, name="agent"):
    """What the node's own agent does after its health check: the boot it runs is marked good."""
    plays = [
        {
            "name": "agent",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [{"name": "commit", "kubesolo.fleet.ab_slot": {"state": "committed"}}],
        }
    ]
    run = run_playbook(plays, inventory=inventory(vms), tmp_path=tmp_path / name)
    assert run.rc == 0, run


def disk_digest(vm) -> str:
    digest = hashlib.sha256()
    with open(vm.disk, "rb") as image:
        for block in iter(lambda: image.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def changed_tasks(run):
    return sorted({(r["host"], r["task"]) for r in run.results if r["status"] == "changed"})


def ran(run, task, host):
    return [r for r in run.records(task, host) if r["status"] != "skipped"]


def test_three_nodes_update_to_slot_b_canary_first_and_a_rerun_changes_nothing(
    vm_kit, vm_factory, registry, run_playbook, tmp_path
):
    target = vm_kit.release("v0.3.0")
    publish(run_playbook, registry, "kubesolo/vm-os", target, tmp_path)
    vms = boot_vms(vm_factory, ["vm1", "vm2", "vm3"], slot_a="v0.2.0")
    names = [vm.name for vm in vms]
    inv = fleet_inventory(vms, registry, "kubesolo/vm-os", tmp_path)

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
        inventory=fleet_inventory(vms, registry, "kubesolo/vm-os", tmp_path, kubesolo_fleet_reboot_command="true"),
        **rollout_options(tmp_path, "killed"),
    )
    deadline = time.monotonic() + 400
    while not any(r["task"] == SWITCH and r["status"] == "changed" for r in command.results()):
        assert process.poll() is None, (command.cwd / "playbook.log").read_text(encoding="utf-8")
        assert time.monotonic() < deadline, "the canary was never switched"
        time.sleep(0.5)
    time.sleep(3)  # inside the reboot wait now
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    killed = command.results()
    assert [r["host"] for r in killed if r["task"] == SWITCH and r["status"] != "skipped"] == ["vm1"]
    for name in names:  # all three were staged into slot B before the first batch
        assert [r["status"] for r in killed if r["task"] == WRITE_SLOT and r["host"] == name] == ["changed"]

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


def test_broken_releases_are_rolled_back_on_the_canary_and_stop_the_rollout(
    vm_kit, vm_factory, registry, run_playbook, tmp_path
):
    vms = boot_vms(vm_factory, ["canary", "next"], slot_a="v0.2.0")
    mark_booted_good(run_playbook, vms, tmp_path)
    canary, other = vms
    boots = ["A"]
    for variant, reason in (("panic", "boot_fallback"), ("unhealthy", "unhealthy")):
        repo = f"kubesolo/vm-{variant}"
        publish(run_playbook, registry, repo, vm_kit.release("v0.3.0", variant), tmp_path)

        run = rollout(run_playbook, fleet_inventory(vms, registry, repo, tmp_path), tmp_path, variant)

        assert run.rc != 0, run
        rows = report(tmp_path, variant)
        assert (rows["canary"]["rollout"], rows["canary"]["rollout_reason"]["code"]) == ("rolled_back", reason), rows
        assert (rows["canary"]["slot"], rows["next"]["rollout"]) == ("A", "not_reached"), rows
        assert "rolled back" in run.result("Stop the rollout", "canary")["msg"]
        assert ran(run, SWITCH, "next") == []
        if variant == "panic":
            # GRUB alone: three unverified boots of B, then A again; the old boot is marked good.
            boots += ["B", "B", "B", "A"]
            assert canary.console_text(since_start=True).count("Kernel panic - not syncing") == 3
            assert ran(run, ROLE + "Reboot into the known-good slot", "canary") == []
        else:
            # B booted and failed its health check: switched back to A and rebooted.
            boots += ["B", "A"]
            assert run.status(ROLE + "Run the health check", "canary") == "failed"
            assert run.status(ROLE + "Reboot into the known-good slot", "canary") == "changed"
        assert canary.grub_boots() == boots
        assert run.status(COMMIT_OLD, "canary") == "changed"
        assert canary.os_release()["VERSION_ID"] == "v0.2.0"
        assert other.os_release()["VERSION_ID"] == "v0.2.0"
        assert other.grub_boots() == ["A"]
    for vm in vms:
        vm.stop()
        env = read_grubenv(vm.disk)
        assert (env["active_slot"], env["boot_success"], env["boot_counter"]) == ("A", "1", "3"), (vm.name, env)
