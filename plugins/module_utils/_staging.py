# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The staging flow, once for both deliveries: resolve, check, compare, stage.

The module (host delivery), the action plugin (controller delivery), the test
drivers and the benchmark all stage through stage_release(). What differs
between the deliveries is the store, an object with

- ``delivery``: ``'host'`` or ``'controller'``, for the result;
- ``default_architecture()``: the architecture to stage when none is given;
- ``current_release(rehash, layers)``: the record of the release ``dest`` holds, or
  None; its files are checked against ``layers`` (the manifest's) when it is this release;
- ``stage(client, release, layers)``: download, verify and publish; a StagedRelease.

HostStore (module_utils/_host_store.py) writes on the machine the module runs
on; ControllerDelivery (plugin_utils/_controller_delivery.py) stages on a node
over the connection from the controller's cache.
"""

from __future__ import annotations

from ansible_collections.kubesolo.fleet.plugins.module_utils import _options


class StagedRelease:
    """What a store's ``stage()`` did: the record now at ``dest`` and the bytes it moved."""

    def __init__(self, record, bytes_downloaded, bytes_transferred=None):
        self.record = record
        self.bytes_downloaded = bytes_downloaded
        # None for host delivery, which copies nothing over a connection.
        self.bytes_transferred = bytes_transferred


class StageOutcome:
    """What stage_release() found and did."""

    def __init__(self, release, layers, current, staged):
        self.release = release
        self.layers = layers  # release.staged_layers()
        self.current = current  # the record dest held before, or None
        self.staged = staged  # a StagedRelease, or None when nothing was written

    @property
    def changed(self):
        return needs_staging(self.current, self.release)

    @property
    def bytes_downloaded(self):
        return self.staged.bytes_downloaded if self.staged else 0

    @property
    def bytes_transferred(self):
        return self.staged.bytes_transferred if self.staged else 0


def needs_staging(current, release):
    """The one ``changed`` rule: ``dest`` does not already hold this manifest."""
    return not current or current.get("manifest_digest") != release.manifest_digest


def stage_release(client, params, store, check_mode=False):
    """Resolve the release ``params`` name and stage it into ``store`` unless it is there.

    ``params`` are update_stage's options; in ``check_mode`` nothing is
    downloaded or written. Raises FleetError.
    """
    release = _options.resolve_from_params(client, params, params["architecture"] or store.default_architecture())
    layers = release.staged_layers()
    current = store.current_release(rehash=params["verify_existing"], layers=layers)
    staged = None
    if needs_staging(current, release) and not check_mode:
        staged = store.stage(client, release, layers)
    return StageOutcome(release, layers, current, staged)
