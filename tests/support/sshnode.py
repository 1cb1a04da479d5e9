"""A Python-less "KubeSolo OS node" for tests: a real OpenSSH server whose sessions live in a chroot
that holds nothing but a static busybox.

Real KubeSolo OS nodes run Tiny Core Linux: busybox userland, reachable over SSH, **no Python**.
An :class:`SSHNode` reproduces that on 127.0.0.1 so that ``ansible-playbook`` talks to it through the
real ``ssh`` connection plugin, and anything that needs Python on the node fails as it would there.
What does not depend on the SSH server (the chroot, the client key, the ways in, the clean-up) is
in :class:`BusyboxNode`, shared with :class:`~tests.support.dropbearnode.DropbearNode` (dropbear,
and neither sftp nor scp).

How it is built (all below one temp dir, removed by :meth:`SSHNode.stop`)::

    <workdir>/                      root-owned, 0700
        sshd_config, sshd.pid, sshd.log
        ssh_host_ed25519_key[.pub]  host key, new per node
        client_key[.pub]            the key tests log in with (:attr:`SSHNode.client_key`)
        authorized_keys             root's keys: AuthorizedKeysFile, outside the chroot, 0600
        cp/                         Ansible's ControlPersist sockets for this node (see ansible_host_vars)
        root/                       the ChrootDirectory: the node's "/" (:attr:`SSHNode.chroot`)
            bin/busybox             a copy of the static busybox
            bin/sh, usr/bin/env...  one relative symlink per applet, where ``busybox --list-full`` puts it
            bin/bash                wrapper for the host's login shell, see _install_login_shell()
            etc/passwd, etc/group   root only (home /root, shell /bin/sh)
            etc/os-release          VERSION_ID=<version_id>
            dev/null                character device 1,3 (mknod)
            proc/mounts             a one-line stub so busybox ``df`` works, see _write_proc_mounts()
            root/ tmp/ (1777) var/lib/kubesolo/update/

Gotchas, each handled below:

* sshd refuses a ChrootDirectory unless *every* component of its path is owned by root and not
  group/other-writable.  ``/tmp`` (1777) fails that, so the temp dir cannot live in the usual temp
  dir: :func:`base_dir` picks one that qualifies (``$KUBESOLO_TEST_SSHNODE_DIR`` first).
* after chroot, sshd executes the login shell named in the **host's** passwd entry (root's is
  ``/bin/bash`` on Debian), not the chroot's ``etc/passwd``; a missing shell makes every session fail.
* chroot needs root: the tests must run as root (CI does).
* internal-sftp runs inside sshd after the chroot, so file transfer (Ansible's ``put_file``) needs
  nothing in the chroot.
* the chroot's ``/proc`` is not procfs; only ``proc/mounts`` exists.
"""

from __future__ import annotations

import abc
import os
import posixpath
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .process import ManagedProcess, descendants, free_port
from .rootfs import install_busybox

# free_port is defined in .process; tests import it from here too.
__all__ = [
    "DEFAULT_BUSYBOX",
    "DEFAULT_SSHD",
    "PRIVSEP_DIR",
    "SSH",
    "SSH_COMMON_ARGS",
    "SSH_KEYGEN",
    "BusyboxNode",
    "SSHCommandError",
    "SSHNode",
    "base_dir",
    "chroot_capable",
    "free_port",
    "inventory",
    "missing_requirements",
    "ssh_keygen",
]

DEFAULT_SSHD = os.environ.get("KUBESOLO_TEST_SSHD_BIN", "/usr/sbin/sshd")
#: Must be statically linked: the chroot holds no libraries (Debian package busybox-static).
DEFAULT_BUSYBOX = os.environ.get("KUBESOLO_TEST_BUSYBOX_BIN", "/bin/busybox")
SSH = "ssh"
SSH_KEYGEN = "ssh-keygen"
#: sshd (OpenSSH 9.x) will not start without its privilege-separation directory; a machine where
#: the ssh service never ran (a container, a fresh CI runner) may not have it.
PRIVSEP_DIR = Path("/run/sshd")

#: Options every ``ssh`` towards a node needs: each node has a new host key on a reused address.
SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes"


