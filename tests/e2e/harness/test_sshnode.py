"""The SSH test nodes themselves: real sshd, busybox-only chroot, no Python, driven by ansible-playbook."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys

import pytest

from tests.support.sshnode import SSHCommandError, inventory


def _play(*tasks, hosts="all"):
    return [{"name": "nodes", "hosts": hosts, "gather_facts": False, "tasks": list(tasks)}]


def test_raw_tasks_run_on_two_nodes(ssh_node_factory, run_playbook):
    old, new = ssh_node_factory(1, version_id="v0.2.0") + ssh_node_factory(1, version_id="v0.3.0")

    run = run_playbook(
        _play(
            {
                "name": "probe",
                "ansible.builtin.raw": "uname -m; cat /etc/os-release; sha256sum /etc/os-release; df -Pk /var/lib/kubesolo",
            }
        ),
        inventory=inventory([old, new]),
    )

    assert run.rc == 0, run
    for node, version in ((old, "v0.2.0"), (new, "v0.3.0")):
        result = run.result("probe", node.name)
        lines = result["stdout_lines"]
        assert result["rc"] == 0
        assert lines[0] == platform.machine()
        assert f"VERSION_ID={version}" in lines
        os_release = node.path("/etc/os-release").read_bytes()
        assert f"{hashlib.sha256(os_release).hexdigest()}  /etc/os-release" in lines
        assert lines[-2].split()[:2] == ["Filesystem", "1024-blocks"]
        df = lines[-1].split()
        assert df[-1] == "/" and df[1].isdigit() and df[3].isdigit(), lines
        # Each node's own sshd served its host, inside the chroot.
        assert f'Changed root directory to "{node.chroot}"' in node.log_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("interpreter", ["run_playbook default", "auto"])
def test_python_modules_fail_for_want_of_an_interpreter(ssh_node_factory, run_playbook, interpreter):
    (node,) = ssh_node_factory()
    # run_playbook configures the controller's own interpreter, a path that exists on this machine
    # but not on the node; "auto" is what an inventory that says nothing gets: discovery.
    env = {} if interpreter == "run_playbook default" else {"ANSIBLE_PYTHON_INTERPRETER": interpreter}

    run = run_playbook(_play({"name": "ping", "ansible.builtin.ping": {}}), inventory=inventory([node]), env=env)

    assert run.rc != 0, run
    assert run.status("ping", node.name) == "failed"
    result = run.result("ping", node.name)
    expected = sys.executable if interpreter == "run_playbook default" else "/usr/bin/python3"
    assert result["msg"] == f"The module interpreter '{expected}' was not found.", result
    assert f"{expected}: not found" in result["module_stdout"]
    assert result["rc"] == 127
    if interpreter == "auto":
        assert any("No python interpreters found" in warning for warning in result.get("warnings", [])), result


def test_there_is_no_python_on_the_node(ssh_node_factory, run_playbook):
    (node,) = ssh_node_factory()

    run = run_playbook(
        _play(
            {"name": "python3", "ansible.builtin.raw": "command -v python3 || echo none"},
            {"name": "anything python", "ansible.builtin.raw": "find / -name '*python*'; echo end"},
        ),
        inventory=inventory([node]),
    )

    assert run.rc == 0, run
    assert run.result("python3", node.name)["stdout_lines"] == ["none"]
    assert run.result("anything python", node.name)["stdout_lines"] == ["end"]


def test_script_module_transfers_over_sftp_and_runs_in_busybox_sh(ssh_node_factory, run_playbook, tmp_path):
    (node,) = ssh_node_factory()
    script = tmp_path / "stage.sh"
    script.write_text(
        "#!/bin/sh\nset -eu\nprintf '%s\\n' \"$1\" > /var/lib/kubesolo/update/from-script\n"
        "readlink /proc/self/exe 2>/dev/null || echo 'no procfs'\nbusybox | head -n 1\n",
        encoding="utf-8",
    )

    run = run_playbook(
        _play({"name": "script", "ansible.builtin.script": f"{script} 'hello node'"}),
        inventory=inventory([node]),
    )

    assert run.rc == 0, run
    assert run.status("script", node.name) == "changed"
    stdout = run.result("script", node.name)["stdout_lines"]
    assert stdout[0] == "no procfs" and stdout[1].startswith("BusyBox v"), stdout
    assert node.path("/var/lib/kubesolo/update/from-script").read_text(encoding="utf-8") == "hello node\n"
    log = node.log_path.read_text(encoding="utf-8")
    # put_file went through the sftp subsystem (internal-sftp inside the chroot) ...
    assert "Starting session: subsystem 'sftp' for root" in log
    # ... into Ansible's remote temp dir (run_playbook's ANSIBLE_REMOTE_TEMP, created on the node by
    # mkdir), which busybox rm emptied afterwards.
    remote_tmp = node.path(str(tmp_path / "ansible-tmp" / "remote"))
    assert remote_tmp.is_dir() and list(remote_tmp.iterdir()) == []


def test_busybox_tools_the_collection_relies_on(ssh_node_factory, run_playbook):
    (node,) = ssh_node_factory()
    script = r"""set -eu
