# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller delivery: ControllerDelivery staging through a real NodeStore from a fake controller cache.

The node is a real local POSIX shell, the system /bin/sh and again busybox sh
with nothing but busybox applets on PATH (the node of test_node_store.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _store
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    FleetError,
    StageError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._host_store import HostStore
from ansible_collections.kubesolo.fleet.plugins.module_utils._staging import StagedRelease
from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _node_store
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._blob_cache import CachedBlob
from ansible_collections.kubesolo.fleet.plugins.plugin_utils._controller_delivery import ControllerDelivery
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    FakeBlobClient,
    make_release,
    sha256_digest,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.plugin_utils.node_fakes import (
    FOREIGN_DESTS,
    FOREIGN_IDS,
    INITRAMFS_1,
    INITRAMFS_2,
    KERNEL_1,
    KERNEL_2,
    REPOSITORY,
    TRANSFER_METHODS,
    assert_holds,
    assert_space_refused,
    expected_files,
    leftovers,
    node_with_tools,
    read,
    release_dir_of,
    sha256_hex,
    store_of,
    transfer_of,
)


class Client:
    """What ControllerDelivery needs of the registry client itself: its repository (for the record)."""

    repository = REPOSITORY


class Cache:
    """The controller cache as ControllerDelivery uses it: remember, fetch_all, prune.

    ``fetch_all`` returns a CachedBlob per layer, a local file and the sha256 the cache recorded
    for it; the file of a ``corrupt`` digest holds other bytes of the same size (altered after
    it was cached). A blob counts as downloaded the first time this cache fetches it. ``calls``
    lists every call: ('remember', manifest digest, blob digests), ('fetch_all', client, blob
    digests), ('prune', keep).
    """

    def __init__(self, directory, blobs, corrupt=()):
        self.directory = directory
        self.blobs = dict((sha256_digest(data), data) for data in blobs)
        self.corrupt = set(corrupt)
        self.fetched = []
        self.calls = []
        os.makedirs(directory, exist_ok=True)

    def remember(self, manifest_digest, layers):
        self.calls.append(("remember", manifest_digest, [layer["digest"] for layer in layers]))

    def fetch_all(self, client, layers):
        self.calls.append(("fetch_all", client, [layer["digest"] for layer in layers]))
        return [self.fetch(layer) for layer in layers]

    def fetch(self, layer):
        downloaded = 0 if layer["digest"] in self.fetched else layer["size"]
        self.fetched.append(layer["digest"])
        data = self.blobs[layer["digest"]]
        path = os.path.join(self.directory, layer["digest"].replace(":", "-"))
        on_disk = data
        if layer["digest"] in self.corrupt:  # same size, other bytes: altered after it was cached
            on_disk = bytes([data[0] ^ 0xFF]) + data[1:]
        with open(path, "wb") as handle:
            handle.write(on_disk)
        return CachedBlob(path, sha256_hex(data), downloaded)

    def prune(self, keep):
        self.calls.append(("prune", keep))
        return []

    def pruned(self):
        return [call[1] for call in self.calls if call[0] == "prune"]


@pytest.fixture(params=TRANSFER_METHODS, autouse=True)
def method(request, monkeypatch):
    """Every test runs with both transfer methods (delivery_of() builds the one of the test)."""
    monkeypatch.setattr(Method, "name", request.param)
    return request.param


class Method:
    """The transfer method of the running test (set by the ``method`` fixture)."""

    name = "shell"


def delivery_of(node, dest, cache, cache_keep=0, shell=None, put=None):
    node_store = _node_store.NodeStore(shell or node.run, dest)
    transfer = transfer_of(Method.name, node_store, put or node.put)
    return ControllerDelivery(node_store, cache, transfer, cache_keep=cache_keep)


def stage(node, dest, tmp_path, kernel, initramfs, version, corrupt=()):
    """current_release() then stage(), as _staging.stage_release does; returns (release, staged, cache)."""
    release = make_release(kernel, initramfs, version)
    cache = Cache(str(tmp_path / "controller-cache"), [kernel, initramfs], corrupt)
    delivery = delivery_of(node, dest, cache)
    delivery.current_release()
    staged = delivery.stage(Client(), release, release.staged_layers())
    assert isinstance(staged, StagedRelease)
    return release, staged, cache


def stage_first(node, dest, tmp_path):
    return stage(node, dest, tmp_path, KERNEL_1, INITRAMFS_1, "v0.3.0")


# -- Staging ---------------------------------------------------------------


def test_first_stage_publishes_the_release_behind_a_symlink(node, dest, tmp_path):
    release, staged, cache = stage_first(node, dest, tmp_path)
    assert_holds(dest, release, staged.record, KERNEL_1, INITRAMFS_1)
    assert staged.bytes_transferred == len(KERNEL_1) + len(INITRAMFS_1)
    assert staged.bytes_downloaded == len(KERNEL_1) + len(INITRAMFS_1)
    assert cache.fetched == [sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)]
    release_dir = os.path.join(store_of(dest), release_dir_of(release))
    assert sorted(os.listdir(release_dir)) == ["kubesolo-os.gz", "release.json", "vmlinuz"]
    assert stat.S_IMODE(os.stat(store_of(dest)).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(release_dir).st_mode) == 0o755
    for name in ("vmlinuz", "kubesolo-os.gz", "release.json"):
        assert stat.S_IMODE(os.stat(os.path.join(release_dir, name)).st_mode) == 0o644
    if Method.name == "put_file":
        assert [os.path.basename(path) for path in node.puts] == ["vmlinuz.part", "kubesolo-os.gz.part"]
    else:
        assert node.puts == []
        assert sum(script.startswith("part=") for script in node.scripts) == 2  # one chunk each


