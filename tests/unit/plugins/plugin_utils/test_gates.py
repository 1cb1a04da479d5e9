# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Update gates: maintenance windows and the per-node decision."""

from __future__ import annotations

import pytest

from ansible_collections.kubesolo.fleet.plugins.plugin_utils._gates import (
    ACTION_BLOCKED,
    ACTION_CURRENT,
    ACTION_STAGE,
    InvalidWindow,
    decide,
    in_window,
    parse_window,
)

MANIFEST_DIGEST = "sha256:" + "ab" * 32
INDEX_DIGEST = "sha256:" + "cd" * 32


def release(version="v0.3.0", channel="stable", min_compatible_version="v0.2.0", architecture="amd64"):
    """A successful update_info result for ``architecture``."""
    return {
        "changed": False,
        "metadata": {
            "version": version,
            "channel": channel,
            "min_compatible_version": min_compatible_version,
            "architecture": architecture,
            "release_notes": "Fixes.",
            "release_date": "2025-01-31T12:00:00Z",
        },
        "manifest_digest": MANIFEST_DIGEST,
        "index_digest": INDEX_DIGEST,
        "architecture": architecture,
        "available_architectures": ["amd64", "arm64"],
        "layers": [],
    }


def not_shipped(architecture="riscv64", available=("amd64", "arm64")):
    """A failed update_info result: the release has no build for ``architecture``."""
    return {
        "failed": True,
        "error_code": "architecture_not_shipped",
        "architecture": architecture,
        "available_architectures": list(available),
        "msg": "the release does not ship for architecture {} (it ships: {})".format(
            architecture, ", ".join(available) or "none"
        ),
    }


def codes(decision):
    return [reason["code"] for reason in decision["reasons"]]


# -- Maintenance windows -------------------------------------------------


@pytest.mark.parametrize(
    "window, expected",
    [
        ("", None),
        (None, None),
        ("02:00-04:00", (120, 240)),
        ("22:00-04:00", (1320, 240)),
        ("00:00-23:59", (0, 1439)),
        ("04:00-04:00", (240, 240)),
        (" 02:00-04:00 ", (120, 240)),
    ],
)
def test_parse_window(window, expected):
    assert parse_window(window) == expected


def test_trailing_newline_of_a_window_is_stripped():
    # parse_window strips its input before matching, like the version parser.
    assert parse_window("10:00-11:00\n") == (600, 660)
    assert in_window("10:00-11:00\n", "10:30") is True
    assert in_window("10:00-11:00\n", "11:00") is False


@pytest.mark.parametrize(
    "window",
    [
        "2:00-4:00",
        "02:00-4:00",
        "24:00-01:00",
        "10:00-24:00",
        "10:60-11:00",
        "10:00-11:60",
        "10:0-11:00",
        "10:00",
        "10:00-",
        "-11:00",
        "10:00 - 11:00",
        "10:00-11:00-12:00",
        "10:00\u201311:00",  # EN DASH
        "10:00-11:00\n12:00-13:00",
        "1000-1100",
        "10.00-11.00",
        "always",
        " ",
        "1\u0660:00-11:00",  # ARABIC-INDIC DIGIT ZERO: not a 24-hour clock time
    ],
)
def test_invalid_windows_raise(window):
    with pytest.raises(InvalidWindow) as info:
        parse_window(window)
    assert repr(window) in str(info.value)
    assert "HH:MM-HH:MM" in str(info.value)
    with pytest.raises(InvalidWindow):
        in_window(window, "10:30")


def test_non_string_window_raises_invalid_window():
    # An unquoted YAML 22:00 is the sexagesimal integer 1320.
    with pytest.raises(InvalidWindow):
        parse_window(1320)


def test_invalid_window_is_a_value_error():
    assert issubclass(InvalidWindow, ValueError)


