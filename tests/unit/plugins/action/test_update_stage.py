# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The update_stage action plugin with a mocked task and connection.

Host delivery must hand the task to the module untouched; controller delivery
runs on the controller, here with a local /bin/sh standing in for the node and
a fake registry client instead of the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from unittest.mock import MagicMock

import pytest
from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.playbook.play_context import PlayContext

from ansible_collections.kubesolo.fleet.plugins.action import update_stage
from ansible_collections.kubesolo.fleet.plugins.module_utils import _options
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    ArchitectureNotShippedError,
    NotFoundError,
    RegistryConnectionError,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    FakeBlobClient,
    make_release,
    sha256_digest,
)

KERNEL_1 = b"kernel v0.3.0\n" * 300
INITRAMFS_1 = b"initramfs v0.3.0\n" * 500
KERNEL_2 = b"kernel v0.4.0\n" * 310
INITRAMFS_2 = b"initramfs v0.4.0\n" * 520
REPOSITORY = "ghcr.io/portainer/kubesolo-os"


class Harness:
    """An ActionModule built the way ansible-core's unit tests build one, plus what it did."""

    def __init__(self, args, check_mode=False, diff=False):
        self.task = MagicMock()
        self.task.action = "kubesolo.fleet.update_stage"
        self.task.args = args
        self.task.async_val = 0
        self.task.check_mode = check_mode
        self.task.diff = diff
        self.connection = MagicMock()
        self.connection._shell.tmpdir = "/remote/tmp"  # already made: no remote tmp round trip
        self.connection.transport = "local"
        self.puts = []
        self.connection.put_file.side_effect = self._put
        self.commands = []
        self.action = update_stage.ActionModule(
            self.task,
            self.connection,
            PlayContext(),
            loader=MagicMock(),
            templar=MagicMock(),
            shared_loader_obj=MagicMock(),
        )
        self.action._low_level_execute_command = self._execute
        self.action._execute_module = MagicMock(return_value={"changed": True, "from_module": "yes"})

    def _put(self, local_path, remote_path):
        self.puts.append(remote_path)
        shutil.copyfile(local_path, remote_path)

    def _execute(self, cmd, sudoable=True, in_data=None, executable=None, **_kwargs):
        self.commands.append((cmd, executable))
        done = subprocess.run([executable or "/bin/sh", "-c", cmd], input=in_data, capture_output=True, check=False)
        return {"rc": done.returncode, "stdout": done.stdout.decode(), "stderr": done.stderr.decode()}

    def run(self, task_vars=None):
        return self.action.run(task_vars=task_vars if task_vars is not None else {"inventory_hostname": "node1"})


def patch_registry(monkeypatch, serve):
    """Stand in for the registry: ``serve(params, architecture)`` returns (client, release) or raises."""
    client = getattr(serve, "client", None) or FakeBlobClient([])
    monkeypatch.setattr(_options, "mirrored_client_from_params", lambda _params: client)
    monkeypatch.setattr(
        _options, "resolve_from_params", lambda _client, params, architecture: serve(params, architecture)[1]
    )


class Registry:
    """Serves one release and records the architecture asked for."""

    def __init__(self, kernel, initramfs, version):
        self.release = make_release(kernel, initramfs, version)
        self.client = FakeBlobClient([kernel, initramfs])
        self.asked = []

    def __call__(self, params, default_architecture):
        self.asked.append((params["repository"], params["architecture"] or default_architecture))
        return self.client, self.release


@pytest.fixture
def controller_args(tmp_path):
    os.makedirs(str(tmp_path / "node"))
    return {
        "repository": REPOSITORY,
        "tag": "v0.3.0",
        "dest": str(tmp_path / "node" / "staged"),
        "delivery": "controller",
        "controller_cache": str(tmp_path / "cache"),
    }


# -- Host delivery -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        {"repository": REPOSITORY, "dest": "/var/lib/kubesolo/staged"},
        {
            "repository": REPOSITORY,
            "dest": "/var/lib/kubesolo/staged",
            "delivery": "host",
            "tag": "v0.3.0",
            "verify_existing": True,
            "controller_cache_keep": 0,
        },
    ],
    ids=["default", "explicit"],
)
def test_host_delivery_runs_the_module_with_the_task_args(args, monkeypatch):
    patch_registry(monkeypatch, lambda *_a: pytest.fail("host delivery must not resolve on the controller"))
    harness = Harness(dict(args))
    task_vars = {"inventory_hostname": "node1"}
    result = harness.run(task_vars)
    harness.action._execute_module.assert_called_once_with(
        module_name="kubesolo.fleet.update_stage", module_args=args, task_vars=task_vars
    )
    assert harness.action._execute_module.call_args.kwargs["module_args"] is harness.task.args
    assert result == {"changed": True, "from_module": "yes"}
    assert harness.commands == []
    assert harness.puts == []


