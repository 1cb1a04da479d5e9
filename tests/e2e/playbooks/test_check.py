"""``ansible-playbook kubesolo.fleet.check`` over a simulated fleet against a real registry."""

from __future__ import annotations

import datetime
import re

import pytest

from tests.support import artifacts
from tests.support.fleet import Fleet, read_report, reason_codes

REPO = "kubesolo/os"
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def release(registry):
    """v0.3.0 on stable for amd64 and arm64, stepping stone v0.2.0."""
    return artifacts.push_release(
        registry,
        REPO,
        "stable",
        "v0.3.0",
        ("amd64", "arm64"),
        min_compatible="v0.2.0",
        release_notes=f"Fixes {SCRIPT}",
        release_date="2026-11-01T12:00:00Z",
    )


def closed_window(now: datetime.datetime) -> str:
    """A one-hour window starting two hours from ``now`` (wraps past midnight when it must)."""
    start = now + datetime.timedelta(hours=2)
    end = start + datetime.timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}"


def test_closed_window_wraps_past_midnight():
    assert closed_window(datetime.datetime(2026, 1, 1, 21, 30)) == "23:30-00:30"
    assert closed_window(datetime.datetime(2026, 1, 1, 23, 5)) == "01:05-02:05"


def every_gate_fleet(tmp_path, registry, window):
    """One node per decision the check can make, mixing amd64 and arm64."""
    return Fleet(
        tmp_path,
        f"{registry.host}/{REPO}",
        {
            "stage-amd64": {"arch": "amd64", "version": "v0.2.0"},
            "stage-arm64": {"arch": "arm64", "version": "v0.2.5"},
            "current": {"arch": "amd64", "version": "v0.3.0"},
            "beta": {"arch": "arm64", "version": "v0.2.2", "kubesolo_fleet_channel": "beta"},
            "too-old": {"arch": "amd64", "version": "v0.1.0"},
            "newer": {"arch": "arm64", "version": "v0.4.0"},
            "newer-allowed": {"arch": "amd64", "version": "v0.4.0", "kubesolo_fleet_allow_downgrade": True},
            "closed": {"arch": "amd64", "version": "v0.2.0", "kubesolo_fleet_maintenance_window": window},
            "riscv": {"arch": "riscv64", "version": "v0.2.0"},
            "no-os-release": {"arch": "amd64", "version": None},
            "garbage": {"arch": "arm64", "version": SCRIPT},
            # The file says v0.1.0 (below the stepping stone); the inventory says v0.2.1.
            "override": {"arch": "amd64", "version": "v0.1.0", "kubesolo_fleet_current_version": "v0.2.1"},
        },
    )


def checked_at(row) -> datetime.datetime:
    return datetime.datetime.strptime(row["checked_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check-mode"])
