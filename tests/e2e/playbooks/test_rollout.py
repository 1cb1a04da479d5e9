"""``ansible-playbook kubesolo.fleet.rollout`` over a simulated fleet against a real registry."""

from __future__ import annotations

import shlex
import sys

import pytest

from tests.support import artifacts
from tests.support.fleet import ACTIVATE_COMMAND, HEALTH_COMMAND, Fleet, read_report

REPO = "kubesolo/os"
BATCHES = (1, 2, "100%")
#: Activation runs in the os_update role (tasks_from: activate), whose task names carry the role's.
ROLE = "kubesolo.fleet.os_update : "
ACTIVATE = ROLE + "Activate the staged release"


@pytest.fixture(scope="module")
def release(registry):
    """v0.3.0 on stable for amd64 and arm64, stepping stone v0.2.0."""
    return artifacts.push_release(registry, REPO, "stable", "v0.3.0", ("amd64", "arm64"), min_compatible="v0.2.0")


def fleet_of(tmp_path, registry, nodes, repo=REPO):
    return Fleet(tmp_path, f"{registry.host}/{repo}", nodes)


def rollout(run_playbook, fleet, tmp_path, batches=BATCHES, **group_vars):
    group_vars.setdefault("kubesolo_fleet_activate_command", ACTIVATE_COMMAND)
    if group_vars["kubesolo_fleet_activate_command"] is None:
        del group_vars["kubesolo_fleet_activate_command"]
    return run_playbook(
        "kubesolo.fleet.rollout",
        inventory=fleet.inventory(**group_vars),
        extra_vars={
            "kubesolo_fleet_report_dir": str(tmp_path / "report"),
            "kubesolo_fleet_rollout_batches": list(batches),
        },
        args=["-f", "20"],
    )


def activated_hosts(run):
    """Hosts the activation command ran on, in order."""
    return [r["host"] for r in run.results if r["task"] == ACTIVATE and r["status"] != "skipped"]


def rollout_column(tmp_path):
    return {host: row["rollout"] for host, row in read_report(tmp_path / "report").items()}


def assert_staged(fleet, host, release):
    manifest = release.manifests[fleet.nodes[host]["arch"]]
    record = fleet.staged_record(host)
    assert (record["manifest_digest"], record["version"]) == (manifest.digest, release.version), record
    assert fleet.staged_bytes(host, "vmlinuz") == manifest.kernel, host
    assert fleet.staged_bytes(host, "kubesolo-os.gz") == manifest.initramfs, host


MIXED = {
    "amd64-a": {"arch": "amd64", "version": "v0.2.0"},
    "arm64-a": {"arch": "arm64", "version": "v0.2.1"},
    "current": {"arch": "amd64", "version": "v0.3.0"},
    "amd64-b": {"arch": "amd64", "version": "v0.2.5"},
    "too-old": {"arch": "arm64", "version": "v0.1.0"},
    "arm64-b": {"arch": "arm64", "version": "v0.2.0"},
    "riscv": {"arch": "riscv64", "version": "v0.2.0"},
}
ELIGIBLE = ["amd64-a", "arm64-a", "amd64-b", "arm64-b"]


