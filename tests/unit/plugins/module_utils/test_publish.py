# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release planning (documents, digests) and idempotent publishing."""

from __future__ import annotations

import json

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _publish, _release
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    InvalidReferenceError,
    ParameterError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci import _manifests
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    INITRAMFS,
    KERNEL,
    FakeManifestClient,
    FakePushRegistry,
    sha256_digest,
)

METADATA = {
    "version": "v0.3.0",
    "channel": "stable",
    "min_compatible_version": "v0.2.0",
    "release_notes": "Fixes.",
    "release_date": "2025-01-31T12:00:00Z",
}
CONFIG = "application/vnd.oci.image.config.v1+json"


def write_artifacts(directory, architectures=("amd64", "arm64", "arm/v7"), tag=b""):
    """Kernel and initramfs files per architecture; returns (artifacts, {architecture: (kernel, initramfs)})."""
    directory.mkdir(parents=True, exist_ok=True)
    artifacts, contents = [], {}
    for architecture in architectures:
        name = architecture.replace("/", "-")
        kernel = b"kernel for " + architecture.encode() + tag
        initramfs = b"initramfs for " + architecture.encode() + tag
        (directory / ("vmlinuz-" + name)).write_bytes(kernel)
        (directory / ("kubesolo-os-" + name + ".gz")).write_bytes(initramfs)
        artifacts.append(
            {
                "architecture": architecture,
                "kernel": str(directory / ("vmlinuz-" + name)),
                "initramfs": str(directory / ("kubesolo-os-" + name + ".gz")),
            }
        )
        contents[architecture] = (kernel, initramfs)
    return artifacts, contents


@pytest.fixture
def artifacts(tmp_path):
    return write_artifacts(tmp_path / "release")


def annotations(architecture=None, **overrides):
    values = dict(METADATA, **overrides)
    if architecture is not None:
        values["architecture"] = architecture
    return dict(("io.kubesolo.os." + key, value) for key, value in values.items() if value)


def document(doc):
    return json.loads(doc.data.decode("utf-8"))


def as_fetched(doc):
    return _manifests.ManifestDocument(doc.data, doc.media_type, doc.digest, document(doc))


# -- plan_release -----------------------------------------------------------


def test_plan_is_deterministic(tmp_path, artifacts):
    files, _contents = artifacts
    first = _publish.plan_release(files, dict(METADATA), ["stable", "v0.3.0"])
    second = _publish.plan_release(files, dict(METADATA), ["stable", "v0.3.0"])
    assert first.index.digest == second.index.digest
    assert first.index.data == second.index.data
    assert [m.data for m in first.manifests] == [m.data for m in second.manifests]
    assert [b.digest for b in first.blobs] == [b.digest for b in second.blobs]
    # The same bytes elsewhere on disk give the same release: paths are not part of it.
    moved, _moved_contents = write_artifacts(tmp_path / "elsewhere")
    third = _publish.plan_release(moved, dict(METADATA), ["stable", "v0.3.0"])
    assert third.index.digest == first.index.digest
    assert third.index.data == first.index.data


def test_plan_changes_with_content(tmp_path, artifacts):
    files, _contents = artifacts
    other, _other_contents = write_artifacts(tmp_path / "other", tag=b" rebuilt")
    assert (
        _publish.plan_release(files, METADATA, ["stable"]).index.digest
        != _publish.plan_release(other, METADATA, ["stable"]).index.digest
    )
    assert (
        _publish.plan_release(files, METADATA, ["stable"]).index.digest
        != _publish.plan_release(files, dict(METADATA, release_notes="Other."), ["stable"]).index.digest
    )


def test_documents_are_canonical_json(artifacts):
    plan = _publish.plan_release(artifacts[0], METADATA, ["stable"])
    for doc in plan.manifests + [plan.index]:
        assert doc.digest == sha256_digest(doc.data)
        assert doc.data == json.dumps(document(doc), sort_keys=True, separators=(",", ":")).encode("utf-8")


def test_manifests_carry_the_six_annotations(artifacts):
    files, _contents = artifacts
    plan = _publish.plan_release(files, METADATA, ["stable"])
    assert len(plan.manifests) == 3
    for manifest, architecture in zip(plan.manifests, ["amd64", "arm64", "arm"]):
        assert manifest.media_type == _manifests.MEDIA_OCI_MANIFEST
        doc = document(manifest)
        assert doc["annotations"] == {
            "io.kubesolo.os.version": "v0.3.0",
            "io.kubesolo.os.channel": "stable",
            "io.kubesolo.os.min_compatible_version": "v0.2.0",
            "io.kubesolo.os.architecture": architecture,
            "io.kubesolo.os.release_notes": "Fixes.",
            "io.kubesolo.os.release_date": "2025-01-31T12:00:00Z",
        }
        assert doc["schemaVersion"] == 2
        assert doc["mediaType"] == _manifests.MEDIA_OCI_MANIFEST