def test_the_record_is_the_one_host_delivery_writes(node, dest, tmp_path):
    release, staged, _cache = stage_first(node, dest, tmp_path)
    record = staged.record
    expected = _store.build_record(release, REPOSITORY, expected_files(KERNEL_1, INITRAMFS_1))
    staged_at = record.pop("staged_at")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", staged_at)
    expected.pop("staged_at")
    assert record == expected
    assert record["manifest_digest"] == release.manifest_digest
    assert record["files"]["vmlinuz"]["sha256"] == sha256_hex(KERNEL_1)
    assert record["files"]["kubesolo-os.gz"]["size"] == len(INITRAMFS_1)
    on_node = json.loads(read(os.path.join(dest, "release.json")))
    assert on_node.pop("staged_at") == staged_at
    assert on_node == expected
    # Host delivery reads the same layout and record, rehashing every file.
    assert HostStore(dest).current_release(rehash=True) == dict(on_node, staged_at=staged_at)


def test_current_release_is_the_node_stores(node, dest, tmp_path):
    _release, staged, cache = stage_first(node, dest, tmp_path)
    delivery = delivery_of(node, dest, cache)
    assert delivery.delivery == "controller"
    assert delivery.current_release() == staged.record
    assert delivery.current_release(rehash=True) == staged.record
    assert "for a in sha256; do" in node.scripts[-1]
    assert delivery.default_architecture() == os.uname().machine
    assert node.scripts[-1] == "uname -m"


def test_staging_a_second_release_swaps_the_link_and_removes_the_first(node, dest, tmp_path):
    first = stage_first(node, dest, tmp_path)[0]
    second, staged, _cache = stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, "v0.4.0")
    assert release_dir_of(first) != release_dir_of(second)
    assert_holds(dest, second, staged.record, KERNEL_2, INITRAMFS_2)
    assert staged.bytes_transferred == len(KERNEL_2) + len(INITRAMFS_2)
    assert node.store(dest).current_release() == staged.record


def test_controller_delivery_takes_over_from_host_delivery(node, dest, tmp_path):
    first = make_release(KERNEL_1, INITRAMFS_1)
    host_record = HostStore(dest).stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), first, first.staged_layers()).record
    assert node.store(dest).current_release() == host_record
    second, staged, _cache = stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, "v0.4.0")
    # Both deliveries take the same lock, and a released lock leaves nothing in the store.
    assert_holds(dest, second, staged.record, KERNEL_2, INITRAMFS_2)


