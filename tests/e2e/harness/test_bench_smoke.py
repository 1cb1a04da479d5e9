"""Smoke run of the staging benchmark: ``bench/run --quick`` must work and report sane numbers.

The full benchmark is not part of the test run; this only keeps it from rotting (about 70 s, 20 of
them controller delivery over SSH, 10 the signature section).  skopeo is an optional package of the benchmark that the
bootstrap does not install: where it is missing the run gets ``--no-skopeo`` (the test never
installs packages) and checks everything else.  The SSH section needs what the SSH test nodes need
(root, sshd, dropbear, busybox); without it the section says why it was skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.support.collection import REPO_ROOT
from tests.support.dropbearnode import missing_requirements as dropbear_missing
from tests.support.sshnode import missing_requirements as sshnode_missing
from tests.support.staging import require_distribution

MIB = 1024 * 1024


def positive(stat) -> bool:
    return stat["min"] > 0 and stat["min"] <= stat["median"] <= stat["max"]


def test_quick_benchmark_reports_every_section(tmp_path):
    require_distribution()
    skopeo = shutil.which("skopeo") is not None
    command = [str(REPO_ROOT / "bench/run"), "--quick", "--out", str(tmp_path)] + ([] if skopeo else ["--no-skopeo"])
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert set(results) == {"config", "machine", "sizes", "fleet", "signatures", "ssh"}
    assert results["config"]["skopeo"] is skopeo
    machine = results["machine"]
    for fact in (
        "cores",
        "openssl_sha256_mb_s",
        "hashlib_sha256_mb_s",
        "hashlib_sha256_uncached_mb_s",
        "loopback_mib_s",
        "loopback_two_streams_mib_s",
        "disk_write_fsync_mib_s",
        "disk_write_direct_two_streams_mib_s",
    ):
        assert machine[fact] > 0, fact
    assert machine["cpu_model"] and machine["python"] and "2." in machine["ansible_core"]

    (row,) = results["sizes"]
    assert row["mib_per_layer"] == 1 and row["release_bytes"] == 2 * MIB
    expected_other = {"curl_then_dgst", "curl_tee_dgst", "curl_dgst_fsync", "direct_host", "direct_controller"}
    assert set(row["other"]) == expected_other | ({"skopeo"} if skopeo else set())
    for method, other in row["other"].items():
        assert positive(other["s"]) and other["mib_s"] > 0, method
    for delivery in ("host", "controller"):
        assert row["other"][f"direct_{delivery}"]["peak_rss_kib"]["min"] > 0
        staging = row["staging"][delivery]
        for key in ("playbook_s", "task_s", "overhead_s", "module_s"):
            assert positive(staging[key]), (delivery, key, staging)
        assert staging["playbook_s"]["median"] > staging["task_s"]["median"]
        assert staging["vs_curl"] > 0 and (staging["vs_skopeo"] > 0 if skopeo else staging["vs_skopeo"] is None)
        assert staging["traffic"]["blob_gets"] == 2 and staging["traffic"]["blob_bytes"] == 2 * MIB
        rerun = row["rerun"][delivery]
        assert positive(rerun["task_s"]) and rerun["requests"] > 0
        assert rerun["blob_bytes"] == 0, rerun

    fleet = {(r["nodes"], r["playbook"], r["delivery"]): r for r in results["fleet"]}
    assert set(fleet) == {
        (n, p, d) for n in (1, 2) for p, d in (("check", "-"), ("rollout", "host"), ("rollout", "controller"))
    }
    for (nodes, playbook, _delivery), run in fleet.items():
        assert positive(run["wall_s"]) and run["staged"] == (nodes if playbook == "rollout" else 0)
    # check resolves once per architecture on the controller, whatever the fleet's size...
    assert fleet[1, "check", "-"]["requests"] == fleet[2, "check", "-"]["requests"] > 0
    assert fleet[1, "check", "-"]["blob_bytes"] == 0
    # ...controller delivery downloads each layer once, host delivery once per node.
    for nodes in (1, 2):
        assert fleet[nodes, "rollout", "controller"]["blob_bytes"] == 2 * MIB
        assert fleet[nodes, "rollout", "host"]["blob_bytes"] == nodes * 2 * MIB

    check_signatures_section(results["signatures"])
    check_ssh_section(results["ssh"])

    report = (tmp_path / "results.md").read_text(encoding="utf-8")
    for heading in (
        "## Machine",
        "## Staging through ansible-playbook",
        "## The same two blobs without Ansible",
        "## Rerun of an already staged release",
        "## Fleet",
        "## Signature verification",
        "## Controller delivery over SSH",
    ):
        assert heading in report
    assert report in done.stdout


def check_signatures_section(sig) -> None:
    """A release of 2 x 1 MiB signed by the benchmark's key: update_info without and with the policy,
    update_publish without and with signing_key (and again), check over 2 nodes without and with the key."""
    assert sig["mib_per_layer"] == 1 and sig["key"] == "ECDSA P-256" and sig["key_fingerprint"].startswith("sha256:")
    info = {r["policy"]: r for r in sig["info"]}
    assert set(info) == {"off", "required"}
    for policy, row in info.items():
        assert positive(row["task_s"]) and row["manifest_gets"] > 0, (policy, row)
    # The check reads the signature manifest and its payload (a few hundred bytes), never a layer.
    assert info["off"]["blob_gets"] == 0 and 0 < info["required"]["blob_bytes"] < 64 * 1024, info
    added = sig["info_added"]
    assert (added["gets"], added["manifest_gets"], added["blob_gets"]) == (2, 1, 1), added
    assert len(added["task_s"]["runs"]) == 1, added
    publish = {r["case"]: r for r in sig["publish"]}
    assert set(publish) == {"unsigned", "signed", "signed_again"}
    for case, row in publish.items():
        assert positive(row["task_s"]) and row["requests"] > 0, (case, row)
    # The index and the amd64 manifest are signed once; the second signed publish signs nothing.
    assert [publish[case]["signed"] for case in ("unsigned", "signed", "signed_again")] == [0, 2, 0], publish
    added = sig["publish_added"]
    assert added["requests"] == publish["signed"]["requests"] - publish["unsigned"]["requests"] > 0, added
    assert len(added["task_s"]["runs"]) == 1, added
    fleet = {r["signature_keys"]: r for r in sig["fleet"]}
    assert set(fleet) == {"none", "trusted"}
    for keys, row in fleet.items():
        assert row["nodes"] == 2 and positive(row["wall_s"]) and positive(row["resolve_s"]), (keys, row)
        assert row["wall_s"]["median"] > row["resolve_s"]["median"], (keys, row)
    assert fleet["none"]["signed_nodes"] == 0 and fleet["trusted"]["signed_nodes"] == 2, fleet
    # No layer either way: with the key, the one payload update_info reads too.
    assert (fleet["none"]["blob_bytes"], fleet["trusted"]["blob_bytes"]) == (0, info["required"]["blob_bytes"]), fleet
    # check resolves once per architecture on the controller: the key adds update_info's two GETs, for any fleet.
    assert sig["fleet_added"]["gets"] == sig["info_added"]["gets"], sig["fleet_added"]
    assert set(sig["fleet_added"]) >= {"wall_s", "resolve_s"}, sig["fleet_added"]


def check_ssh_section(ssh) -> None:
    """Controller delivery over SSH with 2 x 8 MiB: every server, method and variant reported."""
    problems = sshnode_missing() + dropbear_missing()
    if problems:
        assert set(ssh) == {"skipped"} and ssh["skipped"], ssh
        return
    assert set(ssh) == {"machine", "staging", "hand_rolled", "comparison", "rate_limit", "memory"}
    variants = {"default", "no_compression"}
    for server in ("openssh", "dropbear"):
        facts = ssh["machine"][server]
        assert facts["busybox_sha256sum_mib_s"] > 0 and facts["busybox_wc_mib_s"] > 0, facts
        for variant in variants:
            assert facts[f"stream_{variant}_mib_s"] > 0 and facts[f"cipher_{variant}"] != "?", facts
        assert facts["compression_no_compression"] == "none", facts
    staging = {(r["server"], r["transfer"], r["ssh_args"]): r for r in ssh["staging"]}
    assert set(staging) == {("openssh", t, v) for t in ("shell", "put_file") for v in variants} | {
        ("dropbear", "shell", v) for v in variants
    }
    for key, row in staging.items():
        assert row["mib_per_layer"] == 8 and row["sent_bytes"] == 2 * 8 * MIB, key
        for stat in ("task_s", "overhead_s", "module_s"):
            assert positive(row[stat]), (key, stat, row)
        assert row["task_s"]["median"] > row["module_s"]["median"] and row["mib_s"] > 0, (key, row)
    hand_rolled = {(r["server"], r["method"], r["ssh_args"]) for r in ssh["hand_rolled"]}
    assert ("openssh", "scp_then_sha256sum", "default") in hand_rolled
    assert not any(server == "dropbear" and method.startswith("scp") for server, method, _v in hand_rolled)
    for row in ssh["hand_rolled"]:
        assert positive(row["s"]) and row["mib_s"] > 0, row
    comparison = {(r["server"], r["ssh_args"]): r for r in ssh["comparison"]}
    assert set(comparison) == {(s, v) for s in ("openssh", "dropbear") for v in variants}
    for (server, _variant), row in comparison.items():
        assert row["shell_vs_hand_rolled"] > 0 and row["best_hand_rolled_mib_s"] > 0, row
        assert (row["shell_vs_put_file"] is None) is (server == "dropbear"), row
    assert {r["transfer"] for r in ssh["rate_limit"]} == {"shell", "put_file"}
    for row in ssh["rate_limit"]:
        assert row["limit_mib_s"] == 8 and row["sent_bytes"] == 2 * 8 * MIB, row
        assert row["arrival_s"] > 0 and row["achieved_mib_s"] > 0 and row["unlimited_mib_s"] > 0, row
    (memory,) = ssh["memory"]
    assert memory["workers"] == 1 and memory["mib_per_layer"] == 8, memory
    # The worker is a fork of ansible-playbook: its peak includes what it shares with the main process.
    assert memory["worker_peak_rss_kib"] >= memory["playbook_peak_rss_kib"] / 2 > 0, memory