def test_check_decides_every_gate_and_writes_the_report(registry, release, run_playbook, tmp_path, check_mode):
    window = closed_window(datetime.datetime.now())
    fleet = every_gate_fleet(tmp_path, registry, window)
    report_dir = tmp_path / "report"
    amd64, arm64 = release.manifests["amd64"].digest, release.manifests["arm64"].digest
    started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    mark = registry.mark()

    run = run_playbook(
        "kubesolo.fleet.check",
        inventory=fleet.inventory(),
        extra_vars={"kubesolo_fleet_report_dir": str(report_dir)},
        check=check_mode,
        args=["-f", "20"],
    )

    assert run.rc == 0, run
    finished = datetime.datetime.now(datetime.timezone.utc)
    report = read_report(report_dir)
    assert list(report) == fleet.hosts
    decisions = {host: (row["action"], reason_codes(row)) for host, row in report.items()}
    assert decisions == {
        "stage-amd64": ("stage", []),
        "stage-arm64": ("stage", []),
        "current": ("current", []),
        "beta": ("blocked", ["channel_mismatch"]),
        "too-old": ("blocked", ["below_min_compatible"]),
        "newer": ("current", ["downgrade"]),
        "newer-allowed": ("stage", []),
        "closed": ("blocked", ["outside_maintenance_window"]),
        "riscv": ("blocked", ["architecture_not_shipped"]),
        "no-os-release": ("blocked", ["version_unknown"]),
        "garbage": ("blocked", ["version_unknown"]),
        "override": ("stage", []),
    }
    arch = {host: spec["arch"] for host, spec in fleet.nodes.items()}
    for host, row in report.items():
        assert set(row) >= {
            "host",
            "checked_at",
            "current_version",
            "available_version",
            "action",
            "reasons",
            "manifest_digest",
        }, row
        assert started - datetime.timedelta(seconds=1) <= checked_at(row) <= finished, row
        assert all(set(reason) == {"code", "message"} and reason["message"] for reason in row["reasons"]), row
        if arch[host] == "riscv64":
            assert (row["available_version"], row["manifest_digest"]) == ("", ""), row
        else:
            assert row["available_version"] == "v0.3.0", row
            assert row["manifest_digest"] == {"amd64": amd64, "arm64": arm64}[arch[host]], row
            assert row["architecture"] == arch[host], row
    assert {host: row["current_version"] for host, row in report.items()} == {
        "stage-amd64": "v0.2.0",
        "stage-arm64": "v0.2.5",
        "current": "v0.3.0",
        "beta": "v0.2.2",
        "too-old": "v0.1.0",
        "newer": "v0.4.0",
        "newer-allowed": "v0.4.0",
        "closed": "v0.2.0",
        "riscv": "v0.2.0",
        "no-os-release": "",
        "garbage": SCRIPT,
        "override": "v0.2.1",
    }
    message = {host: " ".join(r["message"] for r in row["reasons"]) for host, row in report.items()}
    assert "v0.2.0" in message["too-old"] and "stepping stone" in message["too-old"]
    assert "'stable'" in message["beta"] and "'beta'" in message["beta"]
    assert window in message["closed"]
    assert "riscv64" in message["riscv"] and "amd64, arm64" in message["riscv"]
    assert "v0.4.0" in message["newer"] and "v0.3.0" in message["newer"]
    assert report["beta"]["release_channel"] == "stable" and report["beta"]["channel"] == "beta"
    assert report["too-old"]["min_compatible_version"] == "v0.2.0"

    # The check reads manifests only and never writes to a node.
    assert registry.blob_gets(since=mark) == []
    for host in fleet.hosts:
        assert not fleet.touched_stage(host), host
        expected = set() if host == "no-os-release" else {"etc/os-release"}
        assert fleet.files(host) - {"etc"} == expected, host
    changed = {r["task"].rpartition(" : ")[2] for r in run.results if r["status"] == "changed"}
    assert changed <= {"Create the report directory", "Write report.json", "Write the Markdown and HTML reports"}

    assert sorted(path.name for path in report_dir.iterdir()) == ["report.html", "report.json", "report.md"]

    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    for host in fleet.hosts:
        assert f"| {host} |" in markdown, host
        assert f"<td>{host}</td>" in html, host
    assert "below the release minimum v0.2.0" in markdown
    # Self-contained, and data from nodes is escaped.
    assert re.search(r"\b(src|href)\s*=", html, re.IGNORECASE) is None
    assert "<link" not in html and "url(" not in html and "@import" not in html
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_registry_requests_do_not_grow_with_the_fleet(registry, release, run_playbook, tmp_path):
    counts = {}
    for size in (5, 50):
        fleet = Fleet(
            tmp_path / str(size),
            f"{registry.host}/{REPO}",
            {f"node-{i:02d}": {"arch": ("amd64", "arm64")[i % 2], "version": "v0.2.0"} for i in range(size)},
        )
        mark = registry.mark()
        run = run_playbook(
            "kubesolo.fleet.check",
            tmp_path=tmp_path / str(size),
            inventory=fleet.inventory(),
            extra_vars={"kubesolo_fleet_report_dir": str(tmp_path / str(size) / "report")},
            check=True,
            args=["-f", "20"],
        )
        assert run.rc == 0, run
        assert {row["action"] for row in read_report(tmp_path / str(size) / "report").values()} == {"stage"}
        log = registry.access_log(since=mark)
        manifests = registry.manifest_gets(since=mark)
        counts[size] = {"manifest GETs": len(manifests), "requests": len(log)}
        # Manifests only, resolved on the controller: the tag once (pinned to the index digest),
        # then the index and each architecture's manifest by digest.
        assert registry.blob_gets(since=mark) == [], [e.line for e in log]
        assert len(log) == len(manifests), [e.line for e in log]
        references = [e.reference for e in manifests]
        assert references.count("stable") == 1, references
        assert set(references) == {
            "stable",
            release.digest,
            release.manifests["amd64"].digest,
            release.manifests["arm64"].digest,
        }, references
    assert counts[5] == counts[50], counts


