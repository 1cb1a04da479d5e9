"""Smoke run of the staging benchmark: ``bench/run --quick`` must work and report sane numbers.

The full benchmark is not part of the test run; this only keeps it from rotting (about 45 s).
skopeo is an optional package of the benchmark that the bootstrap does not install: where it is
missing the run gets ``--no-skopeo`` (the test never installs packages) and checks everything else.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.support.collection import REPO_ROOT
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
    assert set(results) == {"config", "machine", "sizes", "fleet"}
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

    report = (tmp_path / "results.md").read_text(encoding="utf-8")
    for heading in (
        "## Machine",
        "## Staging through ansible-playbook",
        "## The same two blobs without Ansible",
        "## Rerun of an already staged release",
        "## Fleet",
    ):
        assert heading in report
    assert report in done.stdout
