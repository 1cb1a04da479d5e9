"""Helpers of the rollout tests over VM nodes (tests/e2e/vm/test_rollout_vms.py, test_rollback_vms.py):
publishing a VM release with kubesolo.fleet.update_publish, the nodes' inventory, running the rollout
playbook with its report in a directory of its own, and the node's agent marking its boot good."""

from __future__ import annotations

import hashlib
import json

from ..sshnode import inventory
from .release import HEALTH_COMMAND

ROLE = "kubesolo.fleet.os_update : "
PROBE = ROLE + "Read the slots"
STAGE = ROLE + "Stage the release"
WRITE_SLOT = ROLE + "Write the release into the passive slot"
SWITCH = ROLE + "Switch grubenv to the slot that holds the release"
REBOOT = ROLE + "Reboot and wait for the node to come back"
COMMIT = ROLE + "Mark the boot good"
COMMIT_OLD = ROLE + "Mark the known-good boot good"
#: Seconds a reboot may take. Generous for TCG: a GRUB fallback is three panicking boots and one
#: more, 60-90 s on an idle machine and 240 s when the other end-to-end tests load both cores.
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


#: Seconds a whole VM test may take (pytest-timeout), and one rollout over VMs.
TEST_TIMEOUT = 1800
ROLLOUT_TIMEOUT = 1200


def rollout(run_playbook, inv, tmp_path, name, batches=(1, "100%"), report_as=None, **kwargs):
    options = rollout_options(tmp_path, name, batches, report_as)
    return run_playbook("kubesolo.fleet.rollout", inventory=inv, timeout=ROLLOUT_TIMEOUT, **options, **kwargs)


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
