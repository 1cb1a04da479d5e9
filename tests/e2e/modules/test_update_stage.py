# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kubesolo.fleet.update_stage end to end: real ansible-playbook against a real registry.

Each module-scoped fixture runs one playbook of several tasks (every ansible-playbook run costs
about two seconds).  To tell which task made which request, a ``step`` task after a module task
sends ``GET /v2/?kubesolo-test-step=<label>`` from the controller (a ``url`` lookup, no module
run); :func:`split_at_steps` cuts the access log at those lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.support import artifacts
from tests.support.collection import REPO_ROOT
from tests.support.playbook import run_playbook as run_playbook_in
from tests.support.staging import assert_resumable_partial

STEP_PARAM = "kubesolo-test-step"
SBOM_MEDIA_TYPE = "application/vnd.example.sbom.v1+json"
SIGNATURE_MEDIA_TYPE = "application/vnd.example.signature.v1"


def galaxy_version() -> str:
    return str(yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text(encoding="utf-8"))["version"])


def stage(name: str, repository: str, dest, *, check_mode: bool = False, diff: bool = False, **args) -> dict:
    """An update_stage task that never stops the play (its failure is asserted on instead)."""
    task = {
        "name": name,
        "kubesolo.fleet.update_stage": {"repository": repository, "plain_http": True, "dest": str(dest), **args},
        "ignore_errors": True,
    }
    if check_mode:
        task["check_mode"] = True
    if diff:
        task["diff"] = True
    return task


def step(registry, label: str) -> dict:
    """A task that leaves one marker line for ``label`` in the registry's access log."""
    url = f"{registry.url}/v2/?{STEP_PARAM}={label}"
    lookup = f"{{{{ lookup('ansible.builtin.url', '{url}', use_proxy=false) }}}}"
    return {"name": f"step {label}", "ansible.builtin.debug": {"msg": lookup}}


def split_at_steps(entries) -> dict[str, list]:
    """``{label: the entries after the previous step marker, up to the marker of label}``."""
    segments, current = {}, []
    for entry in entries:
        if entry.query.startswith(STEP_PARAM + "="):
            segments[entry.query.split("=", 1)[1]] = current
            current = []
        else:
            current.append(entry)
    assert current == [], f"requests after the last step marker: {[e.line for e in current]}"
    return segments


def blob_gets(entries) -> list[tuple[str, int]]:
    """(digest, status) of the blob GETs, sorted: the layers download at the same time."""
    return sorted((e.reference, e.status) for e in entries if e.method == "GET" and e.kind == "blob")


def manifest_gets(entries) -> list[str]:
    return [e.reference for e in entries if e.method == "GET" and e.kind == "manifest"]


def store_of(dest: Path) -> Path:
    """The hidden sibling directory holding the releases behind ``dest``."""
    return dest.parent / f".{dest.name}.kubesolo-fleet"


def release_dir(manifest_digest: str) -> str:
    return manifest_digest.replace(":", "-")


def leftovers(store: Path) -> list[str]:
    """Temporary or half-published entries anywhere in ``store``, and ``.part`` files outside the
    ``partial-*`` directories, where interrupted downloads wait to be resumed."""
    return sorted(
        str(path.relative_to(store))
        for path in store.rglob("*")
        if path.name.startswith(("tmp-", "trash-", "link-"))
        or (path.name.endswith(".part") and not path.parent.name.startswith("partial-"))
    )


def assert_staged(dest: Path, manifest: artifacts.PushedManifest, also_in_store=()) -> dict:
    """``dest`` links to the release directory of ``manifest`` holding its two layers; returns the record.

    The store holds that directory and ``also_in_store`` (a released lock leaves nothing).
    """
    store = store_of(dest)
    assert dest.is_symlink()
    assert os.readlink(dest) == f"{store.name}/{release_dir(manifest.digest)}"
    assert sorted(p.name for p in store.iterdir()) == sorted([release_dir(manifest.digest), *also_in_store])
    assert sorted(p.name for p in dest.iterdir()) == ["kubesolo-os.gz", "release.json", "vmlinuz"]
    assert (dest / "vmlinuz").read_bytes() == manifest.kernel
    assert (dest / "kubesolo-os.gz").read_bytes() == manifest.initramfs
    assert leftovers(store) == []
    record = json.loads((dest / "release.json").read_text(encoding="utf-8"))
    assert record["manifest_digest"] == manifest.digest
    assert record["version"] == manifest.version
    assert record["architecture"] == manifest.arch
    assert record["files"]["vmlinuz"]["digest"] == manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE]
    assert record["files"]["kubesolo-os.gz"]["digest"] == manifest.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE]
    assert record["files"]["vmlinuz"]["size"] == len(manifest.kernel)
    assert record["files"]["kubesolo-os.gz"]["size"] == len(manifest.initramfs)
    return record


