# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ab_slot: a KubeSolo OS node's A/B slots and grubenv, over raw shell commands (no Python on the node)."""

from __future__ import annotations

import time

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase

from ansible_collections.kubesolo.fleet.plugins.module_utils._results import failure_result
from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _grubenv
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._ab_node import (
    ABNode,
    Layout,
    ReleaseFiles,
    SlotError,
    plan_active,
    plan_committed,
    plan_rolled_back,
    plan_staged,
)

ARGUMENT_SPEC = dict(
    state=dict(
        type="str", default="info", choices=["info", "staged", "active", "committed", "rolled_back", "rebooted"]
    ),
    release=dict(type="dict"),
    source=dict(type="path"),
    slot_labels=dict(type="dict", default={"A": "KSOLOA", "B": "KSOLOB"}),
    efi_label=dict(type="str", default="KSOLOEFI"),
    grubenv_path=dict(type="str", default="/boot/grub/grubenv"),
    version_file=dict(type="path", default="/etc/os-release"),
    reboot_command=dict(type="str", default="sleep 2; reboot"),
    boot_timeout=dict(type="int", default=600),
)
REQUIRED_IF = [("state", "staged", ["release", "source"]), ("state", "active", ["release"])]
_POLL_SECONDS = 3


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF)[1]
        try:
            if set(params["slot_labels"]) != set(_grubenv.SLOTS):
                raise SlotError("slot_labels must name exactly the slots A and B")
            layout = Layout(params["slot_labels"], params["efi_label"], params["grubenv_path"], params["version_file"])
            node = ABNode(self._node_shell, layout)
            handler = getattr(self, "_" + params["state"])
            result.update(handler(node, params))
        except Exception as exc:  # pylint: disable=broad-except  # a result with an error_code, never a traceback
            result.update(failure_result(exc))
        return result

    def _node_shell(self, script):
        out = self._low_level_execute_command(script, executable="/bin/sh")
        return out.get("rc"), out.get("stdout", ""), out.get("stderr", "")

    # -- the states -------------------------------------------------------------------------

    def _info(self, node, _params):
        return dict(changed=False, node=node.inspect().summary())

    def _staged(self, node, params):
        release = ReleaseFiles(params["release"])
        change = plan_staged(node, node.inspect(), release)
        if change.write and not self._task.check_mode:
            node.write_slot(change.state, change.slot, release, params["source"])
        return dict(self._applied(node, change), written=change.write and not self._task.check_mode)

    def _active(self, node, params):
        change = plan_active(node, node.inspect(), ReleaseFiles(params["release"]), self._task.check_mode)
        return self._applied(node, change)

    def _committed(self, node, _params):
        return self._applied(node, plan_committed(node.inspect()))

    def _rolled_back(self, node, _params):
        return self._applied(node, plan_rolled_back(node.inspect()))

    def _applied(self, node, change):
        """The result of ``change``, whose grubenv switch is made here unless in check mode."""
        result = dict(changed=change.changed, slot=change.slot, node=change.state.summary())
        if change.switches:
            if self._task.diff:
                result["diff"] = dict(
                    before=_grubenv_text(change.state.boot.values), after=_grubenv_text(change.values)
                )
            if not self._task.check_mode:
                node.write_grubenv(change.values)
        return result

    def _rebooted(self, node, params):
        """Reboot the node and wait until it answers with a new boot id, at most boot_timeout seconds."""
        before = node.boot_id()
        if not before:
            raise SlotError("cannot read the node's boot id before rebooting")
        if self._task.check_mode:
            return dict(changed=True, rebooted=False)
        started = time.monotonic()
        # In the background, with the session's hangup ignored before it forks: a raw session
        # (a terminal) takes its children down with it otherwise, setsid or not.
        command = f"trap '' HUP; ( {params['reboot_command']} ) </dev/null >/dev/null 2>&1 &"
        try:
            self._low_level_execute_command(command, executable="/bin/sh")
        except AnsibleConnectionFailure:
            pass  # the node may go down before the session ends: the boot id tells
        deadline = started + params["boot_timeout"]
        last_error = ""
        while time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
            try:
                self._connection.reset()
                after = node.boot_id()
            except (AnsibleConnectionFailure, OSError) as exc:
                last_error = str(exc)[:200]
                continue
            if after and after != before:
                return dict(changed=True, rebooted=True, boot_id=after, elapsed=round(time.monotonic() - started, 1))
        raise SlotError(
            f"the node did not come back with a new boot id within {params['boot_timeout']}s (boot_timeout)"
            + (f"; last connection error: {last_error}" if last_error else "")
        )


def _grubenv_text(values):
    return "".join(f"{key}={value}\n" for key, value in sorted(values.items()))
