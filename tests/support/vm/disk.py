"""Disk images laid out like a KubeSolo OS node, the GRUB that boots them, and offline readers.

Layout (GPT, partition names and filesystem labels alike)::

    1 KSOLOEFI   FAT32, EFI System   /EFI/BOOT/BOOTX64.EFI (GRUB, grub.cfg built in), /boot/grub/grubenv
    2 KSOLOA     ext4                vmlinuz, kubesolo-os.gz (a release, or empty)
    3 KSOLOB     ext4                the same
    4 KSOLODATA  ext4                persistent state; the init mounts it at /var/lib/kubesolo

The sizes are those of the documentation (256 MiB EFI, 512 MiB slots); the data partition is small.
Images are sparse (about 70 MiB on disk for 1.3 GiB) and built without root or loop devices:
``sfdisk`` writes the table into the file, ``mkfs.vfat --offset`` and ``mkfs.ext4 -E offset=``
format each partition in place (``-d DIR`` fills an ext4 from a directory), and mtools writes
into the FAT at its byte offset.

GRUB's boot logic (:data:`GRUB_CFG`), with grubenv ``active_slot`` (A|B), ``boot_counter``
(attempts left, 3..0) and ``boot_success`` (0|1) on KSOLOEFI:

* ``boot_success`` is 1 (the last boot was verified): nothing is counted.
* otherwise the attempt is counted: 3 -> 2 -> 1 -> 0; a counter already at 0 means the slot has
  used up its attempts: ``active_slot`` swaps and the counter is 3.
* then ``boot_success=0`` is saved and ``KSOLO<active_slot>`` boots.
* values that are missing or garbled count as ``active_slot=A`` and ``boot_counter=3``.  GRUB's
  ``save_env`` only rewrites an existing, valid 1024-byte grubenv in place (it cannot create or
  grow the file); with an unreadable one nothing is saved and every boot starts from those defaults.

So a committed node ({A, 3, 1}) boots into {A, 3, 0}; an unverified reboot gives {A, 2, 0}.  A slot
activated with {B, 3, 0} is booted three times (leaving 2, 1, 0) and, if none of those boots is
marked good, the fourth boot swaps to A ({A, 3, 0}).  A slot GRUB cannot load counts as a failed
boot: GRUB reboots.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .release import DATA_LABEL, Release

EFI_LABEL = "KSOLOEFI"
SLOT_LABELS = {"A": "KSOLOA", "B": "KSOLOB"}
GRUBENV_PATH = "/boot/grub/grubenv"
EFI_BINARY_PATH = "/EFI/BOOT/BOOTX64.EFI"  # the removable-media path: no NVRAM boot entry needed
GRUBENV_SIZE = 1024
DEFAULT_GRUBENV = {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}

MIB = 1024 * 1024
EFI_SIZE = 256 * MIB
SLOT_SIZE = 512 * MIB
DATA_SIZE = 64 * MIB
FIRST_PARTITION = 1 * MIB  # sector 2048, as sfdisk aligns

GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

#: Printed by GRUB before each boot; tests count attempts with it in the console log.
GRUB_TAG = "kubesolo-grub:"

#: Kernel command line of every slot: serial console; panic=1 turns a panic into a reset.
#: mitigations=off: page-table isolation makes every syscall flush the emulated TLB, which is slow
#: under TCG (and there is nothing to protect on a test VM).
KERNEL_ARGS = "console=ttyS0,115200 panic=1 loglevel=4 mitigations=off"

#: GRUB modules: built into the EFI binary's core (``--modules``) and nothing else installed.
GRUB_MODULES = (
    "part_gpt",
    "fat",
    "ext2",
    "search",
    "search_label",
    "loadenv",
    "linux",
    "echo",
    "test",
    "sleep",
    "reboot",
    "normal",
)

GRUB_CFG = f"""\
# KubeSolo OS A/B boot (test harness).  Runs from the memdisk of a standalone GRUB, so $root is the
# memdisk: the EFI partition is found by label.  GRUB script has no arithmetic: if/elif chains.
set timeout=0
if ! search --no-floppy --label --set=efi {EFI_LABEL}; then
    echo "{GRUB_TAG} no {EFI_LABEL} partition; rebooting"
    sleep 5
    reboot
fi
set env=($efi){GRUBENV_PATH}
load_env --file $env active_slot boot_counter boot_success
# Missing or garbled values (no readable grubenv): slot A, a fresh counter.
if [ "$active_slot" != "B" ]; then
    set active_slot=A
fi
if [ "$boot_counter" != "0" ]; then
    if [ "$boot_counter" != "1" ]; then
        if [ "$boot_counter" != "2" ]; then
            set boot_counter=3
        fi
    fi
fi
if [ "$boot_success" != "1" ]; then
    if [ "$boot_counter" = "3" ]; then
        set boot_counter=2
    elif [ "$boot_counter" = "2" ]; then
        set boot_counter=1
    elif [ "$boot_counter" = "1" ]; then
        set boot_counter=0
    else
        echo "{GRUB_TAG} slot $active_slot used up its boot attempts: falling back"
        if [ "$active_slot" = "A" ]; then
            set active_slot=B
        else
            set active_slot=A
        fi
        set boot_counter=3
    fi
