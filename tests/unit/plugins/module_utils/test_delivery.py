# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller delivery against a real local POSIX shell standing in for the node.

Every test runs with the system /bin/sh and its tools, and again with busybox sh
and nothing but busybox applets on PATH (the tools a KubeSolo OS node has).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _delivery, _stage
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    FleetError,
    StageError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_repository
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    FakeBlobClient,
    make_release,
    sha256_digest,
)

KERNEL_1 = b'kernel v0.3.0\n' * 300
INITRAMFS_1 = b'initramfs v0.3.0\n' * 500
KERNEL_2 = b'kernel v0.4.0\n' * 310
INITRAMFS_2 = b'initramfs v0.4.0\n' * 520
STORE_NAME = '.staged.kubesolo-fleet'
REPOSITORY = parse_repository('ghcr.io/portainer/kubesolo-os')
BUSYBOX = '/bin/busybox'
# What the scripts of _delivery.py call besides sh builtins.
APPLETS = ('sha256sum', 'mktemp', 'mv', 'readlink', 'base64', 'df', 'awk', 'head', 'cut', 'tr', 'ls',
           'rm', 'ln', 'chmod', 'sync', 'dirname', 'uname', 'mkdir', 'rmdir', 'printf', 'echo', '[', 'test',
           'true', 'cat', 'wc')


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def read(path):
    with open(path, 'rb') as handle:
        return handle.read()


class Node:
    """A local shell as the node: ``run`` and ``put`` as ControllerDelivery takes them, recorded."""

    def __init__(self, argv, env=None):
        self.argv = list(argv)
        self.env = env
        self.scripts = []
        self.puts = []

    def run(self, script):
        self.scripts.append(script)
        done = subprocess.run(self.argv + [script], capture_output=True, text=True, env=self.env, check=False)
        return done.returncode, done.stdout, done.stderr

    def put(self, local_path, remote_path):
        self.puts.append(remote_path)
        shutil.copyfile(local_path, remote_path)

    def delivery(self, dest):
        return _delivery.ControllerDelivery(self.run, self.put, dest)


@pytest.fixture(scope='session')
def busybox_bin(tmp_path_factory):
    """A directory of busybox applet links, to be the whole PATH."""
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip('%s is not installed: the node scripts are only checked with the system shell' % BUSYBOX)
    listed = subprocess.run([BUSYBOX, '--list'], capture_output=True, text=True, check=True).stdout.split()
    missing = sorted(set(APPLETS) - set(listed))
    if missing:
        pytest.skip('this busybox lacks the applets %s' % ', '.join(missing))
    directory = tmp_path_factory.mktemp('busybox-bin')
    for applet in listed:
        if '/' not in applet:
            os.symlink(BUSYBOX, str(directory / applet))
    return str(directory)


@pytest.fixture(params=['system-sh', 'busybox'])
def node(request):
    if request.param == 'system-sh':
        return Node(['/bin/sh', '-c'])
    directory = request.getfixturevalue('busybox_bin')
    return Node([BUSYBOX, 'sh', '-c'], env={'PATH': directory, 'LC_ALL': 'C'})


@pytest.fixture
def dest(tmp_path):
    return str(tmp_path / 'boot' / 'staged')


@pytest.fixture(autouse=True)
def _parent(dest):
    os.makedirs(os.path.dirname(dest))


class Cache:
    """``fetch_all`` as the controller cache provides it: local paths and the sha256 it recorded."""

    def __init__(self, directory, blobs, corrupt=()):
        self.directory = directory
        self.blobs = dict((sha256_digest(data), data) for data in blobs)
        self.corrupt = set(corrupt)
        self.fetched = []
        os.makedirs(directory, exist_ok=True)

    def fetch_all(self, layers):
        return [self.fetch(layer) for layer in layers]

    def fetch(self, layer):
        self.fetched.append(layer['digest'])
        data = self.blobs[layer['digest']]
        path = os.path.join(self.directory, layer['digest'].replace(':', '-'))
        on_disk = data
        if layer['digest'] in self.corrupt:  # same size, other bytes: altered after it was cached
            on_disk = bytes([data[0] ^ 0xff]) + data[1:]
        with open(path, 'wb') as handle:
            handle.write(on_disk)
        return path, sha256_hex(data)