def test_host_delivery_hands_the_module_the_key_files_read_on_the_controller(monkeypatch, tmp_path):
    patch_registry(monkeypatch, lambda *_a: pytest.fail("host delivery must not resolve on the controller"))
    key_file = tmp_path / "release.pub"
    key_file.write_text("-----BEGIN PUBLIC KEY-----\nfrom the controller\n-----END PUBLIC KEY-----\n")
    inline = "-----BEGIN PUBLIC KEY-----\ninline\n-----END PUBLIC KEY-----\n"
    args = {"repository": REPOSITORY, "dest": "/var/lib/kubesolo/staged", "signature_keys": [str(key_file), inline]}
    harness = Harness(dict(args))
    harness.run({"inventory_hostname": "node1"})
    sent = harness.action._execute_module.call_args.kwargs["module_args"]
    assert sent["signature_keys"] == [key_file.read_text(), inline]
    assert harness.task.args["signature_keys"] == [str(key_file), inline]  # the task itself is left alone


def test_host_delivery_with_an_unreadable_key_file_fails_on_the_controller(monkeypatch, tmp_path):
    harness = Harness({"repository": REPOSITORY, "dest": "/d", "signature_keys": [str(tmp_path / "missing.pub")]})
    result = harness.run({"inventory_hostname": "node1"})
    assert result["failed"] is True and result["error_code"] == "invalid_parameter"
    assert "cannot read the key file" in result["msg"]
    harness.action._execute_module.assert_not_called()


def test_host_delivery_reads_no_key_file_with_the_policy_off_and_reads_a_single_one(monkeypatch, tmp_path):
    stale = {"repository": REPOSITORY, "dest": "/d", "signature_keys": ["/nowhere.pub"], "signature_policy": "off"}
    harness = Harness(dict(stale))
    harness.run({"inventory_hostname": "node1"})
    assert harness.action._execute_module.call_args.kwargs["module_args"] == stale
    key_file = tmp_path / "release.pub"
    key_file.write_text("-----BEGIN PUBLIC KEY-----\nk\n-----END PUBLIC KEY-----\n")
    harness = Harness({"repository": REPOSITORY, "dest": "/d", "signature_keys": str(key_file)})
    harness.run({"inventory_hostname": "node1"})
    assert harness.action._execute_module.call_args.kwargs["module_args"]["signature_keys"] == [key_file.read_text()]


# -- Controller delivery -----------------------------------------------------


def test_a_fleet_error_fails_the_task_with_its_code(controller_args, monkeypatch):
    def not_found(_params, _architecture):
        raise NotFoundError(f"manifest v0.3.0 was not found in {REPOSITORY}")

    patch_registry(monkeypatch, not_found)
    harness = Harness(dict(controller_args, architecture="amd64"))
    result = harness.run()
    assert result["failed"] is True
    assert result["error_code"] == "not_found"
    assert result["msg"] == f"manifest v0.3.0 was not found in {REPOSITORY}"
    harness.action._execute_module.assert_not_called()
    assert harness.puts == []
    assert not os.path.lexists(controller_args["dest"])


def test_a_fleet_error_carries_its_details(controller_args, monkeypatch):
    def not_shipped(_params, architecture):
        raise ArchitectureNotShippedError(architecture, ["arm64"])

    patch_registry(monkeypatch, not_shipped)
    result = Harness(dict(controller_args, architecture="amd64")).run()
    assert result["failed"] is True
    assert result["error_code"] == "architecture_not_shipped"
    assert result["architecture"] == "amd64"
    assert result["available_architectures"] == ["arm64"]


def test_a_foreign_dest_fails_the_task_before_anything_is_copied(controller_args, monkeypatch, tmp_path):
    registry = Registry(KERNEL_1, INITRAMFS_1, "v0.3.0")
    patch_registry(monkeypatch, registry)
    with open(controller_args["dest"], "wb") as handle:
        handle.write(b"the user kernel")
    result = Harness(dict(controller_args, architecture="amd64")).run()
    assert result["failed"] is True
    assert result["error_code"] == "stage_failed"
    assert "refusing to replace it" in result["msg"]
    assert registry.client.downloaded == []
    assert not os.path.exists(str(tmp_path / "cache"))


