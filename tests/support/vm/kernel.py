"""The Debian kernel every test release boots, and the few modules its initramfs loads.

The kernel comes from the Debian archive the machine already uses: ``apt-get download`` of the
package ``linux-image-amd64`` currently depends on, unpacked with ``dpkg-deb -x`` (never installed).
Only ``vmlinuz`` and the modules the test init needs are kept, in a per-user cache, so a machine
downloads each kernel package once::

    <cache>/kernel/<package>_<version>-<module set hash>/
        kernel.json                     what is in here (see Kernel)
        vmlinuz
        lib/modules/<release>/kernel/...ko, modules.dep   the wanted modules and their dependencies

The package ships no ``modules.dep`` (its postinst runs depmod) and this machine may have no kmod,
so busybox's ``depmod`` builds one in the unpacked tree; the load order is worked out from it here.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from ..sshnode import DEFAULT_BUSYBOX

#: The metapackage whose dependency names the kernel package (overridden by $KUBESOLO_TEST_VM_KERNEL_PACKAGE).
KERNEL_METAPACKAGE = "linux-image-amd64"

#: What the init loads, by module name; dependencies are added and ordered from modules.dep.
#: crc32c_generic: ext4 and jbd2 ask the crypto API for "crc32c" (metadata checksums, on by default
#: in mkfs.ext4); without a modprobe that finds it the mount fails, so it is loaded up front.
#: The nls modules: vfat's default codepage (437) and iocharset (Debian: ascii), plus iso8859-1.
#: virtio_rng: without a hardware RNG the kernel's random pool takes seconds to initialise under
#: TCG, and dropbear waits for it before it answers.
INITRAMFS_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "crc32c_generic",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_iso8859-1",
)


def cache_dir() -> Path:
    """Per-user cache of the VM tests: ``$KUBESOLO_TEST_CACHE_DIR``, else ``$XDG_CACHE_HOME`` or
    ``~/.cache``, then ``kubesolo-fleet-tests``."""
    override = os.environ.get("KUBESOLO_TEST_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kubesolo-fleet-tests"


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel: ``vmlinuz`` and the initramfs modules, in load order."""

    package: str  # linux-image-6.1.0-57-amd64
    package_version: str  # 6.1.192-3
    release: str  # uname -r: 6.1.0-57-amd64
    root: Path  # the cache entry

    @property
    def vmlinuz(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def modules_dir(self) -> Path:
        """``lib/modules/<release>`` of the cache entry (holds ``modules.dep``)."""
        return self.root / "lib" / "modules" / self.release

    def load_order(self, wanted: Iterable[str] = INITRAMFS_MODULES) -> list[str]:
        """Module paths relative to :attr:`modules_dir`, each after the modules it depends on."""
        return module_load_order(parse_modules_dep(self.modules_dir / "modules.dep"), wanted)


def parse_modules_dep(path: Path) -> dict[str, list[str]]:
    """``modules.dep`` as ``{relative module path: [relative paths it depends on]}``."""
    deps: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if ":" in line:
            module, _sep, rest = line.partition(":")
            deps[module.strip()] = rest.split()
    return deps


def module_name(path: str) -> str:
    """``kernel/fs/nls/nls_iso8859-1.ko`` -> ``nls_iso8859-1`` (file names keep their dashes)."""
    return re.sub(r"\.ko(\.[a-z]+)?$", "", os.path.basename(path))


def module_load_order(deps: Mapping[str, list[str]], wanted: Iterable[str]) -> list[str]:
    """Depth-first: every module comes after its dependencies, each once, ``wanted`` order kept."""
    by_name = {module_name(path): path for path in deps}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(path: str) -> None:
        if path in order:
            return
        if path in visiting:
            raise ValueError(f"dependency cycle through {path}")
        visiting.add(path)
        for dependency in deps.get(path, []):
            visit(dependency)
        visiting.discard(path)
        order.append(path)

    for name in wanted:
        # modules.dep spells names as files do; modprobe treats - and _ alike, and so do we.
        path = by_name.get(name) or by_name.get(name.replace("_", "-")) or by_name.get(name.replace("-", "_"))
        if path is None:
            raise KeyError(f"kernel module {name} not in modules.dep (built in, or not shipped?)")
        visit(path)
    return order


@contextmanager
def _locked(directory: Path):
    """Hold an exclusive lock on ``directory`` (two test runs must not unpack into it at once)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True, **kwargs)


def resolve_package() -> tuple[str, str]:
    """``(package, version)`` of the kernel to use, from the machine's apt lists (one apt-cache call).

    ``$KUBESOLO_TEST_VM_KERNEL_PACKAGE`` names the package (its candidate version is used);
    otherwise it is the exact dependency of ``linux-image-amd64``.  Raises RuntimeError when apt
    knows neither (no ``apt-get update`` yet).
    """
    package = os.environ.get("KUBESOLO_TEST_VM_KERNEL_PACKAGE")
    try:
        shown = _run(["apt-cache", "show", "--no-all-versions", package or KERNEL_METAPACKAGE]).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise RuntimeError(f"apt cannot name the kernel package (run apt-get update?): {detail}") from exc
    if package:
        version = re.search(r"^Version:\s*(\S+)", shown, re.MULTILINE)
        if version:
            return package, version.group(1)
    else:
        # The metapackage pins its kernel: "Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)".
        depends = re.search(r"^Depends:.*?\b(linux-image-[^\s,(]+)\s*\(=\s*([^)\s]+)\)", shown, re.MULTILINE)
        if depends:
            return depends.group(1), depends.group(2)
    raise RuntimeError(f"apt-cache show {package or KERNEL_METAPACKAGE} names no kernel version:\n{shown}")


def _module_set_hash(wanted: Iterable[str]) -> str:
    return sha256(" ".join(wanted).encode()).hexdigest()[:8]


def _load(entry: Path) -> Kernel:
    meta = json.loads((entry / "kernel.json").read_text(encoding="utf-8"))
    return Kernel(package=meta["package"], package_version=meta["package_version"], release=meta["release"], root=entry)


def _newest_cached(kernels: Path, suffix: str) -> Path | None:
    entries = [p for p in kernels.glob(f"*-{suffix}") if (p / "kernel.json").is_file()]
    return max(entries, key=lambda p: p.stat().st_mtime) if entries else None


def get_kernel(wanted: Iterable[str] = INITRAMFS_MODULES, *, cache: Path | None = None) -> Kernel:
    """The cached kernel (downloading and unpacking it first when it is not cached yet).

    When apt cannot name a package (no lists, offline), the newest cached kernel is used.
    """
    wanted = tuple(wanted)
    kernels = (cache or cache_dir()) / "kernel"
    suffix = _module_set_hash(wanted)
    try:
        package, version = resolve_package()
    except RuntimeError:
        cached = _newest_cached(kernels, suffix)
        if cached is None:
            raise
        return _load(cached)
    entry = kernels / f"{package}_{version}-{suffix}"
    with _locked(kernels):
        if not (entry / "kernel.json").is_file():
            _fetch(package, version, wanted, entry)
    return _load(entry)


def _fetch(package: str, version: str, wanted: tuple[str, ...], entry: Path) -> None:
    """Download and unpack ``package``, keep vmlinuz and the wanted modules in ``entry`` (atomically)."""
    with tempfile.TemporaryDirectory(prefix="kubesolo-kernel-", dir=entry.parent) as scratch:
        work = Path(scratch)
        # apt's download sandbox user must be able to write here, or apt warns and downloads as root.
        os.chmod(work, 0o755)
        _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=work)
        (deb,) = work.glob("*.deb")
        unpacked = work / "unpacked"
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
        (modules_root,) = (unpacked / "lib" / "modules").iterdir()
        release = modules_root.name
        # modules.dep, the way depmod writes it (busybox's applet, not kmod).
        _run([DEFAULT_BUSYBOX, "depmod", "-b", str(unpacked), release])
        deps = parse_modules_dep(modules_root / "modules.dep")
        order = module_load_order(deps, wanted)

        staged = work / "entry"
        target_modules = staged / "lib" / "modules" / release
        for relative in order:
            (target_modules / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(modules_root / relative, target_modules / relative)
        # A modules.dep of just what is kept, so modprobe would work on the node too.
        (target_modules / "modules.dep").write_text(
            "".join(f"{path}: {' '.join(deps[path])}\n" for path in order), encoding="utf-8"
        )
        shutil.copy2(unpacked / "boot" / f"vmlinuz-{release}", staged / "vmlinuz")
        (staged / "kernel.json").write_text(
            json.dumps(
                {"package": package, "package_version": version, "release": release, "modules": list(wanted)},
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        staged.rename(entry)
