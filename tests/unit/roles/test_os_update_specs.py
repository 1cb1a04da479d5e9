# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The os_update role's argument specs must agree with its defaults."""

from __future__ import annotations

import os

import pytest
import yaml

from ansible_collections.kubesolo.fleet.plugins.module_utils import _about

# The role of the collection the module was imported from: plugins/module_utils/../../roles/os_update
ROLE = os.path.join(os.path.dirname(os.path.abspath(_about.__file__)), os.pardir, os.pardir, "roles", "os_update")


def _load(*parts):
    with open(os.path.join(ROLE, *parts), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


DEFAULTS = _load("defaults", "main.yml")
ENTRY_POINTS = _load("meta", "argument_specs.yml")["argument_specs"]


def _is_template(value):
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _spec_defaults():
    """(entry point, option, default) for every option whose spec has a default and whose
    defaults/main.yml value is not a template (those are computed at run time)."""
    return [
        (entry, name, option["default"])
        for entry, spec in sorted(ENTRY_POINTS.items())
        for name, option in sorted((spec.get("options") or {}).items())
        if "default" in option and not _is_template(DEFAULTS.get(name))
    ]


def test_entry_points():
    assert sorted(ENTRY_POINTS) == ["activate", "main", "report"]


def test_spec_options_match_the_defaults_keys():
    options = set()
    for spec in ENTRY_POINTS.values():
        options.update(spec.get("options") or {})
    assert sorted(options) == sorted(DEFAULTS)


def test_every_option_is_namespaced():
    for spec in ENTRY_POINTS.values():
        for name in spec.get("options") or {}:
            assert name.startswith("kubesolo_fleet_"), name


@pytest.mark.parametrize(
    "entry, name, default",
    _spec_defaults(),
    ids=[f"{entry}-{name}" for entry, name, _default in _spec_defaults()],
)
def test_spec_default_equals_the_defaults_file(entry, name, default):
    value = DEFAULTS[name]
    assert default == value, f"{name}: argument_specs {entry} says {default!r}, defaults/main.yml {value!r}"
    assert isinstance(default, bool) == isinstance(value, bool)


def test_some_defaults_are_compared():
    assert len(_spec_defaults()) >= 15
