# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store layout and the release record shared by both deliveries."""

from __future__ import annotations

import json
import stat

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _store
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import StageError, UnsafePathError
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import make_release


@pytest.mark.parametrize(
    "dest_path, store",
    [
        ("/var/lib/kubesolo/staged", "/var/lib/kubesolo/.staged.kubesolo-fleet"),
        ("/var/lib/kubesolo/staged/", "/var/lib/kubesolo/.staged.kubesolo-fleet"),
        ("/boot", "/.boot.kubesolo-fleet"),
    ],
)
def test_store_dir(dest_path, store):
    assert _store.store_dir(dest_path) == store


def test_digest_name():
    assert _store.digest_name("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32


@pytest.mark.parametrize("data", [b"", b"\xff", b"[]", b'{"schema": 2, "files": {}}', b'{"schema": 1}'])
def test_parse_record_refuses_what_is_not_a_record(data):
    assert _store.parse_record(data) is None


@pytest.mark.parametrize("digest", [None, "", "sha256:short", 42])
def test_a_record_without_a_manifest_digest_is_not_a_record(digest):
    record = {"schema": 1, "files": {}, "manifest_digest": digest}
    if digest is None:
        del record["manifest_digest"]
    assert _store.parse_record(json.dumps(record).encode()) is None
    record["manifest_digest"] = "sha256:" + "a" * 64
    assert _store.parse_record(json.dumps(record).encode()) == record


def test_a_record_nested_too_deeply_is_not_a_record():
    assert _store.parse_record(b"[" * 100000 + b"]" * 100000) is None


# -- Who could change the store: check_location -------------------------------------------

DIR, LINK, FILE = stat.S_IFDIR, stat.S_IFLNK, stat.S_IFREG
ME = 1000


def facts(path, uid, mode):
    return _store.PathFacts(path, uid, mode)


def test_ancestors_are_every_directory_up_to_the_root():
    assert _store.ancestors("/var/lib/kubesolo/") == ["/var/lib/kubesolo", "/var/lib", "/var", "/"]
    assert _store.ancestors("/") == ["/"]


@pytest.mark.parametrize(
    "chain",
    [
        [facts("/var/lib", 0, DIR | 0o755), facts("/", 0, DIR | 0o755)],
        [facts("/home/me", ME, DIR | 0o700)],  # the staging user's own directory
        [facts("/tmp", 0, DIR | 0o1777)],  # root's and sticky: nobody renames another's entries
        [facts("/var/run", 0, LINK | 0o777)],  # a link is judged by the directory that holds it
    ],
)
def test_directories_only_root_or_the_staging_user_can_change_are_accepted(chain):
    _store.check_location("/x/.staged.kubesolo-fleet", chain, None, ME)
    _store.check_location("/x/.staged.kubesolo-fleet", chain, facts("/x/.s", ME, DIR | 0o755), ME)


@pytest.mark.parametrize(
    "above, fragment",
    [
        (facts("/srv/agent", 999, DIR | 0o755), "/srv/agent belongs to user 999, who could replace"),
        (facts("/srv/shared", 0, DIR | 0o777), "/srv/shared is writable by other users (mode 0777)"),
        (facts("/srv/team", 0, DIR | 0o775), "/srv/team is writable by other users (mode 0775)"),
        (facts("/srv/tmp", ME, DIR | 0o1777), "/srv/tmp is writable by other users (mode 1777)"),
    ],
)
def test_a_directory_above_that_another_account_can_change_is_refused(above, fragment):
    with pytest.raises(UnsafePathError) as raised:
        _store.check_location("/srv/x/.s", [facts("/srv/x", 0, DIR | 0o755), above], None, ME)
    assert fragment in str(raised.value)
    assert raised.value.code == "unsafe_path"


@pytest.mark.parametrize(
    "store, fragment",
    [
        (facts("/x/.s", ME, LINK | 0o777), "/x/.s is not a real directory (a symbolic link or another file)"),
        (facts("/x/.s", ME, FILE | 0o644), "/x/.s is not a real directory"),
        (facts("/x/.s", 0, DIR | 0o755), "/x/.s belongs to user 0, not to the staging user 1000"),
        (facts("/x/.s", ME, DIR | 0o775), "/x/.s is writable by other users (mode 0775)"),
        (facts("/x/.s", ME, DIR | 0o1777), "/x/.s is writable by other users (mode 1777)"),
    ],
)
def test_a_store_that_is_not_the_staging_users_alone_is_refused(store, fragment):
    with pytest.raises(UnsafePathError) as raised:
        _store.check_location("/x/.s", [facts("/x", 0, DIR | 0o755)], store, ME)
    assert fragment in str(raised.value)


def test_a_file_on_the_way_is_a_plain_stage_error():
    with pytest.raises(StageError) as raised:
        _store.check_location("/x/.s", [facts("/x", ME, FILE | 0o644)], None, ME)
    assert str(raised.value) == "/x is not a directory; cannot stage below it"
    assert raised.value.code == "stage_failed"


# -- What the files must be: file_expectations ------------------------------------------


def test_the_release_being_staged_is_checked_against_its_manifest_not_its_record():
    release = make_release(b"kernel", b"initramfs")
    layers = release.staged_layers()
    files = {
        staged.name: {"digest": staged.layer["digest"], "size": staged.layer["size"], "sha256": "f" * 64}
        for staged in layers
    }
    record = {"files": files}
    expected = _store.file_expectations(record, layers)
    assert expected == {
        staged.name: (staged.layer["size"], "sha256", staged.layer["digest"].split(":")[1]) for staged in layers
    }
    # Another release (or none given): the record's own sha256 is all there is to compare with.
    assert _store.file_expectations(record) == {
        name: (entry["size"], "sha256", "f" * 64) for name, entry in files.items()
    }


def test_a_record_with_malformed_file_entries_has_no_expectations():
    assert _store.file_expectations({"files": {"vmlinuz": "not an entry"}}) is None
    assert _store.file_expectations({"files": {"../vmlinuz": {"size": 1}}}) is None
