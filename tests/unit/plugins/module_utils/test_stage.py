# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic staging on a real temporary file system, with a fake blob client."""

from __future__ import annotations

import errno
import json
import os
import re
import stat

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _about, _release, _stage
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    LayerMissingError,
    StageError,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    KERNEL,
    FakeBlobClient,
    FakeManifestClient,
    descriptor,
    fetched,
    image_manifest,
    make_release,
    release_annotations,
    sha256_digest,
)

KERNEL_1 = b'kernel v0.3.0\n' * 300
INITRAMFS_1 = b'initramfs v0.3.0\n' * 500
KERNEL_2 = b'kernel v0.4.0\n' * 310
INITRAMFS_2 = b'initramfs v0.4.0\n' * 520
STORE_NAME = '.staged.kubesolo-fleet'


@pytest.fixture
def dest(tmp_path):
    return str(tmp_path / 'staged')


def store_of(dest):
    return os.path.join(os.path.dirname(dest), STORE_NAME)


def release_dir_of(release):
    return 'sha256-' + release.manifest_digest.split(':', 1)[1]


def stage_release(dest, kernel, initramfs, version, failures=None):
    """Stage a release of ``kernel`` and ``initramfs``; returns (release, record, bytes, client)."""
    release = make_release(kernel, initramfs, version)
    client = FakeBlobClient([kernel, initramfs], failures)
    record, downloaded = _stage.stage(client, release, dest)
    return release, record, downloaded, client


def stage_first(dest):
    return stage_release(dest, KERNEL_1, INITRAMFS_1, 'v0.3.0')


def read(path):
    with open(path, 'rb') as handle:
        return handle.read()


def leftovers(store):
    """Work files of an interrupted or failed stage found anywhere in the store."""
    found = []
    for root, dirs, files in os.walk(store):
        for name in dirs + files:
            if name.startswith(('tmp-', 'link-', 'trash-')) or name.endswith('.part') or \
                    name.startswith('.release.json'):
                found.append(os.path.relpath(os.path.join(root, name), store))
    return sorted(found)


def assert_holds_first_release(dest, first, record):
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(first))
    assert read(os.path.join(dest, 'vmlinuz')) == KERNEL_1
    assert read(os.path.join(dest, 'kubesolo-os.gz')) == INITRAMFS_1
    assert _stage.current_release(dest, rehash=True) == record
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(first)]
    assert leftovers(store_of(dest)) == []


# -- Names -----------------------------------------------------------------


@pytest.mark.parametrize('dest_path, store', [
    ('/var/lib/kubesolo/staged', '/var/lib/kubesolo/.staged.kubesolo-fleet'),
    ('/var/lib/kubesolo/staged/', '/var/lib/kubesolo/.staged.kubesolo-fleet'),
    ('/boot', '/.boot.kubesolo-fleet'),
])
def test_store_dir(dest_path, store):
    assert _stage.store_dir(dest_path) == store


def test_release_dir_name():
    assert _stage.release_dir_name('sha256:' + 'ab' * 32) == 'sha256-' + 'ab' * 32


# -- Staging ---------------------------------------------------------------


def test_first_stage_publishes_the_release_behind_a_symlink(dest):
    release, record, downloaded, client = stage_first(dest)
    release_dir = os.path.join(store_of(dest), release_dir_of(release))
    assert os.path.islink(dest)
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(release))
    assert sorted(os.listdir(release_dir)) == ['kubesolo-os.gz', 'release.json', 'vmlinuz']
    assert read(os.path.join(dest, 'vmlinuz')) == KERNEL_1
    assert read(os.path.join(dest, 'kubesolo-os.gz')) == INITRAMFS_1
    assert downloaded == len(KERNEL_1) + len(INITRAMFS_1)
    assert client.downloaded == [sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)]
    assert stat.S_IMODE(os.stat(release_dir).st_mode) == 0o755
    for name in ('vmlinuz', 'kubesolo-os.gz', 'release.json'):
        assert stat.S_IMODE(os.stat(os.path.join(release_dir, name)).st_mode) == 0o644
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
    for name in ('vmlinuz', 'kubesolo-os.gz', 'release.json'):
        assert stat.S_IMODE(os.stat(os.path.join(release_dir, name)).st_mode) == 0o644


def test_the_store_is_traversable_under_a_strict_umask(dest, strict_umask):
    # Without it the world-readable release directory and files behind dest cannot be reached.
    stage_first(dest)
    assert stat.S_IMODE(os.stat(store_of(dest)).st_mode) == 0o755


