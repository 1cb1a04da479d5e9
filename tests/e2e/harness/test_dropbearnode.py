"""The dropbear test nodes: dropbear chrooted into busybox, no Python, and no sftp server or scp, driven by
ansible-playbook."""

from __future__ import annotations

import os
import platform
import subprocess
import time

import pytest

from tests.support.dropbearnode import DropbearNode
from tests.support.sshnode import SSHCommandError, SSHNode, inventory


def _play(*tasks, hosts="all"):
    return [{"name": "nodes", "hosts": hosts, "gather_facts": False, "tasks": list(tasks)}]


def _script(tmp_path, target="/var/lib/kubesolo/update/from-script"):
    """A script for ansible.builtin.script (put_file, then the shell runs it) that writes ``target``."""
    script = tmp_path / "stage.sh"
    script.write_text(f"#!/bin/sh\nset -eu\nprintf '%s\\n' \"$1\" > {target}\nbusybox | head -n 1\n", encoding="utf-8")
    return script


def test_raw_runs_in_busybox_sh_next_to_an_ssh_node(dropbear_node_factory, ssh_node_factory, run_playbook):
    (dropbear,) = dropbear_node_factory(names=["dropbear"], version_id="v0.3.0")
    (openssh,) = ssh_node_factory(names=["openssh"], version_id="v0.2.0")

    run = run_playbook(
        _play(
            {
                "name": "probe",
                "ansible.builtin.raw": "uname -m; cat /etc/os-release; busybox | head -n 1; echo home=$HOME;"
                " command -v python3 || echo no-python3; df -Pk /var/lib/kubesolo",
            },
            {"name": "anything python", "ansible.builtin.raw": "find / -name '*python*'; echo end"},
        ),
        inventory=inventory([dropbear, openssh]),
    )

    assert run.rc == 0, run
    for node, version in ((dropbear, "v0.3.0"), (openssh, "v0.2.0")):
        lines = run.result("probe", node.name)["stdout_lines"]
        assert lines[0] == platform.machine()
        assert f"VERSION_ID={version}" in lines
        assert any(line.startswith("BusyBox v") for line in lines), lines
        assert "home=/root" in lines and "no-python3" in lines
        df = lines[-1].split()
        assert df[-1] == "/" and df[1].isdigit() and df[3].isdigit(), lines
        assert run.result("anything python", node.name)["stdout_lines"] == ["end"]
    log = dropbear.log_path.read_text(encoding="utf-8")
    assert "Pubkey auth succeeded for 'root'" in log
    # Ansible's raw asks for a pseudo-terminal: the node's devpts gave it one.
    assert "openpty" not in log and "No pty was allocated" not in log


def test_python_modules_fail_for_want_of_an_interpreter(dropbear_node_factory, run_playbook):
    (node,) = dropbear_node_factory()

    run = run_playbook(_play({"name": "ping", "ansible.builtin.ping": {}}), inventory=inventory([node]))

    assert run.rc != 0, run
    assert run.status("ping", node.name) == "failed"
    assert run.result("ping", node.name)["rc"] == 127


@pytest.mark.parametrize(
    ("method", "extra_vars", "status", "node_error"),
    [
        # sftp and scp exit 255 when the server closes the channel: Ansible calls that unreachable.
        ("sftp", {}, "unreachable", "sh: /usr/lib/sftp-server: not found"),
        # OpenSSH 9's scp speaks the sftp protocol unless told -O.
        ("scp", {}, "unreachable", "sh: /usr/lib/sftp-server: not found"),
        ("scp", {"ansible_scp_extra_args": "-O"}, "failed", "sh: scp: not found"),
    ],
    ids=["sftp", "scp", "scp -O"],
)
def test_sftp_and_scp_cannot_deliver_a_file(  # pylint: disable=too-many-arguments
    dropbear_node_factory, run_playbook, tmp_path, method, extra_vars, status, node_error
):
    (node,) = dropbear_node_factory()
    hosts = inventory([node])
    hosts["all"]["hosts"][node.name].update({"ansible_ssh_transfer_method": method, **extra_vars})

    run = run_playbook(
        _play({"name": "script", "ansible.builtin.script": f"{_script(tmp_path)} hello"}), inventory=hosts
    )

    assert run.rc != 0, run
    assert run.status("script", node.name) == status, run
    assert node_error in run.result("script", node.name)["msg"], run.result("script", node.name)
    assert not node.path("/var/lib/kubesolo/update/from-script").exists()
    # Nothing was left behind in Ansible's remote temp dir either.
    remote_tmp = node.path(str(tmp_path / "ansible-tmp" / "remote"))
    assert not remote_tmp.exists() or not any(remote_tmp.rglob("stage.sh"))


def test_plain_sftp_and_scp_clients_are_refused(dropbear_node_factory, tmp_path):
    (node,) = dropbear_node_factory()
    source = tmp_path / "payload"
    source.write_bytes(b"payload\n")
    options = ["-F", "/dev/null", "-i", str(node.client_key), "-P", str(node.port), "-o", "BatchMode=yes"]
    options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    target = f"root@{node.host}"

    attempts = {
        "sftp": subprocess.run(
            ["sftp", *options, "-b", "-", target],
            input=f"put {source} /tmp/sftp\n",
            capture_output=True,
            text=True,
            check=False,
        ),
        "scp": subprocess.run(
            ["scp", *options, str(source), f"{target}:/tmp/scp"], capture_output=True, text=True, check=False
        ),
        "scp -O": subprocess.run(
            ["scp", "-O", *options, str(source), f"{target}:/tmp/scp-O"], capture_output=True, text=True, check=False
        ),
    }

    for name, done in attempts.items():
        assert done.returncode != 0, (name, done)
    assert "sftp-server: not found" in attempts["sftp"].stderr
    assert "scp: not found" in attempts["scp -O"].stderr
    assert list(node.path("/tmp").iterdir()) == []
    strays = [p for p in node.chroot.rglob("*") if p.name in ("sftp-server", "sftp", "scp") or "python" in p.name]
    assert strays == []


