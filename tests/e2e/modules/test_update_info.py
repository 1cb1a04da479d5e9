# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kubesolo.fleet.update_info end to end: real ansible-playbook against a real registry.

Every ansible-playbook run costs about two seconds, so each module-scoped fixture below runs one
playbook of many tasks (all with ``ignore_errors``) and the tests assert on the per-task results
and on the registry's access log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from tests.support import artifacts
from tests.support.collection import REPO_ROOT
from tests.support.playbook import run_playbook
from tests.support.process import closed_port

NOTES = "Fixes the boot counter reset.\nSecond line."
DATE = "2026-11-01T12:00:00Z"
BAD_DIGEST = "sha256:abc123"
ABSENT_DIGEST = "sha256:" + "0" * 64


def galaxy_version() -> str:
    return str(yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text(encoding="utf-8"))["version"])


def info(
    name: str,
    repository: str,
    *,
    plain_http: bool = True,
    check_mode: bool = False,
    task_vars: dict | None = None,
    **args,
) -> dict:
    """An update_info task that never stops the play (its failure is asserted on instead)."""
    task = {
        "name": name,
        "kubesolo.fleet.update_info": {"repository": repository, "plain_http": plain_http, **args},
        "ignore_errors": True,
    }
    if check_mode:
        task["check_mode"] = True
    if task_vars:
        task["vars"] = task_vars
    return task


def layers_of(manifest: artifacts.PushedManifest) -> list[dict]:
    """The ``layers`` update_info returns for ``manifest``, in manifest order."""
    return [
        {"media_type": media_type, "digest": artifacts.sha256_digest(data), "size": len(data)}
        for media_type, data in manifest.layers.items()
    ]


def assert_failed(run, task: str, error_code: str) -> dict:
    """The result of ``task``, which must have failed with ``error_code`` and no traceback."""
    result = run.result(task)
    assert run.status(task) == "failed", result
    assert result.get("error_code") == error_code, result
    assert isinstance(result.get("msg"), str) and result["msg"], result
    assert "Traceback" not in json.dumps(result), result
    return result


# ----------------------------------------------------------------------------------------------
# A multi-arch OCI index, probed for every architecture and alias, also in check mode.

PROBES = [
    # (task name, architecture option, arch expected, check mode)
    ("amd64", "amd64", "amd64", False),
    ("arm64", "arm64", "arm64", False),
    ("x86_64", "x86_64", "amd64", False),
    ("aarch64", "aarch64", "arm64", False),
    ("amd64 in check mode", "amd64", "amd64", True),
    ("aarch64 in check mode", "aarch64", "arm64", True),
]


@pytest.fixture(scope="module")
def index_probe(registry, tmp_path_factory):
    repo = "probe/os"
    release = artifacts.push_release(
        registry,
        repo,
        "v0.3.0",
        "v0.3.0",
        min_compatible="v0.2.0",
        release_notes=NOTES,
        release_date=DATE,
        kernel_size=5000,
        initramfs_size=7000,
    )
    minimal = artifacts.push_release(registry, repo, "minimal", "v0.3.1", ("amd64",))
    repository = f"{registry.host}/{repo}"
    tasks = [
        info(name, repository, tag="v0.3.0", architecture=arch, check_mode=check)
        for name, arch, _expected, check in PROBES
    ]
    tasks.append(info("minimal", repository, tag="minimal", architecture="amd64"))
    mark = registry.mark()
    run = run_playbook(tasks, tmp_path=tmp_path_factory.mktemp("index-probe"))
    return SimpleNamespace(release=release, minimal=minimal, run=run, log=registry.access_log(since=mark))


@pytest.mark.parametrize("task, arch", [(p[0], p[2]) for p in PROBES], ids=[p[0] for p in PROBES])
def test_info_resolves_the_manifest_of_the_architecture(index_probe, task, arch):
    manifest = index_probe.release.manifests[arch]
    result = index_probe.run.result(task)

    assert index_probe.run.status(task) == "ok", result
    assert result["changed"] is False
    assert result["manifest_digest"] == manifest.digest
    assert result["index_digest"] == index_probe.release.digest
    assert result["architecture"] == arch
    assert result["available_architectures"] == ["amd64", "arm64"]
    assert result["metadata"] == {
        "version": "v0.3.0",
        "channel": "stable",
        "min_compatible_version": "v0.2.0",
        "architecture": arch,
        "release_notes": NOTES,
        "release_date": DATE,
    }
    kernel, initramfs = artifacts.KERNEL_MEDIA_TYPE, artifacts.INITRAMFS_MEDIA_TYPE
    assert result["layers"] == [
        {"media_type": kernel, "digest": manifest.layer_digests[kernel], "size": 5000},
        {"media_type": initramfs, "digest": manifest.layer_digests[initramfs], "size": 7000},
    ]


