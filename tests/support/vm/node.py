"""A QEMU virtual machine booting a KubeSolo OS disk image through UEFI and GRUB, reachable over SSH.

One :class:`VMNode` is one ``qemu-system-x86_64`` process (a ManagedProcess like the registry and
the SSH nodes): TCG only (KVM boots hang on the machine this was built on), 512 MiB (at 256 MiB
GRUB's ``linux`` runs out of memory), OVMF as pflash (the firmware code read-only and shared, a
private copy of its variable store), the disk image as a virtio disk, user-mode networking with the
guest's port 22 forwarded to a free port on 127.0.0.1, the serial console appended to a log file.

There is no ``-no-reboot``: a reboot or a kernel panic resets the machine and goes through the
firmware and GRUB again, as on hardware.  The process therefore lives until :meth:`VMNode.stop`
(or a poweroff in the guest).

"Up" is judged by running a command over SSH, never by the port: QEMU's forwarder accepts
connections while the guest is still in the firmware or rebooting.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from ..process import ManagedProcess
from ..sshnode import DEFAULT_BUSYBOX, SSH, SSH_COMMON_ARGS, SSHCommandError
from .release import DROPBEAR, SFTP_SERVER, SSHD_STARTING

QEMU = os.environ.get("KUBESOLO_TEST_QEMU_BIN", "qemu-system-x86_64")
OVMF_CODE = Path(os.environ.get("KUBESOLO_TEST_OVMF_CODE", "/usr/share/OVMF/OVMF_CODE_4M.fd"))
OVMF_VARS = Path(os.environ.get("KUBESOLO_TEST_OVMF_VARS", "/usr/share/OVMF/OVMF_VARS_4M.fd"))

#: Reboots the node so that the reboot outlives the SSH session.  busybox ``reboot`` signals init,
#: which then kills every process, the session included, so it must run in the background, a
#: moment later.  Under a pseudo-terminal (``ssh -tt``, as Ansible's raw uses) the end of the
#: session sends SIGHUP to the shell's process group, background jobs included: a plain
#: ``(sleep 1; reboot) &`` dies with it, and so does ``setsid sh -c '...' &`` (it loses the race
#: to SIGHUP).  An ignored SIGHUP is inherited, so ignoring it first is what works, tty or not.
REBOOT_COMMAND = "trap '' HUP; (sleep 1; reboot) </dev/null >/dev/null 2>&1 &"

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class VMBootError(RuntimeError):
    """The VM did not come up (or back) in time, or QEMU exited; the message ends with the console tail."""


class VMNode(ManagedProcess):  # pylint: disable=too-many-instance-attributes
    """A KubeSolo OS VM booting ``disk`` (a raw image, see :func:`tests.support.vm.build_disk`).

    ``client_key`` is the private key whose public half the releases on the disk accept for root.
    ``console_log`` receives the serial console (appended; default: in the temp dir, removed by
    :meth:`stop`; give a path outside it to keep the log).  ``restrict_network=False`` lets the
    guest reach the host's 127.0.0.1 services at 10.0.2.2 (and the outside); by default it reaches
    nothing and only the SSH forward exists.
    """

    host = "127.0.0.1"
    _noun = "VM"
    _workdir_prefix = "kubesolo-fleet-vm-"
    _port_in_use_markers = ("address already in use", "could not set up host forwarding rule")

    def __init__(  # pylint: disable=too-many-arguments
        self,
        name: str,
        disk: str | os.PathLike,
        *,
        client_key: str | os.PathLike,
        console_log: str | os.PathLike | None = None,
        memory_mib: int = 512,
        boot_timeout: float = 180.0,
        restrict_network: bool = True,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.name = name
        self.disk = Path(disk)
        self.client_key = Path(client_key)
        self.memory_mib = memory_mib
        self.boot_timeout = boot_timeout
        self.restrict_network = restrict_network
        self._console_log = Path(console_log) if console_log is not None else None
        self._console_start = 0

    # ---------------------------------------------------------------- paths

    @property
    def log_path(self) -> Path:
        """QEMU's own stdout and stderr (not the guest's console: see :attr:`console_log`)."""
        return self._workdir() / "qemu.log"

    @property
    def console_log(self) -> Path:
        """The serial console: firmware, GRUB (``kubesolo-grub:`` lines), kernel and init output."""
        return self._console_log if self._console_log is not None else self._workdir() / "console.log"

    @property
    def control_path_dir(self) -> Path:
        """Where Ansible's ssh keeps ControlPersist sockets for this VM (closed by :meth:`stop`)."""
        return self._workdir() / "cp"

    # ---------------------------------------------------------------- lifecycle

    def _check_requirements(self) -> None:
        problems = []
        if not shutil.which(QEMU):
            problems.append(f"{QEMU} missing: install the Debian package qemu-system-x86")
        problems += [
            f"{path} missing: install the Debian package ovmf" for path in (OVMF_CODE, OVMF_VARS) if not path.is_file()
        ]
        if not self.disk.is_file():
            problems.append(f"disk image {self.disk} missing")
        if problems:
            raise FileNotFoundError("; ".join(problems))

    def _prepare_workdir(self) -> None:
        # A private variable store: the firmware writes boot entries into it.
        shutil.copyfile(OVMF_VARS, self._workdir() / "OVMF_VARS.fd")
        self.control_path_dir.mkdir(mode=0o700)
        self.console_log.parent.mkdir(parents=True, exist_ok=True)

    def _write_config(self) -> None:
        # No config file; remember where this launch's console output starts.
        self._console_start = self.console_log.stat().st_size if self.console_log.exists() else 0

    def _command(self) -> list[str]:
        netdev = f"user,id=net0,hostfwd=tcp:{self.host}:{self.port}-:22"
        if self.restrict_network:
            netdev += ",restrict=on"
        return [
            QEMU,
            "-name",
            f"kubesolo-{self.name}",
            "-machine",
            "q35",
            "-accel",
            "tcg",
            # The most capable emulated CPU boots markedly faster than the default qemu64
            # (and its RDRAND seeds the kernel's random pool at once).
            "-cpu",
            "max",
            "-m",
            str(self.memory_mib),
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={self._workdir() / 'OVMF_VARS.fd'}",
            "-drive",
            f"if=none,id=disk0,format=raw,file={self.disk}",
            "-device",
            "virtio-blk-pci,drive=disk0,bootindex=0",
            "-netdev",
            netdev,
            # romfile=: no iPXE option ROM, so the firmware never tries a network boot.
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
            "-device",
            "virtio-rng-pci",
            "-chardev",
            f"file,id=console,path={self.console_log},append=on",
            "-serial",
            "chardev:console",
        ]

    def _is_ready(self) -> bool:
        # The firmware prints within a second or two: QEMU is up and its port forward is bound.
        return self.console_log.exists() and self.console_log.stat().st_size > self._console_start

    def _not_ready_message(self) -> str:
        return f"{self.name}: QEMU printed nothing on the serial console"

    def start(self, *, wait: bool = True) -> VMNode:  # pylint: disable=arguments-differ
        """Start QEMU; with ``wait``, also wait (up to :attr:`boot_timeout`) until SSH works."""
        super().start()
        if wait:
            try:
                self.wait_for_ssh()
            except BaseException:
                self.stop(graceful=False)  # the error carries the console tail
                raise
        return self

    def stop(self, *, keep_files: bool = False, graceful: bool = True) -> None:  # pylint: disable=arguments-differ
        """Stop the VM; safe to call twice.

        ``graceful``: first ``sync`` in the guest over SSH (bounded; skipped when SSH does not
        answer), so what the guest wrote is on the disk image.  Then SIGTERM, on which QEMU flushes
        the image and exits, and SIGKILL if it does not.  The disk image is never removed.
        """
        if self.running and graceful:
            try:
                self.run("sync", timeout=15, check=False, connect_timeout=3)
            except subprocess.TimeoutExpired:
                pass
        if self.workdir is not None:
            close_control_masters(self.control_path_dir)
        super().stop(keep_files=keep_files)

    # ---------------------------------------------------------------- the console

    def console_text(self, *, since_start: bool = False) -> str:
        """The serial console log (only this launch's part with ``since_start``)."""
        try:
            with open(self.console_log, "rb") as handle:
                if since_start:
                    handle.seek(self._console_start)
                return handle.read().decode(errors="replace")
        except (OSError, RuntimeError):
            return ""

    def console_tail(self, lines: int = 60) -> str:
        """The last ``lines`` console lines, for error messages."""
        text = self.console_text().replace("\r", "")
        return "\n".join(text.splitlines()[-lines:]) or "<no console output>"

    def grub_boots(self) -> list[str]:
        """The slot of every boot GRUB started since this launch, in order (``["B", "B", "B", "A"]``)."""
        return re.findall(r"kubesolo-grub: booting slot ([AB])", self.console_text(since_start=True))

    # ---------------------------------------------------------------- SSH

    def ssh_command(self, command: str | None = None, *, tty: bool = False, connect_timeout: int = 5) -> list[str]:
        """The ``ssh`` argv that runs the shell string ``command`` on the VM as root."""
        argv = [
            SSH,
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key),
            "-p",
            str(self.port),
            *shlex.split(SSH_COMMON_ARGS),
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            # Also bounds the wait for the server's banner, which never comes while the guest is
            # down (the forwarder accepted the connection).
            "-o",
            f"ConnectTimeout={connect_timeout}",
            # A guest that resets mid-command never closes the connection: notice it.
            "-o",
            "ServerAliveInterval=2",
            "-o",
            "ServerAliveCountMax=3",
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
        tty: bool = False,
        connect_timeout: int = 5,
    ) -> subprocess.CompletedProcess:
        """Run ``command`` in the VM (busybox sh, as root) over ssh; text output.

        Raises :class:`SSHCommandError` on a non-zero exit when ``check`` (255: ssh itself failed).
        """
        if self.port is None:
            raise RuntimeError(f"{self.name} not started")
        argv = self.ssh_command(command, tty=tty, connect_timeout=connect_timeout)
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

    def boot_id(self) -> str:
        """The running kernel's boot id (new on every boot)."""
        return self.run(f"cat {BOOT_ID_PATH}", timeout=30).stdout.strip()

    def _try_boot_id(self) -> str | None:
        try:
            done = self.run(f"cat {BOOT_ID_PATH}", check=False, timeout=20, connect_timeout=3)
        except subprocess.TimeoutExpired:
            return None
        value = done.stdout.strip()
        return value if done.returncode == 0 and _UUID.match(value) else None

    def _console_size(self) -> int:
        try:
            return self.console_log.stat().st_size
        except OSError:
            return 0

    def _sshd_started_since(self, offset: int) -> bool:
        try:
            with open(self.console_log, "rb") as handle:
                handle.seek(offset)
                return SSHD_STARTING.encode() in handle.read()
        except OSError:
            return False

    def wait_for_ssh(self, timeout: float | None = None, *, not_boot_id: str | None = None) -> str:
        """Wait until a command runs over SSH (in a boot other than ``not_boot_id``); return the boot id.

        Bounded by ``timeout`` (default :attr:`boot_timeout`); raises :class:`VMBootError`, with
        the console tail, on timeout or when QEMU exits.

        Each SSH attempt is an ssh process competing with the emulator for the CPU, and while the
        guest is down it hangs until its connect timeout; so SSH is tried every 10 s until the
        init's "starting sshd" line appears on the console (of this launch, or after this call
        when waiting for another boot), then twice a second.
        """
        timeout = self.boot_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        offset = self._console_size() if not_boot_id else self._console_start
        next_attempt = time.monotonic()
        while True:
            if not self.running:
                raise VMBootError(self._boot_failure(f"QEMU exited ({self._exit_status()})"))
            eager = self._sshd_started_since(offset)
            if eager or time.monotonic() >= next_attempt:
                boot_id = self._try_boot_id()
                if boot_id is not None and boot_id != not_boot_id:
                    return boot_id
                next_attempt = time.monotonic() + 10
            if time.monotonic() > deadline:
                what = "did not come back" if not_boot_id else "did not answer over SSH"
                raise VMBootError(self._boot_failure(f"{what} within {timeout:.0f} s"))
            time.sleep(0.5 if eager else 0.2)

    def reboot(self, timeout: float | None = None) -> str:
        """Reboot the guest (:data:`REBOOT_COMMAND`) and wait until it is back; return the new boot id."""
        old = self.boot_id()
        self.run(REBOOT_COMMAND, timeout=30)
        return self.wait_for_ssh(timeout, not_boot_id=old)

    def os_release(self) -> dict[str, str]:
        """``/etc/os-release`` of the running system, unquoted."""
        values = {}
        for line in self.run("cat /etc/os-release").stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
        return values

    def ansible_host_vars(self) -> dict:
        """Host variables that make Ansible reach this VM over SSH (same shape as SSHNode's)."""
        return {
            "ansible_host": self.host,
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_ssh_common_args": SSH_COMMON_ARGS,
            "ansible_ssh_transfer_method": "sftp",
            "ansible_control_path_dir": str(self.control_path_dir),
        }

    # ---------------------------------------------------------------- helpers

    def _exit_status(self) -> str:
        process = self._process
        if process is None:
            return "not running"
        return f"exit status {process.poll()}; QEMU log: {self.log_tail(5)}"

    def _boot_failure(self, what: str) -> str:
        return f"{self.name}: {what}; console tail ({self.console_log}):\n{self.console_tail()}"

    def __repr__(self) -> str:
        return f"VMNode({self.name!r}, port={self.port}, disk={str(self.disk)!r})"