class SSHCommandError(subprocess.CalledProcessError):
    """:meth:`SSHNode.run` with ``check=True`` saw a non-zero exit status."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def chroot_capable(path: str | os.PathLike) -> bool:
    """True when sshd would accept a ChrootDirectory at (or below a root-owned 0755 dir in) ``path``.

    sshd checks every component from ``/`` down: owned by root, no group/other write bit.
    """
    current = Path(os.path.abspath(path))
    for component in [current, *current.parents]:
        try:
            info = component.stat()
        except OSError:
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            return False
    return True


def _allows_devices(path: str | os.PathLike) -> bool:
    return not os.statvfs(path).f_flag & getattr(os, "ST_NODEV", 4)


def base_dir() -> Path:
    """Directory in which node temp dirs are created.

    ``$KUBESOLO_TEST_SSHNODE_DIR`` when set (it must pass :func:`chroot_capable`); otherwise the
    first of the usual temp dir, ``/run`` and ``/var/cache`` that passes it, preferring one whose
    filesystem is not mounted ``nodev`` (``/run`` usually is, and ``dev/null`` would not open).
    """
    override = os.environ.get("KUBESOLO_TEST_SSHNODE_DIR")
    if override:
        if not chroot_capable(override):
            raise RuntimeError(
                f"KUBESOLO_TEST_SSHNODE_DIR={override}: every component must be a root-owned directory"
                " that is not group/other-writable (sshd's rule for ChrootDirectory)"
            )
        return Path(override)
    candidates = [Path(c) for c in (tempfile.gettempdir(), "/run", "/var/cache") if chroot_capable(c)]
    if not candidates:
        raise RuntimeError(
            "no directory for SSH test nodes: sshd needs a ChrootDirectory whose every path component is"
            " root-owned and not group/other-writable; set KUBESOLO_TEST_SSHNODE_DIR to one"
        )
    return next((c for c in candidates if _allows_devices(c)), candidates[0])


def missing_requirements(sshd: str = DEFAULT_SSHD, busybox: str = DEFAULT_BUSYBOX) -> list[str]:
    """Why SSH nodes cannot run here (empty when they can): for a skip or fail message."""
    problems = []
    if not os.access(sshd, os.X_OK):
        problems.append(f"{sshd} missing: install the Debian package openssh-server")
    if not os.access(busybox, os.X_OK):
        problems.append(f"{busybox} missing: install the Debian package busybox-static")
    for tool in (SSH, SSH_KEYGEN, "sftp"):
        if not shutil.which(tool):
            problems.append(f"{tool} missing: install the Debian package openssh-client")
    if os.geteuid() != 0:
        problems.append("SSH test nodes chroot their sessions, which needs root: run the tests as root")
    return problems


def inventory(nodes: Iterable[BusyboxNode], group_vars: Mapping | None = None) -> dict:
    """A YAML-ready inventory dict with every node as a host (named by its ``name``) in ``all``.

    Any node with ``name`` and ``ansible_host_vars()`` will do: :class:`SSHNode`,
    :class:`~tests.support.dropbearnode.DropbearNode`, :class:`~tests.support.vm.VMNode`, mixed.
    """
    hosts = {}
    for node in nodes:
        if node.name in hosts:
            raise ValueError(f"two nodes named {node.name!r}")
        hosts[node.name] = node.ansible_host_vars()
    return {"all": {"hosts": hosts, "vars": dict(group_vars or {})}}


def ssh_keygen(path: Path, comment: str) -> None:
    """An ed25519 key pair without passphrase at ``path`` and ``path.pub`` (OpenSSH format)."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    )


