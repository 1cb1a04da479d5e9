"""The VM demo (scripts/demo --vms): three QEMU nodes that boot like KubeSolo OS, updated by the rollout.

Run by scripts/demo with the registry already up (its address in argv), the collection on
ANSIBLE_COLLECTIONS_PATH and the repository root on PYTHONPATH. It builds the nodes with the test
suite's VM kit (UEFI firmware, GRUB with the A/B logic on grubenv, the partition layout of KubeSolo
OS, a Debian kernel and a busybox initramfs per release), publishes v0.3.0 with
kubesolo.fleet.update_publish, lets each node's "agent" mark its first boot good, then runs
kubesolo.fleet.rollout: the canary, then the other two, each written into slot B, switched,
rebooted, verified and committed. The VMs are stopped whatever happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.vm import HEALTH_COMMAND, VMKit, read_grubenv

REPO_ROOT = Path(__file__).resolve().parent.parent
NODES = ("edge-vm-01", "edge-vm-02", "edge-vm-03")


def playbook(*argv: str) -> None:
    subprocess.run(["ansible-playbook", *argv], check=True, cwd=REPO_ROOT)


def main(work: Path, registry: str, report_dir: Path) -> int:
    kit = VMKit(work / "kit").prepare()
    target = kit.release("v0.3.0")
    print("demo: booting three VM nodes on v0.2.0 (slot A); QEMU without KVM, about 30 s", flush=True)
    vms = [
        kit.node(name, kit.build_disk(work / f"{name}.img"), console_log=work / f"{name}-console.log") for name in NODES
    ]
    try:
        for vm in vms:
            vm.start(wait=False)
        for vm in vms:
            vm.wait_for_ssh()
        inventory = work / "vms.yml"
        inventory.write_text(
            yaml.safe_dump(
                {
                    "all": {
                        "hosts": {vm.name: vm.ansible_host_vars() for vm in vms},
                        "vars": {
                            "kubesolo_fleet_repository": f"{registry}/kubesolo/os-vm",
                            "kubesolo_fleet_plain_http": True,
                            "kubesolo_fleet_health_command": HEALTH_COMMAND,
                            "kubesolo_fleet_boot_timeout": 300,
                            "kubesolo_fleet_controller_cache": str(work / "controller-cache"),
                            "kubesolo_fleet_rollout_batches": [1, "100%"],
                        },
                    }
                }
            ),
            encoding="utf-8",
        )
        print("demo: publishing v0.3.0 for the VMs with kubesolo.fleet.update_publish", flush=True)
        publish = {
            "repository": f"{registry}/kubesolo/os-vm",
            "plain_http": True,
            "tags": ["v0.3.0", "stable"],
            "version": "v0.3.0",
            "artifacts": [{"architecture": "amd64", "kernel": str(target.vmlinuz), "initramfs": str(target.initramfs)}],
        }
        setup = work / "vm-setup.yml"
        setup.write_text(
            yaml.safe_dump(
                [
                    {
                        "name": "Publish the VM release",
                        "hosts": "localhost",
                        "connection": "local",
                        "gather_facts": False,
                        "vars": {"ansible_python_interpreter": sys.executable},
                        "tasks": [{"name": "Publish", "kubesolo.fleet.update_publish": publish}],
                    },
                    {
                        # What each node's agent does after its own health check.
                        "name": "Mark each node's boot good, as its agent would",
                        "hosts": "all",
                        "gather_facts": False,
                        "tasks": [{"name": "Commit the boot", "kubesolo.fleet.ab_slot": {"state": "committed"}}],
                    },
                ]
            ),
            encoding="utf-8",
        )
        playbook("-i", str(inventory), str(setup))
        print("demo: ansible-playbook kubesolo.fleet.rollout over the VMs (real reboots, a few minutes)", flush=True)
        playbook("-i", str(inventory), "kubesolo.fleet.rollout", "-e", f"kubesolo_fleet_report_dir={report_dir}")
    finally:
        for vm in vms:
            vm.stop()
    for vm in vms:
        env = read_grubenv(vm.disk)
        print(f"demo: {vm.name} grubenv (grub-editenv list): {json.dumps(env, sort_keys=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
