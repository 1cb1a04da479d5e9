# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every kubesolo_fleet_* variable the os_update role or the playbooks read is covered: by the
argument spec of the entry point that reads it, or as a fact the role sets, or as one of the
few variables of the playbooks themselves."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from ansible_collections.kubesolo.fleet.plugins.module_utils import _about

COLLECTION = os.path.join(os.path.dirname(os.path.abspath(_about.__file__)), os.pardir, os.pardir)
ROLE = os.path.join(COLLECTION, "roles", "os_update")
PLAYBOOKS = os.path.join(COLLECTION, "playbooks")

#: Variables of the playbooks, not of the role: which hosts, and the activation batches.
PLAYBOOK_VARIABLES = {"kubesolo_fleet_hosts", "kubesolo_fleet_rollout_batches"}
#: Facts the role sets for its callers (its other entry points, the playbooks, the report).
PUBLIC_FACTS = {
    "kubesolo_fleet_decision",
    "kubesolo_fleet_staged",
    "kubesolo_fleet_slot_staged",
    "kubesolo_fleet_ab_state",
    "kubesolo_fleet_rollout_status",
    "kubesolo_fleet_rollout_reason",
    "kubesolo_fleet_rollout_timings",
}

INCLUDES = ("ansible.builtin.import_tasks", "ansible.builtin.include_tasks", "import_tasks", "include_tasks")
TEMPLATES = ("ansible.builtin.template", "template")
SET_FACT = ("ansible.builtin.set_fact", "set_fact")
# A variable name, not an attribute (x.kubesolo_fleet_y) nor a private name (_kubesolo_fleet_y).
PUBLIC_NAME = re.compile(r"(?<![\w.])kubesolo_fleet_\w+")
PRIVATE_NAME = re.compile(r"(?<![\w.])_kubesolo_fleet_\w+")
TEMPLATE_LOOKUP = re.compile(r"""lookup\(\s*['"](?:ansible\.builtin\.)?template['"]\s*,\s*['"]([^'"]+)['"]""")
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")


