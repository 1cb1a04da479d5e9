"""Run the real ``ansible-playbook`` against the working copy of the collection.

Every run is hermetic: its own ansible.cfg (empty), inventory, temp dirs and collections path
(the symlink tree of :mod:`tests.support.collection`, with ``sys.path`` scanning off, so an
installed copy of kubesolo.fleet is never used).  Task results come back through the
``result_capture`` callback in ``tests/support/callback`` as JSON lines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .collection import collections_root
from .process import descendants

CALLBACK_DIR = Path(__file__).resolve().parent / "callback"
PLAYBOOK_TIMEOUT = 600


def ansible_playbook_path() -> str:
    """``ansible-playbook`` of the running interpreter's environment (the venv's ``bin``)."""
    candidate = Path(sys.executable).parent / "ansible-playbook"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ansible-playbook")
    if not found:
        raise FileNotFoundError(f"ansible-playbook not found next to {sys.executable} nor on PATH")
    return found


@dataclass
class PlaybookRun:
    """Outcome of one ``ansible-playbook`` run."""

    rc: int
    stdout: str
    stderr: str
    results: list[dict] = field(default_factory=list)  # {host, task, action, play, status, result}
    command: list[str] = field(default_factory=list)

    def records(self, task_name: str, host: str = "localhost") -> list[dict]:
        """All result records of ``task_name`` on ``host`` (several for a repeated task)."""
        return [r for r in self.results if r["task"] == task_name and r["host"] == host]

    def record(self, task_name: str, host: str = "localhost") -> dict:
        """The last result record of ``task_name`` on ``host``; KeyError listing what ran if none."""
        found = self.records(task_name, host)
        if not found:
            ran = sorted({(r["host"], r["task"]) for r in self.results})
            raise KeyError(f"no result for task {task_name!r} on {host!r}; results: {ran}\n{self}")
        return found[-1]

    def result(self, task_name: str, host: str = "localhost") -> dict:
        """The result dict (module return values) of ``task_name`` on ``host``."""
        return self.record(task_name, host)["result"]

    def status(self, task_name: str, host: str = "localhost") -> str:
        """``ok``, ``changed``, ``failed``, ``skipped`` or ``unreachable``."""
        return self.record(task_name, host)["status"]

    def __str__(self) -> str:
        return f"ansible-playbook rc={self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _as_plays(plays_or_tasks: Sequence[Mapping]) -> list[dict]:
    """A list of plays stays as is; a list of tasks is wrapped in one play on localhost."""
    items = [dict(item) for item in plays_or_tasks]
    if items and all("hosts" in item or "import_playbook" in item for item in items):
        return items
    return [{"name": "test", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": items}]


def _inventory_file(inventory, tmp_path: Path) -> str:
    """Return an ``-i`` value: ``None`` = localhost only, dict = YAML inventory, else path, host list or INI text."""
    path = tmp_path / "inventory.yml"
    if inventory is None:
        inventory = {
            "all": {
                "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
            }
        }
    if isinstance(inventory, Mapping):
        path.write_text(yaml.safe_dump(dict(inventory), sort_keys=False), encoding="utf-8")
        return str(path)
    if isinstance(inventory, os.PathLike):
        return str(inventory)
    if "\n" not in inventory and (inventory.endswith(",") or os.path.exists(inventory)):
        return inventory  # a path, or a host list such as "node1,node2,"
    path = tmp_path / "inventory.ini"
    path.write_text(str(inventory), encoding="utf-8")
    return str(path)


@dataclass
class PlaybookCommand:
    """What :func:`run_playbook` runs: the argv, its environment and working directory, and where
    the results arrive."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    results_file: Path

    def results(self) -> list[dict]:
        """The result records written so far (a run in progress keeps appending)."""
        if not self.results_file.exists():
            return []
        with open(self.results_file, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip() and line.endswith("\n")]