def assert_failed(run, task: str, error_code: str) -> dict:
    """The result of ``task``, which must have failed with ``error_code`` and no traceback."""
    result = run.result(task)
    assert run.status(task) == "failed", result
    assert result.get("error_code") == error_code, result
    assert isinstance(result.get("msg"), str) and result["msg"], result
    assert "Traceback" not in json.dumps(result), result
    return result


def layer_sizes(manifest: artifacts.PushedManifest) -> int:
    return len(manifest.kernel) + len(manifest.initramfs)


# ----------------------------------------------------------------------------------------------
# Check mode, staging, staging again, check mode again: one playbook.

KERNEL_SIZE = 70_001
INITRAMFS_SIZE = 2 * 1024 * 1024 + 123  # more than one 1 MiB download chunk


@pytest.fixture(scope="module")
def triple(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triple")
    repository = f"{registry.host}/triple/os"
    release = artifacts.push_release(
        registry,
        "triple/os",
        "stable",
        "v0.3.0",
        min_compatible="v0.2.0",
        kernel_size=KERNEL_SIZE,
        initramfs_size=INITRAMFS_SIZE,
    )
    node = tmp / "node"
    dest = node / "staged"
    args = {"tag": "stable", "architecture": "amd64"}
    tasks = [
        stage("check before staging", repository, dest, check_mode=True, diff=True, **args),
        {"name": "look at the node directory", "ansible.builtin.stat": {"path": str(node)}},
        step(registry, "check"),
        stage("stage", repository, dest, diff=True, **args),
        step(registry, "stage"),
        stage("stage again", repository, dest, diff=True, **args),
        step(registry, "again"),
        stage("check after staging", repository, dest, check_mode=True, diff=True, **args),
        step(registry, "check-after"),
    ]
    mark = registry.mark()
    run = run_playbook_in(tasks, tmp_path=tmp / "playbook")
    log = registry.access_log(since=mark)
    return SimpleNamespace(
        release=release, manifest=release.manifests["amd64"], dest=dest, run=run, log=log, steps=split_at_steps(log)
    )


def test_check_mode_predicts_the_change_and_writes_nothing(triple):
    result = triple.run.result("check before staging")

    assert triple.run.status("check before staging") == "changed", result
    assert result["changed"] is True
    assert result["bytes_downloaded"] == 0
    assert result["manifest_digest"] == triple.manifest.digest
    assert result["diff"] == {"before": {}, "after": {"version": "v0.3.0", "manifest_digest": triple.manifest.digest}}
    assert triple.run.result("look at the node directory")["stat"]["exists"] is False
    assert blob_gets(triple.steps["check"]) == []
    assert manifest_gets(triple.steps["check"]) == ["stable", triple.manifest.digest]


def test_stage_downloads_verifies_and_publishes_the_layers(triple):
    manifest = triple.manifest
    result = triple.run.result("stage")

    assert triple.run.status("stage") == "changed", result
    assert result["changed"] is True
    assert result["bytes_downloaded"] == KERNEL_SIZE + INITRAMFS_SIZE == layer_sizes(manifest)
    assert result["manifest_digest"] == manifest.digest
    assert result["index_digest"] == triple.release.digest
    assert result["staged"] == {
        "vmlinuz_path": str(triple.dest / "vmlinuz"),
        "initramfs_path": str(triple.dest / "kubesolo-os.gz"),
        "version": "v0.3.0",
    }
    assert result["diff"] == {"before": {}, "after": {"version": "v0.3.0", "manifest_digest": manifest.digest}}
    record = assert_staged(triple.dest, manifest)
    assert record["index_digest"] == triple.release.digest
    assert record["metadata"]["min_compatible_version"] == "v0.2.0"
    # The two layers, each once, and nothing else (not the config blob).
    assert blob_gets(triple.steps["stage"]) == sorted(
        [
            (manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE], 200),
            (manifest.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE], 200),
        ]
    )