def test_restaging_a_damaged_release_repairs_it(node, dest, tmp_path):
    release = stage_first(node, dest, tmp_path)[0]
    with open(os.path.join(dest, "vmlinuz"), "ab") as handle:
        handle.write(b"garbage")
    assert node.store(dest).current_release() is None
    again, staged, _cache = stage_first(node, dest, tmp_path)
    assert again.manifest_digest == release.manifest_digest
    assert_holds(dest, release, staged.record, KERNEL_1, INITRAMFS_1)
    assert node.store(dest).current_release() == staged.record


@pytest.mark.parametrize("corrupt_file, data", [("vmlinuz", KERNEL_2), ("kubesolo-os.gz", INITRAMFS_2)])
def test_a_corrupted_cache_file_is_refused_and_the_previous_release_kept(node, dest, tmp_path, corrupt_file, data):
    first, first_staged, _cache = stage_first(node, dest, tmp_path)
    with pytest.raises(FleetError) as raised:
        stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, "v0.4.0", corrupt=[sha256_digest(data)])
    altered = bytes([data[0] ^ 0xFF]) + data[1:]
    message = str(raised.value)
    if Method.name == "put_file":
        assert message.startswith(f"publishing the release at {dest} failed on the node (exit 3): ")
        assert message.endswith(
            f"{corrupt_file} arrived with sha256 {sha256_hex(altered)}, expected {sha256_hex(data)}; "
            "the previous release is kept"
        )
        assert raised.value.code == "stage_failed"
    else:
        # The stream's own hash of what it sent is not the manifest's: the file is removed.
        assert message == (
            f"the controller cache's copy of {sha256_digest(data)} has sha256 {sha256_hex(altered)}, "
            "not the manifest's digest; nothing was published and the previous release is kept"
        )
        assert raised.value.code == "digest_mismatch"
        work = os.path.join(store_of(dest), "partial-" + release_dir_of(make_release(KERNEL_2, INITRAMFS_2, "v0.4.0")))
        assert corrupt_file not in os.listdir(work) and corrupt_file + ".part" not in os.listdir(work)
    assert_holds(dest, first, first_staged.record, KERNEL_1, INITRAMFS_1)
    assert node.store(dest).current_release() == first_staged.record


def test_a_corrupted_cache_file_on_a_first_stage_publishes_nothing(node, dest, tmp_path):
    with pytest.raises(FleetError, match="vmlinuz arrived with sha256|cache's copy of"):
        stage(node, dest, tmp_path, KERNEL_1, INITRAMFS_1, "v0.3.0", corrupt=[sha256_digest(KERNEL_1)])
    assert not os.path.lexists(dest)
    # At most the work directory of the release, without the file that was wrong.
    assert [entry for entry in os.listdir(store_of(dest)) if not entry.startswith("partial-")] == []
    for entry in os.listdir(store_of(dest)):
        assert not {"vmlinuz", "vmlinuz.part"} & set(os.listdir(os.path.join(store_of(dest), entry)))


@pytest.mark.parametrize("make_foreign, expected", FOREIGN_DESTS, ids=FOREIGN_IDS)
def test_a_dest_not_made_by_the_collection_is_refused_before_the_cache_is_used(
    node, dest, tmp_path, make_foreign, expected
):
    user_file = make_foreign(dest)
    cache = Cache(str(tmp_path / "controller-cache"), [KERNEL_1, INITRAMFS_1])
    with pytest.raises(StageError) as raised:
        delivery_of(node, dest, cache, cache_keep=3).current_release()
    assert str(raised.value) == expected.format(dest=dest)
    assert cache.calls == []
    assert node.puts == []
    assert read(user_file) == b"the user kernel"
    assert not os.path.lexists(store_of(dest))


# -- The cache ---------------------------------------------------------------


