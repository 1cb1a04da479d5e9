# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic staging on a real temporary file system, with a fake blob client.

A failed run keeps what it downloaded in ``partial-<digest>/`` of the store for the next run to
resume; what must never happen is a partial file at a final path, or ``dest`` not holding the
previous complete release.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _about, _host_store, _node_lock, _release, _store
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    LayerMissingError,
    RegistryConnectionError,
    StageError,
    UnsafePathError,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    CORRUPT_RECORDS,
    KERNEL,
    FakeBlobClient,
    FakeManifestClient,
    RendezvousBlobClient,
    descriptor,
    edited_record,
    fetched,
    image_manifest,
    make_release,
    release_annotations,
    set_record,
    sha256_digest,
)

KERNEL_1 = b"kernel v0.3.0\n" * 300
INITRAMFS_1 = b"initramfs v0.3.0\n" * 500
KERNEL_2 = b"kernel v0.4.0\n" * 310
INITRAMFS_2 = b"initramfs v0.4.0\n" * 520
SECOND_BLOBS = {"vmlinuz": KERNEL_2, "kubesolo-os.gz": INITRAMFS_2}
STORE_NAME = ".staged.kubesolo-fleet"
LOCK = ".lock"


def stage(client, release, dest, lock_timeout=300):
    """Host delivery's stage, as _staging.stage_release calls it; returns (record, bytes downloaded)."""
    staged = _host_store.HostStore(dest, lock_timeout).stage(client, release, release.staged_layers())
    return staged.record, staged.bytes_downloaded


def current_release(dest, rehash=False):
    return _host_store.HostStore(dest).current_release(rehash)


@pytest.fixture
def dest(tmp_path):
    return str(tmp_path / "staged")


def store_of(dest):
    return os.path.join(os.path.dirname(dest), STORE_NAME)


def release_dir_of(release):
    return "sha256-" + release.manifest_digest.split(":", 1)[1]


def partial_of(release):
    """The store entry where the layers of ``release`` are downloaded."""
    return "partial-" + release_dir_of(release)


def second_release():
    return make_release(KERNEL_2, INITRAMFS_2, "v0.4.0")


def partial_files(dest, release):
    """{name: bytes} of the files in the partial download directory of ``release``."""
    partial = os.path.join(store_of(dest), partial_of(release))
    return dict((name, read(os.path.join(partial, name))) for name in sorted(os.listdir(partial)))


def assert_resumable(dest, release, blobs, expected):
    """The partial download of ``release`` holds ``expected`` ({name: bytes}) for the failed layer;
    every other layer of ``blobs`` ({name: bytes}) is complete, a prefix in ``<name>.part``, or absent.

    Layers download at the same time, so the failure of one cancels the others at a moment that
    depends on scheduling: whatever they kept must be usable by the next run.
    """
    found = partial_files(dest, release)
    failed = set(name.replace(".part", "") for name in expected)
    assert dict((name, data) for name, data in found.items() if name.replace(".part", "") in failed) == expected
    for name, data in blobs.items():
        if name not in failed:
            assert found.get(name, data) == data
            assert data.startswith(found.get(name + ".part", b""))


def stage_release(dest, kernel, initramfs, version, failures=None):
    """Stage a release of ``kernel`` and ``initramfs``; returns (release, record, bytes, client)."""
    release = make_release(kernel, initramfs, version)
    client = FakeBlobClient([kernel, initramfs], failures)
    record, downloaded = stage(client, release, dest)
    return release, record, downloaded, client


def stage_first(dest):
    return stage_release(dest, KERNEL_1, INITRAMFS_1, "v0.3.0")


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def leftovers(store):
    """Work files of an interrupted or failed stage found in the store.

    Temporary, half-published and trash entries anywhere; ``.part`` files anywhere but in a
    ``partial-*`` directory, where they wait to be resumed.
    """
    found = []
    for root, dirs, files in os.walk(store):
        top = os.path.relpath(root, store).split(os.sep)[0]
        for name in dirs + files:
            if (
                name.startswith(("tmp-", "link-", "trash-"))
                or name.startswith(".release.json")
                or (name.endswith(".part") and not top.startswith("partial-"))
            ):
                found.append(os.path.relpath(os.path.join(root, name), store))
    return sorted(found)


def assert_holds_first_release(dest, first, record, partial=None):
    """``dest`` holds the first release, intact; the store holds it and maybe ``partial``'s download."""
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(first))
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_1
    assert read(os.path.join(dest, "kubesolo-os.gz")) == INITRAMFS_1
    assert current_release(dest, rehash=True) == record
    expected = [release_dir_of(first)] + ([partial_of(partial)] if partial is not None else [])
    assert sorted(os.listdir(store_of(dest))) == sorted(expected)
    assert sorted(os.listdir(os.path.join(store_of(dest), release_dir_of(first)))) == [
        "kubesolo-os.gz",
        "release.json",
        "vmlinuz",
    ]
    assert leftovers(store_of(dest)) == []


# -- Names -----------------------------------------------------------------


# -- Staging ---------------------------------------------------------------