def playbook_command(  # pylint: disable=too-many-arguments,too-many-locals
    plays_or_tasks: Sequence[Mapping] | str,
    *,
    tmp_path: Path,
    inventory=None,
    extra_vars: Mapping | None = None,
    check: bool = False,
    diff: bool = False,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> PlaybookCommand:
    """Write the playbook, inventory and config under ``tmp_path``; the arguments are :func:`run_playbook`'s."""
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    if isinstance(plays_or_tasks, str):
        playbook = plays_or_tasks
    else:
        playbook = tmp_path / "playbook.yml"
        playbook.write_text(yaml.safe_dump(_as_plays(plays_or_tasks), sort_keys=False), encoding="utf-8")
    results_file = tmp_path / "results.jsonl"
    results_file.unlink(missing_ok=True)
    config = tmp_path / "ansible.cfg"
    config.write_text("", encoding="utf-8")
    ansible_tmp = tmp_path / "ansible-tmp"

    command = [ansible_playbook_path(), "-i", _inventory_file(inventory, tmp_path), str(playbook)]
    if extra_vars:
        extra_vars_file = tmp_path / "extra_vars.json"
        extra_vars_file.write_text(json.dumps(dict(extra_vars)), encoding="utf-8")
        command += ["-e", f"@{extra_vars_file}"]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    command += list(args)

    run_env = dict(os.environ)
    run_env.update(
        {
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_COLLECTIONS_PATH": str(collections_root()),
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_DIR),
            "ANSIBLE_CALLBACKS_ENABLED": "result_capture",
            "RESULT_CAPTURE_FILE": str(results_file),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCALHOST_WARNING": "false",
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_HOST_KEY_CHECKING": "false",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_LOCAL_TEMP": str(ansible_tmp / "local"),
            "ANSIBLE_REMOTE_TEMP": str(ansible_tmp / "remote"),
            "ANSIBLE_HOME": str(ansible_tmp / "home"),
        }
    )
    run_env.update(env or {})
    return PlaybookCommand(command, run_env, tmp_path, results_file)


def run_playbook(
    plays_or_tasks: Sequence[Mapping] | str, *, timeout: float = PLAYBOOK_TIMEOUT, **kwargs
) -> PlaybookRun:
    """Write ``plays_or_tasks`` as a playbook under ``tmp_path`` and run it; never raises on rc.

    A string is passed to ``ansible-playbook`` as is: a playbook of a collection by name
    (``kubesolo.fleet.check``) or a playbook file.

    Keyword arguments: ``tmp_path`` (required); ``inventory``: ``None`` (localhost, local
    connection, this interpreter), a dict (YAML inventory), an existing path, a
    ``"host1,host2,"`` list, or INI text; ``extra_vars`` go through a JSON file so types survive;
    ``check``, ``diff``; ``env`` is added last (it can override anything set here); ``args`` are
    appended.
    """
    command = playbook_command(plays_or_tasks, **kwargs)
    completed = subprocess.run(
        command.argv,
        cwd=command.cwd,
        env=command.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PlaybookRun(completed.returncode, completed.stdout, completed.stderr, command.results(), command.argv)


def kill_playbook(process: subprocess.Popen) -> None:
    """SIGKILL a playbook started by :func:`start_playbook` and every process it forked: Ansible's
    workers leave its process group, so killing the group alone lets a worker finish its task."""
    doomed = descendants(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def start_playbook(plays_or_tasks: Sequence[Mapping] | str, **kwargs) -> tuple[subprocess.Popen, PlaybookCommand]:
    """Start what :func:`run_playbook` would run, in a session of its own (``os.killpg`` ends it
    with every fork and SSH connection); output goes to ``playbook.log`` in ``tmp_path``."""
    command = playbook_command(plays_or_tasks, **kwargs)
    with open(command.cwd / "playbook.log", "wb") as log:
        process = subprocess.Popen(  # pylint: disable=consider-using-with
            command.argv,
            cwd=command.cwd,
            env=command.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, command
