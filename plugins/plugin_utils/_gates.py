# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decide what a node may do with an available release.

The gates are the node agent's (maintenance window, channel, architecture,
min_compatible_version stepping stone) plus a downgrade guard; unlike the
agent, every failing gate is reported, not just the first, so one check run
tells an operator everything that stands in the way.

A node updated through its A/B slots also brings its boot state (what
ab_slot's info reports): a node in an unverified trial boot is blocked,
because its other slot is then the only known-good system, except when that
boot is the release itself, switched to or booted by an earlier run that
did not finish; then the rollout finishes it.
"""

from __future__ import annotations

import re

from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable
from ansible_collections.kubesolo.fleet.plugins.module_utils._version import InvalidVersion, Version

ACTION_STAGE = "stage"
ACTION_CURRENT = "current"
ACTION_BLOCKED = "blocked"

# The error codes of update_info that are the signature policy refusing the release.
SIGNATURE_ERRORS = ("signature_missing", "signature_invalid")

_WINDOW_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])$")
_TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


class InvalidWindow(ValueError):
    pass


def parse_window(window):
    """``HH:MM-HH:MM`` to (start, end) minutes of the day; '' means always open (None)."""
    if window is None or window == "":
        return None
    match = _WINDOW_RE.fullmatch(window.strip()) if isinstance(window, str) else None
    if not match:
        raise InvalidWindow(f"maintenance window {window!r} is not HH:MM-HH:MM (24-hour clock)")
    hour1, minute1, hour2, minute2 = (int(g) for g in match.groups())
    return hour1 * 60 + minute1, hour2 * 60 + minute2


def in_window(window, local_time):
    """Whether ``local_time`` (HH:MM) falls in ``window``; the end is exclusive.

    A window may wrap past midnight (22:00-04:00); equal start and end mean
    the whole day.
    """
    bounds = parse_window(window)
    if bounds is None:
        return True
    match = _TIME_RE.fullmatch(local_time) if isinstance(local_time, str) else None
    if not match:
        raise InvalidWindow(f"node time {_quoted(local_time)} is not HH:MM")
    now = int(match.group(1)) * 60 + int(match.group(2))
    start, end = bounds
    if start == end:
        return True
    if start < end:
        return start <= now < end
    return now >= start or now < end


def _reason(code, message):
    return {"code": code, "message": message}


def decide(  # pylint: disable=too-many-arguments
    release, current_version, channel, allow_downgrade=False, maintenance_window="", local_time="", boot=None
):
    """The decision for one node.

    ``release`` is what update_info returned for the node's architecture: its
    metadata and manifest_digest, or a failure whose error_code is
    ``architecture_not_shipped``. ``boot`` is the node's A/B state (ab_slot's
    ``node``) when it is updated through its slots, else None.
    """
    decision = _decide_by_version(release, current_version, channel, allow_downgrade, maintenance_window, local_time)
    if boot is None or boot.get("boot_success") or release.get("error_code") in SIGNATURE_ERRORS:
        # A release refused by the signature policy is not finished either: nothing of it is trusted.
        return decision
    return _decide_in_trial_boot(decision, boot, maintenance_window, local_time)


def _decide_in_trial_boot(decision, boot, maintenance_window, local_time):
    """The decision for a node whose current boot is not verified (boot_success is not 1)."""
    digest = decision["manifest_digest"]
    slots = boot.get("slots") or {}

    def holds(slot):
        return bool(digest) and (slots.get(slot) or {}).get("manifest_digest") == digest

    if boot.get("switch_pending") and holds(boot.get("active_slot")):
        outside = _window_reason(maintenance_window, local_time)
        if outside:
            return _finish(decision, ACTION_BLOCKED, [outside])
        return _finish(
            decision,
            ACTION_STAGE,
            [
                _reason(
                    "reboot_pending",
                    "grubenv already boots this release next (an earlier run switched it and did not reboot); "
                    "the rollout reboots into it, verifies and commits it",
                )
            ],
        )
    if not boot.get("switch_pending") and holds(boot.get("running_slot")):
        return _finish(
            decision,
            ACTION_STAGE,
            [
                _reason(
                    "commit_pending",
                    "the node runs this release in an unverified boot (an earlier run did not finish); "
                    "the rollout verifies and commits it",
                )
            ],
        )
    if decision["action"] != ACTION_STAGE:
        return decision
    return _finish(
        decision,
        ACTION_BLOCKED,
        [
            _reason(
                "trial_boot",
                f"the node runs an unverified boot of slot {printable(boot.get('running_slot') or '?')} "
                "(boot_success is not 1): its other slot is the only known-good system, so nothing is written "
                "until that boot is verified or rolled back",
            )
        ],
    )


def _window_reason(maintenance_window, local_time):
    if in_window(maintenance_window, local_time):
        return None
    return _reason(
        "outside_maintenance_window", f"node time {local_time} is outside the maintenance window {maintenance_window}"
    )


def _decide_by_version(release, current_version, channel, allow_downgrade, maintenance_window, local_time):
    metadata = release.get("metadata") or {}
    available = metadata.get("version", "")
    release_channel = metadata.get("channel", "")
    # The decision is shown in reports: what the node and the registry said, escaped unless it
    # is a version (then it stays exact, for the activation to compare).
    decision = {
        "current_version": _shown(current_version or ""),
        "available_version": _shown(available),
        "channel": channel,
        "release_channel": printable(release_channel),
        "architecture": release.get("architecture", ""),
        "manifest_digest": release.get("manifest_digest", ""),
        "index_digest": release.get("index_digest") or "",
        "min_compatible_version": _shown(metadata.get("min_compatible_version", "")),
        "signed": _signed(release),
        "signing_key": (release.get("signature") or {}).get("key_fingerprint"),
    }
    reasons = []
    current = _parse_or_none(current_version)
    if current is None:
        reasons.append(
            _reason(
                "version_unknown",
                "the node version {} could not be read or is not a semantic version".format(
                    _quoted(current_version or "")
                ),
            )
        )
    if release.get("error_code") == "architecture_not_shipped":
        shipped = ", ".join(release.get("available_architectures") or []) or "none"
        reasons.append(
            _reason(
                "architecture_not_shipped",
                "the release has no build for {} (it ships: {})".format(
                    release.get("architecture") or "this architecture", shipped
                ),
            )
        )
        return _finish(decision, ACTION_BLOCKED, reasons)
    if release.get("error_code") in SIGNATURE_ERRORS:
        reasons.append(_signature_reason(release))
        return _finish(decision, ACTION_BLOCKED, reasons)
    target = _parse_or_none(available)
    if target is None:
        reasons.append(
            _reason("release_version_invalid", f"the release version {_quoted(available)} is not a semantic version")
        )
    if not reasons:
        if target == current:
            return _finish(decision, ACTION_CURRENT, [])
        if target < current and not allow_downgrade:
            return _finish(
                decision,
                ACTION_CURRENT,
                [
                    _reason(
                        "downgrade",
                        f"the available {available} is older than the current {current_version} and downgrades are not "
                        "allowed",
                    )
                ],
            )
    # From here on the node would move: every remaining gate is reported.
    outside = _window_reason(maintenance_window, local_time)
    if outside:
        reasons.append(outside)
    if release_channel != channel:
        reasons.append(
            _reason(
                "channel_mismatch",
                f"the release is on channel {_quoted(release_channel)}, the node follows {channel!r}",
            )
        )
    minimum = metadata.get("min_compatible_version", "")
    if minimum:
        floor = _parse_or_none(minimum)
        if floor is None:
            reasons.append(
                _reason(
                    "release_version_invalid",
                    f"the release min_compatible_version {_quoted(minimum)} is not a semantic version",
                )
            )
        elif current is not None and current < floor:
            reasons.append(
                _reason(
                    "below_min_compatible",
                    f"the node runs {current_version}, below the release minimum {minimum}: update to {minimum} "
                    "first (stepping stone)",
                )
            )
    return _finish(decision, ACTION_BLOCKED if reasons else ACTION_STAGE, reasons)


def _signed(release):
    """``yes``, ``no`` or ``invalid`` for the report; None when signatures are not checked."""
    if release.get("error_code") == "signature_invalid":
        return "invalid"
    if release.get("error_code") == "signature_missing":
        return "no"
    signature = release.get("signature") or {}
    if signature.get("policy") in (None, "off"):
        return None
    return "yes" if signature.get("verified") else "no"


def _signature_reason(release):
    if release["error_code"] == "signature_missing":
        return _reason("signature_missing", "the release has no cosign signature and the signature policy requires one")
    problems = (release.get("signature") or {}).get("problems") or []
    first = printable(problems[0], limit=300) if problems else "no signature verifies with a trusted key"
    return _reason("signature_invalid", f"no signature of the release verifies with a trusted key: {first}")


def _finish(decision, action, reasons):
    decision["action"] = action
    decision["reasons"] = reasons
    return decision


def _quoted(text):
    """A value the registry or the node sent, quoted for a message."""
    return printable(repr(text))


def _shown(text):
    """A version field of the decision: as it is when it is a version, else escaped for display."""
    return text if _parse_or_none(text) is not None else printable(text)


def _parse_or_none(text):
    try:
        return Version(text)
    except InvalidVersion:
        return None
