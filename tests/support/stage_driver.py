"""Run what ``kubesolo.fleet.update_stage`` (host delivery) does, as a plain Python process.

Why: the crash-safety and concurrency tests start, kill and race dozens of staging runs.  The
process to kill is the one that stages: under ``ansible-playbook`` that is a module process two
levels below the one a test starts (a SIGKILL of ``ansible-playbook`` leaves it running), and each
run pays ansible-playbook's start-up.  This driver is that process itself, a direct child of the
test, and calls the module's own staging entry point, ``_staging.stage_release`` with a
``HostStore`` (resolve, compare with what ``dest`` holds, then lock, resume, verify, publish).
Only Ansible's argument handling and result plumbing are left out; the ansible-playbook tests
cover those.

Usage (a subprocess of the tests; nothing here is imported by them)::

    python stage_driver.py '<json>'

The JSON holds the module's options (``repository``, ``dest``, ``tag``...; the module's defaults
fill the rest), plus ``collections_root`` (a directory holding ``ansible_collections/kubesolo/fleet``)
and optionally ``rename_pause``: seconds to sleep before and after every ``os.rename`` /
``os.replace`` of the run, which widens the windows around the renames that publish a release
(``.part`` -> file, partial dir -> release dir, the symlink swap) so that a randomly timed kill
lands in them often.  The pause changes timing only, never what is done.

Prints one JSON line: ``{"changed", "bytes_downloaded", "manifest_digest", "transfer", "peak_rss_kib"}``
on success, ``{"failed": true, "error_code", "msg", "transfer"}`` on a FleetError (exit status 1).
``peak_rss_kib`` is this process's memory high-water mark (``VmHWM``), for the benchmark.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _slow_renames(pause: float) -> None:
    rename, replace = os.rename, os.replace

    def slow(real):
        def call(*args, **kwargs):
            time.sleep(pause)
            result = real(*args, **kwargs)
            time.sleep(pause)
            return result

        return call

    os.rename, os.replace = slow(rename), slow(replace)


def peak_rss_kib() -> int:
    """The high-water mark of this process's resident memory since it started (Linux ``VmHWM``).

    Not ``ru_maxrss``: Linux carries that over from the forking parent across ``exec``.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])


def main() -> int:
    options = json.loads(sys.argv[1])
    sys.path.insert(0, options.pop("collections_root"))
    pause = options.pop("rename_pause", 0)
    # pylint: disable=import-outside-toplevel,import-error
    from ansible_collections.kubesolo.fleet.plugins.module_utils import _options, _staging
    from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError
    from ansible_collections.kubesolo.fleet.plugins.module_utils._host_store import HostStore

    params = _options.default_params(_options.stage_argument_spec())
    params.update(options)
    params["architecture"] = params["architecture"] or "amd64"  # what the tests publish, whatever this machine is
    client = None
    if pause:
        _slow_renames(pause)
    try:
        store = HostStore(_options.stage_dest(params["dest"]), params["lock_timeout"])
        client = _options.mirrored_client_from_params(params)
        outcome = _staging.stage_release(client, params, store)
    except FleetError as exc:
        print(
            json.dumps(
                {
                    "failed": True,
                    "error_code": exc.code,
                    "msg": str(exc),
                    "transfer": client.transfer_summary() if client else None,
                }
            ),
            flush=True,
        )
        return 1
    print(
        json.dumps(
            {
                "changed": outcome.changed,
                "bytes_downloaded": outcome.bytes_downloaded,
                "manifest_digest": outcome.release.manifest_digest,
                "transfer": client.transfer_summary(),
                "peak_rss_kib": peak_rss_kib(),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