def test_first_stage_writes_the_release_record(dest):
    release, record, _downloaded, _client = stage_first(dest)
    assert json.loads(read(os.path.join(dest, 'release.json'))) == record
    staged_at = record.pop('staged_at')
    assert re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$', staged_at)
    assert record == {
        'schema': 1,
        'staged_by': 'kubesolo.fleet %s' % _about.COLLECTION_VERSION,
        'repository': 'ghcr.io/portainer/kubesolo-os',
        'manifest_digest': release.manifest_digest,
        'index_digest': None,
        'architecture': 'amd64',
        'version': 'v0.3.0',
        'metadata': release.metadata,
        'files': {
            'vmlinuz': {'media_type': 'application/vnd.kubesolo.os.kernel.v1+octet-stream',
                        'digest': sha256_digest(KERNEL_1), 'size': len(KERNEL_1),
                        'sha256': sha256_digest(KERNEL_1).split(':')[1]},
            'kubesolo-os.gz': {'media_type': 'application/vnd.kubesolo.os.initramfs.v1+gzip',
                               'digest': sha256_digest(INITRAMFS_1), 'size': len(INITRAMFS_1),
                               'sha256': sha256_digest(INITRAMFS_1).split(':')[1]},
        },
    }
    assert release.metadata['version'] == 'v0.3.0'


def test_current_release_returns_the_staged_record(dest):
    _release, record, _downloaded, _client = stage_first(dest)
    assert _stage.current_release(dest) == record
    assert _stage.current_release(dest, rehash=True) == record
    assert _stage.current_release(dest + '/') == record


def test_staging_a_second_release_swaps_the_link_and_removes_the_first(dest):
    first = stage_first(dest)[0]
    second, record, downloaded, _client = stage_release(dest, KERNEL_2, INITRAMFS_2, 'v0.4.0')
    assert release_dir_of(first) != release_dir_of(second)
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(second))
    assert read(os.path.join(dest, 'vmlinuz')) == KERNEL_2
    assert read(os.path.join(dest, 'kubesolo-os.gz')) == INITRAMFS_2
    assert downloaded == len(KERNEL_2) + len(INITRAMFS_2)
    assert _stage.current_release(dest)['version'] == 'v0.4.0'
    assert _stage.current_release(dest) == record
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(second)]


@pytest.mark.parametrize('failing', [INITRAMFS_2, KERNEL_2], ids=['initramfs', 'kernel'])
def test_a_digest_mismatch_keeps_the_first_release(dest, failing):
    first, record, _downloaded, _client = stage_first(dest)
    mismatch = DigestMismatchError('blob has wrong content')
    with pytest.raises(DigestMismatchError) as raised:
        stage_release(dest, KERNEL_2, INITRAMFS_2, 'v0.4.0', failures={sha256_digest(failing): mismatch})
    assert raised.value is mismatch
    assert_holds_first_release(dest, first, record)


def test_running_out_of_space_keeps_the_first_release(dest):
    first, record, _downloaded, _client = stage_first(dest)
    full = OSError(errno.ENOSPC, 'No space left on device')
    with pytest.raises(StageError) as raised:
        stage_release(dest, KERNEL_2, INITRAMFS_2, 'v0.4.0', failures={sha256_digest(INITRAMFS_2): full})
    assert str(raised.value) == (
        'no space left on the device of %s while staging; the previous release is kept' % dest)
    assert raised.value.code == 'stage_failed'
    assert_holds_first_release(dest, first, record)


def test_other_write_errors_name_the_cause(dest):
    first, record, _downloaded, _client = stage_first(dest)
    broken = OSError(errno.EIO, 'Input/output error')
    with pytest.raises(StageError) as raised:
        stage_release(dest, KERNEL_2, INITRAMFS_2, 'v0.4.0', failures={sha256_digest(KERNEL_2): broken})
    assert str(raised.value) == 'staging at %s failed: Input/output error' % dest
    assert_holds_first_release(dest, first, record)


def test_an_unwritable_parent_is_a_stage_error(tmp_path):
    parent = tmp_path / 'not-a-directory'
    parent.write_bytes(b'')
    dest = str(parent / 'staged')
    assert _stage.current_release(dest) is None
    with pytest.raises(StageError) as raised:
        _stage.stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), make_release(KERNEL_1, INITRAMFS_1), dest)
    assert str(raised.value) == 'cannot create the staging directory %s: Not a directory' % store_of(dest)


def test_a_failed_first_stage_publishes_nothing(dest):
    with pytest.raises(DigestMismatchError):
        stage_release(dest, KERNEL_1, INITRAMFS_1, 'v0.3.0',
                      failures={sha256_digest(INITRAMFS_1): DigestMismatchError('wrong')})
    assert not os.path.lexists(dest)
    assert _stage.current_release(dest) is None
    assert os.listdir(store_of(dest)) == []