def test_empty_optional_annotations_are_omitted(artifacts):
    metadata = {
        "version": "v0.3.0",
        "channel": "stable",
        "min_compatible_version": "",
        "release_notes": "",
        "release_date": None,
    }
    plan = _publish.plan_release(artifacts[0][:1], metadata, ["stable"])
    assert document(plan.manifests[0])["annotations"] == {
        "io.kubesolo.os.version": "v0.3.0",
        "io.kubesolo.os.channel": "stable",
        "io.kubesolo.os.architecture": "amd64",
    }
    assert document(plan.index)["annotations"] == {
        "io.kubesolo.os.version": "v0.3.0",
        "io.kubesolo.os.channel": "stable",
    }


def test_layers_have_the_kubesolo_media_types_and_file_digests(artifacts):
    files, contents = artifacts
    plan = _publish.plan_release(files, METADATA, ["stable"])
    for manifest, architecture in zip(plan.manifests, ["amd64", "arm64", "arm/v7"]):
        kernel, initramfs = contents[architecture]
        assert document(manifest)["layers"] == [
            {"mediaType": KERNEL, "digest": sha256_digest(kernel), "size": len(kernel)},
            {"mediaType": INITRAMFS, "digest": sha256_digest(initramfs), "size": len(initramfs)},
        ]
    assert KERNEL == "application/vnd.kubesolo.os.kernel.v1+octet-stream"
    assert INITRAMFS == "application/vnd.kubesolo.os.initramfs.v1+gzip"


def test_config_blob_describes_the_platform(artifacts):
    plan = _publish.plan_release(artifacts[0], METADATA, ["stable"])
    blobs = dict((blob.digest, blob) for blob in plan.blobs)
    expected = [
        b'{"architecture":"amd64","os":"linux"}',
        b'{"architecture":"arm64","os":"linux"}',
        b'{"architecture":"arm","os":"linux","variant":"v7"}',
    ]
    for manifest, data in zip(plan.manifests, expected):
        config = document(manifest)["config"]
        assert config == {"mediaType": CONFIG, "digest": sha256_digest(data), "size": len(data)}
        assert blobs[config["digest"]].data == data


def test_plan_blobs_are_the_configs_and_files(artifacts):
    files, contents = artifacts
    plan = _publish.plan_release(files, METADATA, ["stable"])
    by_digest = dict((blob.digest, blob) for blob in plan.blobs)
    assert len(plan.blobs) == 9  # a config, a kernel and an initramfs per architecture
    for artifact in files:
        kernel, initramfs = contents[artifact["architecture"]]
        assert by_digest[sha256_digest(kernel)].path == artifact["kernel"]
        assert by_digest[sha256_digest(kernel)].size == len(kernel)
        assert by_digest[sha256_digest(kernel)].media_type == KERNEL
        assert by_digest[sha256_digest(initramfs)].path == artifact["initramfs"]
        assert by_digest[sha256_digest(initramfs)].media_type == INITRAMFS


def test_identical_files_are_one_blob(tmp_path):
    shared = tmp_path / "vmlinuz"
    shared.write_bytes(b"one kernel for all")
    (tmp_path / "a.gz").write_bytes(b"initramfs a")
    (tmp_path / "b.gz").write_bytes(b"initramfs b")
    plan = _publish.plan_release(
        [
            {"architecture": "amd64", "kernel": str(shared), "initramfs": str(tmp_path / "a.gz")},
            {"architecture": "arm64", "kernel": str(shared), "initramfs": str(tmp_path / "b.gz")},
        ],
        METADATA,
        ["stable"],
    )
    digests = [blob.digest for blob in plan.blobs]
    assert len(digests) == len(set(digests)) == 5
    assert digests.count(sha256_digest(b"one kernel for all")) == 1


