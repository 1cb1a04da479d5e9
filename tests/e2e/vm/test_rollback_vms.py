"""``ansible-playbook kubesolo.fleet.rollout`` with broken releases on two VM nodes that boot like
KubeSolo OS: one that panics (GRUB falls back by itself after three boots) and one that boots but
fails its health check (switched back and rebooted); either way the canary is rolled back, its old
boot marked good, and the rollout stops before the other node. About 5 minutes."""

from __future__ import annotations

import pytest

from tests.support.vm import read_grubenv
from tests.support.vm.rollout import (
    COMMIT_OLD,
    ROLE,
    SWITCH,
    TEST_TIMEOUT,
    boot_vms,
    fleet_inventory,
    mark_booted_good,
    publish,
    ran,
    report,
    rollout,
)


@pytest.mark.timeout(TEST_TIMEOUT)
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
