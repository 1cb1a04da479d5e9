"""Secrets must never show in what ``ansible-playbook`` prints or returns: a checker for that.

Register every secret a test hands out (passwords, identity tokens) and every
:class:`~tests.support.tokenserver.TokenServer` (the bearer tokens it issued and the refresh
tokens it knows are secrets too), then check each :class:`~tests.support.playbook.PlaybookRun`:
its stdout, stderr and the callback's JSON results.  Servers' own logs are not checked: a token
server has to see tokens.
"""

from __future__ import annotations

import json

from .credhelper import basic_auth_field
from .playbook import PlaybookRun
from .tokenserver import TokenServer

#: What Ansible prints instead of a no_log option's value.
NO_LOG_MASK = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
#: What Ansible puts where a module's output held a no_log value.
CENSORED = "********"


class LeakCheck:
    """Secrets of a test module, and the playbook runs that must not show them."""

    def __init__(self) -> None:
        self._secrets: dict[str, str] = {}
        self._token_servers: list[TokenServer] = []
        self.runs: list[tuple[str, PlaybookRun]] = []

    def secret(self, label: str, value: str) -> str:
        """Register ``value`` (at least 8 characters, so that it cannot match by chance); return it."""
        if len(value) < 8:
            raise ValueError(f"secret {label!r} is too short to search for reliably")
        self._secrets[label] = value
        return value

    def password(self, username: str, password: str) -> str:
        """Register a password, and the Basic ``Authorization`` value it makes; return the password."""
        self.secret(f"password of {username}", password)
        self.secret(f"Basic credentials of {username}", basic_auth_field(username, password))
        return password

    def token_server(self, server: TokenServer) -> TokenServer:
        """Treat every token ``server`` issues (and every refresh token it holds) as a secret."""
        self._token_servers.append(server)
        return server

    def secrets(self) -> dict[str, str]:
        """``{label: secret}``, bearer and refresh tokens included (known so far)."""
        found = dict(self._secrets)
        for number, server in enumerate(self._token_servers, 1):
            for entry in server.log:
                if entry.token:
                    # The signature alone: it is unique, and also catches a token cut short after it.
                    found[f"bearer token for {entry.user or 'anonymous'} from token server {number}"] = (
                        entry.token.rsplit(".", 1)[1]
                    )
            for refresh, user in server.refresh_tokens.items():
                found[f"refresh token of {user} at token server {number}"] = refresh
        return found

    def record(self, label: str, run: PlaybookRun) -> PlaybookRun:
        """Remember ``run`` for :meth:`assert_clean_all`; returns it."""
        self.runs.append((label, run))
        return run

    def leaks(self, run: PlaybookRun) -> list[str]:
        """``"<secret label> in <stdout|stderr|results>"`` for every secret ``run`` shows."""
        outputs = {"stdout": run.stdout, "stderr": run.stderr, "results": json.dumps(run.results)}
        return [
            f"{label} in {where}"
            for label, value in self.secrets().items()
            for where, text in outputs.items()
            if value in text
        ]

    def assert_clean(self, run: PlaybookRun) -> None:
        leaked = self.leaks(run)
        assert not leaked, f"secrets leaked: {leaked}"

    def assert_clean_all(self) -> None:
        """No recorded run shows any secret; at least one run was recorded."""
        assert self.runs, "no playbook run was recorded"
        leaked = [f"{label}: {leak}" for label, run in self.runs for leak in self.leaks(run)]
        assert not leaked, f"secrets leaked: {leaked}"