def test_index_lists_the_platforms(artifacts):
    files, _contents = artifacts
    plan = _publish.plan_release(files, METADATA, ["stable", "v0.3.0"])
    assert plan.platforms == ["amd64", "arm64", "arm/v7"]
    assert plan.tags == ["stable", "v0.3.0"]
    assert plan.index.media_type == _manifests.MEDIA_OCI_INDEX
    index = document(plan.index)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == _manifests.MEDIA_OCI_INDEX
    assert index["annotations"] == annotations()
    assert index["manifests"] == [
        {
            "mediaType": _manifests.MEDIA_OCI_MANIFEST,
            "digest": plan.manifests[0].digest,
            "size": len(plan.manifests[0].data),
            "platform": {"os": "linux", "architecture": "amd64"},
        },
        {
            "mediaType": _manifests.MEDIA_OCI_MANIFEST,
            "digest": plan.manifests[1].digest,
            "size": len(plan.manifests[1].data),
            "platform": {"os": "linux", "architecture": "arm64"},
        },
        {
            "mediaType": _manifests.MEDIA_OCI_MANIFEST,
            "digest": plan.manifests[2].digest,
            "size": len(plan.manifests[2].data),
            "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
        },
    ]


def test_architecture_names_are_normalised(tmp_path):
    files, _contents = write_artifacts(tmp_path, architectures=("x86_64", "aarch64", "armv7l"))
    plan = _publish.plan_release(files, METADATA, ["stable"])
    assert plan.platforms == ["amd64", "arm64", "arm/v7"]
    assert [entry["platform"] for entry in document(plan.index)["manifests"]] == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64"},
        {"os": "linux", "architecture": "arm", "variant": "v7"},
    ]
    assert [document(m)["annotations"]["io.kubesolo.os.architecture"] for m in plan.manifests] == [
        "amd64",
        "arm64",
        "arm",
    ]


@pytest.mark.parametrize(
    "architectures, named",
    [
        (("amd64", "amd64"), "amd64"),
        (("amd64", "x86_64"), "amd64"),
        (("arm64", "aarch64"), "arm64"),
        (("arm/v7", "armv7l"), "arm/v7"),
    ],
)
def test_duplicate_architectures_are_refused(tmp_path, architectures, named):
    files = []
    for number, architecture in enumerate(architectures):
        directory = tmp_path / str(number)
        files.extend(write_artifacts(directory, architectures=(architecture,))[0])
    with pytest.raises(ParameterError) as info:
        _publish.plan_release(files, METADATA, ["stable"])
    assert str(info.value) == f"artifacts list architecture {named} twice"


def test_arm_variants_are_distinct_platforms(tmp_path):
    files, _contents = write_artifacts(tmp_path, architectures=("arm/v6", "arm/v7"))
    plan = _publish.plan_release(files, METADATA, ["stable"])
    assert plan.platforms == ["arm/v6", "arm/v7"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("version", "v0.3"),
        ("version", "garbage"),
        ("version", "V0.3.0"),
        ("version", "0.3.0-01"),
        ("min_compatible_version", "v0.2"),
        ("min_compatible_version", "latest"),
    ],
)
def test_invalid_versions_are_parameter_errors(artifacts, field, value):
    with pytest.raises(ParameterError) as info:
        _publish.plan_release(artifacts[0], dict(METADATA, **{field: value}), ["stable"])
    assert str(info.value).startswith(field + ": ")
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["", None])
def test_version_is_required(artifacts, value):
    with pytest.raises(ParameterError) as info:
        _publish.plan_release(artifacts[0], dict(METADATA, version=value), ["stable"])
    assert str(info.value) == "version is required"


@pytest.mark.parametrize("tag", ["", "-stable", ".hidden", "has space", "a/b", "v0.3.0+build", "x" * 129, None])
def test_invalid_tags_are_refused(artifacts, tag):
    with pytest.raises(InvalidReferenceError) as info:
        _publish.plan_release(artifacts[0], METADATA, ["stable", tag])
    assert repr(tag) in str(info.value)


def test_longest_valid_tag_is_accepted(artifacts):
    plan = _publish.plan_release(artifacts[0], METADATA, ["x" * 128, "v0.3.0-amd64", "_latest"])
    assert plan.tags == ["x" * 128, "v0.3.0-amd64", "_latest"]


@pytest.mark.parametrize("which", ["kernel", "initramfs"])
def test_missing_file_names_the_path(tmp_path, artifacts, which):
    files = [dict(artifact) for artifact in artifacts[0]]
    missing = str(tmp_path / "nowhere" / "missing-file")
    files[1][which] = missing
    with pytest.raises(ParameterError) as info:
        _publish.plan_release(files, METADATA, ["stable"])
    assert str(info.value).startswith(f"cannot read {missing}: ")