def store_of(dest):
    return os.path.join(os.path.dirname(dest), '.%s.kubesolo-fleet' % os.path.basename(dest))


def release_dir_of(release):
    return 'sha256-' + release.manifest_digest.split(':', 1)[1]


def leftovers(store):
    found = []
    for root, dirs, files in os.walk(store):
        for name in dirs + files:
            if name.startswith(('tmp-', 'link-', 'trash-')):
                found.append(os.path.relpath(os.path.join(root, name), store))
    return sorted(found)


def stage(node, dest, tmp_path, kernel, initramfs, version, corrupt=()):
    """current_release() then stage(), as the action plugin does; returns (release, record, bytes, cache)."""
    release = make_release(kernel, initramfs, version)
    cache = Cache(str(tmp_path / 'controller-cache'), [kernel, initramfs], corrupt)
    delivery = node.delivery(dest)
    delivery.current_release()
    record, transferred = delivery.stage(release, REPOSITORY, cache.fetch_all)
    return release, record, transferred, cache


def stage_first(node, dest, tmp_path):
    return stage(node, dest, tmp_path, KERNEL_1, INITRAMFS_1, 'v0.3.0')


def expected_files(kernel, initramfs):
    return {
        'vmlinuz': {'media_type': 'application/vnd.kubesolo.os.kernel.v1+octet-stream',
                    'digest': sha256_digest(kernel), 'size': len(kernel), 'sha256': sha256_hex(kernel)},
        'kubesolo-os.gz': {'media_type': 'application/vnd.kubesolo.os.initramfs.v1+gzip',
                           'digest': sha256_digest(initramfs), 'size': len(initramfs),
                           'sha256': sha256_hex(initramfs)},
    }


def assert_holds(dest, release, record, kernel, initramfs, also_in_store=()):
    """``dest`` holds ``release``, the only entry of the store besides ``also_in_store``."""
    assert os.readlink(dest) == os.path.join(os.path.basename(store_of(dest)), release_dir_of(release))
    assert read(os.path.join(dest, 'vmlinuz')) == kernel
    assert read(os.path.join(dest, 'kubesolo-os.gz')) == initramfs
    assert json.loads(read(os.path.join(dest, 'release.json'))) == record
    assert sorted(os.listdir(store_of(dest))) == sorted([release_dir_of(release)] + list(also_in_store))
    assert leftovers(store_of(dest)) == []


# -- Staging ---------------------------------------------------------------


def test_first_stage_publishes_the_release_behind_a_symlink(node, dest, tmp_path):
    release, record, transferred, cache = stage_first(node, dest, tmp_path)
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)
    assert transferred == len(KERNEL_1) + len(INITRAMFS_1)
    assert cache.fetched == [sha256_digest(KERNEL_1), sha256_digest(INITRAMFS_1)]
    release_dir = os.path.join(store_of(dest), release_dir_of(release))
    assert sorted(os.listdir(release_dir)) == ['kubesolo-os.gz', 'release.json', 'vmlinuz']
    assert stat.S_IMODE(os.stat(store_of(dest)).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(release_dir).st_mode) == 0o755
    for name in ('vmlinuz', 'kubesolo-os.gz', 'release.json'):
        assert stat.S_IMODE(os.stat(os.path.join(release_dir, name)).st_mode) == 0o644
    assert [os.path.basename(path) for path in node.puts] == ['vmlinuz', 'kubesolo-os.gz', 'release.json']


