# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""update_stage: host delivery runs the module on the node; controller
delivery pulls on the controller and stages over the connection, for nodes
without Python."""

from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._task.args.get("delivery", "host") == "host":
            result.update(
                self._execute_module(
                    module_name="kubesolo.fleet.update_stage", module_args=self._task.args, task_vars=task_vars
                )
            )
            return result
        return self._run_controller_delivery(result)

    def _run_controller_delivery(self, result):
        # Imported here: host delivery, on every host of a fleet, needs none of it on the
        # controller (requests alone costs a tenth of a second per task).
        # pylint: disable=import-outside-toplevel
        from ansible_collections.kubesolo.fleet.plugins.module_utils import _options, _staging
        from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._transport import (
            HAS_REQUESTS,
            REQUESTS_IMPORT_ERROR,
        )
        from ansible_collections.kubesolo.fleet.plugins.module_utils._results import failure_result, stage_result
        from ansible_collections.kubesolo.fleet.plugins.plugin_utils._blob_cache import BlobCache, default_cache_root
        from ansible_collections.kubesolo.fleet.plugins.plugin_utils._controller_delivery import ControllerDelivery
        from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_store import NodeStore

        params = self.validate_argument_spec(
            argument_spec=_options.stage_argument_spec(), mutually_exclusive=_options.REGISTRY_MUTUALLY_EXCLUSIVE
        )[1]
        if not HAS_REQUESTS:
            return dict(
                result,
                failed=True,
                exception=REQUESTS_IMPORT_ERROR,
                msg="controller delivery needs the Python library requests on the controller",
            )
        client = None
        try:
            dest = _options.stage_dest(params["dest"])
            store = ControllerDelivery(
                NodeStore(self._node_shell, self._connection.put_file, dest),
                BlobCache(params["controller_cache"] or default_cache_root(), params["lock_timeout"]),
                cache_keep=params["controller_cache_keep"],
                lock_timeout=params["lock_timeout"],
            )
            client = _options.mirrored_client_from_params(params)
            outcome = _staging.stage_release(client, params, store, check_mode=self._task.check_mode)
            result.update(stage_result(outcome, dest, store.delivery, client, self._task.diff))
        except Exception as exc:  # pylint: disable=broad-except  # a result with an error_code, never a traceback
            result.update(failure_result(exc, client))
        return result

    def _node_shell(self, script):
        """Run ``script`` with the node's /bin/sh, as the raw action would."""
        out = self._low_level_execute_command(script, executable="/bin/sh")
        return out.get("rc"), out.get("stdout", ""), out.get("stderr", "")
