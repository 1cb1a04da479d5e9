# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kubesolo.fleet.ab_slot on a VM node that boots like KubeSolo OS: real ansible-playbook, raw commands,
UEFI + GRUB + grubenv, a real reboot. The release is placed where update_stage would have staged it."""

from __future__ import annotations

import hashlib
import subprocess

from tests.support.sshnode import inventory
from tests.support.vm import read_grubenv, read_slot_file

STAGED = "/var/lib/kubesolo/update/staged"
KERNEL_TYPE = "application/vnd.kubesolo.os.kernel.v1+octet-stream"
INITRAMFS_TYPE = "application/vnd.kubesolo.os.initramfs.v1+gzip"


def release_result(release) -> dict:
    """What update_stage returns about a release, as far as ab_slot reads it."""
    kernel, initramfs = release.vmlinuz.read_bytes(), release.initramfs.read_bytes()
    return {
        "manifest_digest": "sha256:" + hashlib.sha256(release.version.encode()).hexdigest(),
        "metadata": {"version": release.version},
        "layers": [
            {"media_type": KERNEL_TYPE, "digest": "sha256:" + hashlib.sha256(kernel).hexdigest(), "size": len(kernel)},
            {
                "media_type": INITRAMFS_TYPE,
                "digest": "sha256:" + hashlib.sha256(initramfs).hexdigest(),
                "size": len(initramfs),
            },
        ],
    }


def put_staged(vm, release) -> None:
    vm.run(f"mkdir -p {STAGED}")
    for path in (release.vmlinuz, release.initramfs):
        subprocess.run(vm.ssh_command(f"cat > {STAGED}/{path.name}"), input=path.read_bytes(), check=True, timeout=60)


def ab(name, state, **args) -> dict:
    return {"name": name, "kubesolo.fleet.ab_slot": {"state": state, **args}, "ignore_errors": True}


def test_a_release_is_written_to_the_passive_slot_booted_and_committed(vm_kit, vm_factory, run_playbook):
    target = vm_kit.release("v0.3.0")
    vm = vm_factory("ab1", slot_a="v0.2.0")
    put_staged(vm, target)
    release = release_result(target)
    tasks = [
        # Every boot starts unverified (GRUB sets boot_success=0): nothing is written then.
        ab("refused", "staged", release=release, source=STAGED),
        # What the node's agent does after its health check, here by hand.
        ab("agent marks the boot good", "committed"),
        ab("before", "info"),
        dict(ab("predict the write", "staged", release=release, source=STAGED), check_mode=True),
        ab("after the prediction", "info"),
        ab("write", "staged", release=release, source=STAGED),
        ab("write again", "staged", release=release, source=STAGED),
        dict(ab("predict the switch", "active", release=release), check_mode=True, diff=True),
        ab("switch", "active", release=release),
        ab("reboot", "rebooted", boot_timeout=240),
        ab("after", "info"),
        ab("commit", "committed"),
    ]
    run = run_playbook(
        [{"name": "vm", "hosts": "all", "gather_facts": False, "tasks": tasks}], inventory=inventory([vm])
    )
    assert run.status("refused", vm.name) == "failed"
    assert run.result("refused", vm.name)["error_code"] == "trial_boot"
    for task in ("agent marks the boot good", "before", "write", "write again", "switch", "reboot", "after", "commit"):
        assert run.status(task, vm.name) in ("ok", "changed"), (task, run.result(task, vm.name))
    # Check mode says what it would do and does nothing.
    predicted = run.result("predict the write", vm.name)
    assert (predicted["changed"], predicted["written"], predicted["slot"]) == (True, False, "B"), predicted
    assert run.result("after the prediction", vm.name)["node"]["slots"]["B"] == {
        "version": None,
        "manifest_digest": None,
    }
    switch = run.result("predict the switch", vm.name)
    assert switch["changed"] is True and "active_slot=B\n" in switch["diff"]["after"], switch
    assert "active_slot=A\n" in switch["diff"]["before"]
    assert run.result("switch", vm.name)["node"]["active_slot"] == "A"  # the prediction switched nothing
    assert run.result("before", vm.name)["node"]["active_slot"] == "A"
    assert run.result("write", vm.name)["changed"] is True and run.result("write", vm.name)["slot"] == "B"
    assert run.result("write again", vm.name)["changed"] is False
    assert run.result("after", vm.name)["node"]["version"] == "v0.3.0"
    assert run.result("after", vm.name)["node"]["running_slot"] == "B"
    vm.stop()
    env = read_grubenv(vm.disk)
    assert (env["active_slot"], env["boot_success"], env["boot_counter"]) == ("B", "1", "3"), env
    assert read_slot_file(vm.disk, "KSOLOB", "vmlinuz") == target.vmlinuz.read_bytes()