def test_first_stage_publishes_the_release_behind_a_symlink(dest):
    release, record, downloaded, client = stage_first(dest)
    release_dir = os.path.join(store_of(dest), release_dir_of(release))
    assert os.path.islink(dest)
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(release))
    assert sorted(os.listdir(release_dir)) == ["kubesolo-os.gz", "release.json", "vmlinuz"]
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_1
    assert read(os.path.join(dest, "kubesolo-os.gz")) == INITRAMFS_1
    assert downloaded == len(KERNEL_1) + len(INITRAMFS_1)
    assert sorted(client.downloaded) == sorted([sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)])
    assert stat.S_IMODE(os.stat(release_dir).st_mode) == 0o755
    for name in ("vmlinuz", "kubesolo-os.gz", "release.json"):
        assert stat.S_IMODE(os.stat(os.path.join(release_dir, name)).st_mode) == 0o644
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(release)]
    assert leftovers(store_of(dest)) == []


@pytest.fixture
def strict_umask():
    previous = os.umask(0o077)
    yield
    os.umask(previous)


def test_staged_files_are_world_readable_under_a_strict_umask(dest, strict_umask):
    release = stage_first(dest)[0]
    release_dir = os.path.join(store_of(dest), release_dir_of(release))
    assert stat.S_IMODE(os.stat(release_dir).st_mode) == 0o755
    for name in ("vmlinuz", "kubesolo-os.gz", "release.json"):
        assert stat.S_IMODE(os.stat(os.path.join(release_dir, name)).st_mode) == 0o644


def test_the_store_is_traversable_under_a_strict_umask(dest, strict_umask):
    # Without it the world-readable release directory and files behind dest cannot be reached.
    stage_first(dest)
    assert stat.S_IMODE(os.stat(store_of(dest)).st_mode) == 0o755


def test_first_stage_writes_the_release_record(dest):
    release, record, _downloaded, _client = stage_first(dest)
    assert json.loads(read(os.path.join(dest, "release.json"))) == record
    staged_at = record.pop("staged_at")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", staged_at)
    assert record == {
        "schema": 1,
        "staged_by": f"kubesolo.fleet {_about.COLLECTION_VERSION}",
        "repository": "ghcr.io/portainer/kubesolo-os",
        "manifest_digest": release.manifest_digest,
        "index_digest": None,
        "architecture": "amd64",
        "version": "v0.3.0",
        "metadata": release.metadata,
        "files": {
            "vmlinuz": {
                "media_type": "application/vnd.kubesolo.os.kernel.v1+octet-stream",
                "digest": sha256_digest(KERNEL_1),
                "size": len(KERNEL_1),
                "sha256": sha256_digest(KERNEL_1).split(":")[1],
            },
            "kubesolo-os.gz": {
                "media_type": "application/vnd.kubesolo.os.initramfs.v1+gzip",
                "digest": sha256_digest(INITRAMFS_1),
                "size": len(INITRAMFS_1),
                "sha256": sha256_digest(INITRAMFS_1).split(":")[1],
            },
        },
    }
    assert release.metadata["version"] == "v0.3.0"


def test_current_release_returns_the_staged_record(dest):
    _release, record, _downloaded, _client = stage_first(dest)
    assert current_release(dest) == record
    assert current_release(dest, rehash=True) == record
    assert current_release(dest + "/") == record


def test_staging_a_second_release_swaps_the_link_and_removes_the_first(dest):
    first = stage_first(dest)[0]
    second, record, downloaded, _client = stage_release(dest, KERNEL_2, INITRAMFS_2, "v0.4.0")
    assert release_dir_of(first) != release_dir_of(second)
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(second))
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_2
    assert read(os.path.join(dest, "kubesolo-os.gz")) == INITRAMFS_2
    assert downloaded == len(KERNEL_2) + len(INITRAMFS_2)
    assert current_release(dest)["version"] == "v0.4.0"
    assert current_release(dest) == record
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(second)]


@pytest.mark.parametrize("failing", [INITRAMFS_2, KERNEL_2], ids=["initramfs", "kernel"])
def test_a_digest_mismatch_keeps_the_first_release_and_removes_the_part(dest, failing):
    first, record, _downloaded, _client = stage_first(dest)
    mismatch = DigestMismatchError("blob has wrong content")
    with pytest.raises(DigestMismatchError) as raised:
        stage_release(dest, KERNEL_2, INITRAMFS_2, "v0.4.0", failures={sha256_digest(failing): mismatch})
    assert raised.value is mismatch
    assert_holds_first_release(dest, first, record, partial=second_release())
    # The wrong bytes are gone; the other layer is kept for the next run if it was complete.
    assert_resumable(dest, second_release(), SECOND_BLOBS, {})