def test_staging_again_changes_nothing_and_downloads_nothing(triple):
    result = triple.run.result("stage again")
    expected = {"version": "v0.3.0", "manifest_digest": triple.manifest.digest}

    assert triple.run.status("stage again") == "ok", result
    assert result["changed"] is False
    assert result["bytes_downloaded"] == 0
    assert result["manifest_digest"] == triple.manifest.digest
    assert result["diff"] == {"before": expected, "after": expected}
    assert blob_gets(triple.steps["again"]) == []
    assert manifest_gets(triple.steps["again"]) == ["stable", triple.manifest.digest]
    assert_staged(triple.dest, triple.manifest)


def test_check_mode_after_staging_reports_no_change(triple):
    result = triple.run.result("check after staging")

    assert triple.run.status("check after staging") == "ok", result
    assert result["changed"] is False
    assert result["bytes_downloaded"] == 0
    assert blob_gets(triple.steps["check-after"]) == []


def test_every_request_names_the_collection_and_its_version(triple):
    module_requests = [e for e in triple.log if e.kind in ("manifest", "blob")]

    assert len(module_requests) == 4 * 2 + 2
    assert {e.user_agent for e in module_requests} == {f"kubesolo.fleet/{galaxy_version()}"}


# ----------------------------------------------------------------------------------------------
# A newer release under the same tag replaces the staged one.


def test_newer_release_under_the_same_tag_replaces_the_staged_one(registry, run_playbook, tmp_path):
    repository = f"{registry.host}/upgrade/os"
    dest = tmp_path / "node" / "staged"
    old = artifacts.push_release(registry, "upgrade/os", "stable", "v0.3.0", ("amd64",)).manifests["amd64"]
    task = stage("stage stable", repository, dest, diff=True, tag="stable", architecture="x86_64")

    first = run_playbook([task])
    assert first.status("stage stable") == "changed", first
    assert_staged(dest, old)
    old_dir = store_of(dest) / release_dir(old.digest)

    new = artifacts.push_release(registry, "upgrade/os", "stable", "v0.4.0", ("amd64",)).manifests["amd64"]
    second = run_playbook([task])
    result = second.result("stage stable")

    assert second.status("stage stable") == "changed", result
    assert result["bytes_downloaded"] == layer_sizes(new)
    assert result["manifest_digest"] == new.digest
    assert result["staged"]["version"] == "v0.4.0"
    assert result["diff"] == {
        "before": {"version": "v0.3.0", "manifest_digest": old.digest},
        "after": {"version": "v0.4.0", "manifest_digest": new.digest},
    }
    assert_staged(dest, new)
    assert new.kernel != old.kernel and new.initramfs != old.initramfs
    assert not old_dir.exists()


@pytest.mark.parametrize("damage", ["no-manifest-digest", "nested-too-deeply"])
def test_a_record_that_names_no_release_is_restaged_with_a_diff(registry, run_playbook, tmp_path, damage):
    """A release.json without its manifest digest (or not parsable at all) holds nothing: diff mode
    shows an empty before, and the release is staged again, never a traceback."""
    repository = f"{registry.host}/record/os"
    dest = tmp_path / "node" / "staged"
    manifest = artifacts.push_release(registry, "record/os", "stable", "v0.3.0", ("amd64",)).manifests["amd64"]
    task = stage("stage stable", repository, dest, diff=True, tag="stable", architecture="amd64")
    assert run_playbook([task]).status("stage stable") == "changed"
    record_path = dest / "release.json"
    if damage == "no-manifest-digest":
        record = json.loads(record_path.read_text(encoding="utf-8"))
        del record["manifest_digest"]
        record_path.write_text(json.dumps(record), encoding="utf-8")
    else:
        record_path.write_bytes(b"[" * 100000 + b"]" * 100000)

    again = run_playbook([task])
    result = again.result("stage stable")

    assert again.status("stage stable") == "changed", result
    assert result["diff"] == {"before": {}, "after": {"version": "v0.3.0", "manifest_digest": manifest.digest}}
    assert_staged(dest, manifest)


# ----------------------------------------------------------------------------------------------
# Releases that must not be staged, tried over a good one: one playbook.