fi
set boot_success=0
save_env --file $env active_slot boot_counter boot_success
echo "{GRUB_TAG} booting slot $active_slot (boot_counter=$boot_counter)"
if search --no-floppy --label --set=slot KSOLO$active_slot; then
    if linux ($slot)/vmlinuz {KERNEL_ARGS}; then
        if initrd ($slot)/kubesolo-os.gz; then
            boot
        fi
    fi
fi
echo "{GRUB_TAG} cannot boot slot $active_slot; rebooting"
sleep 1
reboot
"""


def build_efi_binary(path: Path) -> Path:
    """GRUB for x86_64 UEFI with :data:`GRUB_CFG` built in, written to ``path``."""
    with tempfile.TemporaryDirectory(prefix="kubesolo-grub-") as scratch:
        cfg = Path(scratch) / "grub.cfg"
        cfg.write_text(GRUB_CFG, encoding="utf-8")
        modules = " ".join(GRUB_MODULES)
        _run(
            [
                "grub-mkstandalone",
                "-O",
                "x86_64-efi",
                f"--modules={modules}",
                f"--install-modules={modules}",
                "--locales=",
                "--fonts=",
                "--themes=",
                "-o",
                str(path),
                f"boot/grub/grub.cfg={cfg}",
            ]
        )
    return path


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    try:
        return subprocess.run(argv, capture_output=True, check=True, **kwargs)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(argv)} failed ({exc.returncode}): {_text(exc.stderr)}") from exc


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


# ---------------------------------------------------------------- grubenv


def grubenv_block(values: Mapping[str, str]) -> bytes:
    """The 1024-byte grubenv GRUB and grub-editenv use: header, warning, ``key=value`` lines,
    ``#`` padding, no final newline.  (Tests write it with grub-editenv; this is for comparisons.)"""
    body = "# GRUB Environment Block\n# WARNING: Do not edit this file by tools other than grub-editenv!!!\n"
    body += "".join(f"{key}={value}\n" for key, value in values.items())
    data = body.encode()
    if len(data) > GRUBENV_SIZE:
        raise ValueError("grubenv variables do not fit in 1024 bytes")
    return data + b"#" * (GRUBENV_SIZE - len(data))


def write_grubenv_file(path: Path, values: Mapping[str, str]) -> None:
    """A new grubenv at ``path`` holding ``values``, written by Debian's grub-editenv."""
    path.unlink(missing_ok=True)
    _run(["grub-editenv", str(path), "create"])
    if values:
        _run(["grub-editenv", str(path), "set", *(f"{key}={value}" for key, value in values.items())])


def parse_grubenv_file(path: Path) -> dict[str, str]:
    """``grub-editenv FILE list`` as a dict."""
    listing = _text(_run(["grub-editenv", str(path), "list"]).stdout)
    return dict(line.split("=", 1) for line in listing.splitlines() if "=" in line)


# ---------------------------------------------------------------- the disk


@dataclass(frozen=True)
class Partition:
    """One GPT entry of a disk image, in bytes."""

    number: int
    name: str
    offset: int
    size: int


