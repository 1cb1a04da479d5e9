"""The ``os_update`` role and the ``check`` and ``rollout`` playbooks over a mixed fleet: real SSH nodes
without Python (controller delivery, picked automatically) next to simulated local nodes that have
Python (host delivery), against a real registry.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys

import pytest

from tests.support import artifacts
from tests.support.fleet import ACTIVATE_COMMAND, HEALTH_COMMAND, Fleet, read_report
from tests.support.sshnode import inventory as ssh_inventory

REPO = "kubesolo/os"
DEST = "/var/lib/kubesolo/update/staged"
STORE = "/var/lib/kubesolo/update/.staged.kubesolo-fleet"
SFTP_SESSION = "Starting session: subsystem 'sftp' for root"
STAGE = "Stage the release"
ACTIVATE = "kubesolo.fleet.os_update : Activate the staged release"
#: Activation and health check on a busybox node: the staged files must be there, then the node
#: "boots" the new version.  (It reads the stage directory from the decision, as any activation
#: command may.)
SSH_ACTIVATE_COMMAND = (
    "test -s {{ kubesolo_fleet_decision.stage_dir }}/vmlinuz && test -s {{ kubesolo_fleet_decision.stage_dir }}/kubesolo-os.gz"
    ' && sed -i "s/^VERSION_ID=.*/VERSION_ID={{ kubesolo_fleet_decision.available_version }}/" /etc/os-release'
)
SSH_HEALTH_COMMAND = "test -s {{ kubesolo_fleet_decision.stage_dir }}/release.json"
SSH_COMMANDS = {
    "kubesolo_fleet_activation": "command",
    "kubesolo_fleet_activate_command": SSH_ACTIVATE_COMMAND,
    "kubesolo_fleet_health_command": SSH_HEALTH_COMMAND,
}
#: Host variables that make a node of tests.support.fleet local; they must not reach the SSH nodes
#: (a defined ansible_python_interpreter tells the role that the node has Python).
LOCAL_ONLY_VARS = ("ansible_connection", "ansible_python_interpreter")


def machine_goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


@pytest.fixture(scope="module")
def release(registry):
    """v0.3.0 on stable for amd64, arm64 and this machine (the SSH nodes' uname -m), stepping stone v0.2.0."""
    arches = tuple(dict.fromkeys(("amd64", "arm64", machine_goarch())))
    return artifacts.push_release(registry, REPO, "stable", "v0.3.0", arches, min_compatible="v0.2.0")


def mixed_inventory(ssh_nodes, fleet: Fleet, ssh_host_vars=None, **group_vars) -> dict:
    """SSH nodes (with ``ssh_host_vars`` per name) and the fleet's local nodes in one inventory."""
    local = fleet.inventory(**group_vars)["all"]
    shared = {key: value for key, value in local["vars"].items() if key not in LOCAL_ONLY_VARS}
    hosts = {}
    for name, hostvars in local["hosts"].items():
        hosts[name] = {**{key: local["vars"][key] for key in LOCAL_ONLY_VARS}, **hostvars}
    for name, hostvars in ssh_inventory(ssh_nodes)["all"]["hosts"].items():
        hosts[name] = {**hostvars, **SSH_COMMANDS, **(ssh_host_vars or {}).get(name, {})}
    return {"all": {"vars": shared, "hosts": hosts}}


def sftp_sessions(node) -> int:
    return node.log_path.read_text(encoding="utf-8", errors="replace").count(SFTP_SESSION)


def tree(node) -> dict[str, str]:
    """Every path of the node's filesystem with its type and content digest (or link target)."""
    found = {}
    for path in sorted(node.chroot.rglob("*")):
        rel = "/" + str(path.relative_to(node.chroot))
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        elif path.is_file():
            found[rel] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "other"
    return found


def version_id(node) -> str:
    return re.search(r"^VERSION_ID=(.*)$", node.path("/etc/os-release").read_text(encoding="utf-8"), re.M).group(1)


def role_results(run, task: str, host: str) -> list[dict]:
    """The records of the role task named ``task`` (shown as ``<role> : <task>``) on ``host``."""
    return [r for r in run.results if r["host"] == host and r["task"].rpartition(" : ")[2] == task]


def stage_result(run, host: str) -> dict:
    (record,) = [r for r in role_results(run, STAGE, host) if r["status"] != "skipped"]
    return record


def activated_hosts(run) -> list[str]:
    return [r["host"] for r in run.results if r["task"] == ACTIVATE and r["status"] != "skipped"]


def changed_tasks(run) -> list[str]:
    return sorted({f"{r['host']}: {r['task']}" for r in run.results if r["status"] == "changed"})


def assert_ssh_node_staged(node, manifest: artifacts.PushedManifest) -> None:
    dest = node.path(DEST)
    assert os.readlink(dest) == ".staged.kubesolo-fleet/" + manifest.digest.replace(":", "-"), node.name
    assert sorted(p.name for p in node.path(STORE).iterdir()) == [manifest.digest.replace(":", "-")]
    assert (dest / "vmlinuz").read_bytes() == manifest.kernel, node.name
    assert (dest / "kubesolo-os.gz").read_bytes() == manifest.initramfs, node.name
    assert f'"manifest_digest": "{manifest.digest}"' in (dest / "release.json").read_text(encoding="utf-8")


def assert_local_node_staged(fleet: Fleet, host: str, manifest: artifacts.PushedManifest) -> None:
    assert fleet.staged_record(host)["manifest_digest"] == manifest.digest, host
    assert fleet.staged_bytes(host, "vmlinuz") == manifest.kernel, host
    assert fleet.staged_bytes(host, "kubesolo-os.gz") == manifest.initramfs, host


# ----------------------------------------------------------------------------------------------
# 6. check --check, rollout, rollout again over SSH nodes without Python and local nodes with it.


def test_check_and_rollout_over_python_less_and_python_nodes(
    registry, release, ssh_node_factory, run_playbook, tmp_path
):
    native, arm64 = ssh_node_factory(names=["ssh-native", "ssh-arm64"], version_id="v0.2.0")
    (current,) = ssh_node_factory(names=["ssh-current"], version_id="v0.3.0")
    ssh_nodes = [native, arm64, current]
    fleet = Fleet(
        tmp_path,
        f"{registry.host}/{REPO}",
        {"local-amd64": {"arch": "amd64", "version": "v0.2.0"}, "local-arm64": {"arch": "arm64", "version": "v0.2.5"}},
    )
    cache = tmp_path / "controller-cache"
    report_dir = tmp_path / "report"
    inv = mixed_inventory(
        ssh_nodes,
        fleet,
        # ssh-native and ssh-current go by their uname -m; ssh-arm64 is told its architecture.
        {"ssh-arm64": {"kubesolo_fleet_architecture": "arm64"}},
        kubesolo_fleet_controller_cache=str(cache),
        kubesolo_fleet_activate_command=ACTIVATE_COMMAND,
        kubesolo_fleet_health_command=HEALTH_COMMAND,
    )
    extra_vars = {"kubesolo_fleet_report_dir": str(report_dir), "kubesolo_fleet_rollout_batches": [1, "100%"]}
    arch = {
        "ssh-native": machine_goarch(),
        "ssh-arm64": "arm64",
        "ssh-current": machine_goarch(),
        "local-amd64": "amd64",
        "local-arm64": "arm64",
    }
    updating = ["ssh-native", "ssh-arm64", "local-amd64", "local-arm64"]
    trees = {node.name: tree(node) for node in ssh_nodes}

    # --- check --check: decisions for every node, nothing written anywhere.
    mark = registry.mark()
    check = run_playbook("kubesolo.fleet.check", inventory=inv, extra_vars=extra_vars, check=True, args=["-f", "10"])

    assert check.rc == 0, check
    report = read_report(report_dir)
    assert sorted(report) == sorted(arch)
    assert {host: (row["action"], row["reasons"]) for host, row in report.items()} == {
        **{host: ("stage", []) for host in updating},
        "ssh-current": ("current", []),
    }
    for host, row in report.items():
        assert row["architecture"] == arch[host], row
        assert row["manifest_digest"] == release.manifests[arch[host]].digest, row
        assert row["available_version"] == "v0.3.0", row
    assert {host: row["current_version"] for host, row in report.items()} == {
        "ssh-native": "v0.2.0",
        "ssh-arm64": "v0.2.0",
        "ssh-current": "v0.3.0",
        "local-amd64": "v0.2.0",
        "local-arm64": "v0.2.5",
    }
    assert registry.blob_gets(since=mark) == []
    assert {node.name: tree(node) for node in ssh_nodes} == trees
    assert [sftp_sessions(node) for node in ssh_nodes] == [0, 0, 0]
    for host in fleet.hosts:
        assert not fleet.touched_stage(host), host
        assert fleet.files(host) - {"etc"} == {"etc/os-release"}, host
    assert not cache.exists()

    # --- rollout: the SSH nodes get controller delivery, the local ones host delivery; all activate.
    mark = registry.mark()
    run = run_playbook("kubesolo.fleet.rollout", inventory=inv, extra_vars=extra_vars, args=["-f", "10"])

    assert run.rc == 0, run
    assert sorted(activated_hosts(run)) == sorted(updating)
    assert {host: row["rollout"] for host, row in read_report(report_dir).items()} == {
        **dict.fromkeys(updating, "activated"),
        "ssh-current": "unchanged",
    }
    for node in (native, arm64):
        manifest = release.manifests[arch[node.name]]
        record = stage_result(run, node.name)
        assert record["status"] == "changed", record
        result = record["result"]
        assert result["delivery"] == "controller", result
        assert result["manifest_digest"] == manifest.digest
        assert result["bytes_transferred"] == len(manifest.kernel) + len(manifest.initramfs)
        assert_ssh_node_staged(node, manifest)
        assert version_id(node) == "v0.3.0"
        assert sftp_sessions(node) == 2  # the two layers (the record goes through the shell)
    for host in ("local-amd64", "local-arm64"):
        record = stage_result(run, host)
        assert record["status"] == "changed", record
        assert record["result"]["delivery"] == "host", record["result"]
        assert "bytes_transferred" not in record["result"]
        assert_local_node_staged(fleet, host, release.manifests[arch[host]])
        assert fleet.version_id(host) == "v0.3.0"
    assert role_results(run, STAGE, "ssh-current")[0]["status"] == "skipped"
    assert tree(current) == trees["ssh-current"]
    # The controller fetched each layer once for all SSH nodes; each local node fetched its own.
    ssh_layers = [
        d for host in ("ssh-native", "ssh-arm64") for d in release.manifests[arch[host]].layer_digests.values()
    ]
    local_layers = [
        d for host in ("local-amd64", "local-arm64") for d in release.manifests[arch[host]].layer_digests.values()
    ]
    gets = sorted(e.reference for e in registry.blob_gets(since=mark))
    assert gets == sorted(list(dict.fromkeys(ssh_layers)) + local_layers), gets
    assert sorted(p.name for p in (cache / "blobs" / "sha256").iterdir() if not p.name.endswith(".sha256")) == sorted(
        d.split(":", 1)[1] for d in dict.fromkeys(ssh_layers)
    )

    # --- rollout again: nothing changes, nothing is downloaded or copied.
    trees = {node.name: tree(node) for node in ssh_nodes}
    sessions = [sftp_sessions(node) for node in ssh_nodes]
    mark = registry.mark()
    again = run_playbook("kubesolo.fleet.rollout", inventory=inv, extra_vars=extra_vars, args=["-f", "10"])

    assert again.rc == 0, again
    assert changed_tasks(again) == []
    assert activated_hosts(again) == []
    assert registry.blob_gets(since=mark) == []
    assert [sftp_sessions(node) for node in ssh_nodes] == sessions
    assert {node.name: tree(node) for node in ssh_nodes} == trees
    assert {host: row["action"] for host, row in read_report(report_dir).items()} == dict.fromkeys(arch, "current")
    for host in arch:
        assert role_results(again, STAGE, host)[0]["status"] == "skipped", host


def test_rollout_over_dropbear_without_sftp_streams_through_the_shell(
    registry, release, dropbear_node_factory, run_playbook, tmp_path
):
    (edge,) = dropbear_node_factory(names=["dropbear-edge"], version_id="v0.2.0")
    report_dir = tmp_path / "report"
    inv = mixed_inventory(
        [edge],
        Fleet(tmp_path, f"{registry.host}/{REPO}", {}),
        kubesolo_fleet_controller_cache=str(tmp_path / "controller-cache"),
        kubesolo_fleet_transfer_chunk_size=256 * 1024,
    )
    extra_vars = {"kubesolo_fleet_report_dir": str(report_dir)}
    run = run_playbook("kubesolo.fleet.rollout", inventory=inv, extra_vars=extra_vars)
    assert run.rc == 0, run
    manifest = release.manifests[machine_goarch()]
    result = stage_result(run, edge.name)["result"]
    assert result["delivery"] == "controller", result
    # The role's default (auto) found no sftp or scp there and streamed the layers through the shell.
    assert result["transfer"]["method"] == "shell", result["transfer"]
    assert result["transfer"]["sent_bytes"] == len(manifest.kernel) + len(manifest.initramfs)
    assert_ssh_node_staged(edge, manifest)
    assert version_id(edge) == "v0.3.0"
    assert read_report(report_dir)[edge.name]["rollout"] == "activated"


# ----------------------------------------------------------------------------------------------
# 7. Host delivery forced on a node without Python fails, and stops the rollout before activation.


def test_host_delivery_forced_on_a_python_less_node_fails(registry, release, ssh_node_factory, run_playbook, tmp_path):
    forced, auto = ssh_node_factory(names=["forced-host", "auto"])
    cache = tmp_path / "controller-cache"
    inv = ssh_inventory(
        [forced, auto],
        {
            "kubesolo_fleet_repository": f"{registry.host}/{REPO}",
            "kubesolo_fleet_plain_http": True,
            "kubesolo_fleet_controller_cache": str(cache),
            **SSH_COMMANDS,
        },
    )
    inv["all"]["hosts"]["forced-host"]["kubesolo_fleet_delivery"] = "host"
    manifest = release.manifests[machine_goarch()]

    run = run_playbook(
        "kubesolo.fleet.rollout",
        inventory=inv,
        extra_vars={"kubesolo_fleet_report_dir": str(tmp_path / "report"), "kubesolo_fleet_rollout_batches": ["100%"]},
        args=["-f", "10"],
    )

    assert run.rc != 0, run
    failed = stage_result(run, "forced-host")
    assert failed["status"] == "failed", failed
    assert failed["result"]["msg"] == f"The module interpreter '{sys.executable}' was not found.", failed["result"]
    assert failed["result"]["rc"] == 127
    assert not forced.path(DEST).exists() and not forced.path(STORE).exists()
    # The same node with the automatic choice gets the release from the controller.
    staged = stage_result(run, "auto")
    assert (staged["status"], staged["result"]["delivery"]) == ("changed", "controller"), staged
    assert_ssh_node_staged(auto, manifest)
    # A node that cannot stage stops the rollout before anything is activated.
    assert activated_hosts(run) == []
    assert (version_id(forced), version_id(auto)) == ("v0.2.0", "v0.2.0")