def tamper(registry, digest: str, transform) -> None:
    """Replace the stored bytes of blob ``digest`` in the registry with ``transform(bytes)``."""
    path = registry.blob_data_path(digest)
    path.write_bytes(transform(path.read_bytes()))


@pytest.fixture(scope="module")
def failures(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failures")
    repo = "faulty/os"
    repository = f"{registry.host}/{repo}"
    sbom = b'{"sbom": "not a KubeSolo OS layer"}' * 50
    signature = b"signature bytes, not a KubeSolo OS layer"
    layers = artifacts.make_layers("amd64", "v0.5.0-extra")
    good = artifacts.push_release(
        registry,
        repo,
        "extra",
        "v0.5.0-extra",
        ("amd64",),
        layers={SBOM_MEDIA_TYPE: sbom, **layers},
        extra_layers=[(SIGNATURE_MEDIA_TYPE, signature)],
    ).manifests["amd64"]
    no_initramfs = artifacts.push_release(
        registry, repo, "no-initramfs", "v0.5.1-noinit", ("amd64",), omit=[artifacts.INITRAMFS_MEDIA_TYPE]
    ).manifests["amd64"]
    tampered = artifacts.push_release(registry, repo, "tampered", "v0.5.2-tampered", ("amd64",)).manifests["amd64"]
    longer = artifacts.push_release(registry, repo, "longer", "v0.5.3-longer", ("amd64",)).manifests["amd64"]
    shorter = artifacts.push_release(registry, repo, "shorter", "v0.5.4-shorter", ("amd64",)).manifests["amd64"]
    tamper(registry, tampered.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE], lambda data: bytes(b ^ 0x5A for b in data))
    tamper(registry, longer.layer_digests[artifacts.KERNEL_MEDIA_TYPE], lambda data: data + b"\0" * 16)
    tamper(registry, shorter.layer_digests[artifacts.KERNEL_MEDIA_TYPE], lambda data: data[: len(data) // 2])

    dest = tmp / "node" / "staged"
    args = {"architecture": "amd64"}
    tasks = [
        stage("stage a release with unknown layers", repository, dest, tag="extra", **args),
        {"name": "look at the staged release", "ansible.builtin.stat": {"path": str(dest), "follow": True}},
        step(registry, "extra"),
        stage("stage a release without initramfs", repository, dest, tag="no-initramfs", **args),
        step(registry, "no-initramfs"),
        stage("stage a release with a tampered initramfs", repository, dest, tag="tampered", **args),
        step(registry, "tampered"),
        stage("stage a release with a longer kernel", repository, dest, tag="longer", **args),
        step(registry, "longer"),
        stage("stage a release with a shorter kernel", repository, dest, tag="shorter", **args),
        step(registry, "shorter"),
    ]
    mark = registry.mark()
    run = run_playbook_in(tasks, tmp_path=tmp / "playbook")
    log = registry.access_log(since=mark)
    return SimpleNamespace(
        good=good,
        no_initramfs=no_initramfs,
        tampered=tampered,
        longer=longer,
        shorter=shorter,
        sbom=sbom,
        signature=signature,
        dest=dest,
        run=run,
        log=log,
        steps=split_at_steps(log),
    )


def test_unknown_layers_are_ignored_and_never_fetched(failures):
    good = failures.good
    result = failures.run.result("stage a release with unknown layers")
    unknown = {artifacts.sha256_digest(failures.sbom), artifacts.sha256_digest(failures.signature)}

    assert failures.run.status("stage a release with unknown layers") == "changed", result
    assert [layer["media_type"] for layer in result["layers"]] == [
        SBOM_MEDIA_TYPE,
        artifacts.KERNEL_MEDIA_TYPE,
        artifacts.INITRAMFS_MEDIA_TYPE,
        SIGNATURE_MEDIA_TYPE,
    ]
    assert result["bytes_downloaded"] == layer_sizes(good)
    assert blob_gets(failures.steps["extra"]) == sorted(
        [
            (good.layer_digests[artifacts.KERNEL_MEDIA_TYPE], 200),
            (good.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE], 200),
        ]
    )
    assert [e.line for e in failures.log if e.reference in unknown] == []
    record = json.loads((failures.dest / "release.json").read_text(encoding="utf-8"))
    assert sorted(record["files"]) == ["kubesolo-os.gz", "vmlinuz"]


def test_missing_initramfs_layer_fails_before_downloading(failures):
    result = assert_failed(failures.run, "stage a release without initramfs", "layer_missing")

    assert result["msg"] == f"manifest {failures.no_initramfs.digest} has no {artifacts.INITRAMFS_MEDIA_TYPE} layer"
    assert blob_gets(failures.steps["no-initramfs"]) == []


def test_tampered_blob_is_a_digest_mismatch(failures):
    digest = failures.tampered.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE]
    result = assert_failed(failures.run, "stage a release with a tampered initramfs", "digest_mismatch")

    assert result["msg"].startswith(f"blob {digest} has wrong content: its bytes hash to sha256:")
    assert "staged" not in result
    assert blob_gets(failures.steps["tampered"]) == sorted(
        [
            (failures.tampered.layer_digests[artifacts.KERNEL_MEDIA_TYPE], 200),
            (digest, 200),
        ]
    )


