# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filters of the os_update role: node_state, goarch, update_decision, report_rows, markdown_cell."""

from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kubesolo.fleet.plugins.filter import fleet
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._gates import decide

MANIFEST_DIGEST = "sha256:" + "ef" * 32
INDEX_DIGEST = "sha256:" + "01" * 32


def release(version="v0.3.0", channel="stable", architecture="amd64"):
    """An update_info result as registered in the role's loop (with ``item``)."""
    return {
        "changed": False,
        "item": architecture,
        "metadata": {
            "version": version,
            "channel": channel,
            "min_compatible_version": "v0.2.0",
            "architecture": architecture,
            "release_notes": "",
            "release_date": "",
        },
        "manifest_digest": MANIFEST_DIGEST,
        "index_digest": INDEX_DIGEST,
        "architecture": architecture,
        "available_architectures": ["amd64", "arm64"],
    }


# -- node_state ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("arch=x86_64\ntime=03:15\nversion=0.3.0\n", {"arch": "x86_64", "time": "03:15", "version": "0.3.0"}),
        ('arch=x86_64\ntime=03:15\nversion="0.3.0"', {"arch": "x86_64", "time": "03:15", "version": "0.3.0"}),
        ("version='v0.3.0'", {"version": "v0.3.0"}),
        ('PRETTY_NAME="KubeSolo OS 0.3"', {"PRETTY_NAME": "KubeSolo OS 0.3"}),
        ("version=0.2.0\nversion=0.3.0\n", {"version": "0.2.0"}),  # first wins
        ("version=\nversion=0.3.0", {"version": ""}),  # even when empty
        (
            'arch=aarch64\r\ntime=22:00\r\nversion="0.3.0"\r\n',
            {"arch": "aarch64", "time": "22:00", "version": "0.3.0"},
        ),  # CRLF
        ("  arch=armv7l  \n\ttime=01:00\t\n", {"arch": "armv7l", "time": "01:00"}),
        ("url=https://x/?a=b", {"url": "https://x/?a=b"}),  # split at the first =
        (
            "sed: /etc/os-release: No such file or directory\narch=x86_64\n\n=orphan\nnoise\ntime=04:00",
            {"arch": "x86_64", "time": "04:00"},
        ),  # junk ignored
        ("", {}),
        (None, {}),
        ("\n\n\n", {}),
    ],
)
def test_node_state(text, expected):
    assert fleet.node_state(text) == expected


def test_node_state_escapes_what_the_node_printed():
    text = "arch=x86_64\x1b[2J\nversion=v1.0.0\x07\u009b31m\u202egnp.exe\ntime=" + "1" * 500
    state = fleet.node_state(text)
    assert state == {
        "arch": "x86_64\\x1b[2J",
        "version": "v1.0.0\\x07\\x9b31m\\u202egnp.exe",
        "time": "1" * 197 + "...",
    }


def test_node_state_keeps_a_version_exact():
    assert fleet.node_state("version=v0.3.0-rc.1+build.5")["version"] == "v0.3.0-rc.1+build.5"


# -- goarch -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("x86_64", "amd64"),
        ("amd64", "amd64"),
        ("aarch64", "arm64"),
        ("arm64/v8", "arm64"),
        ("armv7l", "arm/v7"),
        ("armhf", "arm/v7"),
        ("armv6l", "arm/v6"),
        ("i686", "386"),
        ("linux/amd64", "amd64"),
        ("X86_64", "amd64"),
        ("riscv64", "riscv64"),
    ],
)
def test_goarch(name, expected):
    assert fleet.goarch(name) == expected


@pytest.mark.parametrize(
    "name", ["", "   ", None, "x86 64", "arm$", 42, "amd64\x1b[31m", "arm64/v8\u202e", "ａｍｄ64", "arm/v7/x"]
)
def test_goarch_invalid_raises_a_filter_error(name):
    with pytest.raises(AnsibleFilterError) as info:
        fleet.goarch(name)
    assert "architecture" in str(info.value)
    assert str(info.value).isprintable()


# -- update_decision ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"current_version": "v0.2.0"},
        {"current_version": "v0.3.0"},
        {"current_version": "v0.4.0"},
        {"current_version": "v0.4.0", "allow_downgrade": True},
        {"current_version": "v0.2.0", "channel": "beta"},
        {"current_version": "v0.1.0", "maintenance_window": "22:00-04:00", "local_time": "12:00"},
        {"current_version": "v0.2.0", "maintenance_window": "22:00-04:00", "local_time": "23:00"},
        {},
    ],
)
def test_update_decision_is_decide(kwargs):
    given = release()
    expected = decide(
        copy.deepcopy(given),
        kwargs.get("current_version", ""),
        kwargs.get("channel", "stable"),
        allow_downgrade=kwargs.get("allow_downgrade", False),
        maintenance_window=kwargs.get("maintenance_window", ""),
        local_time=kwargs.get("local_time", ""),
    )
    assert fleet.update_decision(given, **kwargs) == expected