def test_rollout_activates_in_batches_and_a_rerun_changes_nothing(registry, release, run_playbook, tmp_path):
    fleet = fleet_of(tmp_path, registry, MIXED)
    mark = registry.mark()

    run = rollout(run_playbook, fleet, tmp_path, kubesolo_fleet_health_command=HEALTH_COMMAND)

    assert run.rc == 0, run
    # Batches of the inventory order: [amd64-a] [arm64-a current] [amd64-b too-old arm64-b riscv].
    activated = activated_hosts(run)
    assert activated[:2] == ["amd64-a", "arm64-a"] and sorted(activated[2:]) == ["amd64-b", "arm64-b"], activated
    for host in fleet.hosts:
        if host in ELIGIBLE:
            assert fleet.version_id(host) == "v0.3.0", host
            assert_staged(fleet, host, release)
        else:
            assert fleet.version_id(host) == MIXED[host]["version"], host
            assert not fleet.touched_stage(host), host
    assert rollout_column(tmp_path) == {host: "activated" if host in ELIGIBLE else "unchanged" for host in fleet.hosts}
    assert " Rollout |" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    # Each layer of each architecture was downloaded once per node that staged it.
    blob_gets = sorted(e.reference for e in registry.blob_gets(since=mark))
    layers = [release.manifests[fleet.nodes[host]["arch"]].layer_digests for host in ELIGIBLE]
    assert blob_gets == sorted(digest for layer in layers for digest in layer.values())

    mark = registry.mark()
    again = rollout(run_playbook, fleet, tmp_path, kubesolo_fleet_health_command=HEALTH_COMMAND)

    assert again.rc == 0, again
    assert activated_hosts(again) == []
    assert registry.blob_gets(since=mark) == []
    assert {host: row["action"] for host, row in read_report(tmp_path / "report").items()} == {
        host: "blocked" if host in ("too-old", "riscv") else "current" for host in fleet.hosts
    }
    assert rollout_column(tmp_path) == dict.fromkeys(fleet.hosts, "unchanged")
    for host in ELIGIBLE:
        assert fleet.version_id(host) == "v0.3.0", host
        assert_staged(fleet, host, release)
    changed = sorted({r["task"] for r in again.results if r["status"] == "changed"})
    assert changed == [], f"a rerun of a finished rollout reported changes: {changed}"


def test_a_failed_canary_stops_the_rollout(registry, release, run_playbook, tmp_path):
    nodes = dict(MIXED)
    nodes["amd64-a"] = dict(nodes["amd64-a"], kubesolo_fleet_activate_command="exit 1")
    fleet = fleet_of(tmp_path, registry, nodes)

    run = rollout(run_playbook, fleet, tmp_path)

    assert run.rc != 0, run
    assert activated_hosts(run) == ["amd64-a"]
    assert run.status(ACTIVATE, "amd64-a") == "failed"
    assert "Activation failed on amd64-a" in run.result("Stop the rollout", "amd64-a")["msg"]
    for host in fleet.hosts:
        assert fleet.version_id(host) == MIXED[host]["version"], host
    # Staging happened on every eligible node before the first activation.
    for host in ELIGIBLE:
        assert_staged(fleet, host, release)
    assert rollout_column(tmp_path) == {
        host: "failed" if host == "amd64-a" else "not_reached" if host in ELIGIBLE else "unchanged"
        for host in fleet.hosts
    }


def test_a_failure_in_the_second_batch_stops_before_the_third(registry, release, run_playbook, tmp_path):
    nodes = {
        "batch1": {"arch": "amd64", "version": "v0.2.0"},
        "batch2-fails": {"arch": "arm64", "version": "v0.2.0", "kubesolo_fleet_activate_command": "exit 1"},
        "batch2": {"arch": "amd64", "version": "v0.2.0"},
        "batch3-a": {"arch": "arm64", "version": "v0.2.0"},
        "batch3-b": {"arch": "amd64", "version": "v0.2.0"},
    }
    fleet = fleet_of(tmp_path, registry, nodes)

    run = rollout(run_playbook, fleet, tmp_path)

    assert run.rc != 0, run
    assert activated_hosts(run)[0] == "batch1"
    assert sorted(activated_hosts(run)[1:]) == ["batch2", "batch2-fails"]
    # The other host of the failing batch was already under way and finished its activation.
    assert {host: fleet.version_id(host) for host in fleet.hosts} == {
        "batch1": "v0.3.0",
        "batch2-fails": "v0.2.0",
        "batch2": "v0.3.0",
        "batch3-a": "v0.2.0",
        "batch3-b": "v0.2.0",
    }
    assert rollout_column(tmp_path) == {
        "batch1": "activated",
        "batch2-fails": "failed",
        "batch2": "activated",
        "batch3-a": "not_reached",
        "batch3-b": "not_reached",
    }