def test_the_record_is_the_one_host_delivery_writes(node, dest, tmp_path):
    release, record, _transferred, _cache = stage_first(node, dest, tmp_path)
    expected = _stage.build_record(release, REPOSITORY, expected_files(KERNEL_1, INITRAMFS_1))
    staged_at = record.pop('staged_at')
    assert re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$', staged_at)
    expected.pop('staged_at')
    assert record == expected
    assert record['manifest_digest'] == release.manifest_digest
    assert record['files']['vmlinuz']['sha256'] == sha256_hex(KERNEL_1)
    assert record['files']['kubesolo-os.gz']['size'] == len(INITRAMFS_1)
    on_node = json.loads(read(os.path.join(dest, 'release.json')))
    assert on_node.pop('staged_at') == staged_at
    assert on_node == expected
    # Host delivery reads the same layout and record, rehashing every file.
    assert _stage.current_release(dest, rehash=True) == dict(on_node, staged_at=staged_at)


def test_current_release_returns_the_staged_record(node, dest, tmp_path):
    _release, record, _transferred, _cache = stage_first(node, dest, tmp_path)
    assert node.delivery(dest).current_release() == record
    assert node.delivery(dest + '/').current_release() == record


def test_an_absent_dest_holds_nothing(node, dest):
    assert node.delivery(dest).current_release() is None
    assert not os.path.lexists(store_of(dest))


def test_staging_a_second_release_swaps_the_link_and_removes_the_first(node, dest, tmp_path):
    first = stage_first(node, dest, tmp_path)[0]
    second, record, transferred, _cache = stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, 'v0.4.0')
    assert release_dir_of(first) != release_dir_of(second)
    assert_holds(dest, second, record, KERNEL_2, INITRAMFS_2)
    assert transferred == len(KERNEL_2) + len(INITRAMFS_2)
    assert node.delivery(dest).current_release() == record


def test_controller_delivery_takes_over_from_host_delivery(node, dest, tmp_path):
    first = make_release(KERNEL_1, INITRAMFS_1)
    host_record = _stage.stage(FakeBlobClient([KERNEL_1, INITRAMFS_1]), first, dest)[0]
    assert node.delivery(dest).current_release() == host_record
    second, record, _transferred, _cache = stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, 'v0.4.0')
    # The lock file of host delivery stays in the store (controller delivery does not use it).
    assert_holds(dest, second, record, KERNEL_2, INITRAMFS_2, also_in_store=['.lock'])


def test_restaging_a_damaged_release_repairs_it(node, dest, tmp_path):
    release, _record, _transferred, _cache = stage_first(node, dest, tmp_path)
    with open(os.path.join(dest, 'vmlinuz'), 'ab') as handle:
        handle.write(b'garbage')
    assert node.delivery(dest).current_release() is None
    again, record, _transferred, _cache = stage_first(node, dest, tmp_path)
    assert again.manifest_digest == release.manifest_digest
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)
    assert node.delivery(dest).current_release() == record


def test_a_rerun_compares_sizes_and_reads_no_staged_byte(node, dest, tmp_path):
    _release, record, _transferred, _cache = stage_first(node, dest, tmp_path)
    node.scripts.clear()
    assert node.delivery(dest).current_release() == record
    assert 'sha256sum' not in node.scripts[-1] and 'wc -c' in node.scripts[-1]


def test_a_dest_with_spaces_and_quotes_is_quoted(node, tmp_path):
    dest = str(tmp_path / "it's a dir" / 'sta ged $HOME')
    os.makedirs(os.path.dirname(dest))
    assert store_of(dest).endswith("/it's a dir/.sta ged $HOME.kubesolo-fleet")
    release, record, _transferred, _cache = stage_first(node, dest, tmp_path)
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)
    assert node.delivery(dest).current_release() == record
    second, record, _transferred, _cache = stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, 'v0.4.0')
    assert_holds(dest, second, record, KERNEL_2, INITRAMFS_2)