def test_a_network_failure_keeps_the_first_release_and_the_partial_download(dest):
    first, record, _downloaded, _client = stage_first(dest)
    broken = RegistryConnectionError("download of blob broke off")
    with pytest.raises(RegistryConnectionError) as raised:
        stage_release(dest, KERNEL_2, INITRAMFS_2, "v0.4.0", failures={sha256_digest(INITRAMFS_2): broken})
    assert raised.value is broken
    assert_holds_first_release(dest, first, record, partial=second_release())
    assert_resumable(
        dest, second_release(), SECOND_BLOBS, {"kubesolo-os.gz.part": INITRAMFS_2[: len(INITRAMFS_2) // 2]}
    )


def test_running_out_of_space_keeps_the_first_release(dest):
    first, record, _downloaded, _client = stage_first(dest)
    full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(StageError) as raised:
        stage_release(dest, KERNEL_2, INITRAMFS_2, "v0.4.0", failures={sha256_digest(INITRAMFS_2): full})
    assert str(raised.value) == (f"no space left on the device of {dest} while staging; the previous release is kept")
    assert raised.value.code == "stage_failed"
    # What was written is kept for the next run to resume (not at a final path).
    assert_holds_first_release(dest, first, record, partial=second_release())
    assert_resumable(
        dest, second_release(), SECOND_BLOBS, {"kubesolo-os.gz.part": INITRAMFS_2[: len(INITRAMFS_2) // 2]}
    )


def test_other_write_errors_name_the_cause(dest):
    first, record, _downloaded, _client = stage_first(dest)
    broken = OSError(errno.EIO, "Input/output error")
    with pytest.raises(StageError) as raised:
        stage_release(dest, KERNEL_2, INITRAMFS_2, "v0.4.0", failures={sha256_digest(KERNEL_2): broken})
    assert str(raised.value) == f"staging at {dest} failed: Input/output error"
    assert_holds_first_release(dest, first, record, partial=second_release())
    assert_resumable(dest, second_release(), SECOND_BLOBS, {"vmlinuz.part": KERNEL_2[: len(KERNEL_2) // 2]})


def test_a_parent_that_is_not_a_directory_is_a_stage_error(tmp_path):
    parent = tmp_path / "not-a-directory"
    parent.write_bytes(b"")
    dest = str(parent / "staged")
    for attempt in (
        lambda: current_release(dest),
        lambda: stage(FakeBlobClient([]), make_release(KERNEL_1, INITRAMFS_1), dest),
    ):
        with pytest.raises(StageError) as raised:
            attempt()
        assert str(raised.value) == f"{parent} is not a directory; cannot stage below it"
        assert raised.value.code == "stage_failed"


def test_a_failed_first_stage_publishes_nothing(dest):
    with pytest.raises(DigestMismatchError):
        stage_release(
            dest, KERNEL_1, INITRAMFS_1, "v0.3.0", failures={sha256_digest(INITRAMFS_1): DigestMismatchError("wrong")}
        )
    release = make_release(KERNEL_1, INITRAMFS_1, "v0.3.0")
    assert not os.path.lexists(dest)
    assert current_release(dest) is None
    # No release directory: only the lock and the download kept for the next run.
    assert sorted(os.listdir(store_of(dest))) == [partial_of(release)]
    assert_resumable(dest, release, {"vmlinuz": KERNEL_1, "kubesolo-os.gz": INITRAMFS_1}, {})
    assert leftovers(store_of(dest)) == []


def test_a_failed_swap_leaves_no_orphaned_release(dest, monkeypatch):
    first, record, _downloaded, _client = stage_first(dest)

    def no_space(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_host_store.os, "symlink", no_space)
    with pytest.raises(StageError, match="no space left on the device"):
        stage_release(dest, KERNEL_2, INITRAMFS_2, "v0.4.0")
    monkeypatch.undo()
    assert_holds_first_release(dest, first, record)


def test_restaging_a_damaged_release_repairs_it(dest):
    release, record, _downloaded, _client = stage_first(dest)
    with open(os.path.join(dest, "vmlinuz"), "ab") as handle:
        handle.write(b"garbage")
    assert current_release(dest) is None
    again, _record, _downloaded, _client = stage_release(dest, KERNEL_1, INITRAMFS_1, "v0.3.0")
    assert again.manifest_digest == release.manifest_digest
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_1
    assert current_release(dest, rehash=True)["manifest_digest"] == record["manifest_digest"]
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(release)]
    assert leftovers(store_of(dest)) == []


def test_stage_replaces_leftovers_of_an_interrupted_run(dest):
    release = make_release(KERNEL_1, INITRAMFS_1)
    stale_dir = os.path.join(store_of(dest), release_dir_of(release))
    os.makedirs(stale_dir)
    with open(os.path.join(stale_dir, "vmlinuz.part"), "wb") as handle:
        handle.write(b"half a kernel")
    os.symlink("nowhere", os.path.join(store_of(dest), f"link-{os.getpid()}"))
    stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), release, dest)
    assert sorted(os.listdir(stale_dir)) == ["kubesolo-os.gz", "release.json", "vmlinuz"]
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_1
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(release)]


def test_stage_accepts_a_trailing_slash(dest):
    release = make_release(KERNEL_1, INITRAMFS_1)
    stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), release, dest + "/")
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(release))


def test_stage_refuses_a_release_without_initramfs_before_writing(dest):
    manifest = fetched(image_manifest([descriptor(KERNEL, KERNEL_1)], release_annotations()))
    release = _release.resolve(FakeManifestClient({"stable": manifest}), "amd64", tag="stable")
    client = FakeBlobClient([KERNEL_1])
    with pytest.raises(LayerMissingError):
        stage(client, release, dest)
    assert client.downloaded == []
    assert not os.path.lexists(store_of(dest))