def _read(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as handle:
        return handle.read()


ENTRY_POINTS = yaml.safe_load(_read(ROLE, "meta", "argument_specs.yml"))["argument_specs"]
ROLE_VARS = yaml.safe_load(_read(ROLE, "vars", "main.yml"))


def _dicts(node):
    """Every mapping in a loaded YAML document, nested ones included (blocks, rescue, vars...)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _dicts(value)


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _templates_named(name):
    """The files of templates/ that a template name, possibly templated ("report.{{ item }}.j2"), can mean."""
    pattern = re.compile("^{}$".format(".+".join(re.escape(part) for part in JINJA.split(name))))
    found = sorted(path for path in os.listdir(os.path.join(ROLE, "templates")) if pattern.match(path))
    assert found, f"no template matches {name!r}"
    return [os.path.join("templates", path) for path in found]


def _entry_files(entry):
    """The role files (relative to the role) that the entry point runs: its task file, the task
    files it imports or includes, and the templates they render."""
    todo, files = [os.path.join("tasks", entry + ".yml")], []
    while todo:
        path = todo.pop(0)
        if path in files:
            continue
        files.append(path)
        if not path.startswith("tasks"):
            continue
        tasks = yaml.safe_load(_read(ROLE, path)) or []
        for task in _dicts(tasks):
            for key in INCLUDES:
                if key in task:
                    target = task[key]["file"] if isinstance(task[key], dict) else task[key]
                    todo.append(os.path.join("tasks", target))
            for key in TEMPLATES:
                if isinstance(task.get(key), dict) and "src" in task[key]:
                    todo.extend(_templates_named(task[key]["src"]))
        for text in _strings(tasks):
            for name in TEMPLATE_LOOKUP.findall(text):
                todo.extend(_templates_named(name))
    return files


def _names(texts):
    """The public kubesolo_fleet_* names in ``texts``, through the role variables (vars/main.yml)
    that they use."""
    texts, seen = list(texts), set()
    while True:
        private = {name for text in texts for name in PRIVATE_NAME.findall(text)} & set(ROLE_VARS) - seen
        if not private:
            break
        seen |= private
        texts += [yaml.safe_dump(ROLE_VARS[name]) for name in sorted(private)]
    return {name for text in texts for name in PUBLIC_NAME.findall(text)}


def _set_facts(documents):
    """Names set by set_fact or register in the loaded task or play documents."""
    facts = set()
    for task in _dicts(documents):
        for key in SET_FACT:
            if isinstance(task.get(key), dict):
                facts.update(task[key])
        if isinstance(task.get("register"), str):
            facts.add(task["register"])
    return {name for name in facts if name.startswith("kubesolo_fleet_")}


def _role_task_files():
    return sorted(
        os.path.join("tasks", name) for name in os.listdir(os.path.join(ROLE, "tasks")) if name.endswith(".yml")
    )


def _playbooks():
    return sorted(os.path.join(PLAYBOOKS, name) for name in os.listdir(PLAYBOOKS) if name.endswith(".yml"))


ENTRY_FILES = {entry: _entry_files(entry) for entry in sorted(ENTRY_POINTS)}
ROLE_FACTS = _set_facts([yaml.safe_load(_read(ROLE, path)) for path in _role_task_files()])
OPTIONS = {entry: set(spec.get("options") or {}) for entry, spec in ENTRY_POINTS.items()}


def _read_by(entry):
    return _names(_read(ROLE, path) for path in ENTRY_FILES[entry]) - ROLE_FACTS - PLAYBOOK_VARIABLES


def test_the_entry_points_run_every_task_file():
    assert ENTRY_FILES["main"][:6] == ["tasks/main.yml"] + [
        f"tasks/{phase}.yml" for phase in ("preflight", "probe", "resolve", "decide", "stage")
    ]
    assert "tasks/reboot.yml" in ENTRY_FILES["activate"]
    assert sorted(path for path in ENTRY_FILES["report"] if path.startswith("templates")) == sorted(
        os.path.join("templates", name) for name in os.listdir(os.path.join(ROLE, "templates"))
    )
    run = {path for files in ENTRY_FILES.values() for path in files}
    assert sorted(set(_role_task_files()) - run) == []


def test_the_facts_the_role_sets_are_found():
    assert ROLE_FACTS == PUBLIC_FACTS


def test_the_scan_sees_what_each_entry_point_reads():
    assert {
        "kubesolo_fleet_repository",
        "kubesolo_fleet_timeout",
        "kubesolo_fleet_maintenance_window",
        "kubesolo_fleet_stage",
    } <= _read_by("main")  # the timeout only through vars/main.yml
    assert {"kubesolo_fleet_activate_command", "kubesolo_fleet_boot_timeout"} <= _read_by("activate")
    assert {"kubesolo_fleet_report_dir", "kubesolo_fleet_repository"} <= _read_by("report")  # templates too


def test_every_variable_the_role_reads_is_in_an_argument_spec():
    paths = [
        os.path.join(ROLE, directory, name)
        for directory in ("tasks", "templates", "vars")
        if os.path.isdir(os.path.join(ROLE, directory))
        for name in os.listdir(os.path.join(ROLE, directory))
    ]
    read = {name for path in paths for name in PUBLIC_NAME.findall(_read(path))} - ROLE_FACTS - PLAYBOOK_VARIABLES
    options = set().union(*OPTIONS.values())
    assert sorted(read - options) == []


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_each_entry_point_s_spec_covers_what_its_files_read(entry):
    assert sorted(_read_by(entry) - OPTIONS[entry]) == [], ENTRY_FILES[entry]


def test_the_playbooks_read_specced_variables_facts_and_their_own():
    options = set().union(*OPTIONS.values())
    for path in _playbooks():
        text = _read(path)
        facts = _set_facts(yaml.safe_load(text))
        assert sorted(_names([text]) - options - ROLE_FACTS - facts - PLAYBOOK_VARIABLES) == [], path


def test_the_playbook_variables_are_the_playbooks_and_documented():
    readme = _read(ROLE, "README.md")
    read = set().union(*(_names([_read(path)]) for path in _playbooks()))
    for name in sorted(PLAYBOOK_VARIABLES):
        assert name in read, name
        assert not any(name in options for options in OPTIONS.values()), name
        assert name in readme, name