def close_control_masters(directory: Path) -> None:
    """Ask each ControlPersist master in ``directory`` (left by ``ansible-playbook``) to exit."""
    if not directory.is_dir():
        return
    for sock in directory.iterdir():
        subprocess.run(
            [SSH, "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", VMNode.host],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )


#: Tool -> Debian package, for everything the VM tests run on the host.
REQUIRED_TOOLS = {
    QEMU: "qemu-system-x86",
    "grub-mkstandalone": "grub-common",
    "grub-editenv": "grub-common",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dropbearkey": "dropbear-bin",
    "cpio": "cpio",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
    "ldd": "libc-bin",
    SSH: "openssh-client",
    "ssh-keygen": "openssh-client",
}
REQUIRED_FILES = {
    str(OVMF_CODE): "ovmf",
    str(OVMF_VARS): "ovmf",
    "/usr/lib/grub/x86_64-efi/linux.mod": "grub-efi-amd64-bin",
    DROPBEAR: "dropbear-bin",
    SFTP_SERVER: "openssh-sftp-server",
}


def missing_requirements() -> list[str]:
    """Why VM nodes cannot run here (empty when they can), for a skip or fail message.

    Tools are looked up on PATH, as they are run (mkfs.vfat, sfdisk...: PATH needs the sbin dirs).
    """
    problems = [
        f"{tool} missing: install the Debian package {package}"
        for tool, package in REQUIRED_TOOLS.items()
        if not shutil.which(tool)
    ]
    files = {**REQUIRED_FILES, DEFAULT_BUSYBOX: "busybox-static"}
    problems += [
        f"{path} missing: install the Debian package {package}"
        for path, package in files.items()
        if not os.path.exists(path)
    ]
    return problems
