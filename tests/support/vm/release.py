"""Test releases of KubeSolo OS: the Debian kernel plus an initramfs built here for one version.

A release is the pair a slot holds, ``vmlinuz`` and ``kubesolo-os.gz`` (a gzip'd newc cpio).  The
kernel is the same for every release; the initramfs carries the version and one of three behaviours
(:data:`VARIANTS`):

``good``
    Boots, serves SSH, reports the version, and is healthy.
``unhealthy``
    The same, but the health marker says ``fail``.
``panic``
    Its init exits at once: the kernel panics and (``panic=1`` on the command line) resets the
    machine, so the boot never reaches SSH and GRUB counts the attempt.

The health contract: :data:`HEALTH_FILE` holds one line, ``ok`` or ``fail``, written by the init;
:data:`HEALTH_COMMAND` (``grep -qx ok /run/kubesolo-health``) exits 0 exactly on a healthy node.

The initramfs (everything owned by root)::

    /init                        POSIX sh, see INIT_SCRIPT: mounts, modules, network, then busybox init
    /etc/inittab                 busybox init: respawns dropbear, handles reboot/poweroff
    /bin/busybox + applet links  where ``busybox --list-full`` puts them (/bin/sh, /sbin/reboot...)
    /usr/sbin/dropbear           with the shared libraries ldd names, and the dynamic loader
    /usr/lib/sftp-server         OpenSSH's, where dropbear looks for it (Ansible's file transfer)
    /lib/modules/<release>/      the modules the init loads (see kernel.INITRAMFS_MODULES), modules.dep
    /etc/kubesolo-modules        their load order, one path per line
    /etc/os-release              NAME="KubeSolo OS", ID=kubesolo-os, VERSION_ID=<version>
    /etc/dropbear/dropbear_ed25519_host_key, /root/.ssh/authorized_keys
    /etc/passwd, group, shells   root only, shell /bin/sh
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from ..artifacts import INITRAMFS_MEDIA_TYPE, KERNEL_MEDIA_TYPE
from ..dropbearnode import DROPBEAR, DROPBEAR_SFTP_SERVER
from ..rootfs import install_binary, install_busybox
from ..sshnode import DEFAULT_BUSYBOX
from .kernel import Kernel

VARIANTS = ("good", "panic", "unhealthy")
HEALTH_FILE = "/run/kubesolo-health"
HEALTH_COMMAND = f"grep -qx ok {HEALTH_FILE}"
DATA_LABEL = "KSOLODATA"
DATA_MOUNT = "/var/lib/kubesolo"

#: OpenSSH's sftp server (Debian package openssh-sftp-server); dropbear runs it for "subsystem sftp"
#: from DROPBEAR_SFTP_SERVER, its compiled-in path.
SFTP_SERVER = "/usr/lib/openssh/sftp-server"

#: QEMU user networking: the guest's fixed address, the gateway (the host, as seen from the guest).
GUEST_ADDRESS = "10.0.2.15/24"
GUEST_GATEWAY = "10.0.2.2"

# Every line the init prints starts with this, so tests and people can find them in the console log.
INIT_TAG = "kubesolo-init:"
#: The init's last line before the SSH server starts: VMNode polls SSH eagerly once it appears.
SSHD_STARTING = f"{INIT_TAG} starting sshd"

INIT_SCRIPT = r"""#!/bin/sh
# KubeSolo OS test init: release @VERSION@ (@VARIANT@).  PID 1 until it execs busybox init.
PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH
say() { echo "@TAG@ $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
say "release @VERSION@ (@VARIANT@) starting"
if [ "@VARIANT@" = panic ]; then
    say "this release is broken on purpose: init exits, the kernel panics"
    exit 1
fi
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp

while read -r module; do
    insmod "/lib/modules/@KERNEL_RELEASE@/$module" || say "insmod $module failed"
done </etc/kubesolo-modules

# Device probing may finish after insmod returns: wait (bounded) for the NIC and the data disk.
tries=0
while [ ! -e /sys/class/net/eth0 ] && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
ip link set lo up
ip addr add @ADDRESS@ dev eth0
ip link set eth0 up
ip route add default via @GATEWAY@
hostname kubesolo

tries=0
data=
while [ -z "$data" ] && [ $tries -lt 100 ]; do
    data=$(findfs LABEL=@DATA_LABEL@ 2>/dev/null) || { sleep 0.1; tries=$((tries + 1)); }
done
if [ -n "$data" ] && mount -t ext4 "$data" @DATA_MOUNT@; then
    say "@DATA_LABEL@ ($data) mounted at @DATA_MOUNT@"
else
    say "@DATA_LABEL@ not mounted"
fi

echo @HEALTH@ >@HEALTH_FILE@
say "release @VERSION@ up, health @HEALTH@"
say "starting sshd"
# busybox init (still PID 1) starts dropbear and turns reboot/poweroff signals into a clean restart.
exec /sbin/init
"""

INITTAB = """\
# busybox init: the only service is the SSH server, restarted if it dies.
::respawn:/usr/sbin/dropbear -F -E -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key
::ctrlaltdel:/sbin/reboot
# On reboot/poweroff, before every process is killed: write the data disk out.
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
"""


@dataclass(frozen=True)
class Release:
    """A built release: ``vmlinuz`` and ``kubesolo-os.gz`` side by side in one directory."""

    version: str
    variant: str
    directory: Path

    @property
    def vmlinuz(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initramfs(self) -> Path:
        return self.directory / "kubesolo-os.gz"

    def layers(self) -> dict[str, bytes]:
        """``{media type: bytes}``, the ``layers`` argument of :func:`tests.support.artifacts.push_release`."""
        return {KERNEL_MEDIA_TYPE: self.vmlinuz.read_bytes(), INITRAMFS_MEDIA_TYPE: self.initramfs.read_bytes()}

    def digests(self) -> dict[str, str]:
        """``{"vmlinuz": sha256 hex, "kubesolo-os.gz": sha256 hex}``: what a slot holding it contains."""
        return {path.name: sha256(path.read_bytes()).hexdigest() for path in (self.vmlinuz, self.initramfs)}


def build_release(  # pylint: disable=too-many-arguments
    version: str,
    variant: str = "good",
    *,
    kernel: Kernel,
    authorized_key: str,
    host_key: Path,
    out_dir: Path,
    busybox: str = DEFAULT_BUSYBOX,
    sftp_server: bool = True,
) -> Release:
    """Build the release ``version`` in ``out_dir/<version>-<variant>/`` and return it.

    ``authorized_key`` is the public key line root accepts; ``host_key`` a dropbear host key
    (:func:`tests.support.dropbearnode.make_host_key`; one per test session: every release shares
    it, as a real node keeps its host key across updates).  ``sftp_server=False`` leaves out the sftp server, as on a node where
    only scp or piped transfers work.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    if not re.fullmatch(r"[A-Za-z0-9._+~-]+", version):
        raise ValueError(f"unsafe version string {version!r}")  # it goes into a shell script
    directory = Path(out_dir) / f"{version}-{variant}"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    release = Release(version=version, variant=variant, directory=directory)
    _link_or_copy(kernel.vmlinuz, release.vmlinuz)
    with tempfile.TemporaryDirectory(prefix="kubesolo-initramfs-") as scratch:
        root = Path(scratch) / "root"
        _populate(root, release, kernel, authorized_key, host_key, busybox, sftp_server)
        release.initramfs.write_bytes(gzip.compress(_newc_cpio(root), compresslevel=6, mtime=0))
    return release


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _populate(  # pylint: disable=too-many-arguments
    root: Path,
    release: Release,
    kernel: Kernel,
    authorized_key: str,
    host_key: Path,
    busybox: str,
    sftp_server: bool,
) -> None:
    for directory in ("dev", "proc", "sys", "run", "tmp", "mnt", "root/.ssh", "etc/dropbear", DATA_MOUNT.lstrip("/")):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "root").chmod(0o700)
    (root / "root/.ssh").chmod(0o700)
    (root / "tmp").chmod(0o1777)
    (root / "var/run").symlink_to("../run")

    install_busybox(root, busybox)
    install_binary(root, DROPBEAR, DROPBEAR)
    if sftp_server:
        install_binary(root, SFTP_SERVER, DROPBEAR_SFTP_SERVER)

    order = kernel.load_order()
    target_modules = root / "lib/modules" / kernel.release
    for relative in order:
        (target_modules / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kernel.modules_dir / relative, target_modules / relative)
    shutil.copy2(kernel.modules_dir / "modules.dep", target_modules / "modules.dep")
    _write(root / "etc/kubesolo-modules", "".join(f"{relative}\n" for relative in order))

    _write(root / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    _write(root / "etc/group", "root:x:0:\ntty:x:5:\n")
    _write(root / "etc/shells", "/bin/sh\n")  # dropbear refuses users whose shell is not listed
    _write(root / "etc/hostname", "kubesolo\n")
    _write(
        root / "etc/os-release",
        f'NAME="KubeSolo OS"\nID=kubesolo-os\nVERSION_ID={release.version}\n'
        f'PRETTY_NAME="KubeSolo OS {release.version}"\n',
    )
    _write(root / "etc/inittab", INITTAB)
    shutil.copyfile(host_key, root / "etc/dropbear/dropbear_ed25519_host_key")
    (root / "etc/dropbear/dropbear_ed25519_host_key").chmod(0o600)
    _write(root / "root/.ssh/authorized_keys", authorized_key.strip() + "\n", mode=0o600)

    substitutions = {
        "VERSION": release.version,
        "VARIANT": release.variant,
        "TAG": INIT_TAG,
        "KERNEL_RELEASE": kernel.release,
        "ADDRESS": GUEST_ADDRESS,
        "GATEWAY": GUEST_GATEWAY,
        "DATA_LABEL": DATA_LABEL,
        "DATA_MOUNT": DATA_MOUNT,
        "HEALTH": "fail" if release.variant == "unhealthy" else "ok",
        "HEALTH_FILE": HEALTH_FILE,
    }
    _write(root / "init", re.sub(r"@([A-Z_]+)@", lambda m: substitutions[m.group(1)], INIT_SCRIPT), mode=0o755)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _newc_cpio(root: Path) -> bytes:
    """``root`` as a newc cpio archive with every file owned by root and a fixed mtime (GNU cpio)."""
    entries = sorted(str(path.relative_to(root)) for path in root.rglob("*"))
    for entry in entries:
        os.utime(root / entry, (0, 0), follow_symlinks=False)
    listing = "".join(f"{entry}\n" for entry in entries).encode()
    return subprocess.run(
        ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"],
        cwd=root,
        input=listing,
        capture_output=True,
        check=True,
    ).stdout
