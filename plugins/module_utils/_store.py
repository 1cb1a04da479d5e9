# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The on-disk layout of staged releases and their record, shared by both deliveries.

Layout (``dest`` = /var/lib/kubesolo/staged)::

    /var/lib/kubesolo/.staged.kubesolo-fleet/sha256-<hex>/vmlinuz
                                                          kubesolo-os.gz
                                                          release.json
    /var/lib/kubesolo/staged -> .staged.kubesolo-fleet/sha256-<hex>

``dest`` is a symbolic link into the hidden sibling store; publishing a
release is one atomic replacement of that link, so both files only ever change
together. Host delivery (_host_store.py) writes this layout with Python on the
node, controller delivery (plugin_utils/_node_store.py) with sh; either can
take over a store the other wrote.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import time

from ansible_collections.kubesolo.fleet.plugins.module_utils._about import (
    COLLECTION_NAME,
    COLLECTION_VERSION,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    InvalidReferenceError,
    StageError,
    UnsafePathError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._json import parse_json
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

RECORD_NAME = "release.json"
# The work directory of a release being staged: partial-<digest name> in the store.
PARTIAL_PREFIX = "partial-"
RECORD_SCHEMA = 1
MAX_RECORD_BYTES = 1024 * 1024
# The node agent asks for the image size plus 10 % before it updates.
SPACE_MARGIN_PERCENT = 10
SPACE_MARGIN = SPACE_MARGIN_PERCENT / 100


def store_dir(dest):
    """The hidden sibling directory that holds the releases behind ``dest``."""
    parent, name = os.path.split(dest.rstrip("/"))
    return os.path.join(parent, f".{name}.kubesolo-fleet")


def ancestors(directory):
    """``directory`` and each directory above it up to ``/``, nearest first (by name, not resolved)."""
    chain = [posixpath.normpath(directory)]
    while chain[-1] != "/":
        chain.append(posixpath.dirname(chain[-1]))
    return chain


class PathFacts:
    """What ``lstat`` says of one path: its owner and mode (type bits included)."""

    def __init__(self, path, uid, mode):
        self.path = path
        self.uid = uid
        self.mode = mode


def check_location(store, chain, store_facts, euid):
    """Refuse (UnsafePathError) a store that another account could change or replace.

    ``chain``: PathFacts of the existing directories above the store (both by
    name and resolved: see ancestors()); ``store_facts``: the store's, or None
    when it does not exist yet. Each directory above must belong to root or to
    the running user (``euid``) and be writable by its owner alone, unless it
    is root's and sticky, like /tmp (there nobody can rename another's entry).
    The store must be a real directory of the running user that only it can
    write. A symbolic link on the way is judged by the directory holding it.
    """
    for facts in chain:
        if stat.S_ISLNK(facts.mode):
            continue
        if not stat.S_ISDIR(facts.mode):
            raise StageError(f"{facts.path} is not a directory; cannot stage below it")
        if facts.uid not in (0, euid):
            raise UnsafePathError(
                f"{facts.path} belongs to user {facts.uid}, who could replace what is staged below it; "
                f"stage into a directory owned by root or the staging user"
            )
        shared = facts.mode & (stat.S_IWGRP | stat.S_IWOTH)
        if shared and not (facts.mode & stat.S_ISVTX and facts.uid == 0):
            raise UnsafePathError(
                f"{facts.path} is writable by other users (mode {stat.S_IMODE(facts.mode):04o}), who could "
                f"replace what is staged below it; stage elsewhere or remove group/other write access"
            )
    if store_facts is None:
        return
    if stat.S_ISLNK(store_facts.mode) or not stat.S_ISDIR(store_facts.mode):
        raise UnsafePathError(
            f"{store} is not a real directory (a symbolic link or another file); refusing to stage "
            f"through it (remove it if it is not yours)"
        )
    if store_facts.uid != euid:
        raise UnsafePathError(
            f"{store} belongs to user {store_facts.uid}, not to the staging user {euid}; refusing to use "
            f"a store another account controls"
        )
    if store_facts.mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePathError(
            f"{store} is writable by other users (mode {stat.S_IMODE(store_facts.mode):04o}); refusing "
            f"to use it (chmod go-w it after checking its contents)"
        )


def digest_name(digest):
    """A digest as a file name: ``sha256:<hex>`` -> ``sha256-<hex>`` (release directories, blob locks)."""
    return digest.replace(":", "-")


def space_needed(missing_bytes):
    """Free bytes to ask for before writing ``missing_bytes``: the same margin as the node agent."""
    return int(missing_bytes * (1 + SPACE_MARGIN))


def managed_release_dir(dest, link_target):
    """The release directory a ``dest`` symlink names; refuses links we did not make."""
    release_dir = os.path.normpath(os.path.join(os.path.dirname(dest), link_target))
    if os.path.dirname(release_dir) != os.path.normpath(store_dir(dest)):
        raise StageError(
            f"{dest} is a symbolic link to {printable(link_target)}, which kubesolo.fleet did not create; "
            "refusing to replace it"
        )
    return release_dir


def refuse_foreign(dest):
    """Refuse a ``dest`` that holds something this collection did not create."""
    raise StageError(
        f"{dest} exists and is not a release staged by kubesolo.fleet; refusing to "
        "replace it (remove it or choose another dest)"
    )


def parse_record(data):
    """A release.json record from its bytes, or None when it is not one."""
    try:
        record = parse_json(data)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
        return None
    if not isinstance(record.get("files"), dict):
        return None
    try:
        # What the changed rule and diff mode compare: without it the record names no release.
        parse_digest(record.get("manifest_digest"))
    except InvalidReferenceError:
        return None
    return record


def file_expectations(record, layers=None):
    """What each file of ``record`` must be on disk: name -> (size, algorithm, hex digest).

    ``layers`` (StagedLayer, from the manifest being staged): when the record
    names exactly these layers, their manifest digests are what the files are
    checked against, so a record rewritten to match other content proves
    nothing. For any other release, its record's sha256 is all there is.
    None for a record whose file entries are malformed.
    """
    files = record["files"]
    if not all(isinstance(entry, dict) and os.path.basename(name) == name for name, entry in files.items()):
        return None
    if layers and {name: entry.get("digest") for name, entry in files.items()} == {
        staged.name: staged.layer["digest"] for staged in layers
    }:
        expected = {}
        for staged in layers:
            algorithm, hexdigest = parse_digest(staged.layer["digest"])
            expected[staged.name] = (staged.layer["size"], algorithm, hexdigest)
        return expected
    return {name: (entry.get("size"), "sha256", entry.get("sha256")) for name, entry in files.items()}


def file_entry(layer, sha256):
    """The record's entry for one staged file."""
    return {"media_type": layer["media_type"], "digest": layer["digest"], "size": layer["size"], "sha256": sha256}


def build_record(release, repository, files):
    """The release.json content; ``files`` maps file names to their file_entry()."""
    return {
        "schema": RECORD_SCHEMA,
        "staged_by": f"{COLLECTION_NAME} {COLLECTION_VERSION}",
        "staged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "repository": str(repository),
        "manifest_digest": release.manifest_digest,
        "index_digest": release.index_digest,
        "architecture": str(release.platform),
        "version": release.metadata["version"],
        "metadata": release.metadata,
        "files": files,
    }


def record_bytes(record):
    """release.json as written to disk."""
    return json.dumps(record, indent=2, sort_keys=True).encode("utf-8")
