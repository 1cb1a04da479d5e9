"""htpasswd files for Distribution's ``auth: htpasswd`` (it accepts bcrypt entries only)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import bcrypt

# The lowest cost bcrypt allows: hashing and the registry's checks stay in the milliseconds.
_ROUNDS = 4


def write_htpasswd(path: Path, users: Mapping[str, str]) -> Path:
    """Write ``user:bcrypt-hash`` lines for ``users`` (name -> password) to ``path``."""
    lines = []
    for name, password in users.items():
        if ":" in name:
            raise ValueError(f"htpasswd user names cannot contain ':': {name!r}")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=_ROUNDS)).decode()
        lines.append(f"{name}:{hashed}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def htpasswd_config(path: Path, realm: str = "kubesolo-test") -> dict:
    """``extra_config`` for a Registry using the htpasswd file at ``path``."""
    return {"auth": {"htpasswd": {"realm": realm, "path": str(path)}}}