@pytest.mark.parametrize("method", ["default (smart)", "piped"])
def test_piped_transfers_deliver_through_dd(dropbear_node_factory, run_playbook, tmp_path, method):
    (node,) = dropbear_node_factory()
    hosts = inventory([node])
    assert "ansible_ssh_transfer_method" not in hosts["all"]["hosts"][node.name]
    if method == "piped":
        hosts["all"]["hosts"][node.name]["ansible_ssh_transfer_method"] = "piped"

    run = run_playbook(
        _play({"name": "script", "ansible.builtin.script": f"{_script(tmp_path)} 'hello node'"}), inventory=hosts
    )

    assert run.rc == 0, run
    assert run.status("script", node.name) == "changed"
    assert run.result("script", node.name)["stdout_lines"][0].startswith("BusyBox v")
    assert node.path("/var/lib/kubesolo/update/from-script").read_text(encoding="utf-8") == "hello node\n"
    warnings = run.stdout + run.stderr
    if method == "piped":
        assert "transfer mechanism failed" not in warnings
    else:  # smart tried sftp and scp first
        assert "sftp transfer mechanism failed" in warnings and "scp transfer mechanism failed" in warnings, run


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _chrooted_in(path) -> list[int]:
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{entry}/root") == str(path):
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def _mounted_below(path) -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(f"{path}/")]


def test_stop_ends_sessions_control_masters_and_mounts(dropbear_node_factory, run_playbook):
    (node,) = dropbear_node_factory()
    node.mount_tmpfs("/var/lib/kubesolo/update", "256k")
    assert node.run("df -Pk /var/lib/kubesolo/update | tail -n 1").stdout.split()[1] == "256"
    run = run_playbook(_play({"name": "noop", "ansible.builtin.raw": "true"}), inventory=inventory([node]))
    assert run.rc == 0, run
    session = subprocess.Popen(node.ssh_command("sleep 300"), stdin=subprocess.DEVNULL)  # pylint: disable=consider-using-with
    chroot = node.chroot
    try:
        # dropbear itself runs in the chroot, so wait for the remote sleep, not for any process there
        # (busybox sh execs it: its argv is sleep, 300).
        deadline = time.monotonic() + 15
        while not set(_processes_mentioning("\0".join(["sleep", "300"]))) & set(_chrooted_in(chroot)):
            assert session.poll() is None, "ssh session ended early"
            assert time.monotonic() < deadline, "the remote sleep did not show up in the chroot"
            time.sleep(0.05)
        assert _processes_mentioning(str(node.control_path_dir))
        assert len(_mounted_below(chroot)) == 2  # devpts and the tmpfs

        node.stop()

        assert session.wait(10) != 0
    finally:
        session.kill()
        session.wait()
    assert _processes_mentioning(str(node.control_path_dir)) == []
    assert _chrooted_in(chroot) == []
    assert _mounted_below(chroot) == []
    assert not chroot.exists()


def test_run_ssh_command_and_repr(dropbear_node_factory):
    (node,) = dropbear_node_factory(version_id=None)

    completed = node.run("echo $HOME; test -e /etc/os-release || echo no-os-release; cat > /tmp/in", input="data")
    tty = subprocess.run(
        node.ssh_command("tty", tty=True), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )

    assert completed.stdout.split() == ["/root", "no-os-release"]
    assert node.path("/tmp/in").read_text(encoding="utf-8") == "data"
    assert tty.returncode == 0 and tty.stdout.strip() == "/dev/pts/0", tty
    with pytest.raises(SSHCommandError, match="exit status 3"):
        node.run("echo failing >&2; exit 3")
    assert repr(node) == f"DropbearNode('node1', port={node.port}, chroot={node.chroot})"
    assert node.path("/../etc/passwd") == node.chroot / "etc/passwd"
    assert node.path("/root/.ssh/authorized_keys").read_bytes() == node.client_key.with_suffix(".pub").read_bytes()
    workdir = node.workdir
    node.stop()
    assert not node.running and not workdir.exists()


@pytest.mark.parametrize("kind", [SSHNode, DropbearNode], ids=["openssh", "dropbear"])
def test_both_kinds_offer_the_same_host_vars(kind, request):
    factory = request.getfixturevalue("ssh_node_factory" if kind is SSHNode else "dropbear_node_factory")
    (node,) = factory()

    host_vars = node.ansible_host_vars()

    assert isinstance(node, kind)
    assert host_vars["ansible_port"] == node.port and host_vars["ansible_host"] == "127.0.0.1"
    assert host_vars["ansible_control_path_dir"] == str(node.control_path_dir)
    assert host_vars.get("ansible_ssh_transfer_method") == ("sftp" if kind is SSHNode else None)
    assert node.run("cat /etc/os-release").stdout.splitlines()[2] == "VERSION_ID=v0.2.0"