def test_the_release_is_remembered_fetched_and_the_cache_pruned_after_publishing(node, dest, tmp_path):
    release = make_release(KERNEL_1, INITRAMFS_1)
    cache = Cache(str(tmp_path / "controller-cache"), [KERNEL_1, INITRAMFS_1])
    events = []

    def shell(script, data=None):
        events.append(("script", script.split("\n", 1)[0], len(cache.calls)))
        return node.run(script, data)

    client = Client()
    delivery = delivery_of(node, dest, cache, cache_keep=2, shell=shell)
    staged = delivery.stage(client, release, release.staged_layers())
    digests = [sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)]
    assert cache.calls == [("remember", release.manifest_digest, digests), ("fetch_all", client, digests), ("prune", 2)]
    assert cache.calls[0][2] == [layer["digest"] for layer in release.layers]
    # Remembered before the node is prepared, fetched after; pruned once the release is published
    # and the lock released.
    (prepare,) = [event for event in events if event[1].startswith("set -e")]
    (publish,) = [event for event in events if event[1].startswith("work=") and "; store=" in event[1]]
    assert prepare[2] == 1 and publish[2] == 2
    assert events.index(prepare) > 0 and events[0][1].startswith("store=")  # the lock comes first
    assert events[-1][2] == 2 and "lock" in events[-1][1]
    assert_holds(dest, release, staged.record, KERNEL_1, INITRAMFS_1)


def test_cache_keep_zero_never_prunes(node, dest, tmp_path):
    _release, _staged, cache = stage_first(node, dest, tmp_path)
    assert cache.pruned() == []
    assert [call[0] for call in cache.calls] == ["remember", "fetch_all"]


def test_a_failed_stage_prunes_nothing(node, dest, tmp_path):
    release = make_release(KERNEL_1, INITRAMFS_1)
    cache = Cache(str(tmp_path / "controller-cache"), [KERNEL_1, INITRAMFS_1], corrupt=[sha256_digest(KERNEL_1)])
    with pytest.raises(FleetError, match="vmlinuz arrived with sha256|cache's copy of"):
        delivery_of(node, dest, cache, cache_keep=3).stage(Client(), release, release.staged_layers())
    assert [call[0] for call in cache.calls] == ["remember", "fetch_all"]


def test_bytes_downloaded_counts_only_what_the_cache_downloaded(node, dest, tmp_path):
    release = make_release(KERNEL_1, INITRAMFS_1)
    cache = Cache(str(tmp_path / "controller-cache"), [KERNEL_1, INITRAMFS_1])
    cache.fetch(release.staged_layers()[0].layer)  # the kernel is cached already
    staged = delivery_of(node, dest, cache).stage(Client(), release, release.staged_layers())
    assert staged.bytes_downloaded == len(INITRAMFS_1)
    assert staged.bytes_transferred == len(KERNEL_1) + len(INITRAMFS_1)
    assert_holds(dest, release, staged.record, KERNEL_1, INITRAMFS_1)


# -- Failures while staging --------------------------------------------------


def test_not_enough_space_on_the_node_is_refused_before_fetching_or_copying(node, dest, tmp_path, monkeypatch):
    first, first_staged, _cache = stage_first(node, dest, tmp_path)
    monkeypatch.setattr(_store, "SPACE_MARGIN", 10.0**12)  # asks for far more than any disk holds
    release = make_release(KERNEL_2, INITRAMFS_2, "v0.4.0")
    cache = Cache(str(tmp_path / "controller-cache"), [KERNEL_2, INITRAMFS_2])
    node.puts = []
    with pytest.raises(StageError) as raised:
        delivery_of(node, dest, cache, cache_keep=3).stage(Client(), release, release.staged_layers())
    total = len(KERNEL_2) + len(INITRAMFS_2)
    assert_space_refused(raised.value, dest, total, margin=10.0**12)
    assert raised.value.code == "stage_failed"
    assert cache.fetched == []
    assert cache.pruned() == []
    assert node.puts == []
    assert_holds(dest, first, first_staged.record, KERNEL_1, INITRAMFS_1)


def test_a_node_whose_df_fails_is_not_staged_without_a_space_check(dest, tmp_path):
    # busybox df fails without /proc/mounts, for one; the free space must then count as unknown,
    # not as enough.
    node = node_with_tools(tmp_path, df='echo "df: /proc/mounts: No such file or directory" >&2\nexit 1\n')
    assert node.run("df -Pk /")[0] == 1
    cache = Cache(str(tmp_path / "controller-cache"), [KERNEL_1, INITRAMFS_1])
    release = make_release(KERNEL_1, INITRAMFS_1)
    with pytest.raises(FleetError):
        delivery_of(node, dest, cache).stage(Client(), release, release.staged_layers())
    assert cache.fetched == []
    assert node.puts == []
    assert not os.path.lexists(dest)
    assert leftovers(store_of(dest)) == []