def test_info_reports_missing_optional_annotations_as_empty_strings(index_probe):
    result = index_probe.run.result("minimal")

    assert index_probe.run.status("minimal") == "ok", result
    assert result["manifest_digest"] == index_probe.minimal.manifests["amd64"].digest
    assert result["metadata"] == {
        "version": "v0.3.1",
        "channel": "stable",
        "min_compatible_version": "",
        "architecture": "amd64",
        "release_notes": "",
        "release_date": "",
    }


def test_info_reads_the_index_and_one_manifest_and_never_a_blob(index_probe):
    release = index_probe.release
    blob_gets = [e for e in index_probe.log if e.method == "GET" and e.kind == "blob"]
    manifest_gets = [(e.reference, e.status) for e in index_probe.log if e.method == "GET" and e.kind == "manifest"]

    assert blob_gets == []
    expected = []
    for _name, _option, arch, _check in PROBES:
        expected += [("v0.3.0", 200), (release.manifests[arch].digest, 200)]
    expected += [("minimal", 200), (index_probe.minimal.manifests["amd64"].digest, 200)]
    assert manifest_gets == expected


def test_requests_name_the_collection_and_its_version(index_probe):
    agents = {e.user_agent for e in index_probe.log if e.kind == "manifest"}

    assert agents == {f"kubesolo.fleet/{galaxy_version()}"}


# ----------------------------------------------------------------------------------------------
# Everything else update_info must resolve or refuse, in one playbook.


@pytest.fixture(scope="module")
def probe(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe")
    repo = "kubesolo/os"
    repository = f"{registry.host}/{repo}"
    pushed = SimpleNamespace(
        index=artifacts.push_release(registry, repo, "v0.3.0", "v0.3.0", arch_tags=True),
        single=artifacts.push_arch_manifest(registry, repo, "amd64", "v0.3.2", tag="v0.3.2-amd64"),
        docker=artifacts.push_release(registry, repo, "v0.3.0-docker", "v0.3.0-docker", docker=True),
        variants=artifacts.push_release(
            registry,
            repo,
            "v0.3.0-variants",
            "v0.3.0-variants",
            ("amd64", "arm64", "arm"),
            variants={"arm64": "v8", "arm": "v7"},
        ),
    )
    refused_port = closed_port()
    no_requests = tmp / "venv-without-requests"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(no_requests)], check=True)
    python_without_requests = str(no_requests / "bin" / "python")

    tasks = [
        info("single manifest, its architecture", repository, tag="v0.3.2-amd64", architecture="amd64"),
        info("single manifest, another architecture", repository, tag="v0.3.2-amd64", architecture="arm64"),
        info("docker list amd64", repository, tag="v0.3.0-docker", architecture="amd64"),
        info("docker list arm64", repository, tag="v0.3.0-docker", architecture="aarch64"),
        info("arm64 matches arm64/v8", repository, tag="v0.3.0-variants", architecture="arm64"),
        info("armv7l matches arm/v7", repository, tag="v0.3.0-variants", architecture="armv7l"),
        info("unknown tag", repository, tag="no-such-tag", architecture="amd64"),
        info("unknown repository", f"{registry.host}/kubesolo/nothing-here", tag="v0.3.0", architecture="amd64"),
        info("pinned index digest", repository, digest=pushed.index.digest, architecture="arm64"),
        info("pinned manifest digest", repository, digest=pushed.index.manifests["amd64"].digest, architecture="amd64"),
        info("absent digest", repository, digest=ABSENT_DIGEST, architecture="amd64"),
        info("malformed digest", repository, digest=BAD_DIGEST, architecture="amd64"),
        info("tag and digest", repository, tag="v0.3.0", digest=pushed.index.digest, architecture="amd64"),
        info("riscv64 not shipped", repository, tag="v0.3.0", architecture="riscv64"),
        info("repository with a scheme", "https://x/y", tag="v0.3.0"),
        info("repository without a registry host", "noport/path", tag="v0.3.0"),
        info("repository with an uppercase path", f"{registry.host}/KubeSolo/os", tag="v0.3.0"),
        info("registry unreachable", f"127.0.0.1:{refused_port}/kubesolo/os", tag="v0.3.0", architecture="amd64"),
        info("https to a plain HTTP registry", repository, plain_http=False, tag="v0.3.0", architecture="amd64"),
        info(
            "python without requests",
            repository,
            tag="v0.3.0",
            architecture="amd64",
            task_vars={"ansible_python_interpreter": python_without_requests},
        ),
    ]
    mark = registry.mark()
    run = run_playbook(tasks, tmp_path=tmp / "playbook")
    return SimpleNamespace(
        pushed=pushed,
        run=run,
        log=registry.access_log(since=mark),
        repository=repository,
        closed_port=refused_port,
        python_without_requests=python_without_requests,
    )


