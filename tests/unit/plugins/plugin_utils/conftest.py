# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the node-side tests: a node per shell, and a dest whose parent exists."""

from __future__ import annotations

import os

import pytest

from ansible_collections.kubesolo.fleet.tests.unit.plugins.plugin_utils.node_fakes import (
    SHELLS,
    busybox_bin_dir,
    node_of,
)


@pytest.fixture(scope="session")
def busybox_bin(tmp_path_factory):
    return busybox_bin_dir(tmp_path_factory)


@pytest.fixture(params=SHELLS)
def node(request):
    return node_of(request)


@pytest.fixture
def dest(tmp_path):
    os.makedirs(str(tmp_path / "boot"))
    return str(tmp_path / "boot" / "staged")