# What a terminal acts on (clear screen, a title, a hyperlink, the C1 CSI, a bidi override) and
# what Markdown renders live (a link and a remote image).
ESCAPES = "\x1b[2J\x1b]0;owned\x07\x1b]8;;http://evil.example/\x07\u009b31m\u202e"
LINK = "[click](http://evil.example/)"
IMAGE = "![x](http://evil.example/x.png)"
HOSTILE_REPO = "kubesolo/hostile-text"


@pytest.fixture(scope="module")
def hostile_text_release(registry):
    """Markdown in the annotations (printable, so accepted as they are) and an index entry whose
    platform carries control characters (not a platform: ignored)."""
    amd64 = artifacts.push_arch_manifest(
        registry,
        HOSTILE_REPO,
        "amd64",
        LINK,
        channel=IMAGE,
        min_compatible="v0.2.0",
        release_notes=f"{LINK} {IMAGE} <b>bold</b>",
    )
    odd = dict(amd64.descriptor, platform={"architecture": f"arm64{ESCAPES}", "os": "linux"})
    artifacts.push_index(registry, HOSTILE_REPO, "stable", [amd64, odd])
    return amd64


def live_markdown(text: str) -> list[str]:
    """Link, image, HTML and entity syntax that a Markdown renderer would act on (not backslash-escaped)."""
    return re.findall(r"(?<!\\)(?:!\[|\]\(|<[a-zA-Z/]|&#?\w+;)", text)


def test_the_report_shows_what_registries_and_nodes_say_as_text(registry, hostile_text_release, run_playbook, tmp_path):
    fleet = Fleet(
        tmp_path,
        f"{registry.host}/{HOSTILE_REPO}",
        {
            "markdown-release": {"arch": "amd64", "version": "v0.2.0"},
            "escaping-node": {"arch": "amd64", "version": f"v0.2.0{ESCAPES}{LINK}"},
            "odd-platform": {"arch": "arm64", "version": "v0.2.0"},
        },
    )
    report_dir = tmp_path / "report"

    run = run_playbook(
        "kubesolo.fleet.check", inventory=fleet.inventory(), extra_vars={"kubesolo_fleet_report_dir": str(report_dir)}
    )

    assert run.rc == 0, run
    report = read_report(report_dir)
    assert {host: reason_codes(row) for host, row in report.items()} == {
        "markdown-release": ["release_version_invalid", "channel_mismatch"],
        "escaping-node": ["version_unknown", "release_version_invalid", "channel_mismatch"],
        "odd-platform": ["architecture_not_shipped"],
    }
    # Escaped where it is shown, never dropped: the operator sees what the node claimed.
    shown = "v0.2.0\\x1b[2J\\x1b]0;owned\\x07\\x1b]8;;http://evil.example/\\x07\\x9b31m\\u202e" + LINK
    assert report["escaping-node"]["current_version"] == shown
    assert report["markdown-release"]["available_version"] == LINK
    odd = " ".join(reason["message"] for reason in report["odd-platform"]["reasons"])
    assert odd == "the release has no build for arm64 (it ships: amd64)"

    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    json_text = (report_dir / "report.json").read_text(encoding="utf-8")
    table = run.result("kubesolo.fleet.os_update : Show the fleet table", "markdown-release")["msg"]
    for text in [markdown, html, json_text, *table, run.stdout, run.stderr]:
        assert all(line.isprintable() for line in text.splitlines()), text
    assert live_markdown(markdown) == [], markdown
    assert "\\[click\\]\\(http://evil.example/\\)" in markdown
    assert "\\!\\[x\\]\\(http://evil.example/x.png\\)" in markdown
    assert "<a " not in html and "<img" not in html
