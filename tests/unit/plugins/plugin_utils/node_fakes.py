# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A local shell standing in for a node without Python, and what the node-side tests share.

Used by test_node_store.py and test_controller_delivery.py; the fixtures are in conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _store
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_repository
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _node_store, _node_transfer
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import make_release, sha256_digest

KERNEL_1 = b"kernel v0.3.0\n" * 300
INITRAMFS_1 = b"initramfs v0.3.0\n" * 500
KERNEL_2 = b"kernel v0.4.0\n" * 310
INITRAMFS_2 = b"initramfs v0.4.0\n" * 520
STORE_NAME = ".staged.kubesolo-fleet"
REPOSITORY = parse_repository("ghcr.io/portainer/kubesolo-os")
BUSYBOX = "/bin/busybox"
# What the scripts of _node_scripts.py call besides sh builtins.
APPLETS = (
    "sha256sum",
    "mktemp",
    "mv",
    "readlink",
    "base64",
    "df",
    "awk",
    "head",
    "cut",
    "tr",
    "ls",
    "rm",
    "ln",
    "chmod",
    "sync",
    "dirname",
    "uname",
    "mkdir",
    "rmdir",
    "printf",
    "echo",
    "[",
    "test",
    "true",
    "cat",
    "stat",
    "id",
    "sed",
    "kill",
    "sleep",
    "date",
    "pwd",
    "sha512sum",
    "tee",
    "dd",
    "du",
)
SHELLS = ["system-sh", "busybox"]


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


class Node:
    """A local shell as the node: ``run`` as NodeStore takes it (its shell) and ``put`` as a
    connection's put_file, both recorded."""

    def __init__(self, argv, env=None):
        self.argv = list(argv)
        self.env = env
        self.scripts = []
        self.puts = []

    def run(self, script, data=None):
        self.scripts.append(script)
        done = subprocess.run(self.argv + [script], input=data, capture_output=True, env=self.env, check=False)
        return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")

    def put(self, local_path, remote_path):
        self.puts.append(remote_path)
        shutil.copyfile(local_path, remote_path)

    def store(self, dest):
        return _node_store.NodeStore(self.run, dest)


TRANSFER_METHODS = ["shell", "put_file"]


def no_wait_policy(retries=3):
    """A retry policy for the link that does not sleep."""
    return RetryPolicy(retries, max_wait=0, budget=0, sleep=lambda _seconds: None)


def transfer_of(method, node_store, put=None, **kwargs):
    """The _node_transfer method ``method`` for ``node_store``; ``put`` is put_file's connection call."""
    if method == "shell":
        return _node_transfer.ShellStream(node_store, kwargs.pop("policy", no_wait_policy()), **kwargs)
    return _node_transfer.PutFile(node_store, put, kwargs.pop("policy", no_wait_policy()), **kwargs)


def busybox_bin_dir(tmp_path_factory):
    """A directory of busybox applet links, to be the whole PATH (skips when busybox cannot be)."""
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip(f"{BUSYBOX} is not installed: the node scripts are only checked with the system shell")
    listed = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    missing = sorted(set(APPLETS) - set(listed))
    if missing:
        pytest.skip("this busybox lacks the applets {}".format(", ".join(missing)))
    directory = tmp_path_factory.mktemp("busybox-bin")
    for applet in listed:
        if "/" not in applet:
            os.symlink(BUSYBOX, str(directory / applet))
    return str(directory)


def node_of(request):
    """The Node of a ``node`` fixture parametrized with SHELLS (busybox from a ``busybox_bin`` fixture)."""
    if request.param == "system-sh":
        return Node(["/bin/sh", "-c"])
    directory = request.getfixturevalue("busybox_bin")
    return Node([BUSYBOX, "sh", "-c"], env={"PATH": directory, "LC_ALL": "C"})


def store_of(dest):
    return os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.kubesolo-fleet")


def release_dir_of(release):
    return "sha256-" + release.manifest_digest.split(":", 1)[1]


def leftovers(store):
    found = []
    for root, dirs, files in os.walk(store):
        for name in dirs + files:
            if name.startswith(("tmp-", "link-", "trash-")):
                found.append(os.path.relpath(os.path.join(root, name), store))
    return sorted(found)


