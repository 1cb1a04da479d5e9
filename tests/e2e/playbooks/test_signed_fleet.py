"""The fleet playbooks with a signature policy: ``check`` blocks what the policy refuses and reports who
signed what each node would get; ``rollout`` stages a release signed on its index only."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.kubesolo.fleet.plugins.module_utils import _cosign, _signatures
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._client import RegistryClient
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_repository
from tests.support import artifacts
from tests.support.fleet import Fleet, read_report, reason_codes


def new_key(tmp_path, name):
    private_key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / f"{name}.pub"
    public.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return _cosign.SigningKey(private_key), public


def sign(registry, repo, key, digests):
    client = RegistryClient(parse_repository(f"{registry.host}/{repo}"), plain_http=True)
    assert _signatures.sign_digests(client, key, digests) == list(digests)


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check-mode"])
def test_check_blocks_unsigned_and_badly_signed_builds_and_reports_the_key(
    registry, run_playbook, tmp_path, check_mode
):
    repo = f"signed/check-{int(check_mode)}"
    release = artifacts.push_release(registry, repo, "stable", "v0.3.0", ("amd64", "arm64", "riscv64"))
    trusted, trusted_pub = new_key(tmp_path, "trusted")
    other, _other_pub = new_key(tmp_path, "other")
    # Each build signed on its own manifest (not the index): one by the trusted key, one by
    # another key, one not at all.
    sign(registry, repo, trusted, [release.manifests["amd64"].digest])
    sign(registry, repo, other, [release.manifests["arm64"].digest])
    fleet = Fleet(
        tmp_path,
        f"{registry.host}/{repo}",
        {
            "signed": {"arch": "amd64", "version": "v0.2.0"},
            "signed-current": {"arch": "amd64", "version": "v0.3.0"},
            "other-key": {"arch": "arm64", "version": "v0.2.0"},
            "unsigned": {"arch": "riscv64", "version": "v0.2.0"},
        },
    )
    run = run_playbook(
        "kubesolo.fleet.check",
        inventory=fleet.inventory(kubesolo_fleet_signature_keys=[str(trusted_pub)]),
        extra_vars={"kubesolo_fleet_report_dir": str(tmp_path / "report")},
        check=check_mode,
    )
    assert run.rc == 0, run
    report = read_report(tmp_path / "report")
    assert {host: (row["action"], reason_codes(row), row["signed"]) for host, row in report.items()} == {
        "signed": ("stage", [], "yes"),
        "signed-current": ("current", [], "yes"),
        "other-key": ("blocked", ["signature_invalid"], "invalid"),
        "unsigned": ("blocked", ["signature_missing"], "no"),
    }
    fingerprint = trusted.trusted.fingerprint
    assert [row["signing_key"] for row in report.values()] == [fingerprint, fingerprint, None, None]
    # What was refused is still named, so the operator sees which build lacks what.
    assert report["unsigned"]["available_version"] == "v0.3.0"
    assert report["unsigned"]["manifest_digest"] == release.manifests["riscv64"].digest
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| Signed |" in markdown
    assert f"| yes by {fingerprint[:23]}… |" in markdown
    assert "| invalid |" in markdown
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<th>Signed</th>" in html and f'title="{fingerprint}"' in html
    assert "SIGNED" in run.stdout and fingerprint[:23] in run.stdout
    assert not any(fleet.touched_stage(host) for host in fleet.hosts)


def test_without_keys_the_report_has_no_signature_column(registry, run_playbook, tmp_path):
    repo = "signed/no-keys"
    artifacts.push_release(registry, repo, "stable", "v0.3.0", ("amd64",))
    fleet = Fleet(tmp_path, f"{registry.host}/{repo}", {"node": {"arch": "amd64", "version": "v0.2.0"}})
    run = run_playbook(
        "kubesolo.fleet.check",
        inventory=fleet.inventory(),
        extra_vars={"kubesolo_fleet_report_dir": str(tmp_path / "report")},
    )
    assert run.rc == 0, run
    assert read_report(tmp_path / "report")["node"]["signed"] is None
    assert "Signed" not in (tmp_path / "report" / "report.md").read_text()
    assert "SIGNED" not in run.stdout


def test_rollout_stages_a_release_signed_on_its_index_only(registry, run_playbook, tmp_path):
    repo = "signed/rollout"
    release = artifacts.push_release(registry, repo, "stable", "v0.3.0", ("amd64", "arm64"))
    trusted, trusted_pub = new_key(tmp_path, "trusted")
    # What plain `cosign sign` does to an index: its platform manifests carry no signature of their own.
    sign(registry, repo, trusted, [release.digest])
    fleet = Fleet(
        tmp_path,
        f"{registry.host}/{repo}",
        {"amd64": {"arch": "amd64", "version": "v0.2.0"}, "arm64": {"arch": "arm64", "version": "v0.2.0"}},
    )
    run = run_playbook(
        "kubesolo.fleet.rollout",
        inventory=fleet.inventory(kubesolo_fleet_signature_keys=[trusted_pub.read_text()]),
        extra_vars={"kubesolo_fleet_report_dir": str(tmp_path / "report")},
    )
    assert run.rc == 0, run
    for host in fleet.hosts:
        record = fleet.staged_record(host)
        assert record["manifest_digest"] == release.manifests[host].digest
        staged = run.result("kubesolo.fleet.os_update : Stage the release", host)
        assert staged["signature"]["digest"] == release.digest
        assert staged["signature"]["key_fingerprint"] == trusted.trusted.fingerprint
