# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""update_stage: host delivery runs the module on the node; controller
delivery pulls on the controller and stages over the connection, for nodes
without Python."""

from __future__ import annotations

import contextlib
import functools

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._task.args.get("delivery", "host") == "host":
            try:
                module_args = _with_key_files_read(self._task.args)
            except Exception as exc:  # pylint: disable=broad-except  # a FleetError: an unreadable key file
                return dict(result, failed=True, msg=str(exc), error_code=getattr(exc, "code", "invalid_parameter"))
            result.update(
                self._execute_module(
                    module_name="kubesolo.fleet.update_stage", module_args=module_args, task_vars=task_vars
                )
            )
            return result
        return self._run_controller_delivery(result, task_vars or {})

    def _run_controller_delivery(self, result, task_vars):
        # Imported here: host delivery, on every host of a fleet, needs none of it on the
        # controller (requests alone costs a tenth of a second per task).
        # pylint: disable=import-outside-toplevel
        from ansible_collections.kubesolo.fleet.plugins.module_utils import _options, _staging
        from ansible_collections.kubesolo.fleet.plugins.module_utils._cosign import (
            CRYPTOGRAPHY_IMPORT_ERROR,
            HAS_CRYPTOGRAPHY,
        )
        from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._transport import (
            HAS_REQUESTS,
            REQUESTS_IMPORT_ERROR,
        )
        from ansible_collections.kubesolo.fleet.plugins.module_utils._results import failure_result, stage_result
        from ansible_collections.kubesolo.fleet.plugins.module_utils._signatures import POLICY_OFF, effective_policy
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
        if not HAS_CRYPTOGRAPHY and effective_policy(params) != POLICY_OFF:
            return dict(
                result,
                failed=True,
                exception=CRYPTOGRAPHY_IMPORT_ERROR,
                msg="verifying signatures needs the Python library cryptography on the controller",
            )
        client = store = None
        try:
            dest = _options.stage_dest(params["dest"])
            _options.check_node_transfer(params)
            node = NodeStore(self._node_shell, dest)
            store = ControllerDelivery(
                node,
                BlobCache(params["controller_cache"] or default_cache_root(), params["lock_timeout"]),
                self._node_transfer(node, params, task_vars.get("inventory_hostname", "")),
                cache_keep=params["controller_cache_keep"],
                lock_timeout=params["lock_timeout"],
            )
            client = _options.mirrored_client_from_params(params)
            outcome = _staging.stage_release(client, params, store, check_mode=self._task.check_mode)
            result.update(stage_result(outcome, dest, store.delivery, client, self._task.diff))
        except Exception as exc:  # pylint: disable=broad-except  # a result with an error_code, never a traceback
            result.update(failure_result(exc, client))
        if store is not None:
            result["transfer"] = _merge_transfer(result.get("transfer", {}), store.transfer_summary())
        return result

    def _node_transfer(self, node, params, host):
        """The transfer method of ``node_transfer`` (see _node_transfer.py)."""
        # pylint: disable=import-outside-toplevel
        from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
        from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _node_transfer

        def policy():
            return RetryPolicy(params["retries"], params["retry_max_wait"], params["retry_budget"])

        shell_stream = _node_transfer.ShellStream(
            node,
            policy(),
            chunk_size=params["transfer_chunk_size"],
            rate_limit=params["transfer_rate_limit"],
            report=_node_transfer.ProgressReport(functools.partial(_verbose, host=host)),
        )
        choice = params["node_transfer"]
        if choice == "shell":
            return shell_stream
        put_file = _node_transfer.PutFile(
            node,
            functools.partial(self._put_file, rate_limit=params["transfer_rate_limit"]),
            policy(),
            retry=choice == "put_file",
        )
        return put_file if choice == "put_file" else _node_transfer.AutoTransfer(put_file, shell_stream)

    def _node_shell(self, script, data=None):
        """Run ``script`` with the node's /bin/sh, ``data`` on its stdin, as the raw action would."""
        # pylint: disable=import-outside-toplevel
        from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_transfer import NodeLinkError

        try:
            out = self._low_level_execute_command(script, executable="/bin/sh", in_data=data)
        except AnsibleConnectionFailure as exc:
            raise NodeLinkError(f"the connection to the node broke: {_first_line(exc)}")
        return out.get("rc"), out.get("stdout", ""), out.get("stderr", "")

    def _put_file(self, local_path, remote_path, rate_limit=0):
        """The connection's file transfer, never one that reads the whole file into memory.

        TransferUnavailableError when it cannot copy to this node (the node still answers
        commands), NodeLinkError when the node stopped answering.
        """
        # pylint: disable=import-outside-toplevel
        from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_transfer import (
            NodeLinkError,
            TransferUnavailableError,
        )

        connection = self._connection
        methods, extra_options = [None], {}
        if connection.transport == "ssh" or connection.transport.endswith(".ssh"):
            configured = connection.get_option("ssh_transfer_method") or "smart"
            if configured == "piped":
                raise TransferUnavailableError(
                    "the ssh connection is set to copy files with 'piped', which holds them in memory"
                )
            methods = ["sftp", "scp"] if configured == "smart" else [configured]
            if rate_limit:
                # sftp -l and scp -l take Kbit/s of 1024 bits.
                limit = f" -l {max(1, rate_limit // 128)}"
                extra_options = {
                    "sftp_extra_args": (connection.get_option("sftp_extra_args") or "") + limit,
                    "scp_extra_args": (connection.get_option("scp_extra_args") or "") + limit,
                }
        elif rate_limit:
            raise TransferUnavailableError(
                f"the {connection.transport} connection's file transfer cannot be rate-limited"
            )
        failure = None
        with _connection_options(connection, extra_options):
            for method in methods:
                try:
                    if method is None:
                        connection.put_file(local_path, remote_path)
                    else:
                        with _connection_options(connection, {"ssh_transfer_method": method}):
                            connection.put_file(local_path, remote_path)
                    return
                except AnsibleError as exc:
                    failure = exc
        try:
            rc, _stdout, _stderr = self._node_shell("true")
        except NodeLinkError:
            rc = None
        if rc == 0:
            raise TransferUnavailableError(f"the connection cannot copy files to this node: {_first_line(failure)}")
        raise NodeLinkError(f"copying {local_path} to the node failed: {_first_line(failure)}")


def _with_key_files_read(args):
    """The task's arguments with the signature key files read here, on the controller, so the
    module on the node gets the keys themselves."""
    if not args.get("signature_keys"):
        return args
    # pylint: disable=import-outside-toplevel
    from ansible_collections.kubesolo.fleet.plugins.module_utils._signatures import (
        POLICY_OFF,
        effective_policy,
        read_key_files,
    )

    if effective_policy(args) == POLICY_OFF:
        return args
    return dict(args, signature_keys=read_key_files(args["signature_keys"]))


@contextlib.contextmanager
def _connection_options(connection, options):
    """The connection with ``options`` set for the block, restored after it."""
    saved = dict((name, connection.get_option(name)) for name in options)
    try:
        for name, value in options.items():
            connection.set_option(name, value)
        yield connection
    finally:
        for name, value in saved.items():
            connection.set_option(name, value)


def _merge_transfer(registry, node):
    """The result's ``transfer``: the registry side's, and the node's, resumed bytes of both added up."""
    merged = dict(registry)
    merged.update(node)
    merged["resumed_bytes"] = registry.get("resumed_bytes", 0) + node["resumed_bytes"]
    return merged


def _verbose(line, host):
    """A line shown with -v and more."""
    if display.verbosity >= 1:
        display.v(line, host=host)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