def stage(node, dest, tmp_path, kernel, initramfs, version):
    """current_release(), then prepare, put, put_record and publish of a release; returns (release, record).

    The steps ControllerDelivery takes, with the layers from local files instead of its cache.
    """
    release = make_release(kernel, initramfs, version)
    blobs = dict((sha256_digest(data), data) for data in (kernel, initramfs))
    store = node.store(dest)
    store.current_release()
    layers = release.staged_layers()
    work = store.prepare(sum(layer["size"] for _name, layer in layers), release.manifest_digest)
    files = {}
    local = tmp_path / "controller-files"
    local.mkdir(exist_ok=True)
    for name, layer in layers:
        data = blobs[layer["digest"]]
        path = local / name
        path.write_bytes(data)
        node.put(str(path), f"{work}/{name}")
        files[name] = _store.file_entry(layer, sha256_hex(data))
    record = _store.build_record(release, REPOSITORY, files)
    store.put_record(work, record)
    store.publish(work, release.manifest_digest, files)
    return release, record


def stage_first(node, dest, tmp_path):
    return stage(node, dest, tmp_path, KERNEL_1, INITRAMFS_1, "v0.3.0")


def expected_files(kernel, initramfs):
    return {
        "vmlinuz": {
            "media_type": "application/vnd.kubesolo.os.kernel.v1+octet-stream",
            "digest": sha256_digest(kernel),
            "size": len(kernel),
            "sha256": sha256_hex(kernel),
        },
        "kubesolo-os.gz": {
            "media_type": "application/vnd.kubesolo.os.initramfs.v1+gzip",
            "digest": sha256_digest(initramfs),
            "size": len(initramfs),
            "sha256": sha256_hex(initramfs),
        },
    }


def assert_holds(dest, release, record, kernel, initramfs, also_in_store=()):
    """``dest`` holds ``release``, the only entry of the store besides ``also_in_store`` and the
    work directories (``partial-*``) where failed attempts keep what arrived for the next run."""
    assert os.readlink(dest) == os.path.join(os.path.basename(store_of(dest)), release_dir_of(release))
    assert read(os.path.join(dest, "vmlinuz")) == kernel
    assert read(os.path.join(dest, "kubesolo-os.gz")) == initramfs
    assert json.loads(read(os.path.join(dest, "release.json"))) == record
    entries = [entry for entry in os.listdir(store_of(dest)) if not entry.startswith("partial-")]
    assert sorted(entries) == sorted([release_dir_of(release)] + list(also_in_store))
    assert leftovers(store_of(dest)) == []


def foreign_directory(dest):
    os.mkdir(dest)
    with open(os.path.join(dest, "vmlinuz"), "wb") as handle:
        handle.write(b"the user kernel")
    return os.path.join(dest, "vmlinuz")


def foreign_file(dest):
    with open(dest, "wb") as handle:
        handle.write(b"the user kernel")
    return dest


def foreign_symlink(dest):
    elsewhere = os.path.join(os.path.dirname(dest), "elsewhere")
    os.mkdir(elsewhere)
    with open(os.path.join(elsewhere, "vmlinuz"), "wb") as handle:
        handle.write(b"the user kernel")
    os.symlink("elsewhere", dest)
    return os.path.join(elsewhere, "vmlinuz")


FOREIGN_DESTS = [
    (
        foreign_directory,
        "{dest} exists and is not a release staged by kubesolo.fleet; refusing to replace it "
        "(remove it or choose another dest)",
    ),
    (
        foreign_file,
        "{dest} exists and is not a release staged by kubesolo.fleet; refusing to replace it "
        "(remove it or choose another dest)",
    ),
    (
        foreign_symlink,
        "{dest} is a symbolic link to elsewhere, which kubesolo.fleet did not create; refusing to replace it",
    ),
]


FOREIGN_IDS = ["directory", "file", "symlink"]


def node_with_tools(tmp_path, **scripts):
    """A system-sh node with ``scripts`` ({command: sh script}) ahead of the real commands on PATH."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    for command, body in scripts.items():
        (fake_bin / command).write_text("#!/bin/sh\n" + body)
        os.chmod(str(fake_bin / command), 0o755)
    return Node(["/bin/sh", "-c"], env=dict(os.environ, PATH="{}:{}".format(fake_bin, os.environ.get("PATH", ""))))


def assert_space_refused(error, dest, total, margin):
    """``error`` is the node's refusal of a release of ``total`` bytes at ``dest``, with the
    KiB that ``margin`` (the patched _store.SPACE_MARGIN) asks for."""
    needed = int(total * (1 + margin) / 1024) + 1
    assert re.fullmatch(
        rf"not enough space on the node for {re.escape(dest)}: \d+ KiB free, {needed} KiB needed \(the release is "
        rf"{total} bytes, plus \d+% margin\); nothing was transferred",
        str(error),
    ), str(error)
