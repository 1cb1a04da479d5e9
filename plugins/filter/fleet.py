# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the os_update role decides with; the logic lives in module_utils."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError
from ansible_collections.kubesolo.fleet.plugins.module_utils._platform import parse_platform
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._gates import InvalidWindow, decide

# A report cell holds a host's reasons too, several messages long.
MAX_CELL_CHARS = 2000
# What inline Markdown acts on: escapes, code, emphasis, links and images, HTML and autolinks,
# table cells, entities (&#x202e; would bring back what printable() escaped), strikethrough.
_MARKDOWN_SPECIAL = frozenset("\\`*_[]()!<>|&~")


def update_decision(  # pylint: disable=too-many-arguments
    release,
    current_version="",
    channel="stable",
    allow_downgrade=False,
    maintenance_window="",
    local_time="",
    boot=None,
):
    if not isinstance(release, dict):
        raise AnsibleFilterError("update_decision expects the result of kubesolo.fleet.update_info")
    if boot is not None and not isinstance(boot, dict):
        raise AnsibleFilterError("update_decision's boot is the node of kubesolo.fleet.ab_slot's result, or none")
    try:
        return decide(
            release,
            current_version,
            channel,
            allow_downgrade=allow_downgrade,
            maintenance_window=maintenance_window,
            local_time=local_time,
            boot=boot or None,
        )
    except InvalidWindow as exc:
        raise AnsibleFilterError(str(exc))


def goarch(architecture):
    try:
        return str(parse_platform(architecture))
    except FleetError as exc:
        raise AnsibleFilterError(str(exc))


def node_state(text):
    """Parse the ``key=value`` lines the role's raw probe prints; the values are printable()."""
    state = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key and key not in state:
            # Whatever the node says ends up in messages and reports.
            state[key] = printable(value.strip().strip("\"'"))
    return state


def markdown_cell(value):
    """``value`` as the text of one Markdown table cell: printable(), every character inline
    Markdown acts on backslash-escaped, '-' for an empty value."""
    text = printable("" if value is None else value, limit=MAX_CELL_CHARS)
    return "".join("\\" + char if char in _MARKDOWN_SPECIAL else char for char in text) or "-"


def report_rows(hosts, hostvars, rollout=False, activating=False):
    """One report row per host: its decision and the slot it runs, plus its rollout status, the
    reason of a failure or rollback and the activation's timings when ``rollout``.

    A host without a decision could not be checked (unreachable or failed).
    A staged host without a rollout status was not reached by the rollout, or
    only staged when the rollout does not activate (``activating`` false).
    """
    rows = []
    for host in hosts:
        facts = hostvars[host]
        decision = facts.get("kubesolo_fleet_decision") or {
            "action": "failed",
            "reasons": [{"code": "unreachable_or_failed", "message": "the node could not be checked"}],
        }
        row = dict(decision, host=host, slot=(facts.get("kubesolo_fleet_ab_state") or {}).get("running_slot"))
        if rollout:
            pending = "not_reached" if activating else "staged"
            default = pending if decision["action"] == "stage" else "unchanged"
            timings = facts.get("kubesolo_fleet_rollout_timings") or {}
            row.update(
                rollout=facts.get("kubesolo_fleet_rollout_status") or default,
                rollout_reason=facts.get("kubesolo_fleet_rollout_reason") or None,
                activation_seconds=_seconds(timings.get("activation_seconds")),
                reboot_seconds=_seconds(timings.get("reboot_seconds")),
            )
        rows.append(row)
    return rows


def _seconds(value):
    try:
        return round(float(value), 1)
    except (TypeError, ValueError):
        return None


class FilterModule:
    def filters(self):
        return {
            "update_decision": update_decision,
            "goarch": goarch,
            "node_state": node_state,
            "report_rows": report_rows,
            "markdown_cell": markdown_cell,
        }
