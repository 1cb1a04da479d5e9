"""The ``ansible_collections/kubesolo/fleet`` tree that makes the working copy importable.

Ansible (and Python, for ``ansible_collections.kubesolo.fleet...`` imports) only finds a collection
below a directory named ``ansible_collections/<namespace>/<name>``.  The repository root *is* the
collection root, so we build that layout once per process as a symlink in a temporary directory.
The symlink lives outside the repository on purpose: a link back to the repo root from inside the
repo would make every tree walker (ansible-test, ansible-lint, galaxy build) loop.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

NAMESPACE = "kubesolo"
NAME = "fleet"

#: Root of the working copy (== collection root).  Not resolved, so a checkout that already sits
#: at ``.../ansible_collections/kubesolo/fleet`` (as under ansible-test) is recognised below.
REPO_ROOT = Path(os.path.abspath(__file__)).parents[2]

_collections_root: Path | None = None


def collections_root() -> Path:
    """Return a directory holding ``ansible_collections/kubesolo/fleet`` -> the working copy.

    Created on first call and removed at interpreter exit; later calls return the same path.
    Usable as an ``ANSIBLE_COLLECTIONS_PATH`` entry and as a ``sys.path`` entry.
    """
    global _collections_root  # pylint: disable=global-statement
    if _collections_root is not None:
        return _collections_root

    if REPO_ROOT.parts[-3:] == ("ansible_collections", NAMESPACE, NAME):
        # Already laid out that way: use it as is, nothing to create or clean up.
        _collections_root = REPO_ROOT.parents[2]
        return _collections_root

    root = Path(tempfile.mkdtemp(prefix="kubesolo-fleet-collections-"))
    link = root / "ansible_collections" / NAMESPACE / NAME
    link.parent.mkdir(parents=True)
    link.symlink_to(REPO_ROOT.resolve(), target_is_directory=True)
    # rmtree removes the symlink itself and never follows it into the repository.
    atexit.register(shutil.rmtree, root, True)
    _collections_root = root
    return root


def collection_path() -> Path:
    """Return the (symlinked) collection directory inside :func:`collections_root`."""
    return collections_root() / "ansible_collections" / NAMESPACE / NAME