@pytest.mark.parametrize('corrupt_file, data', [('vmlinuz', KERNEL_2), ('kubesolo-os.gz', INITRAMFS_2)])
def test_a_corrupted_cache_file_is_refused_and_the_previous_release_kept(node, dest, tmp_path, corrupt_file, data):
    first, first_record, _transferred, _cache = stage_first(node, dest, tmp_path)
    with pytest.raises(StageError) as raised:
        stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, 'v0.4.0', corrupt=[sha256_digest(data)])
    altered = bytes([data[0] ^ 0xff]) + data[1:]
    message = str(raised.value)
    assert message.startswith('publishing the release at %s failed on the node (exit 3): ' % dest)
    assert message.endswith('%s arrived with sha256 %s, expected %s; the previous release is kept'
                            % (corrupt_file, sha256_hex(altered), sha256_hex(data)))
    assert raised.value.code == 'stage_failed'
    assert_holds(dest, first, first_record, KERNEL_1, INITRAMFS_1)
    assert node.delivery(dest).current_release() == first_record


def test_a_corrupted_cache_file_on_a_first_stage_publishes_nothing(node, dest, tmp_path):
    with pytest.raises(StageError, match='vmlinuz arrived with sha256'):
        stage(node, dest, tmp_path, KERNEL_1, INITRAMFS_1, 'v0.3.0', corrupt=[sha256_digest(KERNEL_1)])
    assert not os.path.lexists(dest)
    assert os.listdir(store_of(dest)) == []


# -- Destinations ----------------------------------------------------------


def test_an_empty_directory_dest_is_accepted_and_replaced(node, dest, tmp_path):
    os.mkdir(dest)
    assert node.delivery(dest).current_release() is None
    release, record, _transferred, _cache = stage_first(node, dest, tmp_path)
    assert os.path.islink(dest)
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)


def _foreign_directory(dest):
    os.mkdir(dest)
    with open(os.path.join(dest, 'vmlinuz'), 'wb') as handle:
        handle.write(b'the user kernel')
    return os.path.join(dest, 'vmlinuz')


def _foreign_file(dest):
    with open(dest, 'wb') as handle:
        handle.write(b'the user kernel')
    return dest


def _foreign_symlink(dest):
    elsewhere = os.path.join(os.path.dirname(dest), 'elsewhere')
    os.mkdir(elsewhere)
    with open(os.path.join(elsewhere, 'vmlinuz'), 'wb') as handle:
        handle.write(b'the user kernel')
    os.symlink('elsewhere', dest)
    return os.path.join(elsewhere, 'vmlinuz')


@pytest.mark.parametrize('make_foreign, expected', [
    (_foreign_directory, '{dest} exists and is not a release staged by kubesolo.fleet; refusing to replace it '
                         '(remove it or choose another dest)'),
    (_foreign_file, '{dest} exists and is not a release staged by kubesolo.fleet; refusing to replace it '
                    '(remove it or choose another dest)'),
    (_foreign_symlink, '{dest} is a symbolic link to elsewhere, which kubesolo.fleet did not create; '
                       'refusing to replace it'),
], ids=['directory', 'file', 'symlink'])
def test_a_dest_not_made_by_the_collection_is_refused_before_anything_is_written(
        node, dest, tmp_path, make_foreign, expected):
    user_file = make_foreign(dest)
    with pytest.raises(StageError) as raised:
        stage_first(node, dest, tmp_path)
    assert str(raised.value) == expected.format(dest=dest)
    assert node.puts == []
    assert read(user_file) == b'the user kernel'
    assert not os.path.lexists(store_of(dest))


def test_stage_never_removes_anything_outside_its_store(node, dest, tmp_path):
    # dest was accepted, then replaced by a link of the user's while the release was fetched and
    # copied: publishing may refuse or replace the link, but must not delete the user's directory
    # (host delivery only ever removes a previous release inside its store).
    release = make_release(KERNEL_1, INITRAMFS_1)
    delivery = node.delivery(dest)
    assert delivery.current_release() is None
    user_file = _foreign_symlink(dest)
    cache = Cache(str(tmp_path / 'controller-cache'), [KERNEL_1, INITRAMFS_1])
    try:
        delivery.stage(release, REPOSITORY, cache.fetch_all)
    except StageError:
        pass
    assert read(user_file) == b'the user kernel'


