# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: append every task result as one JSON line to a file."""

from __future__ import annotations

DOCUMENTATION = r"""
name: result_capture
type: aggregate
short_description: Write every task result as JSON lines to a file (kubesolo.fleet tests)
description:
  - Test harness callback of the kubesolo.fleet collection. It is not part of the collection.
  - Appends one JSON object per task result to the file named by E(RESULT_CAPTURE_FILE), with
    the keys C(host), C(task), C(action), C(play), C(status) (ok, changed, failed, skipped,
    unreachable), C(ignore_errors), C(result) (the full result dictionary), C(started) (when the
    task started, for all its hosts) and C(finished) (when this result arrived), both
    C(time.time()) values seen by the controller.
requirements:
  - enabled via C(callbacks_enabled)
options:
  path:
    description: File to append the JSON lines to. Nothing is written when unset.
    env:
      - name: RESULT_CAPTURE_FILE
    type: path
"""

import json
import time
from collections.abc import Mapping, Set

from ansible.plugins.callback import CallbackBase


def _jsonable(value):
    """Fallback for json.dumps: containers become lists/dicts, anything else its str()."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (Set, tuple)):
        return list(value)
    return str(value)


class CallbackModule(CallbackBase):
    """Record task results for the test harness."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "result_capture"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._play_name = None
        self._task_started = None

    def _record(self, result, status, ignore_errors=False):
        path = self.get_option("path")
        if not path:
            return
        # ansible-core >= 2.19 exposes public host/task/result; older releases only the _ names.
        host = getattr(result, "host", None) or result._host  # pylint: disable=protected-access
        task = getattr(result, "task", None) or result._task  # pylint: disable=protected-access
        data = getattr(result, "result", None)
        if data is None:
            data = result._result  # pylint: disable=protected-access
        if status == "ok" and data.get("changed"):
            status = "changed"
        record = {
            "host": host.get_name(),
            "task": task.get_name(),
            "action": task.action,
            "play": self._play_name,
            "status": status,
            "ignore_errors": bool(ignore_errors),
            "result": data,
            "started": self._task_started,
            "finished": time.time(),
        }
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=_jsonable) + "\n")

    def v2_playbook_on_play_start(self, play):
        self._play_name = play.get_name()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_started = time.time()

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed", ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")