# -- Layers in parallel ----------------------------------------------------


def test_the_layers_download_at_the_same_time(dest):
    client = RendezvousBlobClient([KERNEL_1, INITRAMFS_1])
    record, downloaded = stage(client, make_release(KERNEL_1, INITRAMFS_1), dest)
    assert downloaded == len(KERNEL_1) + len(INITRAMFS_1)
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_1
    assert read(os.path.join(dest, "kubesolo-os.gz")) == INITRAMFS_1
    assert current_release(dest, rehash=True) == record


LARGE_INITRAMFS = b"large initramfs\n" * (512 * 1024)  # 8 MiB


def test_a_failing_layer_cancels_the_other_which_keeps_what_it_wrote(dest):
    """The kernel fails while the initramfs trickles in: the initramfs stops at its next write
    (long before its end), its part is kept for the next run, and the kernel's error is raised."""
    broken = RegistryConnectionError("download of blob broke off")
    trickling = threading.Event()

    class Client(FakeBlobClient):
        def download_blob(self, digest, size, fileobj):
            if digest == sha256_digest(KERNEL_1):
                assert trickling.wait(10)
                raise broken
            for offset in range(0, size, 4096):  # about 2 s for the whole blob
                fileobj.write(self.blobs[digest][offset : offset + 4096])
                trickling.set()
                time.sleep(0.001)
            return super().download_blob(digest, size, fileobj)

    release = make_release(KERNEL_1, LARGE_INITRAMFS)
    with pytest.raises(RegistryConnectionError) as raised:
        stage(Client([KERNEL_1, LARGE_INITRAMFS]), release, dest)
    assert raised.value is broken
    kept = partial_files(dest, release)
    assert kept["vmlinuz.part"] == b""
    assert 0 < len(kept["kubesolo-os.gz.part"]) < len(LARGE_INITRAMFS) // 2
    assert LARGE_INITRAMFS.startswith(kept["kubesolo-os.gz.part"])
    assert not os.path.lexists(dest)


def test_when_layers_fail_on_their_own_the_first_layer_s_error_is_raised(dest):
    """The initramfs fails first, the kernel after it: the kernel's error is the one raised."""
    kernel_error = RegistryConnectionError("kernel: connection reset")
    initramfs_error = DigestMismatchError("initramfs: wrong content")
    initramfs_failed = threading.Event()

    class Client(FakeBlobClient):
        def download_blob(self, digest, size, fileobj):
            if digest == sha256_digest(KERNEL_1):
                assert initramfs_failed.wait(10)
                raise kernel_error
            initramfs_failed.set()
            raise initramfs_error

    with pytest.raises(RegistryConnectionError) as raised:
        stage(Client([KERNEL_1, INITRAMFS_1]), make_release(KERNEL_1, INITRAMFS_1), dest)
    assert raised.value is kernel_error


# -- Resuming across runs --------------------------------------------------


def leave_partial(dest, release, files):
    """The store as a run of ``release`` left it when it died: ``files`` ({name: bytes}) in its partial directory."""
    partial = os.path.join(store_of(dest), partial_of(release))
    os.makedirs(partial, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(partial, name), "wb") as handle:
            handle.write(data)


def offsets_of(client, data):
    """The offsets ``client`` was asked to resume the blob ``data`` from, in order."""
    return [offset for digest, offset in client.offsets if digest == sha256_digest(data)]


def test_an_interrupted_layer_is_resumed_by_the_next_run(dest):
    first, first_record, _downloaded, _client = stage_first(dest)
    second = second_release()
    half = len(KERNEL_2) // 2
    leave_partial(dest, second, {"vmlinuz.part": KERNEL_2[:half]})
    assert_holds_first_release(dest, first, first_record, partial=second)
    client = FakeBlobClient([KERNEL_2, INITRAMFS_2])
    record, downloaded = stage(client, second, dest)
    assert (offsets_of(client, KERNEL_2), offsets_of(client, INITRAMFS_2)) == ([half], [0])
    assert downloaded == len(KERNEL_2) - half + len(INITRAMFS_2)
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_2
    assert read(os.path.join(dest, "kubesolo-os.gz")) == INITRAMFS_2
    assert current_release(dest, rehash=True) == record
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(second)]
    assert leftovers(store_of(dest)) == []


def test_a_layer_completed_by_an_interrupted_run_is_not_downloaded_again(dest):
    # The run broke off half-way through the initramfs: the kernel is complete and verified
    # in partial-<digest>/, half of the initramfs beside it. The next run fetches only the rest.
    first, first_record, _downloaded, _client = stage_first(dest)
    second = second_release()
    half = len(INITRAMFS_2) // 2
    leave_partial(dest, second, {"kubesolo-os.gz.part": INITRAMFS_2[:half], "vmlinuz": KERNEL_2})
    assert_holds_first_release(dest, first, first_record, partial=second)
    client = FakeBlobClient([KERNEL_2, INITRAMFS_2])
    record, downloaded = stage(client, second, dest)
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_2
    assert read(os.path.join(dest, "kubesolo-os.gz")) == INITRAMFS_2
    assert current_release(dest, rehash=True) == record
    assert client.offsets == [(sha256_digest(INITRAMFS_2), half)]
    assert downloaded == len(INITRAMFS_2) - half