@pytest.mark.parametrize("failure", ["health", "version"])
def test_a_failed_health_check_or_missing_new_version_fails_the_batch(
    registry, release, run_playbook, tmp_path, failure
):
    canary = {"arch": "amd64", "version": "v0.2.0"}
    if failure == "health":
        canary["kubesolo_fleet_health_command"] = "echo unhealthy >&2; exit 3"
    else:
        canary["kubesolo_fleet_activate_command"] = "true"  # the agent "activates" but the node stays on v0.2.0
    fleet = fleet_of(tmp_path, registry, {"canary": canary, "next": {"arch": "arm64", "version": "v0.2.0"}})

    run = rollout(run_playbook, fleet, tmp_path, batches=(1, "100%"))

    assert run.rc != 0, run
    assert activated_hosts(run) == ["canary"]
    assert fleet.version_id("next") == "v0.2.0"
    assert rollout_column(tmp_path) == {"canary": "failed", "next": "not_reached"}
    if failure == "health":
        assert run.status(ROLE + "Run the health check", "canary") == "failed"
        assert fleet.version_id("canary") == "v0.3.0"  # activated, but unhealthy
    else:
        failed = run.result(ROLE + "Check that the node runs the new version", "canary")
        assert "reports version 'v0.2.0' after activation, expected v0.3.0" in failed["msg"]
        assert "expected v0.3.0" in run.result("Stop the rollout", "canary")["msg"]


# A tag moved while the playbook runs.  The move is done by a pipe lookup in a variable the role
# templates at the right moment; it fires once the registry log shows the tag resolved N times.
MOVE_TAG = """\
import pathlib, sys, urllib.request
log, url, body, media_type, needle, after, marker = sys.argv[1:]
if not pathlib.Path(marker).exists() and pathlib.Path(log).read_text(errors="replace").count(needle) >= int(after):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=pathlib.Path(body).read_bytes(), method="PUT",
                                     headers={"Content-Type": media_type})
    opener.open(request).close()
    pathlib.Path(marker).write_text("moved")
"""


def tag_mover(tmp_path, registry, repo, new_release, after):
    """A shell command that moves ``stable`` to ``new_release`` once ``stable`` was resolved ``after`` times."""
    script = tmp_path / "move_tag.py"
    script.write_text(MOVE_TAG, encoding="utf-8")
    body = tmp_path / "new-index.json"
    body.write_bytes(new_release.body)
    return shlex.join(
        str(part)
        for part in (
            sys.executable,
            script,
            registry.log_path,
            f"{registry.url}/v2/{repo}/manifests/stable",
            body,
            new_release.media_type,
            f'"GET /v2/{repo}/manifests/stable HTTP/1.1" 200',
            after,
            tmp_path / "moved",
        )
    )


def push_two_releases(registry, repo):
    old = artifacts.push_release(registry, repo, "stable", "v0.3.0", ("amd64", "arm64"))
    new = artifacts.push_release(registry, repo, "v0.4.0", "v0.4.0", ("amd64", "arm64"))
    return old, new


def tag_digest(registry, repo, tag):
    response = registry.request("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": artifacts.OCI_INDEX})
    return response.headers["Docker-Content-Digest"]