class BusyboxNode(ManagedProcess):
    """What the Python-less test nodes share, whatever their SSH server: a chroot holding a busybox
    userland, the client key root logs in with, the ways in (Ansible host variables, ``ssh``) and
    the clean-up (sessions, ControlPersist masters, mounts).

    ``version_id`` goes into ``/etc/os-release`` (``None``: no such file).  ``name`` is the
    inventory hostname :func:`inventory` uses.  ``uname -m`` reports the host's machine: the node's
    shell cannot be made to lie about it (see :func:`~tests.support.rootfs.install_busybox`), so
    tests of other architectures override the architecture on the Ansible side instead.

    A subclass adds the server: its part of the chroot (:meth:`_populate_chroot`), its keys
    (:meth:`_make_keys`, which must create :attr:`client_key`), and how to launch and probe it
    (the abstract methods of :class:`~tests.support.process.ManagedProcess`).
    """

    host = "127.0.0.1"
    _noun = "node"

    def __init__(
        self,
        name: str = "node",
        *,
        version_id: str | None = "v0.2.0",
        busybox: str = DEFAULT_BUSYBOX,
        startup_timeout: float = 15.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.name = name
        self.version_id = version_id
        self.busybox = busybox
        #: True when dev/null is a real character device (False: a 0666 regular file, see _make_dev_null).
        self.dev_null_is_device: bool | None = None
        self._mounts: list[Path] = []

    # ---------------------------------------------------------------- paths

    @property
    def chroot(self) -> Path:
        """The node's ``/`` on the host."""
        return self._workdir() / "root"

    @property
    def client_key(self) -> Path:
        """Private key (ed25519, no passphrase) that logs in as root."""
        return self._workdir() / "client_key"

    @property
    def control_path_dir(self) -> Path:
        """Where Ansible's ssh keeps ControlPersist sockets for this node (closed by :meth:`stop`)."""
        return self._workdir() / "cp"

    def path(self, node_path: str) -> Path:
        """Host path of the absolute node path ``node_path`` (``/etc/os-release`` -> ``<chroot>/etc/os-release``)."""
        if not node_path.startswith("/"):
            raise ValueError(f"node paths must be absolute, not {node_path!r}")
        # Lexical normalisation: "/../x" stays inside the chroot, as it does on the node.
        return self.chroot / posixpath.normpath(node_path).lstrip("/")

    # ---------------------------------------------------------------- lifecycle

    def _workdir_parent(self) -> Path:
        # sshd's ChrootDirectory rule rules out the usual temp dir, and device nodes need a
        # filesystem not mounted nodev: base_dir() finds one.
        return base_dir()

    def _prepare_workdir(self) -> None:
        self._build_chroot()
        self._make_keys()
        self.control_path_dir.mkdir(mode=0o700)

    def stop(self, *, keep_files: bool = False) -> None:
        """Stop the server and every session it started, close Ansible's ControlPersist masters for
        this node, and remove the temp dir unless ``keep_files``.  Safe to call twice."""
        if self.workdir is not None:
            self._close_control_masters()
        super().stop(keep_files=keep_files)

    def _release_resources(self) -> None:
        self._unmount_all()

    def _close_control_masters(self) -> None:
        """Ask each ControlPersist master (left running by ``ansible-playbook`` for 60 s) to exit."""
        if not self.control_path_dir.is_dir():
            return
        for sock in self.control_path_dir.iterdir():
            subprocess.run(
                [SSH, "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", self.host],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )

    def _terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM the listener and its per-connection processes, SIGKILL what is left after ``timeout`` seconds.

        Per-connection server processes may start their own session (setsid), so they are found
        through their parent (before the listener exits) and through their root directory (the chroot).
        """
        sessions = set()
        if self.running:
            sessions = descendants(self._process.pid)
        if self.workdir is not None:
            sessions |= _chrooted_in(self.chroot)
        for pid in sessions:
            _signal(pid, signal.SIGTERM)
        super()._terminate(timeout)
        deadline = time.monotonic() + timeout
        while sessions and time.monotonic() < deadline:
            sessions = {pid for pid in sessions if _alive(pid)}
            time.sleep(0.02)
        for pid in sessions:
            _signal(pid, signal.SIGKILL)

    # ---------------------------------------------------------------- the node's filesystem

    def _build_chroot(self) -> None:
        root = self.chroot
        # mkdtemp made the workdir 0700 root: fine for sshd (no group/other write bit).
        root.mkdir(mode=0o755)
        for directory in ("bin", "dev", "etc", "proc", "root", "tmp", "var/lib/kubesolo/update"):
            (root / directory).mkdir(mode=0o755, parents=True, exist_ok=True)
        (root / "root").chmod(0o700)
        (root / "tmp").chmod(0o1777)
        install_busybox(root, self.busybox)
        # Debian's busybox-static is built with FEATURE_SH_STANDALONE and FEATURE_PREFER_APPLETS:
        # its sh runs an applet for any applet name *before* looking at PATH (``type uname`` says
        # "uname is uname").  So a script or function placed on PATH cannot stand in for an applet
        # (a fake ``uname`` would be ignored); only shell functions in the same shell win.
        self._populate_chroot()
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n", encoding="utf-8")
        (root / "etc/group").write_text("root:x:0:\n", encoding="utf-8")
        if self.version_id is not None:
            (root / "etc/os-release").write_text(
                'NAME="KubeSolo OS"\nID=kubesolo\n'
                f'VERSION_ID={self.version_id}\nPRETTY_NAME="KubeSolo OS {self.version_id}"\n',
                encoding="utf-8",
            )
        self._make_dev_null()
        self._write_proc_mounts()
        strays = [str(p.relative_to(root)) for p in root.rglob("*") if "python" in p.name.lower()]
        if strays:  # the whole point of the node
            raise RuntimeError(f"python found in the node's chroot: {strays}")

    def _populate_chroot(self) -> None:
        """Put the server's own files into the chroot (called after busybox is installed)."""

    @abc.abstractmethod
    def _make_keys(self) -> None:
        """Create :attr:`client_key` (see :meth:`_make_client_key`) and the server's keys, and
        authorize the client key for root."""

    def _make_char_device(self, node_path: str, major: int, minor: int, *, probe: bool = True) -> bool:
        """Create the character device ``node_path`` (mode 0666) in the chroot; False (and no file)
        when it would not work: no CAP_MKNOD, a filesystem mounted ``nodev``, or (``probe``: the
        device is opened once) a device the host does not let us open."""
        device = self.path(node_path)
        try:
            os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            device.chmod(0o666)  # mknod applies the umask
            if not _allows_devices(device.parent):
                raise PermissionError(f"{device.parent} is on a filesystem mounted nodev")
            if probe:
                with open(device, "rb"):
                    pass
            return True
        except OSError:
            device.unlink(missing_ok=True)
            return False

    def _make_dev_null(self) -> None:
        """``dev/null`` as the real device (root may mknod; opening it needs a mount without nodev,
        which base_dir() prefers).  Where that is impossible (no CAP_MKNOD, only nodev mounts), a
        0666 regular file stands in: redirections work, but reads return what was written."""
        self.dev_null_is_device = self._make_char_device("/dev/null", 1, 3)
        if not self.dev_null_is_device:
            dev_null = self.path("/dev/null")
            dev_null.touch(mode=0o666)
            dev_null.chmod(0o666)

    def _write_proc_mounts(self) -> None:
        """A one-line ``/proc/mounts`` so that busybox ``df PATH`` finds the mount point.

        busybox df reads /proc/mounts and matches entries by device number; without it, it fails
        with "can't find mount point".  Mounting a real procfs would need cleanup and would show
        the host's processes, so the node gets a stub naming its root with the host filesystem's
        source and type ("rootfs" would not do: busybox skips entries of that name).
        """
        source, fstype = "none", "unknown"
        best = ""
        chroot = str(self.chroot)
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                if (chroot == point or chroot.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, source, fstype = point, fields[0], fields[2]
        (self.chroot / "proc/mounts").write_text(f"{source} / {fstype} rw 0 0\n", encoding="utf-8")

    def _make_client_key(self) -> None:
        ssh_keygen(self.client_key, "kubesolo-fleet tests")

    def mount_tmpfs(self, node_path: str, size: str) -> Path:
        """Mount a tmpfs of ``size`` (mount's ``size=``, e.g. ``"256k"``) at the node path ``node_path``.

        Gives the node a small filesystem to fill.  The mount is also listed in the node's stub
        ``/proc/mounts``, without which busybox ``df`` cannot find its mount point.  Returns the host
        path; :meth:`stop` unmounts it.  Raises :class:`subprocess.CalledProcessError` when mounting
        is not permitted (no CAP_SYS_ADMIN, as in many containers).
        """
        if self.workdir is None:
            raise RuntimeError("node not started")
        target = self._mount(node_path, "tmpfs", "kubesolo-test-tmpfs", f"size={size},mode=0755")
        with open(self.chroot / "proc/mounts", "a", encoding="utf-8") as mounts:
            mounts.write(f"kubesolo-test-tmpfs {posixpath.normpath(node_path)} tmpfs rw 0 0\n")
        return target

    def _mount(self, node_path: str, fstype: str, source: str, options: str) -> Path:
        """Mount ``fstype`` at the node path ``node_path`` (created); :meth:`stop` unmounts it."""
        target = self.path(node_path)
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", fstype, "-o", options, source, str(target)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=True,
        )
        self._mounts.append(target)
        return target

    def _unmount_all(self) -> None:
        """Unmount what :meth:`mount_tmpfs` (and the server's setup) mounted (lazily when busy), newest first."""
        while self._mounts:
            target = self._mounts.pop()
            done = subprocess.run(["umount", str(target)], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)

    # ---------------------------------------------------------------- talking to it

    def ansible_host_vars(self) -> dict:
        """Host variables that make Ansible reach this node over SSH.

        No ``ansible_python_interpreter``: module tasks get whatever the run configures (run_playbook
        sets the controller's interpreter path, which does not exist on the node) and fail there.
        ``ansible_control_path_dir`` keeps the ControlPersist sockets with the node so that
        :meth:`stop` can close them (and the default ``~/.ansible/cp`` is not shared between runs).
        """
        return {
            "ansible_host": self.host,
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_ssh_common_args": SSH_COMMON_ARGS,
            "ansible_control_path_dir": str(self.control_path_dir),
        }

    def ssh_command(self, command: str | None = None, *, tty: bool = False, port: int | None = None) -> list[str]:
        """The ``ssh`` argv that runs ``command`` (a shell string) on the node as root.

        ``port``: connect there instead of the node's port (a proxy in front of it).
        """
        argv = [
            SSH,
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key),
            "-p",
            str(self.port if port is None else port),
            *shlex.split(SSH_COMMON_ARGS),
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-tt" if tty else "-T",
            f"root@{self.host}",
        ]
        if command is not None:
            argv += ["--", command]
        return argv

    def run(  # pylint: disable=too-many-arguments
        self,
        command: str,
        *,
        check: bool = True,
        input: str | None = None,  # pylint: disable=redefined-builtin
        timeout: float = 60,
        port: int | None = None,
    ) -> subprocess.CompletedProcess:
        """Run the shell string ``command`` on the node (busybox sh, as root, cwd /root) over ssh.

        Returns the CompletedProcess (text stdout/stderr); raises :class:`SSHCommandError` on a
        non-zero exit when ``check``.  ``port`` as for :meth:`ssh_command`.
        """
        if self._process is None:
            raise RuntimeError("node not started")
        argv = self.ssh_command(command, port=port)
        completed = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and completed.returncode != 0:
            raise SSHCommandError(completed.returncode, argv, completed.stdout, completed.stderr)
        return completed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, port={self.port}, chroot={self.workdir and self.chroot})"


