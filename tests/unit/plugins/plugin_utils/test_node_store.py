# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store behind dest on a node without Python, against a real local POSIX shell standing in for the node.

Every test runs with the system /bin/sh and its tools, and again with busybox sh
and nothing but busybox applets on PATH (the tools a KubeSolo OS node has).
Releases are staged here with the NodeStore steps alone (prepare, put,
put_record, publish); test_controller_delivery.py stages through
ControllerDelivery and its cache. The node stand-in is in node_fakes.py.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import time

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _node_lock, _store
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError, StageError, UnsafePathError
from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _node_scripts, _node_store
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    CORRUPT_RECORDS,
    make_release,
    set_record,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.plugin_utils.node_fakes import (
    FOREIGN_DESTS,
    FOREIGN_IDS,
    INITRAMFS_1,
    INITRAMFS_2,
    KERNEL_1,
    KERNEL_2,
    REPOSITORY,
    STORE_NAME,
    assert_holds,
    assert_space_refused,
    expected_files,
    foreign_symlink,
    leftovers,
    node_with_tools,
    read,
    release_dir_of,
    sha256_hex,
    stage,
    stage_first,
    store_of,
)

MANIFEST_DIGEST = "sha256:" + "1" * 64

# -- Staging ---------------------------------------------------------------


def test_the_store_steps_publish_the_release_behind_a_symlink(node, dest, tmp_path):
    release, record = stage_first(node, dest, tmp_path)
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)
    assert record["files"] == expected_files(KERNEL_1, INITRAMFS_1)
    release_dir = os.path.join(store_of(dest), release_dir_of(release))
    assert sorted(os.listdir(release_dir)) == ["kubesolo-os.gz", "release.json", "vmlinuz"]
    assert stat.S_IMODE(os.stat(store_of(dest)).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(release_dir).st_mode) == 0o755
    for name in ("vmlinuz", "kubesolo-os.gz", "release.json"):
        assert stat.S_IMODE(os.stat(os.path.join(release_dir, name)).st_mode) == 0o644
    assert [os.path.basename(path) for path in node.puts] == ["vmlinuz", "kubesolo-os.gz"]  # the record goes by shell
    # The record is written as host delivery writes it.
    assert read(os.path.join(dest, "release.json")) == _store.record_bytes(record)


def test_current_release_returns_the_staged_record(node, dest, tmp_path):
    _release, record = stage_first(node, dest, tmp_path)
    assert node.store(dest).current_release() == record
    assert node.store(dest + "/").current_release() == record


def test_an_absent_dest_holds_nothing(node, dest):
    assert node.store(dest).current_release() is None
    assert not os.path.lexists(store_of(dest))


def test_restaging_a_damaged_release_repairs_it(node, dest, tmp_path):
    release, _record = stage_first(node, dest, tmp_path)
    with open(os.path.join(dest, "vmlinuz"), "ab") as handle:
        handle.write(b"garbage")
    assert node.store(dest).current_release() is None
    again, record = stage_first(node, dest, tmp_path)
    assert again.manifest_digest == release.manifest_digest
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)
    assert node.store(dest).current_release() == record


def test_a_rerun_compares_sizes_and_reads_no_staged_byte(node, dest, tmp_path):
    _release, record = stage_first(node, dest, tmp_path)
    node.scripts.clear()
    assert node.store(dest).current_release() == record
    assert "sha256sum" not in node.scripts[-1] and "stat -c %s" in node.scripts[-1]


def test_a_dest_with_spaces_and_quotes_is_quoted(node, tmp_path):
    dest = str(tmp_path / "it's a dir" / "sta ged $HOME")
    os.makedirs(os.path.dirname(dest))
    assert store_of(dest).endswith("/it's a dir/.sta ged $HOME.kubesolo-fleet")
    release, record = stage_first(node, dest, tmp_path)
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)
    assert node.store(dest).current_release() == record
    second, record = stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, "v0.4.0")
    assert_holds(dest, second, record, KERNEL_2, INITRAMFS_2)