def test_empty_artifacts_are_refused():
    with pytest.raises(ParameterError) as info:
        _publish.plan_release([], METADATA, ["stable"])
    assert str(info.value) == "artifacts must list at least one architecture"


def test_empty_tags_are_refused(artifacts):
    with pytest.raises(ParameterError) as info:
        _publish.plan_release(artifacts[0], METADATA, [])
    assert str(info.value) == "tags must name at least one tag"


# -- Round trip through the resolver -----------------------------------------


def _client_for(plan, tag="stable"):
    served = dict((m.digest, as_fetched(m)) for m in plan.manifests)
    served[tag] = as_fetched(plan.index)
    return FakeManifestClient(served)


def test_planned_index_resolves_to_the_planned_manifest(artifacts):
    files, contents = artifacts
    plan = _publish.plan_release(files, METADATA, ["stable"])
    release = _release.resolve(_client_for(plan), "arm64", tag="stable")
    assert release.manifest_digest == plan.manifests[1].digest
    assert release.index_digest == plan.index.digest
    assert release.metadata == dict(METADATA, architecture="arm64")
    assert release.available_architectures == ["amd64", "arm/v7", "arm64"]
    kernel, initramfs = contents["arm64"]
    assert release.staged_layers() == [
        ("vmlinuz", {"media_type": KERNEL, "digest": sha256_digest(kernel), "size": len(kernel)}),
        ("kubesolo-os.gz", {"media_type": INITRAMFS, "digest": sha256_digest(initramfs), "size": len(initramfs)}),
    ]


@pytest.mark.parametrize(
    "node, position, declared",
    [
        ("x86_64", 0, "amd64"),
        ("aarch64", 1, "arm64"),
        ("armv7l", 2, "arm"),
    ],
)
def test_every_planned_platform_resolves(artifacts, node, position, declared):
    plan = _publish.plan_release(artifacts[0], METADATA, ["stable"])
    release = _release.resolve(_client_for(plan), node, tag="stable")
    assert release.manifest_digest == plan.manifests[position].digest
    assert release.metadata["architecture"] == declared
    assert release.metadata["version"] == "v0.3.0"


def test_planned_manifest_resolves_by_digest(artifacts):
    plan = _publish.plan_release(artifacts[0], METADATA, ["stable"])
    client = FakeManifestClient(dict((m.digest, as_fetched(m)) for m in plan.manifests))
    release = _release.resolve(client, "amd64", digest=plan.manifests[0].digest)
    assert release.manifest_digest == plan.manifests[0].digest
    assert release.index_digest is None
    assert release.available_architectures == ["amd64"]
    assert release.metadata == dict(METADATA, architecture="amd64")


# -- publish ----------------------------------------------------------------


def _everything(plan):
    return {
        "blobs": [blob.digest for blob in plan.blobs],
        "manifests": [m.digest for m in plan.manifests] + [plan.index.digest],
        "tags": list(plan.tags),
        "signed": [],
    }


NOTHING = {"blobs": [], "manifests": [], "tags": [], "signed": []}


def test_first_publish_pushes_everything(artifacts):
    files, contents = artifacts
    plan = _publish.plan_release(files, METADATA, ["stable", "v0.3.0"])
    registry = FakePushRegistry()
    pushed = _publish.publish(registry, plan)
    assert pushed == _everything(plan)
    assert len(pushed["blobs"]) == 9
    assert len(pushed["manifests"]) == 4
    # stored as planned
    for kernel, initramfs in contents.values():
        assert registry.blobs[sha256_digest(kernel)] == kernel
        assert registry.blobs[sha256_digest(initramfs)] == initramfs
    assert set(registry.blobs) == set(pushed["blobs"])
    assert registry.manifests[plan.index.digest] == (plan.index.data, _manifests.MEDIA_OCI_INDEX)
    for manifest in plan.manifests:
        assert registry.manifests[manifest.digest] == (manifest.data, _manifests.MEDIA_OCI_MANIFEST)
    assert registry.tags == {"stable": plan.index.digest, "v0.3.0": plan.index.digest}


def test_publish_pushes_in_dependency_order(artifacts):
    plan = _publish.plan_release(artifacts[0], METADATA, ["stable", "v0.3.0"])
    registry = FakePushRegistry()
    _publish.publish(registry, plan)
    expected = (
        [("upload_blob", blob.digest, blob.size) for blob in plan.blobs]
        + [("put_manifest", m.digest, _manifests.MEDIA_OCI_MANIFEST) for m in plan.manifests]
        + [("put_manifest", plan.index.digest, _manifests.MEDIA_OCI_INDEX)]
        + [("put_manifest", tag, _manifests.MEDIA_OCI_INDEX) for tag in ("stable", "v0.3.0")]
    )
    assert registry.pushes() == expected