class SSHNode(BusyboxNode):
    """An OpenSSH sshd on 127.0.0.1 whose root sessions see only a busybox userland (no Python).

    File transfer: sftp (sshd's internal-sftp), which :meth:`ansible_host_vars` selects.
    The other arguments are :class:`BusyboxNode`'s.
    """

    _workdir_prefix = "kubesolo-fleet-sshnode-"

    def __init__(  # pylint: disable=too-many-arguments
        self,
        name: str = "node",
        *,
        version_id: str | None = "v0.2.0",
        sshd: str = DEFAULT_SSHD,
        busybox: str = DEFAULT_BUSYBOX,
        startup_timeout: float = 15.0,
    ) -> None:
        super().__init__(name, version_id=version_id, busybox=busybox, startup_timeout=startup_timeout)
        self.sshd = sshd

    # ---------------------------------------------------------------- paths

    @property
    def log_path(self) -> Path:
        """sshd's log (LogLevel VERBOSE): connections, authentication, sessions, sftp."""
        return self._workdir() / "sshd.log"

    @property
    def config_path(self) -> Path:
        """The sshd_config the server was started with."""
        return self._workdir() / "sshd_config"

    # ---------------------------------------------------------------- lifecycle

    def _check_requirements(self) -> None:
        problems = missing_requirements(self.sshd, self.busybox)
        if problems:
            raise FileNotFoundError("; ".join(problems))

    def _prepare_workdir(self) -> None:
        super()._prepare_workdir()
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _write_config(self) -> None:
        self.config_path.write_text(self._sshd_config(), encoding="utf-8")

    def _command(self) -> list[str]:
        # -D: stay in the foreground; -e -E: log to the file, not syslog.
        return [self.sshd, "-D", "-e", "-E", str(self.log_path), "-f", str(self.config_path)]

    def _sshd_config(self) -> str:
        workdir = self._workdir()

        def quoted(path: Path) -> str:
            return f'"{path}"'

        return "\n".join(
            [
                f"Port {self.port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {quoted(workdir / 'ssh_host_ed25519_key')}",
                f"PidFile {quoted(workdir / 'sshd.pid')}",
                # Read by sshd before the chroot, so it lives outside it.
                f"AuthorizedKeysFile {quoted(workdir / 'authorized_keys')}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                f"ChrootDirectory {quoted(self.chroot)}",
                # In-process sftp server: works in a chroot without any binary in it.  Its own log
                # (file operations) goes to syslog, i.e. nowhere from inside the chroot; sshd's log
                # still has "Starting session: subsystem 'sftp'" for each transfer.
                "Subsystem sftp internal-sftp",
                # No AcceptEnv: like a stock server, the client's LANG/LC_* are not passed through.
                "PrintMotd no",
                "PrintLastLog no",
                "LogLevel VERBOSE",
                "",
            ]
        )

    def _is_ready(self) -> bool:
        # sshd logs this line once it listens.  (Probing the port instead would leave a
        # "kex_exchange_identification: Connection closed" line in the log.)
        return f"Server listening on {self.host} port {self.port}.".encode() in self.log_path.read_bytes()

    def _not_ready_message(self) -> str:
        return f"sshd did not answer on {self.host}:{self.port}"

    # ---------------------------------------------------------------- the node's filesystem

    def _populate_chroot(self) -> None:
        self._install_login_shell()

    def _install_login_shell(self) -> None:
        """Make the login shell of the *host's* root account exist in the chroot.

        sshd looks the user up in the host's passwd database before the chroot and, after it,
        runs ``<pw_shell> -c <command>`` (and the in-chroot ``etc/passwd`` is never consulted).
        On Debian that is ``/bin/bash``; busybox has no ``bash`` applet (a symlink to busybox would
        fail with "applet not found"), so the shell's path gets a two-line script that hands its
        arguments to busybox ``sh``.  Commands therefore run in busybox ash, as on a real node.
        """
        shell = pwd.getpwnam("root").pw_shell or "/bin/sh"
        wrapper = self.path(shell)
        if wrapper.exists() or wrapper.is_symlink():
            return  # /bin/sh, /bin/ash: already a busybox applet
        wrapper.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        wrapper.write_text(
            "#!/bin/sh\n# The host's login shell for root, as seen by sshd: run busybox sh instead.\n"
            'exec /bin/sh "$@"\n',
            encoding="utf-8",
        )
        wrapper.chmod(0o755)

    def _make_keys(self) -> None:
        workdir = self._workdir()
        ssh_keygen(workdir / "ssh_host_ed25519_key", "kubesolo-fleet test node")
        self._make_client_key()
        authorized_keys = workdir / "authorized_keys"
        authorized_keys.write_bytes((workdir / "client_key.pub").read_bytes())
        authorized_keys.chmod(0o600)

    # ---------------------------------------------------------------- talking to it

    def ansible_host_vars(self) -> dict:
        """:meth:`BusyboxNode.ansible_host_vars`, with file transfers over sftp (internal-sftp)."""
        return {**super().ansible_host_vars(), "ansible_ssh_transfer_method": "sftp"}


# -------------------------------------------------------------------- processes


def _proc_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _chrooted_in(chroot: Path) -> set[int]:
    """Processes whose root directory is ``chroot``: the sessions of this node's sshd."""
    found = set()
    for pid in _proc_pids():
        try:
            if os.readlink(f"/proc/{pid}/root") == str(chroot):
                found.add(pid)
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie that is our child is reaped by Popen; any other zombie counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
