# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store layout and the release record shared by both deliveries."""

from __future__ import annotations

import json

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _store


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