def test_all_probes_ran_and_none_fetched_a_blob(probe):
    assert probe.run.rc == 0, probe.run
    assert len(probe.run.results) == 20, probe.run
    assert [e for e in probe.log if e.kind == "blob"] == []


def test_single_manifest_of_the_wanted_architecture_has_no_index(probe):
    single = probe.pushed.single
    result = probe.run.result("single manifest, its architecture")

    assert probe.run.status("single manifest, its architecture") == "ok", result
    assert result["changed"] is False
    assert result["manifest_digest"] == single.digest
    assert result["index_digest"] is None
    assert result["architecture"] == "amd64"
    assert result["available_architectures"] == ["amd64"]
    assert result["metadata"] == {
        "version": "v0.3.2",
        "channel": "stable",
        "min_compatible_version": "",
        "architecture": "amd64",
        "release_notes": "",
        "release_date": "",
    }
    assert result["layers"] == layers_of(single)


def test_single_manifest_of_another_architecture_is_refused(probe):
    result = assert_failed(probe.run, "single manifest, another architecture", "architecture_mismatch")

    assert result["msg"] == "the manifest at this reference is for architecture amd64, but arm64 was wanted"
    assert "manifest_digest" not in result


@pytest.mark.parametrize("task, arch", [("docker list amd64", "amd64"), ("docker list arm64", "arm64")])
def test_docker_manifest_list_resolves_like_an_oci_index(probe, task, arch):
    docker = probe.pushed.docker
    result = probe.run.result(task)

    assert probe.run.status(task) == "ok", result
    assert docker.media_type == artifacts.DOCKER_MANIFEST_LIST
    assert docker.manifests[arch].media_type == artifacts.DOCKER_MANIFEST
    assert result["manifest_digest"] == docker.manifests[arch].digest
    assert result["index_digest"] == docker.digest
    assert result["architecture"] == arch
    assert result["available_architectures"] == ["amd64", "arm64"]
    assert result["metadata"]["version"] == "v0.3.0-docker"
    assert result["metadata"]["architecture"] == arch
    assert result["layers"] == layers_of(docker.manifests[arch])


