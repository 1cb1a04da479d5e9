"""The VM test nodes themselves: UEFI firmware and GRUB boot the documented KubeSolo OS layout, and
the node serves SSH (with sftp), its version and health. Switching slots across real reboots and
GRUB's fallback from a panicking slot are proven through the collection in test_rollout_vms.py.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.sshnode import SSH_COMMON_ARGS, inventory
from tests.support.vm import (
    DATA_MOUNT,
    HEALTH_COMMAND,
    list_slot,
    read_grubenv,
    read_slot_file,
)

UUID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$")


def test_boots_slot_a_and_serves_ssh_and_ansible(vm_kit, vm_factory, run_playbook, tmp_path):
    vm = vm_factory("node1", slot_a="v0.2.0")

    release = vm.os_release()
    assert (release["NAME"], release["ID"], release["VERSION_ID"]) == ("KubeSolo OS", "kubesolo-os", "v0.2.0")
    boot_id = vm.boot_id()
    assert UUID.match(boot_id) and vm.boot_id() == boot_id
    assert vm.run(HEALTH_COMMAND, check=False).returncode == 0
    mounts = vm.run("cat /proc/mounts").stdout
    assert re.search(rf"^/dev/vda4 {DATA_MOUNT} ext4 rw", mounts, re.MULTILINE), mounts
    assert vm.run("command -v python3 python", check=False).returncode != 0  # like a real node
    assert vm.grub_boots() == ["A"]

    # Ansible reaches it with the node's host variables (raw: there is no Python).
    run = run_playbook(
        [
            {
                "name": "vm",
                "hosts": "all",
                "gather_facts": False,
                "tasks": [{"name": "probe", "ansible.builtin.raw": "grep VERSION_ID /etc/os-release"}],
            }
        ],
        inventory=inventory([vm]),
    )
    assert run.rc == 0, run
    assert run.result("probe", "node1")["stdout_lines"] == ["VERSION_ID=v0.2.0"]

    # File transfer is sftp (dropbear runs OpenSSH's sftp-server).
    payload = tmp_path / "payload"
    payload.write_bytes(b"kubesolo\n" * 1000)
    sftp = subprocess.run(
        ["sftp", "-F", "/dev/null", "-i", str(vm.client_key), "-P", str(vm.port), *SSH_COMMON_ARGS.split(), "-b", "-"]
        + [f"root@{vm.host}"],
        input=f"put {payload} /tmp/payload\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sftp.returncode == 0, sftp.stderr
    assert vm.run("wc -c </tmp/payload").stdout.strip() == "9000"

    vm.stop()
    # One boot from a committed grubenv: nothing counted, the boot is unverified until marked.
    assert read_grubenv(vm.disk) == {"active_slot": "A", "boot_counter": "3", "boot_success": "0"}
    assert read_slot_file(vm.disk, "KSOLOA", "kubesolo-os.gz") == vm_kit.release("v0.2.0").initramfs.read_bytes()
    assert list_slot(vm.disk, "KSOLOB") == []
    with pytest.raises(FileNotFoundError):
        read_slot_file(vm.disk, "KSOLOB", "vmlinuz")