@pytest.mark.parametrize(
    "window, local_time, expected",
    [
        # empty: always open, even without a node time
        ("", "00:00", True),
        ("", "12:34", True),
        ("", "23:59", True),
        ("", "", True),
        (None, None, True),
        # plain window: start inclusive, end exclusive
        ("02:00-04:00", "01:59", False),
        ("02:00-04:00", "02:00", True),
        ("02:00-04:00", "03:00", True),
        ("02:00-04:00", "03:59", True),
        ("02:00-04:00", "04:00", False),
        ("02:00-04:00", "12:00", False),
        ("02:00-04:00", "00:00", False),
        ("02:00-04:00", "23:59", False),
        # wrapping past midnight
        ("22:00-04:00", "21:59", False),
        ("22:00-04:00", "22:00", True),
        ("22:00-04:00", "23:00", True),
        ("22:00-04:00", "23:59", True),
        ("22:00-04:00", "00:00", True),
        ("22:00-04:00", "03:59", True),
        ("22:00-04:00", "04:00", False),
        ("22:00-04:00", "12:00", False),
        ("23:59-00:00", "23:59", True),
        ("23:59-00:00", "00:00", False),
        # equal start and end: the whole day
        ("04:00-04:00", "04:00", True),
        ("04:00-04:00", "03:59", True),
        ("04:00-04:00", "00:00", True),
        ("04:00-04:00", "23:59", True),
        ("00:00-00:00", "12:00", True),
        # a one-minute window
        ("12:00-12:01", "12:00", True),
        ("12:00-12:01", "12:01", False),
        ("12:00-12:01", "11:59", False),
    ],
)
def test_in_window(window, local_time, expected):
    assert in_window(window, local_time) is expected


@pytest.mark.parametrize(
    "local_time", ["", None, "3:00", "24:00", "12:60", "12:00:00", "12:00\n", " 12:00", "noon", "1200"]
)
def test_invalid_local_time_raises(local_time):
    with pytest.raises(InvalidWindow) as info:
        in_window("02:00-04:00", local_time)
    assert repr(local_time) in str(info.value)
    assert "HH:MM" in str(info.value)


def test_non_string_local_time_raises_invalid_window():
    with pytest.raises(InvalidWindow):
        in_window("02:00-04:00", 300)


# -- Decisions ------------------------------------------------------------


def test_stage_returns_every_decision_field():
    decision = decide(release(), "v0.2.0", "stable")
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


def test_action_constants():
    assert (ACTION_STAGE, ACTION_CURRENT, ACTION_BLOCKED) == ("stage", "current", "blocked")


# (release kwargs, current_version, decide kwargs, expected action, expected reason codes)
DECISIONS = {
    "stage_newer": ({}, "v0.2.0", {}, "stage", []),
    "stage_newer_without_v": ({}, "0.2.5", {}, "stage", []),
    "stage_inside_window": ({}, "v0.2.0", {"maintenance_window": "02:00-04:00", "local_time": "02:00"}, "stage", []),
    "stage_inside_wrapping_window": (
        {},
        "v0.2.0",
        {"maintenance_window": "22:00-04:00", "local_time": "23:00"},
        "stage",
        [],
    ),
    "stage_without_min_compatible": ({"min_compatible_version": ""}, "v0.0.1", {}, "stage", []),
    "stage_release_over_prerelease": ({"version": "0.3.0"}, "0.3.0-rc.1", {}, "stage", []),
    "stage_next_prerelease": ({"version": "v0.3.0-rc.2"}, "v0.3.0-rc.1", {}, "stage", []),
    "stage_beta_11_over_beta_2": ({"version": "v0.3.0-beta.11"}, "v0.3.0-beta.2", {}, "stage", []),
    "current_equal": ({}, "v0.3.0", {}, "current", []),
    "current_equal_without_v": ({}, "0.3.0", {}, "current", []),
    "current_equal_with_build": ({}, "0.3.0+build.7", {}, "current", []),
    "current_release_with_build": ({"version": "v0.3.0+20250131"}, "v0.3.0", {}, "current", []),
    "current_ignores_other_gates": (
        {"channel": "beta"},
        "v0.3.0",
        {"maintenance_window": "02:00-04:00", "local_time": "12:00"},
        "current",
        [],
    ),
    "downgrade_refused": ({}, "v0.4.0", {}, "current", ["downgrade"]),
    "downgrade_release_to_prerelease": ({"version": "v0.3.0-rc.1"}, "v0.3.0", {}, "current", ["downgrade"]),
    "downgrade_allowed": ({}, "v0.4.0", {"allow_downgrade": True}, "stage", []),
    "downgrade_allowed_other_gates_still_apply": (
        {"channel": "beta"},
        "v0.4.0",
        {"allow_downgrade": True},
        "blocked",
        ["channel_mismatch"],
    ),
    "channel_mismatch": ({"channel": "beta"}, "v0.2.0", {}, "blocked", ["channel_mismatch"]),
    "channel_missing_in_release": ({"channel": ""}, "v0.2.0", {}, "blocked", ["channel_mismatch"]),
    "below_min_compatible": ({}, "v0.1.9", {}, "blocked", ["below_min_compatible"]),
    "prerelease_of_minimum_is_below_it": ({}, "v0.2.0-rc.1", {}, "blocked", ["below_min_compatible"]),
    "exactly_min_compatible": ({}, "0.2.0", {}, "stage", []),
    "outside_window": (
        {},
        "v0.2.0",
        {"maintenance_window": "02:00-04:00", "local_time": "12:00"},
        "blocked",
        ["outside_maintenance_window"],
    ),
    "window_end_is_exclusive": (
        {},
        "v0.2.0",
        {"maintenance_window": "02:00-04:00", "local_time": "04:00"},
        "blocked",
        ["outside_maintenance_window"],
    ),
    "all_gates_fail": (
        {"channel": "beta"},
        "v0.1.0",
        {"maintenance_window": "22:00-04:00", "local_time": "12:00"},
        "blocked",
        ["outside_maintenance_window", "channel_mismatch", "below_min_compatible"],
    ),
    "channel_and_min_compatible_fail": (
        {"channel": "edge"},
        "v0.1.0",
        {},
        "blocked",
        ["channel_mismatch", "below_min_compatible"],
    ),
    "version_unknown_empty": ({}, "", {}, "blocked", ["version_unknown"]),
    "version_unknown_none": ({}, None, {}, "blocked", ["version_unknown"]),
    "version_unknown_garbage": ({}, "garbage", {}, "blocked", ["version_unknown"]),
    "version_unknown_two_fields": ({}, "0.3", {}, "blocked", ["version_unknown"]),
    "release_version_invalid": ({"version": "garbage"}, "v0.2.0", {}, "blocked", ["release_version_invalid"]),
    "release_version_missing": ({"version": ""}, "v0.2.0", {}, "blocked", ["release_version_invalid"]),
    "both_versions_invalid": (
        {"version": "garbage"},
        "nope",
        {},
        "blocked",
        ["version_unknown", "release_version_invalid"],
    ),
    "min_compatible_invalid": (
        {"min_compatible_version": "v0.2"},
        "v0.2.0",
        {},
        "blocked",
        ["release_version_invalid"],
    ),
}