def test_update_decision_stage():
    decision = fleet.update_decision(release(), current_version="v0.2.0", channel="stable")
    assert decision == {
        "current_version": "v0.2.0",
        "available_version": "v0.3.0",
        "channel": "stable",
        "release_channel": "stable",
        "architecture": "amd64",
        "manifest_digest": MANIFEST_DIGEST,
        "min_compatible_version": "v0.2.0",
        "index_digest": INDEX_DIGEST,
        "signed": None,
        "signing_key": None,
        "action": "stage",
        "reasons": [],
    }


def test_update_decision_defaults():
    # No current version given: the node version is unknown; the channel defaults to stable.
    decision = fleet.update_decision(release(channel="stable"))
    assert decision["channel"] == "stable"
    assert decision["action"] == "blocked"
    assert [reason["code"] for reason in decision["reasons"]] == ["version_unknown"]


def test_update_decision_architecture_not_shipped():
    failed = {
        "failed": True,
        "error_code": "architecture_not_shipped",
        "architecture": "riscv64",
        "available_architectures": ["amd64", "arm64"],
        "item": "riscv64",
        "msg": "the release does not ship for architecture riscv64 (it ships: amd64, arm64)",
    }
    decision = fleet.update_decision(failed, current_version="v0.2.0")
    assert decision["action"] == "blocked"
    assert decision["reasons"] == [
        {"code": "architecture_not_shipped", "message": "the release has no build for riscv64 (it ships: amd64, arm64)"}
    ]


@pytest.mark.parametrize(
    "window, local_time",
    [
        ("2:00-4:00", "03:00"),
        ("24:00-01:00", "03:00"),
        ("10:00", "10:30"),
        ("02:00-04:00", ""),  # a window needs the node time
        ("02:00-04:00", "3:00"),
    ],
)
def test_update_decision_invalid_window_is_a_filter_error(window, local_time):
    with pytest.raises(AnsibleFilterError) as info:
        fleet.update_decision(release(), current_version="v0.2.0", maintenance_window=window, local_time=local_time)
    assert "HH:MM" in str(info.value)


def test_update_decision_non_string_window_is_a_filter_error():
    # An unquoted YAML 22:00 reaches the filter as the integer 1320.
    with pytest.raises(AnsibleFilterError):
        fleet.update_decision(release(), current_version="v0.2.0", maintenance_window=1320, local_time="03:00")


@pytest.mark.parametrize("given", [None, "v0.3.0", ["v0.3.0"], 42])
def test_update_decision_needs_a_dict(given):
    with pytest.raises(AnsibleFilterError) as info:
        fleet.update_decision(given, current_version="v0.2.0")
    assert "update_info" in str(info.value)


def test_update_decision_escapes_a_node_time_it_cannot_read():
    with pytest.raises(AnsibleFilterError) as info:
        fleet.update_decision(
            release(), current_version="v0.2.0", maintenance_window="02:00-04:00", local_time="03:00\x1b[2J"
        )
    assert str(info.value) == "node time '03:00\\x1b[2J' is not HH:MM"


# -- markdown_cell ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, cell",
    [
        ("amd64", "amd64"),
        ("v0.3.0-rc.1+build.5", "v0.3.0-rc.1+build.5"),
        ("stage-amd64", "stage-amd64"),
        ("", "-"),
        (None, "-"),
        (42, "42"),
        ("[click](http://evil)", "\\[click\\]\\(http://evil\\)"),
        ("![x](http://evil/x.png)", "\\!\\[x\\]\\(http://evil/x.png\\)"),
        ("a | b", "a \\| b"),
        ("<img src=x onerror=alert(1)>", "\\<img src=x onerror=alert\\(1\\)\\>"),
        ("`code` *em* _em_ ~~del~~", "\\`code\\` \\*em\\* \\_em\\_ \\~\\~del\\~\\~"),
        ("&#x202e;", "\\&#x202e;"),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines", "two\\\\nlines"),
        ("\x1b[31mred\u202e", "\\\\x1b\\[31mred\\\\u202e"),
    ],
)
def test_markdown_cell(value, cell):
    assert fleet.markdown_cell(value) == cell


def test_markdown_cell_is_capped():
    cell = fleet.markdown_cell("x" * 5000)
    assert cell == "x" * (fleet.MAX_CELL_CHARS - 3) + "..."


# -- report_rows ------------------------------------------------------------------


def _decision(action, host=None):
    decision = {
        "current_version": "v0.2.0",
        "available_version": "v0.3.0",
        "channel": "stable",
        "release_channel": "stable",
        "architecture": "amd64",
        "manifest_digest": MANIFEST_DIGEST,
        "min_compatible_version": "v0.2.0",
        "index_digest": INDEX_DIGEST,
        "signed": None,
        "signing_key": None,
        "action": action,
        "reasons": [],
    }
    if host:
        decision["host"] = host
    return decision