def test_prepare_makes_the_release_work_directory_in_the_store_and_keeps_only_layers_there(node, dest):
    store = node.store(dest)
    work = store.prepare(len(KERNEL_1), MANIFEST_DIGEST)
    assert work == os.path.join(store_of(dest), "partial-sha256-" + "1" * 64)
    assert os.path.isdir(work)
    assert stat.S_IMODE(os.stat(store_of(dest)).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(work).st_mode) == 0o755
    assert not os.path.lexists(dest)
    for name in ("vmlinuz", "kubesolo-os.gz.part", "release.json", ".sha256-vmlinuz", "other"):
        with open(os.path.join(work, name), "wb") as handle:
            handle.write(b"left by a run that died")
    os.mkdir(os.path.join(work, "vmlinuz.part"))
    os.symlink("/etc/passwd", os.path.join(work, "kubesolo-os.gz"))
    assert store.prepare(len(KERNEL_1), MANIFEST_DIGEST) == work
    # What an interrupted run transferred stays for the next to resume; nothing else does.
    assert sorted(os.listdir(work)) == ["kubesolo-os.gz.part", "vmlinuz"]


def test_publish_refuses_a_file_that_arrived_other_than_recorded(node, dest, tmp_path):
    first, first_record = stage_first(node, dest, tmp_path)
    release = make_release(KERNEL_2, INITRAMFS_2, "v0.4.0")
    store = node.store(dest)
    work = store.prepare(len(KERNEL_2) + len(INITRAMFS_2), release.manifest_digest)
    files = {}
    for name, layer in release.staged_layers():
        data = KERNEL_2 if name == "vmlinuz" else INITRAMFS_2
        arrived = tmp_path / name
        arrived.write_bytes(data[:-1] + b"!" if name == "kubesolo-os.gz" else data)
        node.put(str(arrived), f"{work}/{name}")
        files[name] = _store.file_entry(layer, sha256_hex(data))
    store.put_record(work, _store.build_record(release, REPOSITORY, files))
    with pytest.raises(StageError) as raised:
        store.publish(work, release.manifest_digest, files)
    assert str(raised.value) == (
        "publishing the release at {} failed on the node (exit 3): kubesolo-os.gz arrived with sha256 {}, "
        "expected {}; the previous release is kept".format(
            dest, sha256_hex(INITRAMFS_2[:-1] + b"!"), sha256_hex(INITRAMFS_2)
        )
    )
    assert not os.path.exists(work)
    assert_holds(dest, first, first_record, KERNEL_1, INITRAMFS_1)


# -- Destinations ----------------------------------------------------------


def test_an_empty_directory_dest_is_accepted_and_replaced(node, dest, tmp_path):
    os.mkdir(dest)
    assert node.store(dest).current_release() is None
    release, record = stage_first(node, dest, tmp_path)
    assert os.path.islink(dest)
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)


@pytest.mark.parametrize("make_foreign, expected", FOREIGN_DESTS, ids=FOREIGN_IDS)
def test_a_dest_not_made_by_the_collection_is_refused_before_anything_is_written(
    node, dest, tmp_path, make_foreign, expected
):
    user_file = make_foreign(dest)
    with pytest.raises(StageError) as raised:
        stage_first(node, dest, tmp_path)
    assert str(raised.value) == expected.format(dest=dest)
    assert node.puts == []
    assert read(user_file) == b"the user kernel"
    assert not os.path.lexists(store_of(dest))


def test_stage_never_removes_anything_outside_its_store(node, dest, tmp_path):
    # dest was accepted, then replaced by a link of the user's while the release was fetched and
    # copied: publishing may refuse or replace the link, but must not delete the user's directory
    # (host delivery only ever removes a previous release inside its store).
    release = make_release(KERNEL_1, INITRAMFS_1)
    store = node.store(dest)
    assert store.current_release() is None
    user_file = foreign_symlink(dest)
    work = store.prepare(len(KERNEL_1) + len(INITRAMFS_1), release.manifest_digest)
    files = {}
    for (name, layer), data in zip(release.staged_layers(), (KERNEL_1, INITRAMFS_1)):
        (tmp_path / name).write_bytes(data)
        node.put(str(tmp_path / name), f"{work}/{name}")
        files[name] = _store.file_entry(layer, sha256_hex(data))
    store.put_record(work, _store.build_record(release, REPOSITORY, files))
    try:
        store.publish(work, release.manifest_digest, files)
    except StageError:
        pass
    assert read(user_file) == b"the user kernel"