# -- Integrity of a managed dest -------------------------------------------


def test_a_same_size_change_on_the_node_is_only_found_by_rehashing(node, dest, tmp_path):
    _release, record, _transferred, _cache = stage_first(node, dest, tmp_path)
    path = os.path.join(dest, 'kubesolo-os.gz')
    with open(path, 'wb') as handle:
        handle.write(b'I' + INITRAMFS_1[1:])
    assert os.path.getsize(path) == len(INITRAMFS_1)
    assert node.delivery(dest).current_release() == record  # sizes alone do not show it
    assert node.delivery(dest).current_release(rehash=True) is None


def test_a_changed_size_on_the_node_means_nothing_is_staged(node, dest, tmp_path):
    stage_first(node, dest, tmp_path)
    os.truncate(os.path.join(dest, 'vmlinuz'), len(KERNEL_1) - 1)
    assert node.delivery(dest).current_release() is None


def test_a_missing_file_means_nothing_is_staged(node, dest, tmp_path):
    stage_first(node, dest, tmp_path)
    os.unlink(os.path.join(dest, 'vmlinuz'))
    assert node.delivery(dest).current_release() is None


def _set_record(dest, content):
    with open(os.path.join(dest, 'release.json'), 'wb') as handle:
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
    lambda dest: _set_record(dest, _edited_record(dest, files={'vmlinuz': 'size'})),
    lambda dest: _set_record(dest, b' ' * (_stage.MAX_RECORD_BYTES + 1)),
], ids=['missing', 'truncated', 'empty', 'not-utf8', 'not-an-object', 'other-schema', 'entry-not-a-dict',
        'too-large'])
def test_a_missing_or_corrupt_record_means_nothing_is_staged(node, dest, tmp_path, corrupt):
    stage_first(node, dest, tmp_path)
    corrupt(dest)
    assert node.delivery(dest).current_release() is None


def test_a_record_naming_other_files_means_nothing_is_staged(node, dest, tmp_path):
    stage_first(node, dest, tmp_path)
    record = json.loads(read(os.path.join(dest, 'release.json')))
    del record['files']['kubesolo-os.gz']
    _set_record(dest, json.dumps(record).encode('utf-8'))
    assert node.delivery(dest).current_release() is None


def test_a_dangling_managed_link_holds_nothing(node, dest):
    os.makedirs(store_of(dest))
    os.symlink(os.path.join(STORE_NAME, 'sha256-' + '0' * 64), dest)
    assert node.delivery(dest).current_release() is None


# -- Failures while staging --------------------------------------------------


def test_not_enough_space_on_the_node_is_refused_before_fetching_or_copying(node, dest, tmp_path, monkeypatch):
    first, first_record, _transferred, _cache = stage_first(node, dest, tmp_path)
    monkeypatch.setattr(_delivery, 'SPACE_MARGIN', 10.0 ** 12)  # asks for far more than any disk holds
    release = make_release(KERNEL_2, INITRAMFS_2, 'v0.4.0')
    cache = Cache(str(tmp_path / 'controller-cache'), [KERNEL_2, INITRAMFS_2])
    node.puts = []
    with pytest.raises(StageError) as raised:
        node.delivery(dest).stage(release, REPOSITORY, cache.fetch_all)
    total = len(KERNEL_2) + len(INITRAMFS_2)
    needed = int(total * (1 + 10.0 ** 12) / 1024) + 1
    assert re.fullmatch(r'not enough space on the node for %s: \d+ KiB free, %d KiB needed \(the release is %d '
                        r'bytes, plus \d+%% margin\); nothing was transferred' % (re.escape(dest), needed, total),
                        str(raised.value)), str(raised.value)
    assert raised.value.code == 'stage_failed'
    assert cache.fetched == []
    assert node.puts == []
    assert_holds(dest, first, first_record, KERNEL_1, INITRAMFS_1)