FAILED = {
    "action": "failed",
    "reasons": [{"code": "unreachable_or_failed", "message": "the node could not be checked"}],
}

HOSTVARS = {
    "stager": {"kubesolo_fleet_decision": _decision("stage", "stager"), "ansible_host": "10.0.0.1"},
    "uptodate": {"kubesolo_fleet_decision": _decision("current", "uptodate")},
    "blocked": {"kubesolo_fleet_decision": _decision("blocked", "blocked")},
    "gone": {"ansible_host": "10.0.0.9"},
    "nulled": {"kubesolo_fleet_decision": None},
}
HOSTS = ["stager", "uptodate", "blocked", "gone", "nulled"]


def test_report_rows_without_rollout():
    rows = fleet.report_rows(HOSTS, copy.deepcopy(HOSTVARS))
    assert rows == [
        dict(_decision("stage", "stager"), slot=None),
        dict(_decision("current", "uptodate"), slot=None),
        dict(_decision("blocked", "blocked"), slot=None),
        dict(FAILED, host="gone", slot=None),
        dict(FAILED, host="nulled", slot=None),
    ]
    assert all("rollout" not in row for row in rows)


def test_report_rows_follow_the_host_order():
    rows = fleet.report_rows(["nulled", "stager"], HOSTVARS)
    assert [row["host"] for row in rows] == ["nulled", "stager"]
    assert fleet.report_rows([], HOSTVARS) == []


def test_report_rows_host_is_the_inventory_name():
    hostvars = {"node-1": {"kubesolo_fleet_decision": _decision("current", "someone-else")}}
    assert fleet.report_rows(["node-1"], hostvars)[0]["host"] == "node-1"


@pytest.mark.parametrize("activating, staged_default", [(False, "staged"), (True, "not_reached")])
def test_report_rows_rollout_defaults(activating, staged_default):
    rows = fleet.report_rows(HOSTS, HOSTVARS, rollout=True, activating=activating)
    assert [(row["host"], row["action"], row["rollout"]) for row in rows] == [
        ("stager", "stage", staged_default),
        ("uptodate", "current", "unchanged"),
        ("blocked", "blocked", "unchanged"),
        ("gone", "failed", "unchanged"),
        ("nulled", "failed", "unchanged"),
    ]


@pytest.mark.parametrize("activating", [False, True])
def test_report_rows_explicit_rollout_status_wins(activating):
    hostvars = copy.deepcopy(HOSTVARS)
    hostvars["stager"]["kubesolo_fleet_rollout_status"] = "activated"
    hostvars["uptodate"]["kubesolo_fleet_rollout_status"] = "failed"
    hostvars["gone"]["kubesolo_fleet_rollout_status"] = "not_reached"
    rows = fleet.report_rows(HOSTS, hostvars, rollout=True, activating=activating)
    assert [row["rollout"] for row in rows] == ["activated", "failed", "unchanged", "not_reached", "unchanged"]


def test_report_rows_show_the_slot_the_reason_and_the_timings_of_an_ab_rollout():
    hostvars = copy.deepcopy(HOSTVARS)
    hostvars["stager"].update(
        kubesolo_fleet_ab_state={"running_slot": "A", "active_slot": "A"},
        kubesolo_fleet_rollout_status="rolled_back",
        kubesolo_fleet_rollout_reason={"code": "unhealthy", "message": "the health check failed"},
        # set_fact leaves templated numbers as strings
        kubesolo_fleet_rollout_timings={"activation_seconds": "71.25", "reboot_seconds": "58.0"},
    )
    stager, uptodate = fleet.report_rows(["stager", "uptodate"], hostvars, rollout=True, activating=True)
    assert {
        key: stager[key] for key in ("slot", "rollout", "rollout_reason", "activation_seconds", "reboot_seconds")
    } == {
        "slot": "A",
        "rollout": "rolled_back",
        "rollout_reason": {"code": "unhealthy", "message": "the health check failed"},
        "activation_seconds": 71.2,
        "reboot_seconds": 58.0,
    }
    assert (uptodate["slot"], uptodate["rollout_reason"], uptodate["activation_seconds"]) == (None, None, None)


def test_report_rows_do_not_modify_hostvars():
    hostvars = copy.deepcopy(HOSTVARS)
    fleet.report_rows(HOSTS, hostvars, rollout=True, activating=True)
    assert hostvars == HOSTVARS


def test_filter_module_exposes_the_five_filters():
    filters = fleet.FilterModule().filters()
    assert filters == {
        "update_decision": fleet.update_decision,
        "goarch": fleet.goarch,
        "node_state": fleet.node_state,
        "report_rows": fleet.report_rows,
        "markdown_cell": fleet.markdown_cell,
    }