# -- Integrity of a managed dest -------------------------------------------


def test_a_same_size_change_on_the_node_is_only_found_by_rehashing(node, dest, tmp_path):
    _release, record = stage_first(node, dest, tmp_path)
    path = os.path.join(dest, "kubesolo-os.gz")
    with open(path, "wb") as handle:
        handle.write(b"I" + INITRAMFS_1[1:])
    assert os.path.getsize(path) == len(INITRAMFS_1)
    assert node.store(dest).current_release() == record  # sizes alone do not show it
    assert node.store(dest).current_release(rehash=True) is None


def test_a_changed_size_on_the_node_means_nothing_is_staged(node, dest, tmp_path):
    stage_first(node, dest, tmp_path)
    os.truncate(os.path.join(dest, "vmlinuz"), len(KERNEL_1) - 1)
    assert node.store(dest).current_release() is None


def test_a_missing_file_means_nothing_is_staged(node, dest, tmp_path):
    stage_first(node, dest, tmp_path)
    os.unlink(os.path.join(dest, "vmlinuz"))
    assert node.store(dest).current_release() is None


CORRUPT = {
    **CORRUPT_RECORDS,
    "too-large": lambda dest: set_record(dest, b" " * (_store.MAX_RECORD_BYTES + 1)),
}


@pytest.mark.parametrize("corrupt", list(CORRUPT.values()), ids=list(CORRUPT))
def test_a_missing_or_corrupt_record_means_nothing_is_staged(node, dest, tmp_path, corrupt):
    stage_first(node, dest, tmp_path)
    corrupt(dest)
    assert node.store(dest).current_release() is None


def test_a_record_naming_other_files_means_nothing_is_staged(node, dest, tmp_path):
    stage_first(node, dest, tmp_path)
    record = json.loads(read(os.path.join(dest, "release.json")))
    del record["files"]["kubesolo-os.gz"]
    set_record(dest, json.dumps(record).encode("utf-8"))
    assert node.store(dest).current_release() is None


def test_a_dangling_managed_link_holds_nothing(node, dest):
    os.makedirs(store_of(dest))
    os.symlink(os.path.join(STORE_NAME, "sha256-" + "0" * 64), dest)
    assert node.store(dest).current_release() is None


# -- Failures while staging --------------------------------------------------


def test_not_enough_space_on_the_node_is_refused_by_prepare(node, dest, tmp_path, monkeypatch):
    first, first_record = stage_first(node, dest, tmp_path)
    monkeypatch.setattr(_store, "SPACE_MARGIN", 10.0**12)  # asks for far more than any disk holds
    total = len(KERNEL_2) + len(INITRAMFS_2)
    node.puts = []
    with pytest.raises(StageError) as raised:
        node.store(dest).prepare(total, MANIFEST_DIGEST)
    assert_space_refused(raised.value, dest, total, margin=10.0**12)
    assert raised.value.code == "stage_failed"
    assert node.puts == []
    assert_holds(dest, first, first_record, KERNEL_1, INITRAMFS_1)


def test_the_node_hashes_the_layers_at_the_same_time(dest, tmp_path):
    # Each sha256sum waits until both have started: hashed one after the other, the first one
    # would give up after 10 s and the check would fail.
    started = tmp_path / "started"
    started.mkdir()
    node = node_with_tools(
        tmp_path,
        sha256sum=(
            "touch {started}/$$\n"
            "i=0\n"
            'while [ "$(ls {started} | wc -l)" -lt 2 ]; do\n'
            "  i=$((i + 1)); [ $i -le 1000 ] || exit 1; sleep 0.01\n"
            "done\n"
            'exec {real} "$@"\n'
        ).format(started=started, real=shutil.which("sha256sum")),
    )
    release, record = stage_first(node, dest, tmp_path)
    assert_holds(dest, release, record, KERNEL_1, INITRAMFS_1)
    assert len(os.listdir(str(started))) == 2