def partitions(disk: Path) -> dict[str, Partition]:
    """The disk's partitions by GPT name (the names equal the filesystem labels here)."""
    table = json.loads(_run(["sfdisk", "--json", str(disk)]).stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    found = {}
    for number, entry in enumerate(table["partitions"], start=1):
        name = entry.get("name", "")
        found[name] = Partition(number, name, entry["start"] * sector, entry["size"] * sector)
    return found


def partition(disk: Path, name: str) -> Partition:
    try:
        return partitions(disk)[name]
    except KeyError:
        raise KeyError(f"{disk} has no partition named {name}") from None


def build_disk(  # pylint: disable=too-many-arguments
    path: Path,
    *,
    efi_binary: Path,
    slot_a: Release | None,
    slot_b: Release | None = None,
    grubenv: Mapping[str, str] | None = None,
    data_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a fresh disk image at ``path``: GPT, GRUB and grubenv on KSOLOEFI, a release per slot
    (``None``: an empty ext4), ``data_files`` (relative path -> bytes) on KSOLODATA.

    ``grubenv`` defaults to :data:`DEFAULT_GRUBENV` (slot A, committed); keys are written in order.
    """
    path = Path(path)
    sizes = [(EFI_LABEL, EFI_SIZE, GPT_ESP), ("KSOLOA", SLOT_SIZE, GPT_LINUX), ("KSOLOB", SLOT_SIZE, GPT_LINUX)]
    sizes.append((DATA_LABEL, DATA_SIZE, GPT_LINUX))
    total = FIRST_PARTITION + sum(entry[1] for entry in sizes) + MIB  # + room for the backup GPT
    path.unlink(missing_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(total)  # sparse
    script = "label: gpt\n" + "".join(
        f"{'start=2048, ' if index == 0 else ''}size={size // 512}, type={kind}, name={name}\n"
        for index, (name, size, kind) in enumerate(sizes)
    )
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)], input=script.encode())
    layout = partitions(path)

    with tempfile.TemporaryDirectory(prefix="kubesolo-disk-") as scratch:
        work = Path(scratch)
        _format_efi(path, layout[EFI_LABEL], efi_binary, dict(grubenv or DEFAULT_GRUBENV), work)
        for letter, release in (("A", slot_a), ("B", slot_b)):
            content = work / f"slot-{letter}"
            content.mkdir()
            if release is not None:
                for source in (release.vmlinuz, release.initramfs):
                    _link_or_copy(source, content / source.name)
            _format_ext4(path, layout[SLOT_LABELS[letter]], content)
        data = work / "data"
        data.mkdir()
        for relative, payload in (data_files or {}).items():
            target = data / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(payload)
        _format_ext4(path, layout[DATA_LABEL], data)
    return path


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _format_efi(disk: Path, part: Partition, efi_binary: Path, grubenv: dict[str, str], work: Path) -> None:
    sectors = part.offset // 512
    # -s 4: 2 KiB clusters.  mkfs.vfat sizes clusters by the whole file, not the partition, and would
    # pick too few clusters for FAT32 (mtools then cannot use it).  -h: the partition's start sector.
    _run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-s",
            "4",
            "-n",
            part.name,
            "-h",
            str(sectors),
            "--offset",
            str(sectors),
            str(disk),
            str(part.size // 1024),
        ]
    )
    grubenv_file = work / "grubenv"
    write_grubenv_file(grubenv_file, grubenv)
    image = _mtools_image(disk, part)
    _run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT", "::/boot", "::/boot/grub"], env=_mtools_env())
    _run(["mcopy", "-i", image, str(efi_binary), f"::{EFI_BINARY_PATH}"], env=_mtools_env())
    _run(["mcopy", "-i", image, str(grubenv_file), f"::{GRUBENV_PATH}"], env=_mtools_env())


def _format_ext4(disk: Path, part: Partition, content: Path) -> None:
    # Written in place at the partition's offset, no partition image to copy (dd would do the same).
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            part.name,
            "-d",
            str(content),
            "-E",
            # Inode tables written now: the kernel would zero them in the background after mounting.
            f"offset={part.offset},lazy_itable_init=0",
            str(disk),
            f"{part.size // 1024}k",
        ]
    )


def _mtools_image(disk: Path, part: Partition) -> str:
    return f"{disk}@@{part.offset}"


def _mtools_env() -> dict[str, str]:
    # MTOOLS_SKIP_CHECK: mtools would reject the FAT because its geometry fields look odd to it.
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


# ---------------------------------------------------------------- offline readers


def read_efi_file(disk: Path, name: str) -> bytes:
    """The file ``name`` (absolute, e.g. ``/boot/grub/grubenv``) of KSOLOEFI, read with mtools."""
    part = partition(Path(disk), EFI_LABEL)
    return _run(["mcopy", "-n", "-i", _mtools_image(Path(disk), part), f"::{name}", "-"], env=_mtools_env()).stdout


def read_grubenv(disk: Path) -> dict[str, str]:
    """The grubenv of a disk image, as Debian's ``grub-editenv list`` reads it."""
    with tempfile.TemporaryDirectory(prefix="kubesolo-grubenv-") as scratch:
        copy = Path(scratch) / "grubenv"
        copy.write_bytes(read_efi_file(disk, GRUBENV_PATH))
        return parse_grubenv_file(copy)


def read_slot_file(disk: Path, label: str, name: str) -> bytes:
    """The file ``name`` (relative to the root, e.g. ``kubesolo-os.gz``) of the ext4 partition ``label``.

    Raises FileNotFoundError when it is not there.  ``debugfs`` opens the partition through the
    image's ``?offset=`` syntax, read-only.
    """
    part = partition(Path(disk), label)
    target = "/" + name.lstrip("/")
    done = _run(["debugfs", "-R", f"cat {target}", f"{disk}?offset={part.offset}"])
    # debugfs exits 0 on a missing file; its complaints go to stderr after the version banner.
    complaints = [line for line in _text(done.stderr).splitlines() if line and not line.startswith("debugfs ")]
    if complaints:
        raise FileNotFoundError(f"{label}:{target}: {' '.join(complaints)}")
    return done.stdout


def list_slot(disk: Path, label: str) -> list[str]:
    """Names in the root directory of the ext4 partition ``label`` (without ``.``, ``..``, ``lost+found``)."""
    part = partition(Path(disk), label)
    done = _run(["debugfs", "-R", "ls -p /", f"{disk}?offset={part.offset}"])
    names = []
    for line in _text(done.stdout).splitlines():
        # ls -p: "/inode/mode/uid/gid/name/size/"
        fields = line.strip().strip("/").split("/")
        if len(fields) >= 5 and fields[4] not in (".", "..", "lost+found"):
            names.append(fields[4])
    return sorted(names)