def test_a_failed_swap_leaves_no_orphaned_release(dest, monkeypatch):
    first, record, _downloaded, _client = stage_first(dest)

    def no_space(*_args):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(_stage.os, 'symlink', no_space)
    with pytest.raises(StageError, match='no space left on the device'):
        stage_release(dest, KERNEL_2, INITRAMFS_2, 'v0.4.0')
    monkeypatch.undo()
    assert_holds_first_release(dest, first, record)


def test_restaging_a_damaged_release_repairs_it(dest):
    release, record, _downloaded, _client = stage_first(dest)
    with open(os.path.join(dest, 'vmlinuz'), 'ab') as handle:
        handle.write(b'garbage')
    assert _stage.current_release(dest) is None
    again, _record, _downloaded, _client = stage_release(dest, KERNEL_1, INITRAMFS_1, 'v0.3.0')
    assert again.manifest_digest == release.manifest_digest
    assert read(os.path.join(dest, 'vmlinuz')) == KERNEL_1
    assert _stage.current_release(dest, rehash=True)['manifest_digest'] == record['manifest_digest']
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(release)]
    assert leftovers(store_of(dest)) == []


def test_stage_replaces_leftovers_of_an_interrupted_run(dest):
    release = make_release(KERNEL_1, INITRAMFS_1)
    stale_dir = os.path.join(store_of(dest), release_dir_of(release))
    os.makedirs(stale_dir)
    with open(os.path.join(stale_dir, 'vmlinuz.part'), 'wb') as handle:
        handle.write(b'half a kernel')
    os.symlink('nowhere', os.path.join(store_of(dest), 'link-%d' % os.getpid()))
    _stage.stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), release, dest)
    assert sorted(os.listdir(stale_dir)) == ['kubesolo-os.gz', 'release.json', 'vmlinuz']
    assert read(os.path.join(dest, 'vmlinuz')) == KERNEL_1
    assert sorted(os.listdir(store_of(dest))) == [release_dir_of(release)]


def test_stage_accepts_a_trailing_slash(dest):
    release = make_release(KERNEL_1, INITRAMFS_1)
    _stage.stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), release, dest + '/')
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(release))


def test_stage_refuses_a_release_without_initramfs_before_writing(dest):
    manifest = fetched(image_manifest([descriptor(KERNEL, KERNEL_1)], release_annotations()))
    release = _release.resolve(FakeManifestClient({'stable': manifest}), 'amd64', tag='stable')
    client = FakeBlobClient([KERNEL_1])
    with pytest.raises(LayerMissingError):
        _stage.stage(client, release, dest)
    assert client.downloaded == []
    assert not os.path.lexists(store_of(dest))


# -- Destinations ----------------------------------------------------------


def test_an_absent_dest_holds_nothing(dest):
    assert _stage.current_release(dest) is None


def test_an_empty_directory_dest_is_accepted_and_replaced(dest):
    os.mkdir(dest)
    assert _stage.current_release(dest) is None
    release, record, _downloaded, _client = stage_first(dest)
    assert os.path.islink(dest)
    assert os.readlink(dest) == os.path.join(STORE_NAME, release_dir_of(release))
    assert _stage.current_release(dest) == record


def _make_foreign_directory(dest):
    os.mkdir(dest)
    with open(os.path.join(dest, 'vmlinuz'), 'wb') as handle:
        handle.write(b'the user kernel')


def _make_foreign_file(dest):
    with open(dest, 'wb') as handle:
        handle.write(b'the user kernel')


@pytest.mark.parametrize('make_foreign', [_make_foreign_directory, _make_foreign_file])
def test_a_dest_not_made_by_the_collection_is_refused(dest, make_foreign):
    make_foreign(dest)
    with pytest.raises(StageError) as raised:
        _stage.current_release(dest)
    assert str(raised.value) == (
        '%s exists and is not a release staged by kubesolo.fleet; refusing to replace it '
        '(remove it or choose another dest)' % dest)
    assert raised.value.code == 'stage_failed'
    user_file = os.path.join(dest, 'vmlinuz') if os.path.isdir(dest) else dest
    assert read(user_file) == b'the user kernel'
    assert not os.path.lexists(store_of(dest))


@pytest.mark.parametrize('target', [
    'elsewhere',
    '/',
    STORE_NAME,
    '.other.kubesolo-fleet/sha256-' + 'a' * 64,
    STORE_NAME + '/sha256-abc/deeper',
    'does-not-exist',
])
def test_a_symlink_dest_pointing_elsewhere_is_refused(dest, target):
    elsewhere = os.path.join(os.path.dirname(dest), 'elsewhere')
    os.mkdir(elsewhere)
    os.symlink(target, dest)
    with pytest.raises(StageError) as raised:
        _stage.current_release(dest)
    assert str(raised.value) == (
        '%s is a symbolic link to %s, which kubesolo.fleet did not create; refusing to replace it'
        % (dest, target))
    assert os.readlink(dest) == target
    assert os.listdir(elsewhere) == []