d=$(mktemp -d /var/lib/kubesolo/update/.tmp.XXXXXX)
echo "dir=$d"
printf kernel > "$d/vmlinuz"
echo "sha=$(sha256sum < "$d/vmlinuz" | cut -d' ' -f1)"
mkdir "$d/v1" "$d/v2"
ln -s v1 "$d/current"
ln -s v2 "$d/current.new"
mv -T "$d/current.new" "$d/current"
echo "current=$(readlink "$d/current")"
echo "v1=$(ls -A "$d/v1" | wc -l)"
echo "df=$(df -P "$d" | tail -n 1)"
echo x > /dev/null
echo "base64=$(printf kubesolo | base64)"
"""

    run = run_playbook(_play({"name": "tools", "ansible.builtin.raw": script}), inventory=inventory([node]))

    assert run.rc == 0, run
    values = dict(line.split("=", 1) for line in run.result("tools", node.name)["stdout_lines"])
    assert values["sha"] == hashlib.sha256(b"kernel").hexdigest()
    # mv -T replaced the symlink itself instead of moving current.new into the v1 it pointed to.
    assert values["current"] == "v2"
    assert values["v1"] == "0"
    df = values["df"].split()
    assert len(df) == 6 and df[5] == "/" and all(field.isdigit() for field in df[1:4]), values["df"]
    assert values["base64"] == "a3ViZXNvbG8="
    work = node.path(values["dir"])
    assert work.parent == node.path("/var/lib/kubesolo/update")
    assert (work / "current").is_symlink() and str((work / "current").readlink()) == "v2"
    assert not (work / "current.new").exists()


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
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


def test_stop_ends_sessions_and_ansible_control_masters(ssh_node_factory, run_playbook):
    (node,) = ssh_node_factory()
    run = run_playbook(_play({"name": "noop", "ansible.builtin.raw": "true"}), inventory=inventory([node]))
    assert run.rc == 0, run
    session = subprocess.Popen(node.ssh_command("sleep 300"), stdin=subprocess.DEVNULL)  # pylint: disable=consider-using-with
    try:
        while not _chrooted_in(node.chroot):  # the remote sleep runs inside the chroot
            assert session.poll() is None, "ssh session ended early"
        # ansible-playbook left its ControlPersist master behind (60 s idle).
        assert _processes_mentioning(str(node.control_path_dir))

        node.stop()

        assert session.wait(10) != 0  # the server went away under it
    finally:
        session.kill()
        session.wait()
    assert _processes_mentioning(str(node.control_path_dir)) == []
    assert _chrooted_in(node.chroot) == []


def test_run_and_stop(ssh_node_factory):
    (node,) = ssh_node_factory(version_id=None)

    completed = node.run("echo $HOME; test -e /etc/os-release || echo no-os-release; cat > /tmp/in", input="data")

    assert completed.stdout.split() == ["/root", "no-os-release"]
    assert node.path("/tmp/in").read_text(encoding="utf-8") == "data"
    with pytest.raises(SSHCommandError, match="exit status 3"):
        node.run("echo failing >&2; exit 3")
    workdir = node.workdir
    node.stop()
    assert not node.running and not workdir.exists()
