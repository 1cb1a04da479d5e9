"""What every VM of a test session shares, built once: kernel, GRUB binary, keys, releases."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ..dropbearnode import make_host_key
from ..sshnode import SSH_KEYGEN
from .disk import build_disk, build_efi_binary
from .kernel import Kernel, get_kernel
from .node import VMNode
from .release import Release, build_release


class VMKit:
    """The session's shared VM parts, in ``workdir`` (the kernel itself lives in the user cache).

    One client key logs in to every release built here (its public half is baked into each
    initramfs) and one host key serves them all, so a node keeps its host key across updates.
    """

    def __init__(self, workdir: str | os.PathLike, *, cache: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.cache = cache
        self.kernel: Kernel | None = None
        self._releases: dict[tuple[str, str, bool], Release] = {}

    @property
    def client_key(self) -> Path:
        """Private key (ed25519, no passphrase) that logs in as root on every release."""
        return self.workdir / "client_key"

    @property
    def public_key(self) -> str:
        return (self.workdir / "client_key.pub").read_text(encoding="utf-8").strip()

    @property
    def host_key(self) -> Path:
        return self.workdir / "dropbear_ed25519_host_key"

    @property
    def efi_binary(self) -> Path:
        return self.workdir / "BOOTX64.EFI"

    def prepare(self) -> VMKit:
        """Get the kernel (downloaded on first use), build GRUB and the keys; returns ``self``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kernel = get_kernel(cache=self.cache)
        if not self.client_key.exists():
            subprocess.run(
                [
                    SSH_KEYGEN,
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "kubesolo-fleet vm tests",
                    "-f",
                    str(self.client_key),
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=True,
            )
        if not self.host_key.exists():
            make_host_key(self.host_key)
        build_efi_binary(self.efi_binary)
        return self

    def release(self, version: str, variant: str = "good", *, sftp_server: bool = True) -> Release:
        """The release ``version`` in ``variant`` (built on first request, then reused)."""
        if self.kernel is None:
            raise RuntimeError("VMKit.prepare() first")
        key = (version, variant, sftp_server)
        if key not in self._releases:
            out_dir = self.workdir / ("releases" if sftp_server else "releases-no-sftp")
            self._releases[key] = build_release(
                version,
                variant,
                kernel=self.kernel,
                authorized_key=self.public_key,
                host_key=self.host_key,
                out_dir=out_dir,
                sftp_server=sftp_server,
            )
        return self._releases[key]

    def _content(self, slot: Release | str | None) -> Release | None:
        # A slot's content: a built release, a version (its ``good`` release), or nothing.
        return self.release(slot) if isinstance(slot, str) else slot

    def build_disk(
        self,
        path: str | os.PathLike,
        *,
        slot_a: Release | str | None = "v0.2.0",
        slot_b: Release | str | None = None,
        grubenv: Mapping[str, str] | None = None,
        data_files: Mapping[str, bytes] | None = None,
    ) -> Path:
        """A fresh disk image at ``path`` (see :func:`tests.support.vm.disk.build_disk`)."""
        return build_disk(
            Path(path),
            efi_binary=self.efi_binary,
            slot_a=self._content(slot_a),
            slot_b=self._content(slot_b),
            grubenv=grubenv,
            data_files=data_files,
        )

    def node(self, name: str, disk: str | os.PathLike, **kwargs) -> VMNode:
        """An unstarted :class:`VMNode` for ``disk`` that logs in with :attr:`client_key`."""
        return VMNode(name, disk, client_key=self.client_key, **kwargs)