@pytest.mark.parametrize(
    "task, which",
    [
        ("stage a release with a longer kernel", "longer"),
        ("stage a release with a shorter kernel", "shorter"),
    ],
)
def test_blob_of_another_size_is_a_size_mismatch(failures, task, which):
    # The registry now announces the new length; whether the module goes by that or by the
    # bytes it counts, the message names the blob and the size the manifest declares.
    manifest = getattr(failures, which)
    digest = manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE]
    result = assert_failed(failures.run, task, "size_mismatch")

    assert len(manifest.kernel) == artifacts.DEFAULT_KERNEL_SIZE == 4096
    assert f"blob {digest}" in result["msg"]
    assert "4096" in result["msg"]
    assert len(result["msg"]) < 200, result["msg"]
    # The kernel once; the initramfs, downloaded at the same time, at most once.
    gets = blob_gets(failures.steps[which])
    assert gets.count((digest, 200)) == 1
    assert set(gets) <= {(digest, 200), (manifest.layer_digests[artifacts.INITRAMFS_MEDIA_TYPE], 200)}


def test_failed_attempts_keep_the_previous_release_and_leave_no_partial_files(failures):
    stat_before = failures.run.result("look at the staged release")["stat"]
    # Each run removes what earlier runs left; the last one (a kernel of the wrong size) leaves
    # the download directory of its release: its wrong bytes were removed, the initramfs
    # downloaded beside them is kept for the next run as far as it got.
    last_partial = f"partial-{release_dir(failures.shorter.digest)}"

    # Same link target, same bytes, no partial file outside the download directory.
    assert_staged(failures.dest, failures.good, also_in_store=[last_partial])
    assert_resumable_partial(store_of(failures.dest) / last_partial, failures.shorter, failed="vmlinuz")
    assert os.stat(failures.dest).st_ino == stat_before["inode"]
    assert (failures.dest / "vmlinuz").stat().st_size == artifacts.DEFAULT_KERNEL_SIZE


# ----------------------------------------------------------------------------------------------
# Manifest kinds and destinations: one playbook.