# -- Integrity of a managed dest -------------------------------------------


def test_a_changed_file_size_means_nothing_is_staged(dest):
    stage_first(dest)
    with open(os.path.join(dest, 'kubesolo-os.gz'), 'ab') as handle:
        handle.write(b'\0')
    assert _stage.current_release(dest) is None


def test_a_missing_file_means_nothing_is_staged(dest):
    stage_first(dest)
    os.unlink(os.path.join(dest, 'vmlinuz'))
    assert _stage.current_release(dest) is None


def test_a_same_size_change_is_only_found_by_rehashing(dest):
    _release, record, _downloaded, _client = stage_first(dest)
    path = os.path.join(dest, 'vmlinuz')
    tampered = b'K' + KERNEL_1[1:]
    with open(path, 'wb') as handle:
        handle.write(tampered)
    assert os.path.getsize(path) == len(KERNEL_1)
    assert _stage.current_release(dest) == record
    assert _stage.current_release(dest, rehash=True) is None


def _set_record(dest, content):
    path = os.path.join(dest, 'release.json')
    os.chmod(path, 0o644)
    with open(path, 'wb') as handle:
        handle.write(content)


def _edited_record(dest, **changes):
    record = json.loads(read(os.path.join(dest, 'release.json')))
    record.update(changes)
    return json.dumps(record).encode('utf-8')


@pytest.mark.parametrize('corrupt', [
    lambda dest: os.unlink(os.path.join(dest, 'release.json')),
    lambda dest: _set_record(dest, b'{"schema": 1, "files": {'),
    lambda dest: _set_record(dest, b''),
    lambda dest: _set_record(dest, b'\xff\xfe'),
    lambda dest: _set_record(dest, b'[1]'),
    lambda dest: _set_record(dest, _edited_record(dest, schema=2)),
    lambda dest: _set_record(dest, _edited_record(dest, files=['vmlinuz'])),
    lambda dest: _set_record(dest, _edited_record(dest, files={'../vmlinuz': {'size': 1}})),
    lambda dest: _set_record(dest, _edited_record(dest, files={'vmlinuz': 'size'})),
], ids=['missing', 'truncated', 'empty', 'not-utf8', 'not-an-object', 'other-schema', 'files-not-a-dict',
        'file-outside', 'entry-not-a-dict'])
def test_a_missing_or_corrupt_record_means_nothing_is_staged(dest, corrupt):
    stage_first(dest)
    corrupt(dest)
    assert _stage.current_release(dest) is None


def test_a_dangling_managed_link_holds_nothing(dest):
    store = _stage.store_dir(dest)
    os.makedirs(store)
    os.symlink(os.path.join(os.path.basename(store), 'sha256-' + '0' * 64), dest)
    assert _stage.current_release(dest) is None


@pytest.mark.parametrize('data', [b'', b'\xff', b'[]', b'{"schema": 2, "files": {}}', b'{"schema": 1}'])
def test_parse_record_refuses_what_is_not_a_record(data):
    assert _stage.parse_record(data) is None


def test_file_sha256(tmp_path):
    path = tmp_path / 'blob'
    path.write_bytes(KERNEL_1)
    assert _stage.file_sha256(str(path)) == sha256_digest(KERNEL_1).split(':')[1]


# -- write_atomic ----------------------------------------------------------


def test_write_atomic_writes_the_file(tmp_path):
    path = str(tmp_path / 'release.json')
    _stage.write_atomic(path, b'{"schema": 1}', mode=0o600)
    assert read(path) == b'{"schema": 1}'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(str(tmp_path)) == ['release.json']


def test_write_atomic_replaces_an_existing_file(tmp_path):
    path = tmp_path / 'release.json'
    path.write_bytes(b'old')
    _stage.write_atomic(str(path), b'new')
    assert path.read_bytes() == b'new'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_atomic_leaves_no_temporary_file_when_writing_fails(tmp_path):
    path = tmp_path / 'release.json'
    path.write_bytes(b'old')
    with pytest.raises(TypeError):
        _stage.write_atomic(str(path), 'not bytes')
    assert os.listdir(str(tmp_path)) == ['release.json']
    assert path.read_bytes() == b'old'


def test_write_atomic_leaves_no_temporary_file_when_fsync_fails(tmp_path, monkeypatch):
    def no_space(_fd):
        raise OSError(errno.ENOSPC, 'No space left on device')

    path = tmp_path / 'release.json'
    monkeypatch.setattr(_stage.os, 'fsync', no_space)
    with pytest.raises(OSError) as raised:
        _stage.write_atomic(str(path), b'new')
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC
    assert os.listdir(str(tmp_path)) == []