@pytest.mark.parametrize(
    "release_kwargs, current, kwargs, action, expected_codes", list(DECISIONS.values()), ids=list(DECISIONS)
)
def test_decide_table(release_kwargs, current, kwargs, action, expected_codes):
    given = release(**release_kwargs)
    decision = decide(given, current, kwargs.pop("channel", "stable"), **kwargs)
    assert decision["action"] == action
    assert codes(decision) == expected_codes
    for reason in decision["reasons"]:
        assert sorted(reason) == ["code", "message"]
        assert isinstance(reason["message"], str) and reason["message"]
    metadata = given["metadata"]
    assert decision["current_version"] == (current or "")
    assert decision["available_version"] == metadata["version"]
    assert decision["channel"] == "stable"
    assert decision["release_channel"] == metadata["channel"]
    assert decision["architecture"] == "amd64"
    assert decision["manifest_digest"] == MANIFEST_DIGEST
    assert decision["min_compatible_version"] == metadata["min_compatible_version"]


def test_downgrade_reason_names_both_versions():
    decision = decide(release(), "v0.4.0", "stable")
    assert decision["action"] == "current"
    assert decision["reasons"] == [
        {
            "code": "downgrade",
            "message": "the available v0.3.0 is older than the current v0.4.0 and downgrades are not allowed",
        }
    ]


def test_channel_mismatch_names_both_channels():
    decision = decide(release(channel="beta"), "v0.2.0", "stable")
    assert decision["action"] == "blocked"
    assert decision["release_channel"] == "beta"
    assert decision["channel"] == "stable"
    assert decision["reasons"] == [
        {
            "code": "channel_mismatch",
            "message": "the release is on channel 'beta', the node follows 'stable'",
        }
    ]


def test_node_channel_is_compared_exactly():
    decision = decide(release(channel="stable"), "v0.2.0", "beta")
    assert decision["channel"] == "beta"
    assert codes(decision) == ["channel_mismatch"]