def test_controller_delivery_stages_then_is_idempotent(controller_args, monkeypatch, tmp_path):
    registry = Registry(KERNEL_1, INITRAMFS_1, "v0.3.0")
    patch_registry(monkeypatch, registry)
    harness = Harness(dict(controller_args))
    result = harness.run()
    assert "failed" not in result, result
    total = len(KERNEL_1) + len(INITRAMFS_1)
    dest = controller_args["dest"]
    assert result["changed"] is True
    assert result["delivery"] == "controller"
    assert result["bytes_downloaded"] == total
    assert result["bytes_transferred"] == total
    assert result["manifest_digest"] == registry.release.manifest_digest
    assert result["staged"] == {
        "vmlinuz_path": os.path.join(dest, "vmlinuz"),
        "initramfs_path": os.path.join(dest, "kubesolo-os.gz"),
        "version": "v0.3.0",
    }
    assert result["transfer"] == {
        "retries": 0,
        "last_error": "",
        "resumed_bytes": 0,
        "fetched_bytes": total,
        "method": "put_file",  # auto, and the local connection copies files
        "sent_bytes": total,
        "interruptions": 0,
    }
    with open(os.path.join(dest, "vmlinuz"), "rb") as handle:
        assert handle.read() == KERNEL_1
    # No architecture given: the node's uname -m chose it; every command ran with /bin/sh.
    assert registry.asked == [(REPOSITORY, os.uname().machine)]
    assert harness.commands[0] == ("uname -m", "/bin/sh")
    assert set(executable for _cmd, executable in harness.commands) == {"/bin/sh"}
    assert sorted(registry.client.downloaded) == sorted([sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)])
    cached = os.path.join(str(tmp_path / "cache"), "blobs", "sha256", hashlib.sha256(KERNEL_1).hexdigest())
    with open(cached, "rb") as handle:
        assert handle.read() == KERNEL_1

    again = Harness(dict(controller_args))
    result = again.run()
    assert result["changed"] is False
    assert result["bytes_downloaded"] == 0
    assert result["bytes_transferred"] == 0
    assert again.puts == []
    assert sorted(registry.client.downloaded) == sorted([sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)])


def test_a_second_node_uses_the_cache(controller_args, monkeypatch, tmp_path):
    registry = Registry(KERNEL_1, INITRAMFS_1, "v0.3.0")
    patch_registry(monkeypatch, registry)
    Harness(dict(controller_args, architecture="amd64")).run()
    os.makedirs(str(tmp_path / "node2"))
    other = dict(controller_args, architecture="amd64", dest=str(tmp_path / "node2" / "staged"))
    harness = Harness(other)
    result = harness.run()
    assert result["changed"] is True
    assert result["bytes_downloaded"] == 0
    assert result["bytes_transferred"] == len(KERNEL_1) + len(INITRAMFS_1)
    assert len(registry.client.downloaded) == 2
    assert [os.path.basename(path) for path in harness.puts] == ["vmlinuz.part", "kubesolo-os.gz.part"]


def test_check_mode_reports_a_change_and_writes_nothing(controller_args, monkeypatch, tmp_path):
    registry = Registry(KERNEL_1, INITRAMFS_1, "v0.3.0")
    patch_registry(monkeypatch, registry)
    harness = Harness(dict(controller_args, architecture="amd64"), check_mode=True, diff=True)
    result = harness.run()
    assert result["changed"] is True
    assert result["bytes_downloaded"] == 0
    assert result["bytes_transferred"] == 0
    assert result["diff"] == {
        "before": {},
        "after": {"version": "v0.3.0", "manifest_digest": registry.release.manifest_digest},
    }
    assert registry.client.downloaded == []
    assert harness.puts == []
    assert not os.path.lexists(controller_args["dest"])
    assert not os.path.exists(str(tmp_path / "cache"))


def test_the_cache_is_pruned_to_controller_cache_keep(controller_args, monkeypatch, tmp_path):
    first = Registry(KERNEL_1, INITRAMFS_1, "v0.3.0")
    patch_registry(monkeypatch, first)
    Harness(dict(controller_args, architecture="amd64", controller_cache_keep=1)).run()
    second = Registry(KERNEL_2, INITRAMFS_2, "v0.4.0")
    patch_registry(monkeypatch, second)
    result = Harness(dict(controller_args, architecture="amd64", controller_cache_keep=1)).run()
    assert result["changed"] is True
    blobs = os.path.join(str(tmp_path / "cache"), "blobs", "sha256")
    assert sorted(name for name in os.listdir(blobs) if not name.endswith(".sha256")) == sorted(
        hashlib.sha256(data).hexdigest() for data in (KERNEL_2, INITRAMFS_2)
    )
    with open(os.path.join(controller_args["dest"], "kubesolo-os.gz"), "rb") as handle:
        assert handle.read() == INITRAMFS_2