def test_without_an_activation_command_the_rollout_stages_the_resolved_digest_and_stops(
    registry, run_playbook, tmp_path
):
    repo = "kubesolo/moving-stage"
    old, new = push_two_releases(registry, repo)
    fleet = fleet_of(
        tmp_path,
        registry,
        {
            "amd64-a": {"arch": "amd64", "version": "v0.2.0"},
            "arm64-a": {"arch": "arm64", "version": "v0.2.0"},
            "current": {"arch": "arm64", "version": "v0.3.0"},
            "amd64-b": {"arch": "amd64", "version": "v0.2.0"},
        },
        repo=repo,
    )
    eligible = ["amd64-a", "arm64-a", "amd64-b"]
    # stable moves to v0.4.0 after the resolution and before staging: kubesolo_fleet_stage is first
    # templated by the Stage task's condition.
    mover = tag_mover(tmp_path, registry, repo, new, after=1)
    mark = registry.mark()

    run = rollout(
        run_playbook,
        fleet,
        tmp_path,
        kubesolo_fleet_activate_command=None,
        move_tag=mover,
        kubesolo_fleet_stage="{{ lookup('ansible.builtin.pipe', move_tag) == '' }}",
    )

    assert run.rc == 0, run
    said = run.result("Say that the rollout stops after staging", "amd64-a")["msg"]
    assert "kubesolo_fleet_activation is none" in said and "nothing is activated" in said
    assert activated_hosts(run) == []
    assert {host: fleet.version_id(host) for host in fleet.hosts} == {
        "amd64-a": "v0.2.0",
        "arm64-a": "v0.2.0",
        "current": "v0.3.0",
        "amd64-b": "v0.2.0",
    }
    assert rollout_column(tmp_path) == {host: "staged" if host in eligible else "unchanged" for host in fleet.hosts}
    assert not fleet.touched_stage("current")
    # Every node staged the manifest the tag pointed at when the run started, not the moved tag.
    assert (tmp_path / "moved").exists(), "the tag was never moved"
    assert tag_digest(registry, repo, "stable") == new.digest
    report = read_report(tmp_path / "report")
    for host in eligible:
        assert_staged(fleet, host, old)
        assert report[host]["manifest_digest"] == old.manifests[fleet.nodes[host]["arch"]].digest
    # The move happened after the tag was resolved and before any layer was fetched; nobody
    # asked for the tag again.
    log = registry.access_log(since=mark)
    moved_at = next(i for i, e in enumerate(log) if e.method == "PUT" and e.reference == "stable")
    assert any(e.method == "GET" and e.reference == "stable" for e in log[:moved_at])
    assert not any(e.kind == "blob" for e in log[:moved_at])
    assert not any(e.method == "GET" and e.reference == "stable" for e in log[moved_at:])


def test_a_tag_moved_between_two_architectures_does_not_split_the_fleet(registry, run_playbook, tmp_path):
    repo = "kubesolo/moving-resolve"
    old, new = push_two_releases(registry, repo)
    fleet = fleet_of(
        tmp_path,
        registry,
        {
            "amd64": {"arch": "amd64", "version": "v0.2.0"},
            "arm64": {"arch": "arm64", "version": "v0.2.0"},
        },
        repo=repo,
    )
    # stable moves to v0.4.0 once the first architecture is resolved: the registry defaults of the
    # resolution are templated again for every architecture.
    mover = tag_mover(tmp_path, registry, repo, new, after=1)
    mark = registry.mark()

    run = rollout(
        run_playbook,
        fleet,
        tmp_path,
        kubesolo_fleet_activate_command=None,
        move_tag=mover,
        kubesolo_fleet_timeout="{{ 30 if lookup('ansible.builtin.pipe', move_tag) == '' else 31 }}",
    )

    assert run.rc == 0, run
    assert tag_digest(registry, repo, "stable") == new.digest
    staged = {host: fleet.staged_record(host)["manifest_digest"] for host in fleet.hosts}
    log = [(e.method, e.reference) for e in registry.access_log(since=mark) if e.kind == "manifest"]
    # One run, one release: the index the tag pointed at when the run started, for every architecture.
    assert staged == {"amd64": old.manifests["amd64"].digest, "arm64": old.manifests["arm64"].digest}, (
        {host: fleet.staged_record(host)["version"] for host in fleet.hosts},
        log,
    )
