"""Docker credential helpers and ``config.json`` files, for registry-credential tests.

A credential helper is an executable ``docker-credential-<name>`` on PATH: ``get`` reads a server
URL on stdin and prints ``{"ServerURL", "Username", "Secret"}``, or fails with "credentials not
found in native keychain".  :class:`CredentialHelper` writes one that answers from a JSON file
the test can change at any time, and logs each call.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

NOT_FOUND = "credentials not found in native keychain"

# The helper itself: small, stdlib only, run by the interpreter running the tests.
_SCRIPT = """#!{python}
import json, sys
SECRETS, CALLS = {secrets!r}, {calls!r}
action = sys.argv[1] if len(sys.argv) > 1 else ""
data = sys.stdin.read()
with open(CALLS, "a", encoding="utf-8") as log:
    log.write(json.dumps({{"action": action, "input": data}}) + "\\n")
with open(SECRETS, encoding="utf-8") as handle:
    secrets = json.load(handle)
if action == "get":
    entry = secrets.get(data.strip())
    if entry is None:
        sys.stdout.write({not_found!r} + "\\n")
        sys.exit(1)
    if "raw" in entry:  # misbehaving helper: print this, exit with that
        sys.stdout.write(entry["raw"])
        sys.exit(entry.get("exit", 0))
    json.dump({{"ServerURL": data.strip(), "Username": entry["Username"], "Secret": entry["Secret"]}}, sys.stdout)
elif action == "list":
    json.dump({{server: e.get("Username", "") for server, e in secrets.items()}}, sys.stdout)
elif action not in ("store", "erase"):
    sys.stderr.write("unknown action " + action + "\\n")
    sys.exit(1)
"""


class CredentialHelper:
    """Writes ``docker-credential-<name>`` into ``directory/bin``.

    ``credentials`` maps a server (as the client will ask for it: ``127.0.0.1:5000`` or a URL)
    to ``(username, secret)``.  Username ``<token>`` with the secret means an identity token,
    as Docker's helpers do.
    """

    def __init__(
        self, directory: Path, name: str = "test", credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> None:
        self.name = name
        self.bin_dir = directory / "bin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.secrets_path = directory / f"{name}-secrets.json"
        self.calls_path = directory / f"{name}-calls.jsonl"
        self._secrets: dict[str, dict] = {}
        for server, (username, secret) in (credentials or {}).items():
            self._secrets[server] = {"Username": username, "Secret": secret}
        self._save()
        self.path = self.bin_dir / f"docker-credential-{name}"
        self.path.write_text(
            _SCRIPT.format(
                python=sys.executable, secrets=str(self.secrets_path), calls=str(self.calls_path), not_found=NOT_FOUND
            ),
            encoding="utf-8",
        )
        self.path.chmod(0o755)

    def _save(self) -> None:
        self.secrets_path.write_text(json.dumps(self._secrets), encoding="utf-8")

    def set(self, server: str, username: str, secret: str) -> None:
        """Answer ``get server`` with these credentials."""
        self._secrets[server] = {"Username": username, "Secret": secret}
        self._save()

    def set_raw(self, server: str, output: str, exit_code: int = 0) -> None:
        """Answer ``get server`` by printing ``output`` and exiting ``exit_code`` (garbage, errors)."""
        self._secrets[server] = {"raw": output, "exit": exit_code}
        self._save()

    def remove(self, server: str) -> None:
        """Forget ``server`` (``get`` then fails with :data:`NOT_FOUND`)."""
        self._secrets.pop(server, None)
        self._save()

    def calls(self) -> list[dict]:
        """Each call so far: ``{"action": "get", "input": "<stdin as read>"}``, oldest first."""
        if not self.calls_path.exists():
            return []
        return [json.loads(line) for line in self.calls_path.read_text(encoding="utf-8").splitlines()]

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the helper's directory first on PATH."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join(p for p in (str(self.bin_dir), env.get("PATH", "")) if p)
        return env


def basic_auth_field(username: str, password: str) -> str:
    """The ``auth`` value of a config.json entry: base64 of ``username:password``."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def write_docker_config(
    directory: Path,
    *,
    auths: Mapping[str, tuple[str, str] | Mapping] | None = None,
    cred_helpers: Mapping[str, str] | None = None,
    creds_store: str | None = None,
) -> Path:
    """Write ``directory/config.json`` (point DOCKER_CONFIG at ``directory``); return its path.

    ``auths`` maps a server to ``(username, password)`` (stored as base64 ``auth``) or to a
    ready entry such as ``{"identitytoken": "..."}`` or ``{"auth": "not base64"}``.
    ``cred_helpers`` maps a server to a helper name; ``creds_store`` names the default helper.
    """
    config: dict = {"auths": {}}
    for server, entry in (auths or {}).items():
        config["auths"][server] = {"auth": basic_auth_field(*entry)} if isinstance(entry, tuple) else dict(entry)
    if cred_helpers:
        config["credHelpers"] = dict(cred_helpers)
    if creds_store:
        config["credsStore"] = creds_store
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path
