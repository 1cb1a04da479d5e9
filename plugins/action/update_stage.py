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
        if self._task.args.get('delivery', 'host') == 'host':
            result.update(self._execute_module(module_name='kubesolo.fleet.update_stage',
                                               module_args=self._task.args, task_vars=task_vars))
            return result
        return self._run_controller_delivery(result)

    def _run_controller_delivery(self, result):
        # Imported here: host delivery, on every host of a fleet, needs none of it on the
        # controller (requests alone costs a tenth of a second per task).
        # pylint: disable=import-outside-toplevel
        from ansible_collections.kubesolo.fleet.plugins.module_utils._delivery import ControllerDelivery
        from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError
        from ansible_collections.kubesolo.fleet.plugins.module_utils._module import (
            REGISTRY_MUTUALLY_EXCLUSIVE,
            mirrored_client_from_params,
            stage_argument_spec,
            stage_dest,
        )
        from ansible_collections.kubesolo.fleet.plugins.module_utils._registry import (
            HAS_REQUESTS,
            REQUESTS_IMPORT_ERROR,
        )

        params = self.validate_argument_spec(argument_spec=stage_argument_spec(),
                                             mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE)[1]
        if not HAS_REQUESTS:
            return dict(result, failed=True, exception=REQUESTS_IMPORT_ERROR,
                        msg='controller delivery needs the Python library requests on the controller')
        client = None
        try:
            dest = stage_dest(params['dest'])
            node = ControllerDelivery(self._node_shell, self._connection.put_file, dest)
            client = mirrored_client_from_params(params)
            result.update(self._stage_from_controller(params, dest, node, client))
        except FleetError as exc:
            result.update(failed=True, msg=str(exc), error_code=exc.code, **exc.details())
            if client is not None:
                result['transfer'] = client.transfer_summary()
        return result

    def _stage_from_controller(self, params, dest, node, client):
        # pylint: disable=import-outside-toplevel
        from ansible_collections.kubesolo.fleet.plugins.module_utils._cache import BlobCache, default_cache_root
        from ansible_collections.kubesolo.fleet.plugins.module_utils._module import resolve_from_params, stage_result

        release = resolve_from_params(client, params, params['architecture'] or node.architecture())
        release.staged_layers()
        current = node.current_release(rehash=params['verify_existing'])
        changed = not current or current.get('manifest_digest') != release.manifest_digest
        downloaded = transferred = 0
        if changed and not self._task.check_mode:
            cache = BlobCache(params['controller_cache'] or default_cache_root())
            cache.remember(release.manifest_digest, release.layers)

            def fetch_all(layers):
                nonlocal downloaded
                fetched = cache.fetch_all(client, layers)
                downloaded += sum(size for _path, _sha256, size in fetched)
                return [(path, sha256) for path, sha256, _size in fetched]

            transferred = node.stage(release, client.repository, fetch_all)[1]
            if params['controller_cache_keep'] > 0:
                cache.prune(params['controller_cache_keep'])
        return stage_result(release, dest, current, changed, downloaded, self._task.diff,
                            delivery='controller', bytes_transferred=transferred,
                            sources=client.sources, mirror_errors=client.mirror_errors,
                            transfer=client.transfer_summary())

    def _node_shell(self, script):
        """Run ``script`` with the node's /bin/sh, as the raw action would."""
        out = self._low_level_execute_command(script, executable='/bin/sh')
        return out.get('rc'), out.get('stdout', ''), out.get('stderr', '')