def node_with_tools(tmp_path, **scripts):
    """A system-sh node with ``scripts`` ({command: sh script}) ahead of the real commands on PATH."""
    fake_bin = tmp_path / 'fake-bin'
    fake_bin.mkdir(exist_ok=True)
    for command, body in scripts.items():
        (fake_bin / command).write_text('#!/bin/sh\n' + body)
        os.chmod(str(fake_bin / command), 0o755)
    return Node(['/bin/sh', '-c'], env=dict(os.environ, PATH='%s:%s' % (fake_bin, os.environ.get('PATH', ''))))


def test_the_node_hashes_the_layers_at_the_same_time(dest, tmp_path):
    # Each sha256sum waits until both have started: hashed one after the other, the first one
    # would give up after 10 s and the check would fail.
    started = tmp_path / 'started'
    started.mkdir()
    node = node_with_tools(tmp_path, sha256sum=(
        'touch %(started)s/$$\n'
        'i=0\n'
        'while [ "$(ls %(started)s | wc -l)" -lt 2 ]; do\n'
        '  i=$((i + 1)); [ $i -le 1000 ] || exit 1; sleep 0.01\n'
        'done\n'
        'exec %(real)s "$@"\n') % {'started': started, 'real': shutil.which('sha256sum')})
    release, record, _transferred, _cache = stage_first(node, dest, tmp_path)
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)
    assert len(os.listdir(str(started))) == 2


def test_the_layers_reach_the_disk_before_dest_points_at_them(dest, tmp_path):
    log = tmp_path / 'sync.log'
    node = node_with_tools(tmp_path, sync='readlink %s >> %s || echo none >> %s\nexec %s "$@"\n' % (
        shlex.quote(dest), log, log, shutil.which('sync')))
    first = stage_first(node, dest, tmp_path)[0]
    log.write_text('')
    second, record, _transferred, _cache = stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, 'v0.4.0')
    assert_holds(dest, second, record, KERNEL_2, INITRAMFS_2)
    # The first sync ran while dest still held the first release; the second after the swap.
    assert log.read_text().split() == [os.path.join(STORE_NAME, release_dir_of(first)),
                                       os.path.join(STORE_NAME, release_dir_of(second))]


def test_a_node_whose_df_fails_is_not_staged_without_a_space_check(dest, tmp_path):
    # busybox df fails without /proc/mounts, for one; the free space must then count as unknown,
    # not as enough.
    node = node_with_tools(tmp_path, df='echo "df: /proc/mounts: No such file or directory" >&2\nexit 1\n')
    assert node.run('df -Pk /')[0] == 1
    cache = Cache(str(tmp_path / 'controller-cache'), [KERNEL_1, INITRAMFS_1])
    with pytest.raises(FleetError):
        node.delivery(dest).stage(make_release(KERNEL_1, INITRAMFS_1), REPOSITORY, cache.fetch_all)
    assert cache.fetched == []
    assert node.puts == []
    assert not os.path.lexists(dest)
    assert leftovers(store_of(dest)) == []


def test_a_failing_copy_removes_the_staging_directory(node, dest, tmp_path):
    first, first_record, _transferred, _cache = stage_first(node, dest, tmp_path)
    copied = []

    def put(local_path, remote_path):
        if copied:
            raise OSError(28, 'No space left on device')
        shutil.copyfile(local_path, remote_path)
        copied.append(remote_path)

    release = make_release(KERNEL_2, INITRAMFS_2, 'v0.4.0')
    cache = Cache(str(tmp_path / 'controller-cache'), [KERNEL_2, INITRAMFS_2])
    with pytest.raises(StageError) as raised:
        _delivery.ControllerDelivery(node.run, put, dest).stage(release, REPOSITORY, cache.fetch_all)
    assert str(raised.value) == 'copying the release to the node failed: [Errno 28] No space left on device'
    assert len(copied) == 1 and os.path.basename(copied[0]) == 'vmlinuz'
    assert not os.path.exists(os.path.dirname(copied[0]))
    assert_holds(dest, first, first_record, KERNEL_1, INITRAMFS_1)