def test_below_min_compatible_names_the_minimum():
    decision = decide(release(version="v0.5.0", min_compatible_version="v0.4.0"), "v0.3.1", "stable")
    assert decision["action"] == "blocked"
    assert decision["min_compatible_version"] == "v0.4.0"
    assert codes(decision) == ["below_min_compatible"]
    message = decision["reasons"][0]["message"]
    assert "v0.4.0" in message
    assert "v0.3.1" in message
    assert message == (
        "the node runs v0.3.1, below the release minimum v0.4.0: update to v0.4.0 first (stepping stone)"
    )


def test_outside_window_names_time_and_window():
    decision = decide(release(), "v0.2.0", "stable", maintenance_window="22:00-04:00", local_time="12:00")
    assert decision["reasons"] == [
        {
            "code": "outside_maintenance_window",
            "message": "node time 12:00 is outside the maintenance window 22:00-04:00",
        }
    ]


def test_several_gates_are_all_reported_in_order():
    decision = decide(
        release(channel="beta", min_compatible_version="v0.2.0"),
        "v0.1.0",
        "stable",
        maintenance_window="02:00-04:00",
        local_time="05:00",
    )
    assert decision["action"] == "blocked"
    assert codes(decision) == ["outside_maintenance_window", "channel_mismatch", "below_min_compatible"]
    assert "05:00" in decision["reasons"][0]["message"]
    assert "'beta'" in decision["reasons"][1]["message"]
    assert "v0.2.0" in decision["reasons"][2]["message"]


@pytest.mark.parametrize("current, shown", [("", "''"), (None, "''"), ("garbage", "'garbage'")])
def test_version_unknown_names_the_version(current, shown):
    decision = decide(release(), current, "stable")
    assert decision["action"] == "blocked"
    assert decision["current_version"] == (current or "")
    assert decision["reasons"] == [
        {
            "code": "version_unknown",
            "message": f"the node version {shown} could not be read or is not a semantic version",
        }
    ]


NODE_ESCAPES = "v0.2.0\x1b[2J\x07\u009b31m\u202e[click](http://evil)"


def test_what_the_node_and_the_registry_said_is_escaped_in_the_decision():
    decision = decide(
        release(version="v1\u009b", channel="\u202estable", min_compatible_version="\x1bx"), NODE_ESCAPES, "stable"
    )
    assert decision["current_version"] == "v0.2.0\\x1b[2J\\x07\\x9b31m\\u202e[click](http://evil)"
    assert decision["available_version"] == "v1\\x9b"
    assert decision["release_channel"] == "\\u202estable"
    assert decision["min_compatible_version"] == "\\x1bx"
    assert codes(decision) == [
        "version_unknown",
        "release_version_invalid",
        "channel_mismatch",
        "release_version_invalid",
    ]
    for reason in decision["reasons"]:
        assert reason["message"].isprintable(), reason
    assert "'\\u202estable'" in decision["reasons"][2]["message"]


def test_a_long_value_is_capped_in_the_decision_and_its_messages():
    decision = decide(release(channel="c" * 5000), "x" * 5000, "stable")
    assert len(decision["current_version"]) == 200 and len(decision["release_channel"]) == 200
    assert all(len(reason["message"]) < 300 for reason in decision["reasons"])


def test_versions_stay_exact_in_the_decision():
    long_build = "v0.3.0+" + "b" * 300
    decision = decide(release(version=long_build), "v0.2.1-rc.1+meta", "stable")
    assert decision["available_version"] == long_build
    assert decision["current_version"] == "v0.2.1-rc.1+meta"
    assert decision["action"] == "stage"


def test_architecture_not_shipped_lists_what_ships():
    decision = decide(not_shipped(), "v0.2.0", "stable")
    assert decision == {
        "current_version": "v0.2.0",
        "available_version": "",
        "channel": "stable",
        "release_channel": "",
        "architecture": "riscv64",
        "manifest_digest": "",
        "min_compatible_version": "",
        "index_digest": "",
        "signed": None,
        "signing_key": None,
        "action": "blocked",
        "reasons": [
            {
                "code": "architecture_not_shipped",
                "message": "the release has no build for riscv64 (it ships: amd64, arm64)",
            }
        ],
    }


def test_architecture_not_shipped_with_nothing_shipped():
    decision = decide(not_shipped(available=()), "v0.2.0", "stable")
    assert codes(decision) == ["architecture_not_shipped"]
    assert decision["reasons"][0]["message"] == "the release has no build for riscv64 (it ships: none)"


