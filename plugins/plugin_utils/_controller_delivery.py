# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""Controller delivery: the controller pulls each layer once into its cache and stages it on a node.

For nodes without Python (real KubeSolo OS nodes). ControllerDelivery is the
store that _staging.stage_release() stages into: it checks the node's free
space, fills the cache (one download per layer for the whole fleet: forks
share it), moves the layers to the node (_node_transfer.py), has the node
check and publish them, and keeps the cache to its size.
"""

from __future__ import annotations

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError, StageError
from ansible_collections.kubesolo.fleet.plugins.module_utils._staging import StagedRelease
from ansible_collections.kubesolo.fleet.plugins.module_utils._store import build_record, file_entry
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._node_transfer import TransferStats


class ControllerDelivery:
    """Stages into a _node_store.NodeStore from a _blob_cache.BlobCache.

    ``transfer``: how layers go to the node, a _node_transfer ShellStream,
    PutFile or AutoTransfer; ``cache_keep``: after staging, keep the blobs of
    this many most recently used releases in the cache (0 never prunes).
    ``lock_timeout``: how long to wait for the node's store lock (another run
    staging there).
    """

    delivery = "controller"

    def __init__(self, node, cache, transfer, cache_keep=3, lock_timeout=300):
        self.node = node
        self.cache = cache
        self.transfer = transfer
        self.stats = TransferStats(transfer.method)
        self.cache_keep = cache_keep
        self.lock_timeout = lock_timeout

    def default_architecture(self):
        return self.node.architecture()

    def current_release(self, rehash=False, layers=None):
        return self.node.current_release(rehash, layers)

    def transfer_summary(self):
        """How the bytes went to the node; merged into the result's ``transfer``."""
        return self.stats.summary()

    def stage(self, client, release, layers):
        """Copy the verified layers to the node and publish them, holding the node's lock; a StagedRelease.

        What reached the node stays in the release's work directory when staging fails, for the
        next run to resume.
        """
        self.cache.remember(release.manifest_digest, release.layers)
        total = sum(staged.layer["size"] for staged in layers)
        with self.node.lock(self.lock_timeout) as lock:
            work = self.node.prepare(total, release.manifest_digest)
            try:
                cached = self.cache.fetch_all(client, [staged.layer for staged in layers])
                files, verified = {}, set()
                for staged, blob in zip(layers, cached):
                    lock.renew()
                    sha256 = self.transfer.send(blob.path, staged.layer, work, staged.name, self.stats)
                    self.stats.method = self.transfer.method
                    files[staged.name] = file_entry(staged.layer, sha256 or blob.sha256)
                    if self.transfer.verified_on_arrival:
                        verified.add(staged.name)
                record = build_record(release, client.repository, files)
                self.node.put_record(work, record)
                lock.renew()
            except FleetError:
                raise
            except Exception as exc:  # pylint: disable=broad-except  # a StageError, never a traceback
                raise StageError(f"copying the release to the node failed: {exc}")
            self.node.publish(work, release.manifest_digest, files, verified)
        if self.cache_keep > 0:
            self.cache.prune(self.cache_keep)
        return StagedRelease(record, sum(blob.downloaded for blob in cached), bytes_transferred=self.stats.sent_bytes)