@pytest.fixture(scope="module")
def destinations(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("destinations")
    repo = "misc/os"
    repository = f"{registry.host}/{repo}"
    docker = artifacts.push_release(registry, repo, "docker", "v0.6.0-docker", docker=True)
    single = artifacts.push_arch_manifest(registry, repo, "amd64", "v0.6.1-single", tag="v0.6.1-amd64")
    users = tmp / "users-dir"
    (users / "sub").mkdir(parents=True)
    (users / "notes.txt").write_bytes(b"my notes\n")
    (users / "sub" / "data.bin").write_bytes(b"\x00\x01\x02")
    empty = tmp / "empty-dir"
    empty.mkdir()
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    users_link = tmp / "users-link"
    users_link.symlink_to("elsewhere")
    tasks = [
        stage(
            "stage from a docker manifest list",
            repository,
            tmp / "docker" / "staged",
            tag="docker",
            architecture="arm64",
        ),
        stage(
            "stage a single-arch manifest",
            repository,
            tmp / "single" / "staged",
            tag="v0.6.1-amd64",
            architecture="amd64",
        ),
        stage(
            "stage a single-arch manifest of another architecture",
            repository,
            tmp / "mismatch" / "staged",
            tag="v0.6.1-amd64",
            architecture="arm64",
        ),
        stage("relative dest", repository, "relative/staged", tag="docker", architecture="amd64"),
        stage("dest is a directory of the user's", repository, users, tag="docker", architecture="amd64"),
        stage("dest is an empty directory", repository, empty, tag="docker", architecture="amd64"),
        stage("dest is a symbolic link of the user's", repository, users_link, tag="docker", architecture="amd64"),
        stage(
            "stage pinned by manifest digest",
            repository,
            tmp / "pinned" / "staged",
            digest=docker.manifests["amd64"].digest,
            architecture="amd64",
        ),
    ]
    run = run_playbook_in(tasks, tmp_path=tmp / "playbook")
    return SimpleNamespace(
        docker=docker, single=single, tmp=tmp, users=users, users_link=users_link, empty=empty, run=run
    )


def test_docker_manifest_list_stages_like_an_oci_index(destinations):
    manifest = destinations.docker.manifests["arm64"]
    result = destinations.run.result("stage from a docker manifest list")

    assert manifest.media_type == artifacts.DOCKER_MANIFEST
    assert destinations.run.status("stage from a docker manifest list") == "changed", result
    assert result["index_digest"] == destinations.docker.digest
    assert result["manifest_digest"] == manifest.digest
    assert result["bytes_downloaded"] == layer_sizes(manifest)
    assert_staged(destinations.tmp / "docker" / "staged", manifest)


def test_single_arch_manifest_stages_without_an_index(destinations):
    result = destinations.run.result("stage a single-arch manifest")

    assert destinations.run.status("stage a single-arch manifest") == "changed", result
    assert result["index_digest"] is None
    assert result["manifest_digest"] == destinations.single.digest
    record = assert_staged(destinations.tmp / "single" / "staged", destinations.single)
    assert record["index_digest"] is None


def test_single_arch_manifest_of_another_architecture_writes_nothing(destinations):
    result = assert_failed(
        destinations.run, "stage a single-arch manifest of another architecture", "architecture_mismatch"
    )

    assert "amd64" in result["msg"] and "arm64" in result["msg"]
    assert not (destinations.tmp / "mismatch").exists()


def test_relative_dest_is_an_invalid_parameter(destinations):
    result = assert_failed(destinations.run, "relative dest", "invalid_parameter")

    assert result["msg"] == "dest must be an absolute path below /, got 'relative/staged'"
    assert not (destinations.tmp / "playbook" / "relative").exists()


def test_directory_of_the_users_at_dest_is_refused_and_left_alone(destinations):
    users = destinations.users
    result = assert_failed(destinations.run, "dest is a directory of the user's", "stage_failed")

    assert str(users) in result["msg"]
    assert "refusing to replace it" in result["msg"]
    assert not users.is_symlink()
    assert sorted(str(p.relative_to(users)) for p in users.rglob("*")) == ["notes.txt", "sub", "sub/data.bin"]
    assert (users / "notes.txt").read_bytes() == b"my notes\n"
    assert (users / "sub" / "data.bin").read_bytes() == b"\x00\x01\x02"
    assert not store_of(users).exists()


def test_empty_directory_at_dest_is_replaced_by_the_release(destinations):
    result = destinations.run.result("dest is an empty directory")

    assert destinations.run.status("dest is an empty directory") == "changed", result
    assert result["manifest_digest"] == destinations.docker.manifests["amd64"].digest
    assert_staged(destinations.empty, destinations.docker.manifests["amd64"])


def test_symbolic_link_of_the_users_at_dest_is_refused_and_left_alone(destinations):
    link = destinations.users_link
    result = assert_failed(destinations.run, "dest is a symbolic link of the user's", "stage_failed")

    assert str(link) in result["msg"]
    assert "refusing to replace it" in result["msg"]
    assert os.readlink(link) == "elsewhere"
    assert list((destinations.tmp / "elsewhere").iterdir()) == []
    assert not store_of(link).exists()


def test_manifest_digest_pins_the_build_to_stage(destinations):
    manifest = destinations.docker.manifests["amd64"]
    result = destinations.run.result("stage pinned by manifest digest")

    assert destinations.run.status("stage pinned by manifest digest") == "changed", result
    assert result["manifest_digest"] == manifest.digest
    assert result["index_digest"] is None
    assert_staged(destinations.tmp / "pinned" / "staged", manifest)
