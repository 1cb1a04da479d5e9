"""A Python-less "KubeSolo OS node" whose SSH server is dropbear and which has no sftp server and no scp.

Real KubeSolo OS nodes run Tiny Core Linux: a busybox userland and, often, dropbear, with nothing to
receive files but the shell.  A :class:`DropbearNode` reproduces that on 127.0.0.1: Debian's
dropbear (package ``dropbear-bin``) runs *inside* a chroot that holds a static busybox, dropbear and
its shared libraries, and nothing else.  Root logs in with :attr:`~DropbearNode.client_key` only
(``-s``: no passwords); port forwarding is off (``-j -k``).

What reaches the node, and what does not (proven by ``tests/e2e/harness/test_dropbearnode.py``):

* commands: ``ssh``, Ansible's ``raw`` and ``script`` (busybox ``sh``, as root, cwd ``/root``);
* **not sftp**: dropbear runs ``/usr/lib/sftp-server`` for the sftp subsystem, through the shell,
  and it is not there ("sh: /usr/lib/sftp-server: not found");
* **not scp**: OpenSSH's ``scp`` speaks sftp by default (fails as above); ``scp -O`` runs ``scp -t``
  on the node ("sh: scp: not found");
* Ansible's ``piped`` transfer method still works: it writes files with ``dd of=...`` over the
  shell, and busybox has ``dd``.  Ansible's default transfer method (``smart``: sftp, then scp,
  then piped) therefore gets there too, after two failed attempts and their warnings; this is why
  :meth:`~DropbearNode.ansible_host_vars` leaves the method unset, unlike SSHNode's (sftp).
* Python: none (module tasks fail as on SSHNode).

How it is built (all below one temp dir, removed by :meth:`DropbearNode.stop`)::

    <workdir>/                      root-owned, 0700 (in sshnode.base_dir(), where devices work)
        dropbear.log                dropbear's log (-E: to stderr)
        client_key[.pub]            the key tests log in with
        cp/                         Ansible's ControlPersist sockets for this node
        root/                       the chroot: the node's "/", dropbear's too
            bin/busybox + applets   as on SSHNode (tests.support.rootfs.install_busybox)
            usr/sbin/dropbear       with the libraries ldd names (lib/x86_64-linux-gnu/...), and
            lib64/ld-linux-...      the dynamic loader
            etc/passwd, group       root only (home /root, shell /bin/sh); etc/shells: /bin/sh
            etc/os-release          VERSION_ID=<version_id>
            etc/dropbear/dropbear_ed25519_host_key   made by dropbearkey, new per node
            root/.ssh/authorized_keys                0700 / 0600: dropbear checks
            dev/null, dev/urandom, dev/tty           character devices (mknod)
            dev/pts/ (devpts), dev/ptmx -> pts/ptmx  pseudo-terminals, see below
            proc/mounts             the stub busybox df needs (as on SSHNode)
            run/dropbear.pid, var/run -> ../run
            tmp/ (1777) var/lib/kubesolo/update/

Gotchas, each handled below:

* dropbear itself is chrooted (``chroot <root> /usr/sbin/dropbear ...``), unlike sshd, which
  chroots each session after authentication.  So everything it reads is inside: host key,
  ``/root/.ssh/authorized_keys``, ``/etc/passwd`` (root's shell is the chroot's ``/bin/sh``: no
  wrapper as on SSHNode), its libraries and the loader.  glibc 2.34+ resolves users from
  ``/etc/passwd`` without libnss_files (which ldd would not have named: it is dlopen'ed).
* Ansible asks for a pseudo-terminal for every command (``ssh -tt``), and dropbear opens it with
  openpty() in the chroot: without ``/dev/ptmx`` and a devpts the request fails ("PTY allocation
  request failed", ssh exits 255).  The node mounts a private devpts instance at ``dev/pts``
  (``newinstance``, needs CAP_SYS_ADMIN, unmounted by :meth:`~DropbearNode.stop`) with
  ``dev/ptmx`` a symlink into it; ``dev/tty`` gives the session its controlling terminal.
* dropbear logs a few harmless lines per pty session (no ``/var/log/lastlog``, no wtmp).
* dropbear writes its pid file only after it listens, so the pid file is the readiness signal
  (no probe connection in the log); a taken port ends it with "Address already in use".
* chroot, mknod and mount need root: the tests must run as root (CI does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .rootfs import install_binary
from .sshnode import DEFAULT_BUSYBOX, SSH, SSH_KEYGEN, BusyboxNode, inventory

__all__ = [
    "DROPBEAR",
    "DROPBEARKEY",
    "DROPBEAR_SFTP_SERVER",
    "DropbearNode",
    "inventory",
    "make_host_key",
    "missing_requirements",
]

DROPBEAR = "/usr/sbin/dropbear"
DROPBEARKEY = "dropbearkey"
#: Where Debian's dropbear runs the sftp subsystem from (its compiled-in SFTPSERVER_PATH): a
#: DropbearNode has nothing there; a VM release may put OpenSSH's sftp-server there.
DROPBEAR_SFTP_SERVER = "/usr/lib/sftp-server"
CHROOT = "chroot"

#: Node paths (inside the chroot).
NODE_DROPBEAR = "/usr/sbin/dropbear"
NODE_HOST_KEY = "/etc/dropbear/dropbear_ed25519_host_key"
NODE_PID_FILE = "/var/run/dropbear.pid"

#: Names that must not exist anywhere in the chroot: a way to transfer files other than the shell.
FORBIDDEN_NAMES = ("sftp-server", "sftp", "scp")

_CAP_SYS_ADMIN = 21


def make_host_key(path: Path) -> Path:
    """A dropbear-format ed25519 host key at ``path`` (dropbearkey); returns ``path``."""
    subprocess.run(
        [DROPBEARKEY, "-t", "ed25519", "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    )
    return path


def _has_capability(bit: int) -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


def missing_requirements(dropbear: str = DROPBEAR, busybox: str = DEFAULT_BUSYBOX) -> list[str]:
    """Why dropbear nodes cannot run here (empty when they can): for a skip or fail message."""
    problems = []
    if not os.access(dropbear, os.X_OK):
        problems.append(f"{dropbear} missing: install the Debian package dropbear-bin")
    if not os.access(busybox, os.X_OK):
        problems.append(f"{busybox} missing: install the Debian package busybox-static")
    for tool, package in (
        (DROPBEARKEY, "dropbear-bin"),
        (SSH, "openssh-client"),
        (SSH_KEYGEN, "openssh-client"),
        (CHROOT, "coreutils"),
        ("ldd", "libc-bin"),
        ("mount", "mount"),
    ):
        if not shutil.which(tool):
            problems.append(f"{tool} missing: install the Debian package {package}")
    if os.geteuid() != 0:
        problems.append("dropbear test nodes run in a chroot, which needs root: run the tests as root")
    elif not _has_capability(_CAP_SYS_ADMIN):
        problems.append("dropbear test nodes mount a devpts for their pseudo-terminals, which needs CAP_SYS_ADMIN")
    return problems


class DropbearNode(BusyboxNode):
    """dropbear on 127.0.0.1, chrooted into a busybox userland: no Python, no sftp server, no scp.

    The same API as :class:`~tests.support.sshnode.SSHNode` (see :class:`BusyboxNode`: ``chroot``,
    ``path()``, ``client_key``, ``control_path_dir``, ``ansible_host_vars()``, ``ssh_command()``,
    ``run()``, ``mount_tmpfs()``, ``stop()``), so tests can run over both kinds; only the file
    transfer differs (see the module docstring).
    """

    _workdir_prefix = "kubesolo-fleet-dropbearnode-"

    def __init__(  # pylint: disable=too-many-arguments
        self,
        name: str = "node",
        *,
        version_id: str | None = "v0.2.0",
        dropbear: str = DROPBEAR,
        busybox: str = DEFAULT_BUSYBOX,
        startup_timeout: float = 15.0,
    ) -> None:
        super().__init__(name, version_id=version_id, busybox=busybox, startup_timeout=startup_timeout)
        self.dropbear = dropbear
        #: False when dev/urandom or dev/tty could not be made (dropbear copes: getrandom(), and a
        #: session without controlling terminal).
        self.devices_complete: bool | None = None

    # ---------------------------------------------------------------- paths

    @property
    def log_path(self) -> Path:
        """dropbear's log: connections, authentication, session errors (``sh: ...: not found``)."""
        return self._workdir() / "dropbear.log"

    @property
    def host_key(self) -> Path:
        """The host key (dropbear format), inside the chroot where dropbear reads it."""
        return self.path(NODE_HOST_KEY)

    # ---------------------------------------------------------------- lifecycle

    def _check_requirements(self) -> None:
        problems = missing_requirements(self.dropbear, self.busybox)
        if problems:
            raise FileNotFoundError("; ".join(problems))

    def _write_config(self) -> None:
        # No config file (the port is on the command line); a pid file left by an earlier
        # attempt would look like readiness.
        self.path(NODE_PID_FILE).unlink(missing_ok=True)

    def _command(self) -> list[str]:
        # -F: foreground; -E: log to stderr (the log file); -s: no password logins;
        # -j -k: no local / remote port forwarding.
        return [
            shutil.which(CHROOT) or CHROOT,
            str(self.chroot),
            NODE_DROPBEAR,
            "-F",
            "-E",
            "-s",
            "-j",
            "-k",
            "-p",
            f"{self.host}:{self.port}",
            "-r",
            NODE_HOST_KEY,
            "-P",
            NODE_PID_FILE,
        ]

    def _is_ready(self) -> bool:
        # dropbear writes the pid file once its socket listens; chroot exec'd it, so the pid is ours.
        try:
            return int(self.path(NODE_PID_FILE).read_text(encoding="ascii")) == self._process.pid
        except (OSError, ValueError):
            return False

    def _not_ready_message(self) -> str:
        return f"dropbear did not answer on {self.host}:{self.port}"

    # ---------------------------------------------------------------- the node's filesystem

    def _populate_chroot(self) -> None:
        root = self.chroot
        install_binary(root, self.dropbear, NODE_DROPBEAR)
        (root / "etc/shells").write_text("/bin/sh\n", encoding="utf-8")  # dropbear checks the user's shell
        self.host_key.parent.mkdir(mode=0o755, parents=True)
        (root / "run").mkdir(mode=0o755)
        (root / "var/run").symlink_to("../run")
        (root / "root/.ssh").mkdir(mode=0o700)
        urandom = self._make_char_device("/dev/urandom", 1, 9)
        tty = self._make_char_device("/dev/tty", 5, 0, probe=False)  # opening it needs a controlling tty
        self.devices_complete = urandom and tty
        self._mount_devpts()
        strays = [str(p.relative_to(root)) for p in root.rglob("*") if p.name in FORBIDDEN_NAMES]
        if strays:  # the whole point of the node
            raise RuntimeError(f"file transfer programs found in the node's chroot: {strays}")

    def _mount_devpts(self) -> None:
        """A private devpts at ``dev/pts`` and ``dev/ptmx`` pointing into it, for dropbear's openpty()."""
        try:
            self._mount("/dev/pts", "devpts", "kubesolo-test-devpts", "newinstance,ptmxmode=0666,mode=0620")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                "cannot mount a devpts in the dropbear node's chroot (needs CAP_SYS_ADMIN); without"
                f" pseudo-terminals Ansible's commands fail: {exc.stderr.strip()}"
            ) from exc
        self.path("/dev/ptmx").symlink_to("pts/ptmx")

    def _make_keys(self) -> None:
        make_host_key(self.host_key)
        self._make_client_key()
        authorized_keys = self.path("/root/.ssh/authorized_keys")
        authorized_keys.write_bytes(Path(f"{self.client_key}.pub").read_bytes())
        authorized_keys.chmod(0o600)
