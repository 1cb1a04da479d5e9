"""``kubesolo.fleet.update_publish`` through ansible-playbook against a real registry."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.support import artifacts
from tests.support.artifacts import deterministic_bytes

REPO = "kubesolo/published"
ARCHES = ("amd64", "arm64")
NOTES = "Fixes the boot counter reset."
DATE = "2026-11-01T12:00:00Z"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A kernel and an initramfs per architecture, as a build pipeline leaves them."""
    root = tmp_path_factory.mktemp("build")
    files = {}
    for arch in ARCHES:
        (root / arch).mkdir()
        kernel, initramfs = root / arch / "vmlinuz", root / arch / "kubesolo-os.gz"
        kernel.write_bytes(deterministic_bytes(f"published kernel {arch}", 5000))
        initramfs.write_bytes(deterministic_bytes(f"published initramfs {arch}", 7000))
        files[arch] = {"kernel": kernel, "initramfs": initramfs}
    return files


def publish_task(registry, build, version, tags, name="publish"):
    return {
        "name": name,
        "kubesolo.fleet.update_publish": {
            "repository": f"{registry.host}/{REPO}",
            "plain_http": True,
            "tags": tags,
            "version": version,
            "channel": "stable",
            "min_compatible_version": "v0.2.0",
            "release_notes": NOTES,
            "release_date": DATE,
            "artifacts": [
                {"architecture": arch, "kernel": str(build[arch]["kernel"]), "initramfs": str(build[arch]["initramfs"])}
                for arch in ARCHES
            ],
        },
        "register": "published",
    }


def info_task(registry, arch, reference="v1.0.0"):
    return {
        "name": f"info {arch}",
        "kubesolo.fleet.update_info": {
            "repository": f"{registry.host}/{REPO}",
            "plain_http": True,
            "tag": reference,
            "architecture": arch,
        },
    }


def sha256(path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(registry, reference):
    """(digest, document) of a tag or digest, or None when the registry does not have it."""
    response = registry.request(
        "GET",
        f"/v2/{REPO}/manifests/{reference}",
        headers={"Accept": f"{artifacts.OCI_INDEX}, {artifacts.OCI_MANIFEST}"},
    )
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"], json.loads(response.content)


def writes(registry, since):
    """Requests that changed the registry (uploads, manifest and tag pushes)."""
    return [e.line for e in registry.access_log(since=since) if e.method in ("POST", "PUT", "PATCH", "DELETE")]


def test_publish_is_resolvable_idempotent_and_has_a_real_check_mode(registry, build, run_playbook, tmp_path):
    run = run_playbook(
        [
            publish_task(registry, build, "v1.0.0", ["v1.0.0", "stable"]),
            info_task(registry, "amd64"),
            info_task(registry, "arm64"),
        ],
        tmp_path=tmp_path / "first",
    )

    assert run.rc == 0, run
    first = run.result("publish")
    assert run.status("publish") == "changed"
    assert sorted(first["pushed"]["tags"]) == ["stable", "v1.0.0"]
    index_digest, index = manifest(registry, "v1.0.0")
    assert index_digest == first["index_digest"] == manifest(registry, "stable")[0]
    assert index["mediaType"] == artifacts.OCI_INDEX
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        ("linux", "amd64"),
        ("linux", "arm64"),
    ]
    assert {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]} == first["manifests"]
    for arch in ARCHES:
        info = run.result(f"info {arch}")
        assert info["manifest_digest"] == first["manifests"][arch]
        assert info["index_digest"] == first["index_digest"]
        assert info["available_architectures"] == list(ARCHES)
        assert info["metadata"] == {
            "version": "v1.0.0",
            "channel": "stable",
            "min_compatible_version": "v0.2.0",
            "architecture": arch,
            "release_notes": NOTES,
            "release_date": DATE,
        }
        assert {layer["media_type"]: layer["digest"] for layer in info["layers"]} == {
            artifacts.KERNEL_MEDIA_TYPE: sha256(build[arch]["kernel"]),
            artifacts.INITRAMFS_MEDIA_TYPE: sha256(build[arch]["initramfs"]),
        }

    mark = registry.mark()
    again = run_playbook([publish_task(registry, build, "v1.0.0", ["v1.0.0", "stable"])], tmp_path=tmp_path / "again")

    assert again.rc == 0, again
    assert again.status("publish") == "ok"
    assert again.result("publish")["pushed"] == {"blobs": [], "manifests": [], "tags": [], "signed": []}
    assert again.result("publish")["index_digest"] == first["index_digest"]
    assert writes(registry, mark) == []

    mark = registry.mark()
    dry = run_playbook([publish_task(registry, build, "v1.1.0", ["v1.1.0"])], tmp_path=tmp_path / "dry", check=True)

    assert dry.rc == 0, dry
    assert dry.status("publish") == "changed"
    would = dry.result("publish")["pushed"]
    # Same files: the layers and configs are there; the manifests (new annotations) and the tag are not.
    assert would["blobs"] == []
    assert sorted(would["manifests"]) == sorted(
        list(dry.result("publish")["manifests"].values()) + [dry.result("publish")["index_digest"]]
    )
    assert would["tags"] == ["v1.1.0"]
    assert writes(registry, mark) == []
    assert manifest(registry, "v1.1.0") is None
    assert manifest(registry, dry.result("publish")["index_digest"]) is None


def test_publish_moves_stable_to_a_new_index(registry, build, run_playbook, tmp_path):
    first = run_playbook([publish_task(registry, build, "v2.0.0", ["v2.0.0", "stable"])], tmp_path=tmp_path / "v2")
    assert first.rc == 0, first
    run = run_playbook(
        [
            publish_task(registry, build, "v2.1.0", ["v2.1.0"], name="new version"),
            publish_task(registry, build, "v2.1.0", ["v2.1.0", "stable"], name="move stable"),
        ],
        tmp_path=tmp_path / "v2.1",
    )

    assert run.rc == 0, run
    new_index = run.result("new version")["index_digest"]
    assert new_index != first.result("publish")["index_digest"]
    assert run.result("new version")["pushed"]["tags"] == ["v2.1.0"]  # stable stays where it was
    assert run.status("move stable") == "changed"
    assert run.result("move stable")["pushed"] == {"blobs": [], "manifests": [], "tags": ["stable"], "signed": []}
    assert manifest(registry, "stable")[0] == new_index
    assert manifest(registry, "v2.0.0")[0] == first.result("publish")["index_digest"]