def test_a_resumed_part_with_wrong_bytes_is_fetched_again_from_the_start(dest):
    release = make_release(KERNEL_1, INITRAMFS_1)
    leave_partial(dest, release, {"vmlinuz.part": b"X" * 100})
    client = FakeBlobClient([KERNEL_1, INITRAMFS_1])
    record, downloaded = stage(client, release, dest)
    assert (offsets_of(client, KERNEL_1), offsets_of(client, INITRAMFS_1)) == ([100, 0], [0])
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_1
    assert current_release(dest, rehash=True) == record
    assert downloaded == len(KERNEL_1) + len(INITRAMFS_1)
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(release)]


def test_a_resumed_part_is_fetched_again_only_once(dest):
    release = make_release(KERNEL_1, INITRAMFS_1)
    leave_partial(dest, release, {"vmlinuz.part": b"X" * 100})
    mismatch = DigestMismatchError("blob has wrong content")
    client = FakeBlobClient([KERNEL_1, INITRAMFS_1], failures={sha256_digest(KERNEL_1): mismatch})
    with pytest.raises(DigestMismatchError) as raised:
        stage(client, release, dest)
    assert raised.value is mismatch
    assert offsets_of(client, KERNEL_1) == [100, 0]
    assert_resumable(dest, release, {"vmlinuz": KERNEL_1, "kubesolo-os.gz": INITRAMFS_1}, {})
    assert not os.path.lexists(dest)


def publish_by_hand(dest, release):
    """Point ``dest`` at the release directory of ``release``, as a run would."""
    os.symlink(os.path.join(STORE_NAME, release_dir_of(release)), dest + ".new")
    os.replace(dest + ".new", dest)


def leave_second_unpublished(dest, tmp_path):
    """A run that renamed the second release into place and died before the link swap.

    Returns (first, first record, second, second record).
    """
    first, first_record, _downloaded, _client = stage_first(dest)
    first_dir = os.path.join(store_of(dest), release_dir_of(first))
    saved = str(tmp_path / "saved-first")
    shutil.copytree(first_dir, saved)
    second, second_record, _downloaded, _client = stage_release(dest, KERNEL_2, INITRAMFS_2, "v0.4.0")
    shutil.copytree(saved, first_dir)
    publish_by_hand(dest, first)
    assert current_release(dest, rehash=True) == first_record
    assert sorted(os.listdir(store_of(dest))) == sorted([release_dir_of(first), release_dir_of(second)])
    return first, first_record, second, second_record


def test_a_verified_release_left_unpublished_is_published_without_downloading(dest, tmp_path):
    _first, _first_record, second, second_record = leave_second_unpublished(dest, tmp_path)
    client = FakeBlobClient([KERNEL_2, INITRAMFS_2])
    record, downloaded = stage(client, second, dest)
    assert client.downloaded == []
    assert downloaded == 0
    assert record == second_record
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(second))
    assert current_release(dest, rehash=True) == second_record
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(second)]  # the first is gone
    assert leftovers(store_of(dest)) == []


def test_an_unpublished_release_with_damaged_bytes_is_downloaded_again(dest, tmp_path):
    _first, _first_record, second, _second_record = leave_second_unpublished(dest, tmp_path)
    damaged = os.path.join(store_of(dest), release_dir_of(second), "vmlinuz")
    os.chmod(damaged, 0o644)
    with open(damaged, "r+b") as handle:
        handle.write(b"K")  # same size, other bytes: only a rehash finds it
    client = FakeBlobClient([KERNEL_2, INITRAMFS_2])
    record, downloaded = stage(client, second, dest)
    assert sorted(client.downloaded) == sorted([sha256_digest(KERNEL_2), sha256_digest(INITRAMFS_2)])
    assert downloaded == len(KERNEL_2) + len(INITRAMFS_2)
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_2
    assert current_release(dest, rehash=True) == record
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(second)]
    assert leftovers(store_of(dest)) == []


# -- Leftovers of dead runs ------------------------------------------------


def test_stage_removes_what_dead_runs_left_in_the_store(dest):
    stage_first(dest)
    store = store_of(dest)
    os.makedirs(os.path.join(store, "tmp-a1b2c3"))
    with open(os.path.join(store, "tmp-a1b2c3", "vmlinuz"), "wb") as handle:
        handle.write(b"half")
    with open(os.path.join(store, "tmp-d4e5f6"), "wb") as handle:
        handle.write(b"a file")
    os.symlink("nowhere", os.path.join(store, "link-4242"))
    os.makedirs(os.path.join(store, "trash-x9y8z7", "old"))
    other_partial = os.path.join(store, "partial-sha256-" + "e" * 64)
    os.makedirs(other_partial)
    with open(os.path.join(other_partial, "vmlinuz.part"), "wb") as handle:
        handle.write(b"part of another release")
    unreferenced = os.path.join(store, "sha256-" + "f" * 64)
    os.makedirs(unreferenced)
    for name in ("vmlinuz", "kubesolo-os.gz", "release.json"):
        with open(os.path.join(unreferenced, name), "wb") as handle:
            handle.write(b"an old release")
    second, record, _downloaded, _client = stage_release(dest, KERNEL_2, INITRAMFS_2, "v0.4.0")
    assert sorted(os.listdir(store)) == [release_dir_of(second)]
    assert current_release(dest, rehash=True) == record
    assert sorted(os.listdir(os.path.dirname(dest))) == [STORE_NAME, "staged"]


