# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection identity in _about.py must match galaxy.yml."""

from __future__ import annotations

import os

import yaml

from ansible_collections.kubesolo.fleet.plugins.module_utils import _about

# galaxy.yml of the collection the module was imported from: plugins/module_utils/../../
GALAXY_YML = os.path.join(os.path.dirname(os.path.abspath(_about.__file__)), os.pardir, os.pardir, "galaxy.yml")


def _galaxy():
    with open(GALAXY_YML, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_collection_version_matches_galaxy_yml():
    assert _about.COLLECTION_VERSION == str(_galaxy()["version"])


def test_collection_name_matches_galaxy_yml():
    galaxy = _galaxy()
    assert _about.COLLECTION_NAME == "{}.{}".format(galaxy["namespace"], galaxy["name"])