def test_a_failing_fetch_removes_the_staging_directory(node, dest, tmp_path):
    first, first_record, _transferred, _cache = stage_first(node, dest, tmp_path)
    mismatch = DigestMismatchError('blob has wrong content')
    cache = Cache(str(tmp_path / 'controller-cache'), [KERNEL_2, INITRAMFS_2])

    def fetch_all(layers):
        cache.fetch(layers[0])
        raise mismatch  # the initramfs

    node.puts = []
    with pytest.raises(DigestMismatchError) as raised:
        node.delivery(dest).stage(make_release(KERNEL_2, INITRAMFS_2, 'v0.4.0'), REPOSITORY, fetch_all)
    assert raised.value is mismatch
    # Every layer is fetched before the first is copied: nothing reached the node.
    assert node.puts == []
    assert os.listdir(store_of(dest)) == [release_dir_of(first)]
    assert_holds(dest, first, first_record, KERNEL_1, INITRAMFS_1)


def test_a_staging_directory_the_node_did_not_create_is_an_error(dest):
    delivery = _delivery.ControllerDelivery(lambda script: (0, 'work=/somewhere/else\n', ''),
                                            lambda *_args: pytest.fail('put called'), dest)
    with pytest.raises(_delivery.NodeCommandError) as raised:
        delivery.stage(make_release(KERNEL_1, INITRAMFS_1), REPOSITORY,
                       lambda layer: pytest.fail('fetch called'))
    assert str(raised.value) == 'the node did not create a staging directory in %s' % store_of(dest)
    assert raised.value.code == 'node_command_failed'


# -- Node commands -----------------------------------------------------------


def test_architecture_is_uname_m(node, dest):
    assert node.delivery(dest).architecture() == os.uname().machine
    assert node.scripts == ['uname -m']


def test_architecture_strips_the_output():
    delivery = _delivery.ControllerDelivery(lambda script: (0, '  aarch64 \r\n', ''), None, '/var/lib/kubesolo/staged')
    assert delivery.architecture() == 'aarch64'


def test_a_failing_node_command_names_its_last_stderr_line():
    delivery = _delivery.ControllerDelivery(
        lambda script: (127, 'out\n', 'sh: warning\nsh: uname: not found\n'), None, '/var/lib/kubesolo/staged')
    with pytest.raises(_delivery.NodeCommandError) as raised:
        delivery.architecture()
    assert str(raised.value) == 'reading the architecture failed on the node (exit 127): sh: uname: not found'
    assert raised.value.code == 'node_command_failed'


def test_a_failing_node_command_without_stderr_names_stdout_or_nothing():
    with pytest.raises(_delivery.NodeCommandError) as raised:
        _delivery.ControllerDelivery(lambda script: (1, 'only stdout\n', ''), None, '/x/staged').architecture()
    assert str(raised.value) == 'reading the architecture failed on the node (exit 1): only stdout'
    with pytest.raises(_delivery.NodeCommandError) as raised:
        _delivery.ControllerDelivery(lambda script: (1, '', ''), None, '/x/staged').architecture()
    assert str(raised.value) == 'reading the architecture failed on the node (exit 1)'


def test_a_failing_real_command_reports_the_shell_error(node, dest):
    delivery = node.delivery(dest)
    with pytest.raises(_delivery.NodeCommandError) as raised:
        delivery.run('echo first >&2; echo "it broke" >&2; exit 4', 'testing')
    assert str(raised.value) == 'testing failed on the node (exit 4): it broke'
