"""Building blocks for end-to-end tests of update_info / update_stage against test registries.

Tasks never stop the play (``ignore_errors``), so one playbook can hold many cases, each asserted
on through its registered result.  :func:`assert_staged` checks a local stage directory (host
delivery, or controller delivery to the local connection).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from . import artifacts
from .registry import DEFAULT_BINARY


def require_distribution() -> None:
    """Skip (fail under CI) when the Distribution registry binary is missing, as conftest's fixtures do."""
    if os.access(DEFAULT_BINARY, os.X_OK):
        return
    message = f"{DEFAULT_BINARY} missing: install the Debian package docker-registry (scripts/bootstrap does)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(message)
    pytest.skip(message)


def info_task(name: str, repository: str, **args) -> dict:
    """A kubesolo.fleet.update_info task (architecture amd64 unless given)."""
    module_args = {"repository": repository, "architecture": "amd64", **args}
    return {"name": name, "kubesolo.fleet.update_info": module_args, "ignore_errors": True}


def stage_task(name: str, repository: str, dest, *, cache=None, **args) -> dict:
    """A kubesolo.fleet.update_stage task (architecture amd64 unless given).

    With ``cache`` the release is delivered by the controller, through that ``controller_cache``.
    """
    module_args = {"repository": repository, "architecture": "amd64", "dest": str(dest), **args}
    if cache is not None:
        module_args.update(delivery="controller", controller_cache=str(cache))
    return {"name": name, "kubesolo.fleet.update_stage": module_args, "ignore_errors": True}


#: CA bundle variables of ``requests``: when set they replace whatever ``verify`` a session has.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def hermetic_env(directory: Path, **extra: str) -> dict[str, str]:
    """Environment for a run: DOCKER_CONFIG points at an empty directory (no credentials by default),
    and the CA bundle variables of ``requests`` are emptied (a test that wants them sets them)."""
    docker_config = directory / "empty-docker-config"
    docker_config.mkdir(parents=True, exist_ok=True)
    return {"DOCKER_CONFIG": str(docker_config), **dict.fromkeys(CA_BUNDLE_VARIABLES, ""), **extra}


def store_of(dest: Path) -> Path:
    """The hidden sibling directory holding the releases behind ``dest``."""
    return dest.parent / f".{dest.name}.kubesolo-fleet"


#: The lock directory a run holds in the store (left behind only by a killed run).
STORE_LOCK = ".lock"


def store_entries(store: Path) -> list[str]:
    """Names in ``store`` (none when it does not exist), without the lock."""
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir() if p.name != STORE_LOCK)


def leftovers(store: Path) -> list[str]:
    """Temporary, partial or half-published entries anywhere in ``store``."""
    if not store.is_dir():
        return []
    return sorted(
        str(path.relative_to(store))
        for path in store.rglob("*")
        if path.name.startswith(("tmp-", "trash-", "link-", "partial-")) or path.name.endswith(".part")
    )


def assert_staged(dest: Path, manifest: artifacts.PushedManifest, repository: str | None = None) -> dict:
    """``dest`` links to the release directory of ``manifest`` holding exactly its two layers; returns the record."""
    store = store_of(dest)
    name = manifest.digest.replace(":", "-")
    assert dest.is_symlink(), f"{dest} is not a staged release"
    assert os.readlink(dest) == f"{store.name}/{name}"
    assert store_entries(store) == [name]
    assert sorted(p.name for p in dest.iterdir()) == ["kubesolo-os.gz", "release.json", "vmlinuz"]
    assert (dest / "vmlinuz").read_bytes() == manifest.kernel
    assert (dest / "kubesolo-os.gz").read_bytes() == manifest.initramfs
    assert leftovers(store) == []
    record = json.loads((dest / "release.json").read_text(encoding="utf-8"))
    assert record["manifest_digest"] == manifest.digest
    assert record["version"] == manifest.version
    if repository is not None:
        assert record["repository"] == repository
    return record


def assert_resumable_partial(partial: Path, manifest: artifacts.PushedManifest, failed: str) -> None:
    """The partial download directory ``partial`` of ``manifest`` after its layer ``failed``
    (``vmlinuz`` or ``kubesolo-os.gz``) arrived with wrong bytes: nothing of that layer is kept;
    the other layer, downloaded at the same time and cancelled by the failure, is complete, a
    prefix in ``<name>.part``, or absent."""
    layers = {"vmlinuz": manifest.kernel, "kubesolo-os.gz": manifest.initramfs}
    found = {p.name: p.read_bytes() for p in partial.iterdir()} if partial.is_dir() else {}
    assert not {failed, failed + ".part"} & set(found), sorted(found)
    (other,) = set(layers) - {failed}
    assert set(found) <= {other, other + ".part"}, sorted(found)
    assert found.get(other, layers[other]) == layers[other]
    assert layers[other].startswith(found.get(other + ".part", b""))


def assert_nothing_staged(dest: Path) -> None:
    """Nothing at ``dest`` and no store (or one holding nothing but the lock) beside it."""
    assert not os.path.lexists(dest), f"{dest} exists"
    assert store_entries(store_of(dest)) == []


def assert_ok(run, task: str, host: str = "localhost") -> dict:
    """The result of ``task``, which must have succeeded."""
    result = run.result(task, host)
    assert run.status(task, host) in ("ok", "changed"), result
    assert not result.get("failed"), result
    return result


def assert_failed(run, task: str, error_code: str, host: str = "localhost") -> dict:
    """The result of ``task``, which must have failed with ``error_code`` and no traceback."""
    result = run.result(task, host)
    assert run.status(task, host) == "failed", result
    assert result.get("error_code") == error_code, result
    assert isinstance(result.get("msg"), str) and result["msg"], result
    assert "Traceback" not in json.dumps(result), result
    return result


def layer_digests(manifest: artifacts.PushedManifest) -> tuple[str, str]:
    """``(kernel digest, initramfs digest)``."""
    return manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE], manifest.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE]


def sources_of(release: artifacts.PushedRelease, arch: str, *, index: str, rest: str, stage: bool = True) -> dict:
    """The ``sources`` a run fetching ``release`` for ``arch`` reports: the index from ``index``,
    the manifest (and the layers, when staging) from ``rest``."""
    manifest = release.manifests[arch]
    expected = {release.digest: index, manifest.digest: rest}
    if stage:
        expected.update(dict.fromkeys(layer_digests(manifest), rest))
    return expected
