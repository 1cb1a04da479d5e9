"""Shared pytest setup for kubesolo.fleet: import paths and the registry / playbook / SSH node fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # so that ``tests.support`` imports work

# pylint: disable=wrong-import-position
from tests.support.collection import collections_root  # noqa: E402
from tests.support.dropbearnode import DropbearNode  # noqa: E402
from tests.support.dropbearnode import missing_requirements as dropbear_missing_requirements  # noqa: E402
from tests.support.playbook import run_playbook as _run_playbook  # noqa: E402
from tests.support.registry import DEFAULT_BINARY, Registry  # noqa: E402
from tests.support.sshnode import SSHNode, missing_requirements  # noqa: E402

# ``import ansible_collections.kubesolo.fleet.plugins.module_utils...`` resolves to this working copy.
sys.path.insert(0, str(collections_root()))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def registry():
    """A fresh Distribution registry for the test module (skipped locally when not installed)."""
    if not os.access(DEFAULT_BINARY, os.X_OK):
        message = (
            f"{DEFAULT_BINARY} missing: install the Debian package docker-registry (scripts/bootstrap does)"
            " or point KUBESOLO_TEST_REGISTRY_BIN at a Distribution registry binary"
        )
        if _in_ci():
            pytest.fail(message)  # CI must never skip the end-to-end tests silently
        pytest.skip(message)
    with Registry() as reg:
        yield reg


@pytest.fixture
def run_playbook(tmp_path):
    """``run_playbook(plays_or_tasks, **kwargs)`` bound to this test's ``tmp_path``."""

    def run(plays_or_tasks, **kwargs):
        kwargs.setdefault("tmp_path", tmp_path)
        return _run_playbook(plays_or_tasks, **kwargs)

    return run


def _node_factory(node_class, problems: list[str], what: str):
    """The generator behind ``ssh_node_factory`` and ``dropbear_node_factory``."""
    if problems:
        message = f"{what} unavailable (scripts/bootstrap installs the packages): " + "; ".join(problems)
        if _in_ci():
            pytest.fail(message)  # CI must never skip the end-to-end tests silently
        pytest.skip(message)
    nodes = []

    def make(count: int = 1, *, names=None, **kwargs):
        names = list(names) if names is not None else [f"node{len(nodes) + i + 1}" for i in range(count)]
        created = []
        for name in names:
            node = node_class(name, **kwargs)
            nodes.append(node)
            created.append(node.start())
        return created

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def ssh_node_factory():
    """``ssh_node_factory(count=1, **kwargs) -> [SSHNode, ...]``: started Python-less SSH nodes.

    Named ``node1``, ``node2``... in creation order (or ``names=[...]``); ``kwargs`` go to
    :class:`SSHNode` (``version_id``).  Every node is stopped when the test ends.
    Skipped locally when sshd, busybox-static or root is missing; a failure under CI.
    """
    yield from _node_factory(SSHNode, missing_requirements(), "SSH test nodes")


@pytest.fixture
def dropbear_node_factory():
    """``dropbear_node_factory(count=1, **kwargs) -> [DropbearNode, ...]``: started Python-less
    dropbear nodes without sftp server or scp (only the shell receives files).

    Named and stopped as by ``ssh_node_factory``; ``kwargs`` go to :class:`DropbearNode`
    (``version_id``).  Skipped locally when dropbear-bin, busybox-static, root or CAP_SYS_ADMIN is
    missing; a failure under CI.
    """
    yield from _node_factory(DropbearNode, dropbear_missing_requirements(), "dropbear test nodes")


# ---------------------------------------------------------------- VM nodes (UEFI + GRUB + KubeSolo A/B layout)


@pytest.fixture(scope="session")
def vm_kit(tmp_path_factory):
    """The session's :class:`tests.support.vm.VMKit`: kernel (downloaded once per user cache), GRUB,
    keys; releases are built on first request.  Skipped locally when QEMU, OVMF or another tool is
    missing; a failure under CI."""
    from tests.support.vm import VMKit  # pylint: disable=import-outside-toplevel
    from tests.support.vm import missing_requirements as vm_missing  # pylint: disable=import-outside-toplevel

    problems = vm_missing()
    if problems:
        message = "VM test nodes unavailable (scripts/bootstrap installs the packages): " + "; ".join(problems)
        if _in_ci():
            pytest.fail(message)  # CI must never skip the end-to-end tests silently
        pytest.skip(message)
    return VMKit(tmp_path_factory.mktemp("vm-kit")).prepare()


@pytest.fixture
def vm_factory(vm_kit, tmp_path):
    """``vm_factory(name, *, slot_a="v0.2.0", slot_b=None, grubenv=None, wait=True, **node_kwargs) -> VMNode``.

    Builds ``<tmp_path>/<name>.img`` (slots: a version, a Release or None) and starts a VM on it,
    waiting for SSH unless ``wait=False``; its serial console goes to ``<tmp_path>/<name>-console.log``.
    Every VM is stopped when the test ends (the disk images stay for inspection), and the console
    tails are printed, so a failing test shows them.  Boot at most two or three at a time.
    """
    vms = []

    def make(name, *, slot_a="v0.2.0", slot_b=None, grubenv=None, wait=True, **node_kwargs):
        disk = vm_kit.build_disk(tmp_path / f"{name}.img", slot_a=slot_a, slot_b=slot_b, grubenv=grubenv)
        node_kwargs.setdefault("console_log", tmp_path / f"{name}-console.log")
        vm = vm_kit.node(name, disk, **node_kwargs)
        vms.append(vm)
        return vm.start(wait=wait)

    yield make
    for vm in vms:
        vm.stop()
        print(f"--- {vm.name}: serial console tail ({vm.console_log})\n{vm.console_tail()}")


# ---------------------------------------------------------------- registry credentials and transports


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A test CA with server, client and token-signing certificates (:class:`tests.support.tls.PKI`)."""
    from tests.support.tls import make_pki  # pylint: disable=import-outside-toplevel

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def registry_factory():
    """``registry_factory(reg=None, *, client_cert=None, **kwargs) -> Registry``: a started registry.

    Builds ``Registry(**kwargs)`` unless an unstarted ``reg`` is given; ``client_cert`` (``(cert,
    key)``) is what the test-side session presents to a mutual-TLS registry, its readiness probe
    included.  Every registry is stopped when the test ends.  Skipped (failed under CI) like
    the ``registry`` fixture when Distribution is not installed.
    """
    if not os.access(DEFAULT_BINARY, os.X_OK):
        message = f"{DEFAULT_BINARY} missing: install the Debian package docker-registry (scripts/bootstrap does)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    started: list[Registry] = []

    def make(reg: Registry | None = None, *, client_cert=None, **kwargs) -> Registry:
        reg = reg if reg is not None else Registry(**kwargs)
        if client_cert is not None:
            reg.session.cert = client_cert
        started.append(reg)
        return reg.start()

    yield make
    for reg in reversed(started):
        reg.stop()