def test_a_failed_download_reports_the_transfer_too(controller_args, monkeypatch):
    # The module documents ``transfer`` as returned always, also on failure.
    broken = RegistryConnectionError("download of blob broke off after 10 of 7000 bytes")
    registry = Registry(KERNEL_1, INITRAMFS_1, "v0.3.0")
    registry.client.failures[sha256_digest(INITRAMFS_1)] = broken
    patch_registry(monkeypatch, registry)
    result = Harness(dict(controller_args, architecture="amd64")).run()
    assert result["failed"] is True
    assert result["error_code"] == "registry_unreachable"
    assert result["msg"] == str(broken)
    assert not os.path.lexists(controller_args["dest"])
    assert result["transfer"] == dict(
        registry.client.transfer_summary(), method="put_file", sent_bytes=0, interruptions=0
    )


def test_host_delivery_loads_nothing_of_controller_delivery_on_the_controller():
    # The action plugin is loaded for every host of a fleet; with host delivery it only hands
    # over to the module, so requests and the registry client must not be imported for it.
    root = os.path.dirname(update_stage.__file__).rsplit(os.sep + "ansible_collections" + os.sep, 1)[0]
    code = (
        "import sys\n"
        "from ansible_collections.kubesolo.fleet.plugins.action import update_stage\n"
        'print(sorted(m for m in sys.modules if m.split(".")[0] in ("requests", "urllib3")\n'
        '             or m.startswith(("ansible_collections.kubesolo.fleet.plugins.module_utils",\n'
        '                              "ansible_collections.kubesolo.fleet.plugins.plugin_utils"))))\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=root)
    )
    assert done.stdout.strip() == "[]", done.stdout


# -- How the layers go to the node ----------------------------------------------


class SSHOptions:
    """The options of an ssh connection as the action plugin reads and sets them, and what each put saw."""

    def __init__(self, harness, transfer_method="smart", working=("sftp", "scp")):
        self.values = {"ssh_transfer_method": transfer_method, "sftp_extra_args": "", "scp_extra_args": ""}
        self.working = working
        self.tried = []
        connection = harness.connection
        connection.transport = "ssh"
        connection.get_option.side_effect = self.values.get
        connection.set_option.side_effect = self.values.__setitem__
        connection.put_file.side_effect = self._put
        self.harness = harness

    def _put(self, local_path, remote_path):
        method = self.values["ssh_transfer_method"]
        self.tried.append((method, self.values["sftp_extra_args"], self.values["scp_extra_args"]))
        if method not in self.working:
            raise AnsibleError(f"failed to transfer file to {remote_path} with {method}")
        self.harness._put(local_path, remote_path)


def test_ssh_put_file_tries_sftp_then_scp_never_piped(controller_args, monkeypatch):
    patch_registry(monkeypatch, Registry(KERNEL_1, INITRAMFS_1, "v0.3.0"))
    harness = Harness(dict(controller_args, architecture="amd64"))
    ssh = SSHOptions(harness, working=("scp",))
    result = harness.run()
    assert "failed" not in result, result
    assert result["transfer"]["method"] == "put_file"
    assert [method for method, _sftp, _scp in ssh.tried] == ["sftp", "scp", "sftp", "scp"]
    assert ssh.values["ssh_transfer_method"] == "smart"  # restored


def test_where_neither_sftp_nor_scp_works_auto_streams_through_the_shell(controller_args, monkeypatch, tmp_path):
    patch_registry(monkeypatch, Registry(KERNEL_1, INITRAMFS_1, "v0.3.0"))
    harness = Harness(dict(controller_args, architecture="amd64"))
    ssh = SSHOptions(harness, working=())
    result = harness.run()
    assert "failed" not in result, result
    assert result["transfer"]["method"] == "shell"
    assert result["transfer"]["sent_bytes"] == len(KERNEL_1) + len(INITRAMFS_1)
    assert result["transfer"]["interruptions"] == 0
    assert [method for method, _sftp, _scp in ssh.tried] == ["sftp", "scp"]  # then not again
    assert harness.puts == []
    staged = os.path.realpath(controller_args["dest"])
    assert open(os.path.join(staged, "vmlinuz"), "rb").read() == KERNEL_1