def test_a_failing_copy_keeps_what_arrived_and_the_previous_release(node, dest, tmp_path):
    first, first_staged, _cache = stage_first(node, dest, tmp_path)
    copied = []

    def put(local_path, remote_path):
        if copied:
            raise OSError(28, "No space left on device")
        shutil.copyfile(local_path, remote_path)
        copied.append(remote_path)

    def shell(script, data=None):
        if script.startswith("part=") and "kubesolo-os.gz" in script:
            return 1, "", "tee: write error: No space left on device\n"
        return node.run(script, data)

    release = make_release(KERNEL_2, INITRAMFS_2, "v0.4.0")
    cache = Cache(str(tmp_path / "controller-cache"), [KERNEL_2, INITRAMFS_2])
    delivery = delivery_of(node, dest, cache, cache_keep=3, shell=shell, put=put)
    with pytest.raises(StageError) as raised:
        delivery.stage(Client(), release, release.staged_layers())
    work = os.path.join(store_of(dest), "partial-" + release_dir_of(release))
    if Method.name == "put_file":
        assert str(raised.value) == "copying the release to the node failed: [Errno 28] No space left on device"
    else:
        assert str(raised.value) == (
            f"writing {work}/kubesolo-os.gz.part failed on the node (exit 1): tee: write error: No space left on device"
        )
    # The kernel arrived whole: the next run takes it from there.
    assert os.listdir(work) == ["vmlinuz"]
    assert read(os.path.join(work, "vmlinuz")) == KERNEL_2
    assert cache.pruned() == []
    assert_holds(dest, first, first_staged.record, KERNEL_1, INITRAMFS_1)


def test_a_failing_fetch_sends_nothing(node, dest, tmp_path):
    first, first_staged, _cache = stage_first(node, dest, tmp_path)
    mismatch = DigestMismatchError("blob has wrong content")
    cache = Cache(str(tmp_path / "controller-cache"), [KERNEL_2, INITRAMFS_2])

    def fetch_all(_client, layers):
        cache.fetch(layers[0])
        raise mismatch  # the initramfs

    cache.fetch_all = fetch_all
    node.puts = []
    release = make_release(KERNEL_2, INITRAMFS_2, "v0.4.0")
    with pytest.raises(DigestMismatchError) as raised:
        delivery_of(node, dest, cache, cache_keep=3).stage(Client(), release, release.staged_layers())
    assert raised.value is mismatch
    # Every layer is fetched before the first is copied: nothing reached the node.
    assert node.puts == []
    assert cache.pruned() == []
    assert sorted(os.listdir(store_of(dest))) == ["partial-" + release_dir_of(release), release_dir_of(first)]
    assert os.listdir(os.path.join(store_of(dest), "partial-" + release_dir_of(release))) == []
    assert_holds(dest, first, first_staged.record, KERNEL_1, INITRAMFS_1)


def test_a_staging_directory_the_node_did_not_create_is_an_error(dest, tmp_path):
    cache = Cache(str(tmp_path / "controller-cache"), [KERNEL_1, INITRAMFS_1])
    cache.fetch_all = lambda *_args: pytest.fail("fetch called")

    def shell(script, data=None):
        if script.startswith("store="):  # the lock scripts: our keeper holds it
            return 0, f"euid={os.geteuid()}\nstore={os.geteuid()} 41ed\nheld=1 1\n", ""
        return 0, "work=/somewhere/else\n", ""

    release = make_release(KERNEL_1, INITRAMFS_1)
    delivery = delivery_of(None, dest, cache, shell=shell, put=lambda *_args: pytest.fail("put called"))
    with pytest.raises(_node_store.NodeCommandError) as raised:
        delivery.stage(Client(), release, release.staged_layers())
    work = os.path.join(store_of(dest), "partial-" + release_dir_of(release))
    assert str(raised.value) == f"the node did not create the staging directory {work}"
    assert raised.value.code == "node_command_failed"