# -- The store lock --------------------------------------------------------


def test_a_second_lock_fails_while_the_first_is_held_and_succeeds_after(tmp_path):
    store = str(tmp_path / "store")
    os.mkdir(store)
    with _host_store.StoreLock(store, 5):
        started = time.monotonic()
        with pytest.raises(StageError) as raised:
            with _host_store.StoreLock(store, 0.5):
                pytest.fail("two runs held the lock at once")
        waited = time.monotonic() - started
    assert str(raised.value).startswith(f"another run is staging into {store}")
    assert raised.value.code == "stage_failed"
    assert 0.5 <= waited < 5
    with _host_store.StoreLock(store, 0.5):
        pass
    assert os.listdir(store) == []  # a released lock leaves nothing behind


def test_stage_fails_while_another_run_holds_the_lock(dest):
    first, record, _downloaded, _client = stage_first(dest)
    client = FakeBlobClient([KERNEL_2, INITRAMFS_2])
    with _host_store.StoreLock(store_of(dest), 5):
        with pytest.raises(StageError, match="another run is staging"):
            stage(client, second_release(), dest, lock_timeout=0.3)
    assert client.downloaded == []
    assert_holds_first_release(dest, first, record)


def _hold_the_lock(store, ready):
    with _host_store.StoreLock(store, 5):
        ready.send("locked")
        time.sleep(60)  # until killed


def test_the_lock_of_a_killed_run_is_free_again(tmp_path):
    store = str(tmp_path / "store")
    os.mkdir(store)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    holder = context.Process(target=_hold_the_lock, args=(store, sender))
    holder.start()
    try:
        assert receiver.poll(10), "the child did not take the lock"
        assert receiver.recv() == "locked"
        with pytest.raises(StageError, match="another run is staging"):
            with _host_store.StoreLock(store, 0.3):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
    assert holder.exitcode == -signal.SIGKILL
    with _host_store.StoreLock(store, 0.5):
        pass


# -- Free space ------------------------------------------------------------


def report_free_space(monkeypatch, blocks, block_size=1):
    """os.statvfs of the stager reports ``blocks`` available blocks of ``block_size`` bytes."""
    monkeypatch.setattr(_host_store.os, "statvfs", lambda _path: SimpleNamespace(f_bavail=blocks, f_frsize=block_size))


SECOND_SIZE = len(KERNEL_2) + len(INITRAMFS_2)
SECOND_NEEDED = int(SECOND_SIZE * 1.1)


def test_too_little_space_fails_before_any_download(dest, monkeypatch):
    first, record, _downloaded, _client = stage_first(dest)
    report_free_space(monkeypatch, 3, 512)
    client = FakeBlobClient([KERNEL_2, INITRAMFS_2])
    with pytest.raises(StageError) as raised:
        stage(client, second_release(), dest)
    monkeypatch.undo()
    assert str(raised.value).startswith(f"not enough space for {dest}: 1536 bytes free, {SECOND_NEEDED} needed")
    assert "previous release is kept" in str(raised.value)
    assert raised.value.code == "stage_failed"
    assert client.downloaded == []
    assert_holds_first_release(dest, first, record, partial=second_release())
    assert partial_files(dest, second_release()) == {}


def test_the_space_check_asks_for_a_ten_percent_margin(dest, monkeypatch):
    stage_first(dest)
    report_free_space(monkeypatch, SECOND_SIZE)  # the release fits, the margin does not
    with pytest.raises(StageError, match="not enough space"):
        stage(FakeBlobClient([KERNEL_2, INITRAMFS_2]), second_release(), dest)
    report_free_space(monkeypatch, SECOND_NEEDED)
    _record, downloaded = stage(FakeBlobClient([KERNEL_2, INITRAMFS_2]), second_release(), dest)
    assert downloaded == SECOND_SIZE


