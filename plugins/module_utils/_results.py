# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""Task results, built in one place for the modules and the action plugin alike."""

from __future__ import annotations

import os

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.kubesolo.fleet.plugins.module_utils._cosign import CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError, InternalError
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._transport import HAS_REQUESTS, REQUESTS_IMPORT_ERROR
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

# Messages quote what registries and nodes sent; each quote is capped where it is made, and
# the whole message once more here, where it becomes the task's msg.
MAX_MESSAGE_CHARS = 2000


def failure_result(error, client=None):
    """A failed result for a FleetError: its message, its stable code and its details.

    Any other exception is a bug; it becomes an InternalError, so that even then the task fails
    with an error_code and no traceback. With the ``client`` that was in use, the transfer
    summary too.
    """
    if not isinstance(error, FleetError):
        error = InternalError.from_exception(error)
    result = dict(failed=True, msg=printable(error, limit=MAX_MESSAGE_CHARS), error_code=error.code, **error.details())
    if client is not None:
        result["transfer"] = client.transfer_summary()
    return result


def fail_module(module, error, client=None):
    """Fail ``module`` (an AnsibleModule) with failure_result()."""
    result = failure_result(error, client)
    del result["failed"]  # fail_json sets it
    module.fail_json(**result)


def fail_without_requests(module):
    """Ansible's usual missing-library failure when requests cannot be imported."""
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)


def fail_without_cryptography(module, needed):
    """Ansible's usual missing-library failure when signatures are ``needed`` and cryptography cannot be imported."""
    if needed and not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)


def client_result(client):
    """Where the bytes came from and how the transfer went."""
    return dict(
        sources=client.sources,
        served_by=sorted(client.served_by),
        mirror_errors=client.mirror_errors,
        transfer=client.transfer_summary(),
    )


def stage_result(outcome, dest, delivery, client, diff):
    """update_stage's result from a _staging.StageOutcome, whichever way the release was delivered."""
    release = outcome.release
    names = dict((name, os.path.join(dest, name)) for name, _layer in outcome.layers)
    result = dict(
        changed=outcome.changed,
        staged=dict(
            vmlinuz_path=names["vmlinuz"], initramfs_path=names["kubesolo-os.gz"], version=release.metadata["version"]
        ),
        bytes_downloaded=outcome.bytes_downloaded,
        delivery=delivery,
        **release.summary(),
    )
    if delivery == "controller":
        result["bytes_transferred"] = outcome.bytes_transferred
    result.update(client_result(client))
    if diff:
        result["diff"] = dict(before=_diff_view(outcome.current), after=_diff_view(release.summary()))
    return result


def _diff_view(state):
    if not state:
        return {}
    metadata = state.get("metadata")
    version = state.get("version") or (metadata.get("version", "") if isinstance(metadata, dict) else "")
    # ``before`` is the record dest held: on the node, anyone who can write there may have written it.
    return {"version": printable(version), "manifest_digest": state.get("manifest_digest", "")}