def test_architecture_not_shipped_and_version_unknown_are_both_reported():
    decision = decide(not_shipped(), "garbage", "stable")
    assert decision["action"] == "blocked"
    assert codes(decision) == ["version_unknown", "architecture_not_shipped"]


def test_architecture_not_shipped_skips_the_window():
    # No build means nothing to stage: the window (and its node time) is not consulted.
    decision = decide(not_shipped(), "v0.2.0", "stable", maintenance_window="02:00-04:00", local_time="")
    assert codes(decision) == ["architecture_not_shipped"]


def test_release_version_invalid_names_the_version():
    decision = decide(release(version="0.3"), "v0.2.0", "stable")
    assert decision["action"] == "blocked"
    assert decision["available_version"] == "0.3"
    assert decision["reasons"] == [
        {
            "code": "release_version_invalid",
            "message": "the release version '0.3' is not a semantic version",
        }
    ]


def test_invalid_min_compatible_version_is_reported():
    decision = decide(release(min_compatible_version="two"), "v0.2.0", "stable")
    assert decision["action"] == "blocked"
    assert decision["reasons"] == [
        {
            "code": "release_version_invalid",
            "message": "the release min_compatible_version 'two' is not a semantic version",
        }
    ]


def test_release_without_metadata_is_blocked():
    decision = decide({"manifest_digest": MANIFEST_DIGEST, "architecture": "amd64"}, "v0.2.0", "stable")
    assert decision["action"] == "blocked"
    assert decision["available_version"] == ""
    assert decision["release_channel"] == ""
    assert codes(decision) == ["release_version_invalid", "channel_mismatch"]


def test_unknown_node_version_still_reports_the_other_gates():
    decision = decide(release(channel="beta"), "", "stable")
    assert decision["action"] == "blocked"
    assert codes(decision) == ["version_unknown", "channel_mismatch"]


def test_pending_update_with_a_window_needs_the_node_time():
    with pytest.raises(InvalidWindow):
        decide(release(), "v0.2.0", "stable", maintenance_window="02:00-04:00", local_time="")


def test_pending_update_with_an_invalid_window_raises():
    with pytest.raises(InvalidWindow):
        decide(release(), "v0.2.0", "stable", maintenance_window="2:00-4:00", local_time="03:00")


def test_decide_does_not_modify_the_release():
    given = release()
    before = repr(given)
    decide(given, "v0.1.0", "beta", maintenance_window="02:00-04:00", local_time="12:00")
    assert repr(given) == before


# ---------------------------------------------------------------- A/B nodes: the boot state


OTHER_DIGEST = "sha256:" + "ef" * 32


def boot(success=True, active="A", running=None, pending=False, slot_a=OTHER_DIGEST, slot_b=None):
    """An ab_slot ``node`` summary."""
    return {
        "active_slot": active,
        "running_slot": running or active,
        "boot_success": success,
        "switch_pending": pending,
        "slots": {"A": {"manifest_digest": slot_a}, "B": {"manifest_digest": slot_b}},
    }


def test_a_verified_boot_changes_nothing():
    assert decide(release(), "v0.2.0", "stable", boot=boot()) == decide(release(), "v0.2.0", "stable")


def test_an_unverified_boot_blocks_staging_because_the_other_slot_is_the_only_good_one():
    decision = decide(release(), "v0.2.0", "stable", boot=boot(success=False))
    assert decision["action"] == ACTION_BLOCKED
    assert codes(decision) == ["trial_boot"]
    assert "unverified boot of slot A" in decision["reasons"][0]["message"]


def test_an_unverified_boot_of_a_current_node_stays_current():
    decision = decide(release(), "v0.3.0", "stable", boot=boot(success=False))
    assert (decision["action"], codes(decision)) == (ACTION_CURRENT, [])


def test_other_gates_keep_their_reasons_in_an_unverified_boot():
    decision = decide(release(channel="beta"), "v0.2.0", "stable", boot=boot(success=False))
    assert (decision["action"], codes(decision)) == (ACTION_BLOCKED, ["channel_mismatch"])


def test_a_switch_to_the_release_that_was_not_rebooted_is_finished():
    # An earlier run switched grubenv to B (which holds the release) and died before the reboot.
    pending = boot(success=False, active="B", running="A", pending=True, slot_b=MANIFEST_DIGEST)
    decision = decide(release(), "v0.2.0", "stable", boot=pending)
    assert (decision["action"], codes(decision)) == (ACTION_STAGE, ["reboot_pending"])