def test_the_space_check_counts_only_what_is_left_to_download(dest, monkeypatch):
    stage_first(dest)
    second = second_release()
    leave_partial(dest, second, {"vmlinuz.part": KERNEL_2[: len(KERNEL_2) // 2]})
    rest = SECOND_SIZE - len(KERNEL_2) // 2
    report_free_space(monkeypatch, int(rest * 1.1))
    _record, downloaded = stage(FakeBlobClient([KERNEL_2, INITRAMFS_2]), second, dest)
    assert downloaded == rest


# -- Destinations ----------------------------------------------------------


def test_an_absent_dest_holds_nothing(dest):
    assert current_release(dest) is None


def test_an_empty_directory_dest_is_accepted_and_replaced(dest):
    os.mkdir(dest)
    assert current_release(dest) is None
    release, record, _downloaded, _client = stage_first(dest)
    assert os.path.islink(dest)
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(release))
    assert current_release(dest) == record


def _make_foreign_directory(dest):
    os.mkdir(dest)
    with open(os.path.join(dest, "vmlinuz"), "wb") as handle:
        handle.write(b"the user kernel")


def _make_foreign_file(dest):
    with open(dest, "wb") as handle:
        handle.write(b"the user kernel")


@pytest.mark.parametrize("make_foreign", [_make_foreign_directory, _make_foreign_file])
def test_a_dest_not_made_by_the_collection_is_refused(dest, make_foreign):
    make_foreign(dest)
    with pytest.raises(StageError) as raised:
        current_release(dest)
    assert str(raised.value) == (
        f"{dest} exists and is not a release staged by kubesolo.fleet; refusing to replace it "
        "(remove it or choose another dest)"
    )
    assert raised.value.code == "stage_failed"
    user_file = os.path.join(dest, "vmlinuz") if os.path.isdir(dest) else dest
    assert read(user_file) == b"the user kernel"
    assert not os.path.lexists(store_of(dest))


@pytest.mark.parametrize(
    "target",
    [
        "elsewhere",
        "/",
        STORE_NAME,
        ".other.kubesolo-fleet/sha256-" + "a" * 64,
        STORE_NAME + "/sha256-abc/deeper",
        "does-not-exist",
    ],
)
def test_a_symlink_dest_pointing_elsewhere_is_refused(dest, target):
    elsewhere = os.path.join(os.path.dirname(dest), "elsewhere")
    os.mkdir(elsewhere)
    os.symlink(target, dest)
    with pytest.raises(StageError) as raised:
        current_release(dest)
    assert str(raised.value) == (
        f"{dest} is a symbolic link to {target}, which kubesolo.fleet did not create; refusing to replace it"
    )
    assert os.readlink(dest) == target
    assert os.listdir(elsewhere) == []


# -- Integrity of a managed dest -------------------------------------------


def test_a_changed_file_size_means_nothing_is_staged(dest):
    stage_first(dest)
    with open(os.path.join(dest, "kubesolo-os.gz"), "ab") as handle:
        handle.write(b"\0")
    assert current_release(dest) is None


def test_a_missing_file_means_nothing_is_staged(dest):
    stage_first(dest)
    os.unlink(os.path.join(dest, "vmlinuz"))
    assert current_release(dest) is None


def test_a_same_size_change_is_only_found_by_rehashing(dest):
    _release, record, _downloaded, _client = stage_first(dest)
    path = os.path.join(dest, "vmlinuz")
    tampered = b"K" + KERNEL_1[1:]
    with open(path, "wb") as handle:
        handle.write(tampered)
    assert os.path.getsize(path) == len(KERNEL_1)
    assert current_release(dest) == record
    assert current_release(dest, rehash=True) is None


CORRUPT = {
    **CORRUPT_RECORDS,
    "files-not-a-dict": lambda dest: set_record(dest, edited_record(dest, files=["vmlinuz"])),
    "file-outside": lambda dest: set_record(dest, edited_record(dest, files={"../vmlinuz": {"size": 1}})),
}


@pytest.mark.parametrize("corrupt", list(CORRUPT.values()), ids=list(CORRUPT))
def test_a_missing_or_corrupt_record_means_nothing_is_staged(dest, corrupt):
    stage_first(dest)
    corrupt(dest)
    assert current_release(dest) is None


def test_a_dangling_managed_link_holds_nothing(dest):
    store = _store.store_dir(dest)
    os.makedirs(store)
    os.symlink(os.path.join(os.path.basename(store), "sha256-" + "0" * 64), dest)
    assert current_release(dest) is None


def test_the_store_lock_is_private_and_names_its_holder(dest):
    store = store_of(dest)
    os.makedirs(store)
    with _host_store.StoreLock(store, 5):
        lock = os.path.join(store, LOCK)
        assert stat.S_IMODE(os.lstat(lock).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(os.path.join(lock, "owner")).st_mode) == 0o600
        owner = _node_lock.read_owner(lock)
        assert owner["pid"] == str(os.getpid()) and owner["by"] == "host delivery"
        assert owner["start"] == _node_lock.process_start(os.getpid())
        assert owner["boot"] == _node_lock.boot_id() != ""


def test_a_symbolic_link_planted_as_the_store_lock_is_replaced_not_followed(dest, tmp_path):
    store = store_of(dest)
    os.makedirs(store)
    target = tmp_path / "planted"
    target.mkdir()
    os.symlink(str(target), os.path.join(store, LOCK))
    stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), make_release(KERNEL_1, INITRAMFS_1), dest)
    assert list(target.iterdir()) == []
    assert not os.path.lexists(os.path.join(store, LOCK))


def test_a_lock_whose_holder_is_gone_is_taken_over(tmp_path):
    store = str(tmp_path / "store")
    os.mkdir(store)
    gone = subprocess.Popen(["true"])
    gone.wait()
    os.mkdir(os.path.join(store, LOCK))
    with open(os.path.join(store, LOCK, "owner"), "w", encoding="utf-8") as handle:
        handle.write(_node_lock.owner_text(gone.pid, "1", "controller delivery"))
    started = time.monotonic()
    with _host_store.StoreLock(store, 5):
        assert _node_lock.read_owner(os.path.join(store, LOCK))["pid"] == str(os.getpid())
    assert time.monotonic() - started < 2
    assert os.listdir(store) == []


