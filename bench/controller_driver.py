"""Controller delivery of ``kubesolo.fleet.update_stage`` without Ansible, as a plain Python process.

The counterpart of ``tests/support/stage_driver.py`` (host delivery) for the benchmark: it calls the
action plugin's own staging entry point, ``_staging.stage_release`` with a ``ControllerDelivery``
(the node's current release, free-space check, ``BlobCache`` fill, copy, ``sha256sum`` check and
atomic publish by ``/bin/sh``, cache pruning), with this machine as the node: the local connection's
``put_file`` is a ``shutil.copyfile`` and its shell is ``/bin/sh -c`` (``node_transfer: shell``
streams through that shell).  Left out: Ansible's argument
handling and result plumbing.

Usage (a child process of the benchmark)::

    python controller_driver.py '<json>'

The JSON holds the module's options (``repository``, ``dest``, ``controller_cache``, ``tag``...)
plus ``collections_root``, as for stage_driver.  Prints one JSON line: ``{"bytes_transferred",
"manifest_digest", "peak_rss_kib"}`` (as stage_driver measures it), or ``{"failed": true,
"error_code", "msg"}`` (exit status 1).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.stage_driver import peak_rss_kib  # noqa: E402  pylint: disable=wrong-import-position


def _sh(script: str, data: bytes | None = None) -> tuple[int, str, str]:
    done = subprocess.run(["/bin/sh", "-c", script], input=data, capture_output=True, check=False)
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def main() -> int:
    options = json.loads(sys.argv[1])
    sys.path.insert(0, options.pop("collections_root"))
    # pylint: disable=import-outside-toplevel,import-error
    from ansible_collections.kubesolo.fleet.plugins.module_utils import _options, _staging
    from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError
    from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
    from ansible_collections.kubesolo.fleet.plugins.plugin_utils._blob_cache import BlobCache
    from ansible_collections.kubesolo.fleet.plugins.plugin_utils._controller_delivery import ControllerDelivery
    from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_store import NodeStore
    from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_transfer import PutFile, ShellStream

    params = _options.default_params(_options.stage_argument_spec())
    params.update(options)
    params["architecture"] = params["architecture"] or "amd64"
    try:
        node = NodeStore(_sh, _options.stage_dest(params["dest"]))
        policy = RetryPolicy(params["retries"], params["retry_max_wait"], params["retry_budget"])
        if params["node_transfer"] == "shell":
            transfer = ShellStream(node, policy, params["transfer_chunk_size"], params["transfer_rate_limit"])
        else:  # the local connection's put_file
            transfer = PutFile(node, shutil.copyfile, policy)
        store = ControllerDelivery(
            node,
            BlobCache(params["controller_cache"], params["lock_timeout"]),
            transfer,
            cache_keep=params["controller_cache_keep"],
        )
        client = _options.mirrored_client_from_params(params)
        outcome = _staging.stage_release(client, params, store)
    except FleetError as exc:
        print(json.dumps({"failed": True, "error_code": exc.code, "msg": str(exc)}), flush=True)
        return 1
    print(
        json.dumps(
            {
                "bytes_transferred": outcome.bytes_transferred,
                "manifest_digest": outcome.release.manifest_digest,
                "peak_rss_kib": peak_rss_kib(),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
