"""Simulated KubeSolo OS nodes for the fleet playbooks (``check``, ``rollout``).

Every node is a host of the inventory with the local connection and its own root directory under
the test's temporary directory: ``<root>/etc/os-release`` holds its ``VERSION_ID`` and
``<root>/var/lib/kubesolo/update/staged`` is its stage directory.  The architecture is set per host
with ``kubesolo_fleet_architecture`` (the machine's own ``uname -m`` would be the same everywhere).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

STAGE_SUBDIR = "var/lib/kubesolo/update/staged"
VERSION_SUBDIR = "etc/os-release"

#: Stands in for the node agent: the staged files must be there, then the node "boots" the new
#: version (its VERSION_ID becomes the available version).
ACTIVATE_COMMAND = (
    "test -s {{ kubesolo_fleet_stage_dir }}/vmlinuz && test -s {{ kubesolo_fleet_stage_dir }}/kubesolo-os.gz && "
    "sed -i 's/^VERSION_ID=.*/VERSION_ID={{ kubesolo_fleet_decision.available_version }}/' "
    "{{ kubesolo_fleet_version_file }}"
)
HEALTH_COMMAND = "test -s {{ kubesolo_fleet_stage_dir }}/release.json"

_NODE_KEYS = ("arch", "version")


class Fleet:
    """Simulated nodes ``{name: {"arch": ..., "version": ..., <more host vars>}}`` in inventory order.

    ``version`` is written as ``VERSION_ID`` into the node's os-release; ``None`` writes no
    os-release at all.  Other keys become host variables.
    """

    def __init__(self, root: Path, repository: str, nodes: Mapping[str, Mapping]) -> None:
        self.root = Path(root)
        self.repository = repository
        self.nodes = {name: dict(spec) for name, spec in nodes.items()}
        for name, spec in self.nodes.items():
            version_file = self.version_file(name)
            version_file.parent.mkdir(parents=True, exist_ok=True)
            if spec.get("version") is not None:
                version_file.write_text(
                    f'NAME="KubeSolo OS"\nID=kubesolo\nVERSION_ID={spec["version"]}\n', encoding="utf-8"
                )

    @property
    def hosts(self) -> list[str]:
        """Host names in inventory order."""
        return list(self.nodes)

    def inventory(self, **group_vars) -> dict:
        """The inventory dict: local connection, this interpreter, per-host root; ``group_vars`` for all."""
        hosts = {}
        for name, spec in self.nodes.items():
            hostvars = {
                "kubesolo_fleet_architecture": spec["arch"],
                "kubesolo_fleet_version_file": str(self.version_file(name)),
                "kubesolo_fleet_stage_dir": str(self.stage_dir(name)),
            }
            hostvars.update({key: value for key, value in spec.items() if key not in _NODE_KEYS})
            hosts[name] = hostvars
        all_vars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "kubesolo_fleet_plain_http": True,
            "kubesolo_fleet_repository": self.repository,
        }
        all_vars.update(group_vars)
        # These nodes are directories, not A/B disks: the activation command stands in for the
        # node agent, and without one the rollout only stages.
        all_vars.setdefault(
            "kubesolo_fleet_activation", "command" if all_vars.get("kubesolo_fleet_activate_command") else "none"
        )
        all_vars.setdefault("kubesolo_fleet_health_retries", 0)
        return {"all": {"vars": all_vars, "hosts": hosts}}

    def node_root(self, host: str) -> Path:
        return self.root / "nodes" / host

    def version_file(self, host: str) -> Path:
        return self.node_root(host) / VERSION_SUBDIR

    def stage_dir(self, host: str) -> Path:
        return self.node_root(host) / STAGE_SUBDIR

    def version_id(self, host: str) -> str | None:
        """The node's VERSION_ID now (None without os-release)."""
        try:
            text = self.version_file(host).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        match = re.search(r"^VERSION_ID=(.*)$", text, re.MULTILINE)
        return match.group(1) if match else None

    def files(self, host: str) -> set[str]:
        """Every path below the node's root (relative, directories included)."""
        root = self.node_root(host)
        return {str(path.relative_to(root)) for path in root.rglob("*")}

    def touched_stage(self, host: str) -> bool:
        """Whether anything exists at the stage directory or its hidden sibling store."""
        stage = self.stage_dir(host)
        store = stage.parent / f".{stage.name}.kubesolo-fleet"
        return stage.exists() or stage.is_symlink() or store.exists()

    def staged_record(self, host: str) -> dict:
        """The node's ``release.json`` (FileNotFoundError when nothing is staged)."""
        return json.loads((self.stage_dir(host) / "release.json").read_text(encoding="utf-8"))

    def staged_bytes(self, host: str, name: str) -> bytes:
        return (self.stage_dir(host) / name).read_bytes()


def read_report(report_dir: Path) -> dict[str, dict]:
    """``report.json`` of a fleet report as ``{host: row}`` (in file order)."""
    rows = json.loads((Path(report_dir) / "report.json").read_text(encoding="utf-8"))
    return {row["host"]: row for row in rows}


def reason_codes(row: Mapping) -> list[str]:
    return [reason["code"] for reason in row["reasons"]]