def test_put_file_on_a_node_that_cannot_take_files_fails_with_its_code(controller_args, monkeypatch):
    patch_registry(monkeypatch, Registry(KERNEL_1, INITRAMFS_1, "v0.3.0"))
    harness = Harness(dict(controller_args, architecture="amd64", node_transfer="put_file"))
    SSHOptions(harness, working=())
    result = harness.run()
    assert result["failed"] is True
    assert result["error_code"] == "node_transfer_unavailable"
    assert result["msg"].startswith("the connection cannot copy files to this node: failed to transfer file to ")
    assert result["transfer"]["method"] == "put_file"
    assert result["transfer"]["sent_bytes"] == 0


def test_the_rate_limit_goes_to_sftp_and_scp_as_kbit(controller_args, monkeypatch):
    patch_registry(monkeypatch, Registry(KERNEL_1, INITRAMFS_1, "v0.3.0"))
    harness = Harness(dict(controller_args, architecture="amd64", transfer_rate_limit=1_000_000))
    ssh = SSHOptions(harness, working=("sftp",))
    ssh.values["sftp_extra_args"] = "-q"
    result = harness.run()
    assert "failed" not in result, result
    # 1 MB/s is 7812 Kbit/s of 1024 bits, as sftp -l and scp -l count them.
    assert ssh.tried[0] == ("sftp", "-q -l 7812", " -l 7812")
    assert ssh.values["sftp_extra_args"] == "-q" and ssh.values["scp_extra_args"] == ""


@pytest.mark.parametrize("transport, configured", [("local", None), ("ssh", "piped")])
def test_a_copy_that_cannot_honour_the_limit_or_would_hold_the_file_in_memory_is_not_used(
    controller_args, monkeypatch, transport, configured
):
    patch_registry(monkeypatch, Registry(KERNEL_1, INITRAMFS_1, "v0.3.0"))
    limit = 1_000_000 if transport == "local" else 0
    harness = Harness(dict(controller_args, architecture="amd64", transfer_rate_limit=limit))
    if transport == "ssh":
        ssh = SSHOptions(harness, transfer_method=configured)
    result = harness.run()
    assert "failed" not in result, result
    assert result["transfer"]["method"] == "shell"
    assert harness.puts == []
    if transport == "ssh":
        assert ssh.tried == []


def test_a_broken_connection_is_retried_and_counted(controller_args, monkeypatch):
    patch_registry(monkeypatch, Registry(KERNEL_1, INITRAMFS_1, "v0.3.0"))
    harness = Harness(dict(controller_args, architecture="amd64", node_transfer="shell", retry_max_wait=0))
    execute = harness.action._low_level_execute_command
    broken = []

    def flaky(cmd, sudoable=True, in_data=None, executable=None, **kwargs):
        if in_data is not None and cmd.startswith("part=") and not broken:
            broken.append(cmd)
            raise AnsibleConnectionFailure("Data could not be sent to remote host. Connection reset by peer")
        return execute(cmd, sudoable=sudoable, in_data=in_data, executable=executable, **kwargs)

    harness.action._low_level_execute_command = flaky
    result = harness.run()
    assert "failed" not in result, result
    assert len(broken) == 1
    assert result["transfer"]["interruptions"] == 1
    assert result["transfer"]["sent_bytes"] == len(KERNEL_1) * 2 + len(INITRAMFS_1)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"transfer_rate_limit": -1}, "transfer_rate_limit must not be negative (0 means no limit)"),
        ({"transfer_chunk_size": 1000}, "transfer_chunk_size must be at least 65536 bytes"),
    ],
)
def test_bad_transfer_options_fail_with_invalid_parameter(controller_args, monkeypatch, args, message):
    patch_registry(monkeypatch, Registry(KERNEL_1, INITRAMFS_1, "v0.3.0"))
    result = Harness(dict(controller_args, **args)).run()
    assert result["failed"] is True
    assert result["error_code"] == "invalid_parameter"
    assert result["msg"] == message


def test_verbose_mode_shows_the_progress_of_each_layer(controller_args, monkeypatch):
    patch_registry(monkeypatch, Registry(KERNEL_1, INITRAMFS_1, "v0.3.0"))
    shown = []
    monkeypatch.setattr(update_stage.display, "verbosity", 1)
    monkeypatch.setattr(update_stage.display, "v", lambda line, host=None: shown.append((host, line)))
    result = Harness(dict(controller_args, architecture="amd64", node_transfer="shell")).run()
    assert "failed" not in result, result
    assert [host for host, _line in shown] == ["node1", "node1"]
    assert shown[0][1].startswith("node transfer of vmlinuz: 0.0 of 0.0 MiB on the node")
    assert shown[1][1].endswith(", done")