def test_a_lock_of_another_boot_is_stale(tmp_path, monkeypatch):
    store = str(tmp_path / "store")
    os.mkdir(store)
    os.mkdir(os.path.join(store, LOCK))
    with open(os.path.join(store, LOCK, "owner"), "w", encoding="utf-8") as handle:
        # Our own pid and start time, but written in a boot that is over.
        handle.write(_node_lock.owner_text(os.getpid(), _node_lock.process_start(os.getpid()), "host delivery"))
    assert not _node_lock.owner_is_alive(dict(_node_lock.read_owner(os.path.join(store, LOCK)), boot="earlier-boot"))
    assert _node_lock.owner_is_alive(_node_lock.read_owner(os.path.join(store, LOCK)))
    monkeypatch.setattr(_node_lock, "boot_id", lambda: "a-later-boot")
    with _host_store.StoreLock(store, 5):
        pass


def test_a_lock_held_by_a_live_process_names_it_when_the_wait_ends(tmp_path):
    store = str(tmp_path / "store")
    os.mkdir(store)
    with _host_store.StoreLock(store, 5):
        with pytest.raises(StageError) as raised:
            with _host_store.StoreLock(store, 0.3):
                pass
    assert f"held by pid {os.getpid()} (host delivery) since " in str(raised.value)
    assert "for over 0.3s (lock_timeout)" in str(raised.value)


# -- A store nobody else can change ----------------------------------------------------------


def test_a_symbolic_link_as_the_store_is_refused_and_never_followed(dest, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), store_of(dest))
    for attempt in (
        lambda: current_release(dest),
        lambda: stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), make_release(KERNEL_1, INITRAMFS_1), dest),
    ):
        with pytest.raises(UnsafePathError) as raised:
            attempt()
        assert str(raised.value).startswith(f"{store_of(dest)} is not a real directory")
    assert list(elsewhere.iterdir()) == []
    assert not os.path.lexists(dest)


def test_a_store_of_another_user_is_refused(dest):
    os.mkdir(store_of(dest), 0o755)
    os.chown(store_of(dest), 65534, 65534)
    with pytest.raises(UnsafePathError, match=f"belongs to user 65534, not to the staging user {os.geteuid()}"):
        stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), make_release(KERNEL_1, INITRAMFS_1), dest)
    assert os.listdir(store_of(dest)) == []


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_parent_others_can_write_is_refused_unless_it_is_roots_and_sticky(tmp_path, mode):
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(mode)
    dest = str(parent / "staged")
    with pytest.raises(UnsafePathError, match=f"{parent} is writable by other users"):
        stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), make_release(KERNEL_1, INITRAMFS_1), dest)
    assert os.listdir(str(parent)) == []
    if os.geteuid() == 0:
        parent.chmod(mode | stat.S_ISVTX)  # like /tmp
        stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), make_release(KERNEL_1, INITRAMFS_1), dest)
        assert read(os.path.join(dest, "vmlinuz")) == KERNEL_1


def test_a_symbolic_link_planted_as_the_partial_directory_is_removed_not_followed(dest, tmp_path):
    release = make_release(KERNEL_1, INITRAMFS_1)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_bytes(b"keep me")
    os.mkdir(store_of(dest), 0o755)
    os.symlink(str(victim), os.path.join(store_of(dest), partial_of(release)))
    stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), release, dest)
    assert sorted(p.name for p in victim.iterdir()) == ["precious"]
    assert (victim / "precious").read_bytes() == b"keep me"
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_1


def test_a_symbolic_link_planted_as_a_layer_file_is_removed_not_followed(dest, tmp_path):
    release = make_release(KERNEL_1, INITRAMFS_1)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    work = os.path.join(store_of(dest), partial_of(release))
    os.makedirs(work)
    os.symlink(str(victim), os.path.join(work, "vmlinuz.part"))
    stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), release, dest)
    assert victim.read_bytes() == b"keep me"
    assert read(os.path.join(dest, "vmlinuz")) == KERNEL_1


def test_verify_existing_checks_the_files_against_the_manifest_not_the_record(dest):
    release, record, _downloaded, _client = stage_first(dest)
    # Someone swaps the kernel and rewrites the record to match it.
    planted = b"a kernel nobody published\n" * 200
    planted = planted[: len(KERNEL_1)].ljust(len(KERNEL_1), b"!")
    path = os.path.join(dest, "vmlinuz")
    os.chmod(path, 0o644)
    with open(path, "wb") as handle:
        handle.write(planted)
    record["files"]["vmlinuz"]["sha256"] = hashlib.sha256(planted).hexdigest()
    with open(os.path.join(dest, "release.json"), "wb") as handle:
        handle.write(_store.record_bytes(record))
    store = _host_store.HostStore(dest)
    # Judged by its own record, the release looks intact; by the manifest, it is not.
    assert store.current_release(rehash=True) == record
    assert store.current_release(rehash=True, layers=release.staged_layers()) is None
    assert store.current_release(rehash=False, layers=release.staged_layers()) == record  # sizes match