def test_second_publish_pushes_nothing(artifacts):
    files, _contents = artifacts
    registry = FakePushRegistry()
    _publish.publish(registry, _publish.plan_release(files, METADATA, ["stable", "v0.3.0"]))
    pushes = len(registry.pushes())
    assert pushes == 9 + 4 + 2
    again = _publish.publish(registry, _publish.plan_release(files, METADATA, ["stable", "v0.3.0"]))
    assert again == NOTHING
    assert len(registry.pushes()) == pushes


def test_published_release_resolves(artifacts):
    files, _contents = artifacts
    plan = _publish.plan_release(files, METADATA, ["stable"])
    registry = FakePushRegistry()
    _publish.publish(registry, plan)
    release = _release.resolve(registry, "armv7l", tag="stable")
    assert release.manifest_digest == plan.manifests[2].digest
    assert release.index_digest == plan.index.digest
    assert release.metadata == dict(METADATA, architecture="arm")


def test_check_mode_reports_but_pushes_nothing(artifacts):
    plan = _publish.plan_release(artifacts[0], METADATA, ["stable", "v0.3.0"])
    registry = FakePushRegistry()
    pushed = _publish.publish(registry, plan, check_mode=True)
    assert pushed == _everything(plan)
    assert registry.pushes() == []
    assert (registry.blobs, registry.manifests, registry.tags) == ({}, {}, {})
    # and the real push that follows does exactly what check mode announced
    assert _publish.publish(registry, plan) == pushed


def test_check_mode_after_publish_reports_nothing(artifacts):
    plan = _publish.plan_release(artifacts[0], METADATA, ["stable"])
    registry = FakePushRegistry()
    _publish.publish(registry, plan)
    calls = len(registry.pushes())
    assert _publish.publish(registry, plan, check_mode=True) == NOTHING
    assert len(registry.pushes()) == calls


def test_tag_pointing_elsewhere_is_moved(tmp_path):
    old_files, _old_contents = write_artifacts(tmp_path / "old", architectures=("amd64",))
    old = _publish.plan_release(old_files, METADATA, ["stable", "v0.3.0"])
    registry = FakePushRegistry()
    _publish.publish(registry, old)

    new_files, new_contents = write_artifacts(tmp_path / "new", architectures=("amd64",))
    # same kernel, rebuilt initramfs
    new_initramfs = b"initramfs for amd64, v0.4.0"
    with open(new_files[0]["initramfs"], "wb") as handle:
        handle.write(new_initramfs)
    new = _publish.plan_release(new_files, dict(METADATA, version="v0.4.0"), ["stable", "v0.4.0"])
    registry.calls = []
    pushed = _publish.publish(registry, new)
    assert pushed == {
        "blobs": [sha256_digest(new_initramfs)],  # the config and the kernel are already there
        "manifests": [new.manifests[0].digest, new.index.digest],
        "tags": ["stable", "v0.4.0"],
        "signed": [],
    }
    assert registry.tags == {"stable": new.index.digest, "v0.3.0": old.index.digest, "v0.4.0": new.index.digest}
    assert sha256_digest(new_contents["amd64"][0]) not in pushed["blobs"]


def test_only_a_moved_tag_is_pushed(artifacts):
    plan = _publish.plan_release(artifacts[0], METADATA, ["stable", "v0.3.0"])
    registry = FakePushRegistry()
    _publish.publish(registry, plan)
    registry.tags["stable"] = plan.manifests[0].digest  # someone pointed stable at the amd64 manifest
    registry.calls = []
    pushed = _publish.publish(registry, plan)
    assert pushed == {"blobs": [], "manifests": [], "tags": ["stable"], "signed": []}
    assert registry.pushes() == [("put_manifest", "stable", _manifests.MEDIA_OCI_INDEX)]
    assert registry.tags["stable"] == plan.index.digest


def test_missing_blob_is_pushed_again(artifacts):
    files, contents = artifacts
    plan = _publish.plan_release(files, METADATA, ["stable"])
    registry = FakePushRegistry()
    _publish.publish(registry, plan)
    lost = sha256_digest(contents["arm64"][1])
    del registry.blobs[lost]
    registry.calls = []
    assert _publish.publish(registry, plan) == {"blobs": [lost], "manifests": [], "tags": [], "signed": []}
    assert registry.blobs[lost] == contents["arm64"][1]
