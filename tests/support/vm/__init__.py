"""Virtual-machine test nodes that boot like KubeSolo OS: UEFI firmware, GRUB with the A/B logic
on grubenv, a kernel and an initramfs from one of two ext4 slots, SSH (dropbear) with the test key.

Everything comes from Debian packages on the host, without root mounts or loop devices:

* :mod:`.kernel`: the Debian kernel (``apt-get download`` + ``dpkg-deb -x``, cached per user).
* :mod:`.release`: a release = that ``vmlinuz`` + a ``kubesolo-os.gz`` built here per version, in a
  ``good``, ``unhealthy`` or ``panic`` variant (the health contract is documented there).
* :mod:`.disk`: GRUB (``grub-mkstandalone`` with the boot logic built in), the disk image
  (KSOLOEFI, KSOLOA, KSOLOB, KSOLODATA) and offline readers for the images of stopped VMs.
* :mod:`.node`: :class:`VMNode`, the QEMU process, with SSH helpers and Ansible host variables.
* :mod:`.kit`: :class:`VMKit`, what a test session builds once (kernel, GRUB, keys, releases).

Typical use (the ``vm_kit`` and ``vm_factory`` fixtures of ``tests/conftest.py`` wrap this)::

    kit = VMKit(tmp_dir).prepare()
    disk = kit.build_disk(tmp_dir / "node1.img", slot_a="v0.2.0", slot_b=kit.release("v0.3.0", "panic"))
    with kit.node("node1", disk, console_log=tmp_dir / "node1-console.log") as vm:   # waits for SSH
        vm.run("cat /etc/os-release")
    read_grubenv(disk)   # {'active_slot': 'A', 'boot_counter': '3', 'boot_success': '0'}

What the node offers (what the collection's A/B code may rely on, and nothing more)
-------------------------------------------------------------------------------------
* Login: root over SSH (dropbear 2022.83, public key only).  Commands run in busybox ``sh`` (ash).
  File transfer: sftp (OpenSSH's sftp-server, which dropbear starts); there is no ``scp`` and no
  Python.  A release built with ``sftp_server=False`` has no sftp either.
* Userland: busybox 1.35 only.  Among its applets: ``sh``, ``cat``, ``cp``, ``mv`` (``-T``), ``rm``,
  ``ln``, ``mkdir``, ``mktemp``, ``readlink``, ``realpath``, ``stat``, ``wc``, ``head``, ``tail``,
  ``tr``, ``cut``, ``sed``, ``awk``, ``grep``, ``printf`` and ``test`` (shell built-ins), ``dd``,
  ``od``, ``xxd``, ``hexdump``, ``base64``, ``sha256sum``, ``df``, ``sync`` (``sync FILE`` too),
  ``mount``, ``umount``, ``findfs``, ``setsid``, ``timeout``, ``sleep``, ``reboot``,
  ``poweroff``, ``wget``.  Not there: ``blkid``, ``nohup``, ``flock``, ``mountpoint``, ``scp``, ``python``.
* Partitions by label: ``findfs LABEL=KSOLOB`` prints ``/dev/vda3``, and busybox ``mount`` takes
  ``LABEL=KSOLOB`` as the device too (type detected).  The slots and the data partition are ext4,
  KSOLOEFI is FAT32 (``mount -t vfat``, read-write); ``df -Pk`` on a mounted slot gives its free space.
  The init mounts only KSOLODATA (at ``/var/lib/kubesolo``); where a real node mounts KSOLOEFI is
  not documented, so nothing mounts it: mount it yourself (``/mnt`` exists, mkdir below it) and
  unmount it after.  ``/proc/mounts`` is real.
* ``/etc/os-release`` has ``VERSION_ID=<version>``; :data:`HEALTH_COMMAND` tells healthy from not;
  the boot id is in ``/proc/sys/kernel/random/boot_id``.
* Reboot: ``reboot`` (busybox init handles it: sync, unmount, reset; GRUB runs again).  Over SSH,
  background it with SIGHUP ignored so that it outlives the session: :data:`REBOOT_COMMAND`
  (``setsid`` alone is not enough under a pseudo-terminal).
"""

from .disk import (
    DEFAULT_GRUBENV,
    EFI_LABEL,
    GRUB_CFG,
    GRUBENV_PATH,
    SLOT_LABELS,
    build_disk,
    build_efi_binary,
    grubenv_block,
    list_slot,
    partitions,
    read_efi_file,
    read_grubenv,
    read_slot_file,
)
from .kernel import Kernel, cache_dir, get_kernel
from .kit import VMKit
from .node import REBOOT_COMMAND, VMBootError, VMNode, missing_requirements
from .release import DATA_LABEL, DATA_MOUNT, HEALTH_COMMAND, HEALTH_FILE, VARIANTS, Release, build_release

__all__ = [
    "DATA_LABEL",
    "DATA_MOUNT",
    "DEFAULT_GRUBENV",
    "EFI_LABEL",
    "GRUBENV_PATH",
    "GRUB_CFG",
    "HEALTH_COMMAND",
    "HEALTH_FILE",
    "REBOOT_COMMAND",
    "SLOT_LABELS",
    "VARIANTS",
    "Kernel",
    "Release",
    "VMBootError",
    "VMKit",
    "VMNode",
    "build_disk",
    "build_efi_binary",
    "build_release",
    "cache_dir",
    "get_kernel",
    "grubenv_block",
    "list_slot",
    "missing_requirements",
    "partitions",
    "read_efi_file",
    "read_grubenv",
    "read_slot_file",
]
