"""Controller delivery of ``kubesolo.fleet.update_stage`` without Ansible, as a plain Python process.

The counterpart of ``tests/support/stage_driver.py`` (host delivery) for the benchmark: it runs what
the action plugin's controller path runs, in the same order (``mirrored_client_from_params``,
``resolve_from_params``, ``BlobCache.fetch_all`` of the layers, ``ControllerDelivery.stage``: free-space
check, copy, ``sha256sum`` check and atomic publish by ``/bin/sh``), with this machine as the node:
the local connection's ``put_file`` is a ``shutil.copyfile`` and its shell is ``/bin/sh -c``.  Left
out: Ansible's argument handling, the node's current-release check and cache pruning.

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


def _sh(script: str) -> tuple[int, str, str]:
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr


def main() -> int:
    options = json.loads(sys.argv[1])
    sys.path.insert(0, options.pop("collections_root"))
    # pylint: disable=import-outside-toplevel,import-error
    from ansible_collections.kubesolo.fleet.plugins.module_utils import _cache, _delivery, _module
    from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError

    params = {name: spec.get("default") for name, spec in _module.stage_argument_spec().items()}
    params.update(options)
    try:
        client = _module.mirrored_client_from_params(params)
        release = _module.resolve_from_params(client, params, "amd64")
        cache = _cache.BlobCache(params["controller_cache"])
        node = _delivery.ControllerDelivery(_sh, shutil.copyfile, _module.stage_dest(params["dest"]))
        record, transferred = node.stage(release, client.repository, lambda layers: [
            fetched[:2] for fetched in cache.fetch_all(client, layers)])
    except FleetError as exc:
        print(json.dumps({"failed": True, "error_code": exc.code, "msg": str(exc)}), flush=True)
        return 1
    print(json.dumps({"bytes_transferred": transferred, "manifest_digest": record["manifest_digest"],
                      "peak_rss_kib": peak_rss_kib()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