def test_index_entry_variants_match_the_normalized_architecture(probe):
    variants = probe.pushed.variants
    arm64 = probe.run.result("arm64 matches arm64/v8")
    arm = probe.run.result("armv7l matches arm/v7")

    platform = {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert json.loads(variants.body)["manifests"][1]["platform"] == platform
    assert probe.run.status("arm64 matches arm64/v8") == "ok", arm64
    assert arm64["manifest_digest"] == variants.manifests["arm64"].digest
    assert arm64["architecture"] == "arm64"
    assert probe.run.status("armv7l matches arm/v7") == "ok", arm
    assert arm["manifest_digest"] == variants.manifests["arm"].digest
    assert arm["architecture"] == "arm/v7"
    assert arm["available_architectures"] == arm64["available_architectures"] == ["amd64", "arm/v7", "arm64"]


def test_unknown_tag_is_not_found(probe):
    result = assert_failed(probe.run, "unknown tag", "not_found")

    assert result["msg"] == f"{probe.repository}:no-such-tag was not found in the registry"
    assert [(e.reference, e.status) for e in probe.log if e.kind == "manifest" and e.reference == "no-such-tag"] == [
        ("no-such-tag", 404)
    ]


def test_unknown_repository_is_not_found(probe):
    result = assert_failed(probe.run, "unknown repository", "not_found")

    host = probe.repository.split("/", 1)[0]
    assert result["msg"] == f"{host}/kubesolo/nothing-here:v0.3.0 was not found in the registry"


def test_digest_of_the_index_pins_the_release(probe):
    index = probe.pushed.index
    result = probe.run.result("pinned index digest")

    assert probe.run.status("pinned index digest") == "ok", result
    assert result["index_digest"] == index.digest
    assert result["manifest_digest"] == index.manifests["arm64"].digest
    assert result["architecture"] == "arm64"
    assert result["available_architectures"] == ["amd64", "arm64"]


def test_digest_of_a_manifest_pins_that_build(probe):
    manifest = probe.pushed.index.manifests["amd64"]
    result = probe.run.result("pinned manifest digest")

    assert probe.run.status("pinned manifest digest") == "ok", result
    assert result["manifest_digest"] == manifest.digest
    assert result["index_digest"] is None
    assert result["available_architectures"] == ["amd64"]
    assert result["layers"] == layers_of(manifest)


def test_absent_digest_is_not_found(probe):
    result = assert_failed(probe.run, "absent digest", "not_found")

    assert result["msg"] == f"{probe.repository}@{ABSENT_DIGEST} was not found in the registry"


def test_malformed_digest_is_refused_before_any_request(probe):
    result = assert_failed(probe.run, "malformed digest", "invalid_reference")

    assert BAD_DIGEST in result["msg"]
    assert "64 lowercase hex" in result["msg"]
    assert [e.line for e in probe.log if "sha256:abc123" in e.path] == []


def test_tag_and_digest_are_mutually_exclusive(probe):
    result = probe.run.result("tag and digest")

    assert probe.run.status("tag and digest") == "failed", result
    assert result["msg"] == "parameters are mutually exclusive: tag|digest"
    assert "error_code" not in result


def test_architecture_not_shipped_lists_what_ships(probe):
    result = assert_failed(probe.run, "riscv64 not shipped", "architecture_not_shipped")

    assert result["available_architectures"] == ["amd64", "arm64"]
    assert result["architecture"] == "riscv64"
    assert result["msg"] == "the release does not ship for architecture riscv64 (it ships: amd64, arm64)"


@pytest.mark.parametrize(
    "task, expected",
    [
        ("repository with a scheme", ["'https://x/y'", "must not include a scheme", "plain_http"]),
        ("repository without a registry host", ["'noport/path'", "registry host", "'noport'"]),
        ("repository with an uppercase path", ["KubeSolo/os", "invalid path component 'KubeSolo'", "lowercase"]),
    ],
)
def test_malformed_repository_is_an_invalid_reference(probe, task, expected):
    result = assert_failed(probe.run, task, "invalid_reference")

    for fragment in expected:
        assert fragment in result["msg"]


def test_unreachable_registry_gives_a_short_reason(probe):
    result = assert_failed(probe.run, "registry unreachable", "registry_unreachable")
    msg = result["msg"]

    assert msg.startswith(f"cannot reach registry 127.0.0.1:{probe.closed_port}: ")
    assert "Connection refused" in msg
    assert len(msg) < 200, msg
    for noise in ("Max retries", "HTTPConnectionPool", "object at 0x", "Traceback", "/v2/"):
        assert noise not in msg


def test_https_to_a_plain_http_registry_is_a_clear_error(probe):
    result = assert_failed(probe.run, "https to a plain HTTP registry", "registry_unreachable")
    msg = result["msg"]

    assert probe.repository.split("/", 1)[0] in msg
    assert len(msg) < 300, msg
    assert "Traceback" not in msg
    # The server does not speak TLS: the one option that helps is plain_http (ca_path and
    # validate_certs=false do not), so the message must point there.
    assert "plain_http" in msg, msg


def test_missing_requests_library_is_the_standard_failure(probe):
    without = subprocess.run([probe.python_without_requests, "-c", "import requests"], capture_output=True, check=False)
    result = probe.run.result("python without requests")

    assert without.returncode != 0  # the interpreter really lacks requests
    assert probe.run.status("python without requests") == "failed", result
    assert "Failed to import the required Python library (requests)" in result["msg"]
    assert probe.python_without_requests in result["msg"]