def test_the_layers_reach_the_disk_before_dest_points_at_them(dest, tmp_path):
    log = tmp_path / "sync.log"
    node = node_with_tools(
        tmp_path,
        sync=f'readlink {shlex.quote(dest)} >> {log} || echo none >> {log}\nexec {shutil.which("sync")} "$@"\n',
    )
    first = stage_first(node, dest, tmp_path)[0]
    log.write_text("")
    second, record = stage(node, dest, tmp_path, KERNEL_2, INITRAMFS_2, "v0.4.0")
    assert_holds(dest, second, record, KERNEL_2, INITRAMFS_2)
    # The first sync ran while dest still held the first release; the second after the swap.
    assert log.read_text().split() == [
        os.path.join(STORE_NAME, release_dir_of(first)),
        os.path.join(STORE_NAME, release_dir_of(second)),
    ]


def test_a_node_whose_df_fails_is_not_prepared_without_a_space_check(dest, tmp_path):
    # busybox df fails without /proc/mounts, for one; the free space must then count as unknown,
    # not as enough.
    node = node_with_tools(tmp_path, df='echo "df: /proc/mounts: No such file or directory" >&2\nexit 1\n')
    assert node.run("df -Pk /")[0] == 1
    with pytest.raises(FleetError) as raised:
        node.store(dest).prepare(len(KERNEL_1) + len(INITRAMFS_1), MANIFEST_DIGEST)
    assert str(raised.value) == (
        f"preparing {store_of(dest)} failed on the node (exit 5): cannot read the free space of {store_of(dest)} "
        "with df"
    )
    assert node.puts == []
    assert not os.path.lexists(dest)
    assert leftovers(store_of(dest)) == []


def test_a_staging_directory_the_node_did_not_create_is_an_error(dest):
    store = _node_store.NodeStore(lambda script, data=None: (0, "work=/somewhere/else\n", ""), dest)
    with pytest.raises(_node_store.NodeCommandError) as raised:
        store.prepare(len(KERNEL_1) + len(INITRAMFS_1), MANIFEST_DIGEST)
    work = os.path.join(store_of(dest), "partial-sha256-" + "1" * 64)
    assert str(raised.value) == f"the node did not create the staging directory {work}"
    assert raised.value.code == "node_command_failed"


def test_what_a_node_answers_is_quoted_printably(dest):
    answers = {"prepare": "space=\x1b[2J12\n", "inspect": f"euid={os.geteuid()}\nlink=\x1b]0;owned\x07\n"}

    def shell(script, data=None):
        return 0, answers["prepare" if "df" in script else "inspect"], ""

    store = _node_store.NodeStore(shell, dest)
    with pytest.raises(StageError) as raised:
        store.prepare(len(KERNEL_1) + len(INITRAMFS_1), MANIFEST_DIGEST)
    assert f"not enough space on the node for {dest}: \\x1b[2J12 KiB free, " in str(raised.value)
    with pytest.raises(StageError) as raised:
        store.current_release()
    assert str(raised.value) == (
        f"{dest} is a symbolic link to \\x1b]0;owned\\x07, which kubesolo.fleet did not create; refusing to replace it"
    )


# -- Node commands -----------------------------------------------------------


def test_architecture_is_uname_m(node, dest):
    assert node.store(dest).architecture() == os.uname().machine
    assert node.scripts == ["uname -m"]


def test_architecture_strips_the_output():
    store = _node_store.NodeStore(lambda script, data=None: (0, "  aarch64 \r\n", ""), "/var/lib/kubesolo/staged")
    assert store.architecture() == "aarch64"


def test_a_failing_node_command_names_its_last_stderr_line():
    store = _node_store.NodeStore(
        lambda script, data=None: (127, "out\n", "sh: warning\nsh: uname: not found\n"), "/var/lib/kubesolo/staged"
    )
    with pytest.raises(_node_store.NodeCommandError) as raised:
        store.architecture()
    assert str(raised.value) == "reading the architecture failed on the node (exit 127): sh: uname: not found"
    assert raised.value.code == "node_command_failed"