def test_a_pending_reboot_waits_for_the_maintenance_window():
    pending = boot(success=False, active="B", running="A", pending=True, slot_b=MANIFEST_DIGEST)
    decision = decide(release(), "v0.2.0", "stable", maintenance_window="22:00-04:00", local_time="12:00", boot=pending)
    assert (decision["action"], codes(decision)) == (ACTION_BLOCKED, ["outside_maintenance_window"])


def test_a_boot_of_the_release_that_was_not_committed_is_finished_though_the_version_is_current():
    # An earlier run rebooted the node into B and died before it verified and committed that boot.
    booted = boot(success=False, active="B", slot_b=MANIFEST_DIGEST)
    decision = decide(release(), "v0.3.0", "stable", boot=booted)
    assert (decision["action"], codes(decision)) == (ACTION_STAGE, ["commit_pending"])


def test_a_pending_switch_to_another_release_blocks():
    pending = boot(success=False, active="B", running="A", pending=True, slot_b=OTHER_DIGEST)
    decision = decide(release(), "v0.2.0", "stable", boot=pending)
    assert (decision["action"], codes(decision)) == (ACTION_BLOCKED, ["trial_boot"])


def test_an_unshipped_architecture_is_blocked_whatever_the_slots_say():
    booted = boot(success=False, active="B", slot_b="")
    decision = decide(not_shipped(), "v0.2.0", "stable", boot=booted)
    assert codes(decision) == ["architecture_not_shipped"]


# -- The signature policy -------------------------------------------------------------

FINGERPRINT = "sha256:" + "12" * 32


def signed(verified=True, policy="required"):
    """A successful update_info result under a signature policy."""
    result = release()
    result["signature"] = {
        "policy": policy,
        "verified": verified,
        "digest": INDEX_DIGEST if verified else None,
        "key_fingerprint": FINGERPRINT if verified else None,
        "source": "ghcr.io" if verified else None,
        "problems": [],
    }
    return result


def refused(error_code, problems=()):
    """A failed update_info result: the signature policy refused the release (with its summary)."""
    result = dict(signed(verified=False), failed=True, error_code=error_code, msg="refused")
    result["signature"]["problems"] = list(problems)
    return result


def test_a_verified_release_stages_and_says_by_which_key():
    decision = decide(signed(), "v0.2.0", "stable")
    assert decision["action"] == "stage"
    assert (decision["signed"], decision["signing_key"]) == ("yes", FINGERPRINT)


def test_an_unsigned_release_under_if_present_stages_as_unsigned():
    decision = decide(signed(verified=False, policy="if_present"), "v0.2.0", "stable")
    assert decision["action"] == "stage"
    assert (decision["signed"], decision["signing_key"]) == ("no", None)


def test_a_release_without_the_required_signature_is_blocked():
    decision = decide(refused("signature_missing"), "v0.2.0", "stable")
    assert decision["action"] == "blocked"
    assert codes(decision) == ["signature_missing"]
    assert decision["signed"] == "no"
    # What was refused is still shown.
    assert decision["available_version"] == "v0.3.0" and decision["manifest_digest"] == MANIFEST_DIGEST


def test_a_release_with_a_bad_signature_is_blocked_with_the_first_problem():
    decision = decide(
        refused("signature_invalid", ["ghcr.io: signature x verifies with no trusted key\x1b[2J"]), "v0.2.0", "stable"
    )
    assert decision["action"] == "blocked"
    assert codes(decision) == ["signature_invalid"]
    assert decision["signed"] == "invalid"
    assert "verifies with no trusted key\\x1b[2J" in decision["reasons"][0]["message"]


def test_a_refused_release_is_blocked_even_when_a_trial_boot_of_it_waits_to_be_committed():
    boot = {
        "boot_success": False,
        "switch_pending": False,
        "running_slot": "B",
        "active_slot": "B",
        "slots": {"B": {"manifest_digest": MANIFEST_DIGEST}},
    }
    decision = decide(refused("signature_missing"), "v0.2.0", "stable", boot=boot)
    assert decision["action"] == "blocked" and codes(decision) == ["signature_missing"]
    assert decide(signed(), "v0.2.0", "stable", boot=boot)["action"] == "stage"
