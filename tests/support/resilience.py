"""Helpers of the resilience, crash-safety, concurrency and hostile-registry tests.

* :func:`run_driver` / :func:`start_driver` run ``stage_driver.py`` (update_stage's logic without
  ``ansible-playbook``) as a subprocess;
* :func:`held_release` tells which complete, verified release a ``dest`` holds, or fails the test
  (a dangling link, a mix of two releases, a missing or extra file, wrong bytes);
* :func:`snapshot` records a directory tree (types, link targets, sizes, sha256, inodes, mtimes)
  to show that a failed run changed nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import artifacts
from .collection import collections_root

DRIVER = Path(__file__).resolve().parent / "stage_driver.py"
STAGED_FILES = {"vmlinuz": artifacts.KERNEL_MEDIA_TYPE, "kubesolo-os.gz": artifacts.INITRAMFS_MEDIA_TYPE}


def store_of(dest: Path) -> Path:
    """The hidden sibling directory holding the releases behind ``dest``."""
    return dest.parent / f".{dest.name}.kubesolo-fleet"


def release_dir_name(digest: str) -> str:
    return digest.replace(":", "-")


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


# ---------------------------------------------------------------------------------- the driver


def hermetic_env(directory: Path) -> dict[str, str]:
    """The environment for a driver run: no proxies, an empty docker config."""
    docker_config = directory / "empty-docker-config"
    docker_config.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["DOCKER_CONFIG"] = str(docker_config)
    return env


def driver_command(**options) -> list[str]:
    """argv of one driver run with update_stage ``options`` (plain_http and amd64 by default)."""
    options.setdefault("plain_http", True)
    options.setdefault("architecture", "amd64")
    options["dest"] = str(options["dest"])
    options["collections_root"] = str(collections_root())
    return [sys.executable, str(DRIVER), json.dumps(options)]


def start_driver(env: dict[str, str], **options) -> subprocess.Popen:
    """Start a driver run; its stdout is a pipe of JSON lines."""
    return subprocess.Popen(  # pylint: disable=consider-using-with
        driver_command(**options),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def driver_result(process: subprocess.Popen, timeout: float = 60) -> dict:
    """Wait for a driver run; its last JSON line (KeyError-free: ``{}`` when it printed none)."""
    stdout, stderr = process.communicate(timeout=timeout)
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    result = lines[-1] if lines else {}
    result["_rc"] = process.returncode
    result["_stderr"] = stderr
    return result


def run_driver(env: dict[str, str], timeout: float = 60, **options) -> dict:
    """Run the driver to its end; returns its result (see :func:`driver_result`)."""
    return driver_result(start_driver(env, **options), timeout)


def stage_ok(env: dict[str, str], **options) -> dict:
    """Run the driver; it must succeed."""
    result = run_driver(env, **options)
    assert result["_rc"] == 0 and not result.get("failed"), result
    return result


def copy_node(template: Path, target: Path) -> None:
    """Copy a node directory (a ``dest`` link and its store) as is, symbolic links included."""
    shutil.copytree(template, target, symlinks=True)


# ---------------------------------------------------------------------------------- inspection


def held_release(dest: Path, candidates: dict[str, artifacts.PushedManifest]) -> str:
    """The label of the candidate release ``dest`` holds, complete and verified.

    Fails the test unless ``dest`` is a link into its store, to the directory of one candidate's
    manifest digest, holding exactly release.json and the two files, each with that manifest's
    bytes (by sha256), and a record naming that manifest and those files.
    """
    store = store_of(dest)
    assert dest.is_symlink(), f"{dest} is not a symbolic link"
    target = Path(os.path.normpath(dest.parent / os.readlink(dest)))
    assert target.parent == store, f"{dest} points at {target}, outside {store}"
    assert target.is_dir(), f"{dest} is a dangling link to {target}"
    by_dir = {release_dir_name(m.digest): label for label, m in candidates.items()}
    assert target.name in by_dir, f"{dest} points at {target.name}, not at any of {sorted(by_dir)}"
    label = by_dir[target.name]
    assert_release_dir(target, candidates[label], label)
    return label


def assert_release_dir(directory: Path, manifest: artifacts.PushedManifest, label: str = "release") -> None:
    """``directory`` holds exactly release.json and the two files of ``manifest``, verified by sha256."""
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["kubesolo-os.gz", "release.json", "vmlinuz"], f"{label} release directory holds {names}"
    for name, media_type in STAGED_FILES.items():
        assert sha256_file(directory / name) == manifest.layer_digests[media_type], f"{label}: {name} has other bytes"
    record = json.loads((directory / "release.json").read_text(encoding="utf-8"))
    assert record["manifest_digest"] == manifest.digest, record
    for name, media_type in STAGED_FILES.items():
        entry = record["files"][name]
        assert entry["digest"] == manifest.layer_digests[media_type], record
        assert entry["size"] == len(manifest.layers[media_type]), record
        assert "sha256:" + entry["sha256"] == manifest.layer_digests[media_type], record


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: relative path -> (kind, link target or size and sha256, inode, mtime)."""
    found: dict[str, tuple] = {}
    if not os.path.lexists(root):
        return found
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        relative = str(path.relative_to(root))
        if path.is_symlink():
            found[relative] = ("link", os.readlink(path), info.st_ino, info.st_mtime_ns)
        elif path.is_dir():
            found[relative] = ("dir", None, info.st_ino, None)
        else:
            found[relative] = ("file", (info.st_size, sha256_file(path)), info.st_ino, info.st_mtime_ns)
    return found


def part_files(store: Path) -> dict[str, int]:
    """``{relative path: size}`` of the ``.part`` files in ``store``."""
    if not store.is_dir():
        return {}
    return {str(p.relative_to(store)): p.stat().st_size for p in store.rglob("*.part")}