def test_a_failing_node_command_without_stderr_names_stdout_or_nothing():
    with pytest.raises(_node_store.NodeCommandError) as raised:
        _node_store.NodeStore(lambda script, data=None: (1, "only stdout\n", ""), "/x/staged").architecture()
    assert str(raised.value) == "reading the architecture failed on the node (exit 1): only stdout"
    with pytest.raises(_node_store.NodeCommandError) as raised:
        _node_store.NodeStore(lambda script, data=None: (1, "", ""), "/x/staged").architecture()
    assert str(raised.value) == "reading the architecture failed on the node (exit 1)"


def test_a_failing_real_command_reports_the_shell_error(node, dest):
    store = node.store(dest)
    with pytest.raises(_node_store.NodeCommandError) as raised:
        store.run('echo first >&2; echo "it broke" >&2; exit 4', "testing")
    assert str(raised.value) == "testing failed on the node (exit 4): it broke"


# -- Script output -------------------------------------------------------------


def test_error_reason_prefers_the_marked_line_over_chatter():
    stderr = f"{_node_scripts.ERROR_MARKER}the real reason\nShared connection to node1 closed.\n"
    assert _node_scripts.error_reason("", stderr) == "the real reason"
    assert _node_scripts.error_reason(f"{_node_scripts.ERROR_MARKER}from stdout\n", "noise\n") == "from stdout"
    assert _node_scripts.error_reason("out\n", "sh: warning\nsh: uname: not found\n") == "sh: uname: not found"
    assert _node_scripts.error_reason("only stdout\n", "") == "only stdout"
    assert _node_scripts.error_reason("", "") == ""
    assert _node_scripts.error_reason(None, None) == ""
    assert _node_scripts.error_reason("", "x" * 500) == "x" * 297 + "..."
    assert _node_scripts.error_reason("", "sh: \x1b]0;owned\x07") == "sh: \\x1b]0;owned\\x07"


def test_parse_fields_keeps_key_value_lines_in_order_and_skips_chatter():
    stdout = "link=a=b\nShared connection to node1 closed.\nsize=vmlinuz 4200\n=nokey\nnot a=field\nsize=x 1\n"
    assert _node_scripts.parse_fields(stdout) == [("link", "a=b"), ("size", "vmlinuz 4200"), ("size", "x 1")]
    assert _node_scripts.parse_fields(None) == []


# -- A store nobody else can change ----------------------------------------------------------


def test_a_symbolic_link_as_the_store_is_refused_before_anything_is_written(node, dest, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), store_of(dest))
    with pytest.raises(UnsafePathError) as raised:
        node.store(dest).current_release()
    assert str(raised.value).startswith(f"{store_of(dest)} is not a real directory")
    with pytest.raises(UnsafePathError):
        with node.store(dest).lock(5):
            pytest.fail("locked through a symbolic link")
    assert list(elsewhere.iterdir()) == []


def test_a_store_of_another_user_is_refused(node, dest):
    os.mkdir(store_of(dest), 0o755)
    os.chown(store_of(dest), 65534, 65534)
    with pytest.raises(UnsafePathError, match=f"belongs to user 65534, not to the staging user {os.geteuid()}"):
        node.store(dest).current_release()


def test_a_parent_others_can_write_is_refused(node, tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)
    with pytest.raises(UnsafePathError, match=f"{parent} is writable by other users"):
        node.store(str(parent / "staged")).current_release()


def test_verify_existing_checks_the_files_against_the_manifest_not_the_record(node, dest, tmp_path):
    release, record = stage_first(node, dest, tmp_path)
    planted = b"k" * len(KERNEL_1)
    with open(os.path.join(dest, "vmlinuz"), "wb") as handle:
        handle.write(planted)
    record["files"]["vmlinuz"]["sha256"] = sha256_hex(planted)
    set_record(dest, _store.record_bytes(record))
    store = node.store(dest)
    assert store.current_release(rehash=True) == record  # by its own record
    assert store.current_release(rehash=True, layers=release.staged_layers()) is None  # by the manifest


# -- The lock on the node ------------------------------------------------------------------


def lock_owner(dest):
    return _node_lock.read_owner(os.path.join(store_of(dest), ".lock"))


