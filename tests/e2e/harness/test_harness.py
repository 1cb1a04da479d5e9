"""The test harness itself: real registry, artifact builders, access log, playbook runs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import artifacts
from tests.support.collection import REPO_ROOT, collections_root


def test_release_index_is_served_with_its_media_type(registry):
    release = artifacts.push_release(registry, "kubesolo/os", "v0.3.0", "v0.3.0", min_compatible="v0.2.0")

    response = registry.request("GET", "/v2/kubesolo/os/manifests/v0.3.0", headers={"Accept": artifacts.OCI_INDEX})

    assert response.status_code == 200
    assert response.headers["Content-Type"] == artifacts.OCI_INDEX
    assert response.headers["Docker-Content-Digest"] == release.digest
    index = json.loads(response.content)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    amd64 = release.manifests["amd64"]
    assert amd64.annotations[artifacts.ANN_MIN_COMPATIBLE] == "v0.2.0"
    assert amd64.kernel != release.manifests["arm64"].kernel


def test_docker_manifest_list_is_accepted(registry):
    release = artifacts.push_release(
        registry, "kubesolo/os", "v0.3.0-docker", "v0.3.0", ("arm",), docker=True, variants={"arm": "v7"}
    )

    response = registry.request(
        "GET",
        f"/v2/kubesolo/os/manifests/{release.manifests['arm'].digest}",
        headers={"Accept": artifacts.DOCKER_MANIFEST},
    )

    assert response.status_code == 200
    manifest = json.loads(response.content)
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        artifacts.KERNEL_MEDIA_TYPE,
        artifacts.INITRAMFS_MEDIA_TYPE,
    ]
    assert json.loads(release.body)["manifests"][0]["platform"] == {
        "architecture": "arm",
        "os": "linux",
        "variant": "v7",
    }


def test_access_log_counts_blob_downloads_after_a_mark(registry):
    manifest = artifacts.push_arch_manifest(registry, "kubesolo/os", "amd64", "v0.4.0")
    digest = manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE]
    mark = registry.mark()

    response = registry.request("GET", f"/v2/kubesolo/os/blobs/{digest}")

    assert response.content == manifest.kernel
    gets = registry.blob_gets(since=mark)
    assert [(e.method, e.repo, e.reference, e.status) for e in gets] == [("GET", "kubesolo/os", digest, 200)]
    assert registry.manifest_gets(since=mark) == []
    assert registry.blob_data_path(digest).read_bytes() == manifest.kernel


def test_playbook_results_come_back_through_the_callback(run_playbook):
    run = run_playbook(
        [
            {"name": "greet", "ansible.builtin.debug": {"msg": "hello {{ who }}"}},
            {"name": "never", "ansible.builtin.command": "false", "when": False},
            {
                "name": "the collection under test is the working copy",
                "ansible.builtin.command": (
                    "{{ ansible_playbook_python | dirname }}/ansible-galaxy collection list kubesolo.fleet --format json"
                ),
                "changed_when": False,
            },
        ],
        extra_vars={"who": "fleet"},
    )

    assert run.rc == 0, run
    assert run.result("greet")["msg"] == "hello fleet"
    assert run.status("never") == "skipped"
    listed = json.loads(run.result("the collection under test is the working copy")["stdout"])
    assert list(listed) == [str(collections_root() / "ansible_collections")]
    assert list(listed[str(collections_root() / "ansible_collections")]) == ["kubesolo.fleet"]


def test_unit_tests_import_the_working_copy():
    from ansible_collections.kubesolo import fleet  # pylint: disable=import-outside-toplevel

    assert [Path(p).resolve() for p in fleet.__path__] == [REPO_ROOT.resolve()]
