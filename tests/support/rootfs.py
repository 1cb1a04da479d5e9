"""Building a test node's root filesystem in a directory: a busybox userland and host binaries.

Shared by the chroot nodes (:mod:`tests.support.sshnode`, :mod:`tests.support.dropbearnode`) and the
initramfs of the VM releases (:mod:`tests.support.vm.release`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["install_binary", "install_busybox", "shared_libraries"]


def install_busybox(root: Path, busybox: str) -> None:
    """Copy ``busybox`` (static: ``root`` holds no libraries for it) to ``root/bin/busybox``, with one
    relative symlink per applet where ``busybox --list-full`` puts it (bin/sh, sbin/ip, usr/bin/env...),
    as a busybox install on Tiny Core does.  Existing files win over applet links."""
    target = root / "bin/busybox"
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.copy2(busybox, target)
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = root / applet
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent))
    if not (root / "bin/sh").exists():
        raise RuntimeError(f"{busybox} has no sh applet")


def shared_libraries(binary: str) -> list[str]:
    """Absolute paths of the libraries ``ldd`` says ``binary`` loads, the dynamic loader included.

    Libraries a program opens at run time (dlopen) are not among them.
    """
    listing = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libraries = []
    for line in listing.splitlines():
        # "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libraries.append(match.group(1))
    return libraries


def install_binary(root: Path, source: str, node_path: str) -> None:
    """Copy ``source`` to ``node_path`` in ``root``, with its libraries at the paths ldd reports."""
    for path in [node_path, *shared_libraries(source)]:
        origin = source if path == node_path else path
        target = root / path.lstrip("/")
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(origin, target)  # follows symlinks: the node gets the file under the name asked for