def test_the_lock_is_held_by_a_keeper_process_and_released_without_a_trace(node, dest):
    with node.store(dest).lock(5) as lock:
        owner = lock_owner(dest)
        pid, start = lock.keeper
        assert owner["pid"] == pid and owner["start"] == start == _node_lock.process_start(pid)
        assert owner["by"] == "controller delivery"
        assert owner["controller"] == f"{socket.gethostname()} {os.getpid()} {_node_lock.process_start(os.getpid())}"
        assert _node_lock.owner_is_alive(owner)
        lock.renew()
        assert lock.keeper != (pid, start) and lock_owner(dest)["pid"] == lock.keeper[0]
        wait_until_gone(pid)  # the old keeper is stopped
        keeper = lock.keeper[0]
    assert os.listdir(store_of(dest)) == []
    wait_until_gone(keeper)


def wait_until_gone(pid, timeout=5):
    deadline = time.monotonic() + timeout
    while _node_lock.owner_is_alive({"pid": pid}):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


def test_a_live_holder_is_waited_for_lock_timeout_and_named(node, dest):
    with _node_lock.StoreLock(store_of_made(dest), 5):  # host delivery, in this process
        started = time.monotonic()
        with pytest.raises(StageError) as raised:
            with node.store(dest).lock(1.5):
                pytest.fail("two runs held the lock")
    assert 1.5 <= time.monotonic() - started < 5
    assert f"its lock is held by pid {os.getpid()} (host delivery) since " in str(raised.value)
    assert str(raised.value).endswith("for over 1.5s (lock_timeout)")


def store_of_made(dest):
    os.makedirs(store_of(dest), mode=0o755, exist_ok=True)
    return store_of(dest)


def test_a_lock_whose_keeper_is_gone_is_taken_over(node, dest):
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = os.path.join(store_of_made(dest), ".lock")
    os.mkdir(lock)
    with open(os.path.join(lock, "owner"), "w", encoding="utf-8") as handle:
        handle.write(_node_lock.owner_text(gone.pid, "", "controller delivery") + "controller=elsewhere 1 1\n")
    with node.store(dest).lock(0) as held:
        assert lock_owner(dest)["pid"] == held.keeper[0]


def test_the_lock_of_a_controller_run_that_died_is_cleared_although_its_keeper_lives(node, dest):
    controller = subprocess.Popen(["true"])
    controller.wait()
    keeper = subprocess.Popen(["sleep", "60"])
    try:
        lock = os.path.join(store_of_made(dest), ".lock")
        os.mkdir(lock)
        with open(os.path.join(lock, "owner"), "w", encoding="utf-8") as handle:
            handle.write(
                _node_lock.owner_text(keeper.pid, _node_lock.process_start(keeper.pid), "controller delivery")
                + f"controller={socket.gethostname()} {controller.pid} 1\n"
            )
        with node.store(dest).lock(0) as held:
            assert held.keeper[0] != str(keeper.pid)
        assert keeper.wait(5) is not None  # the dead run's keeper was stopped
    finally:
        keeper.kill()
        keeper.wait()


def test_a_lock_taken_over_meanwhile_is_lost_and_nothing_is_published(node, dest, tmp_path):
    with node.store(dest).lock(5) as lock:
        lock_dir = os.path.join(store_of(dest), ".lock")
        with open(os.path.join(lock_dir, "owner"), "w", encoding="utf-8") as handle:
            handle.write(_node_lock.owner_text(os.getpid(), "", "another run"))
        with pytest.raises(StageError, match="lost the lock of .* on the node"):
            lock.renew()
    assert lock_owner(dest)["by"] == "another run"  # not released: it is not ours


def test_prepare_sweeps_what_dead_runs_left(node, dest):
    store = store_of_made(dest)
    for name in ("tmp-dead1", "trash-dead2", "link-3", ".lock-new-4", ".lock-stale-5"):
        os.mkdir(os.path.join(store, name))
        open(os.path.join(store, name, "data"), "wb").close()
    os.mkdir(os.path.join(store, "partial-sha256-" + "0" * 64))  # another release's
    with node.store(dest).lock(5):
        work = node.store(dest).prepare(10, MANIFEST_DIGEST)
    assert sorted(os.listdir(store)) == [os.path.basename(work)]
