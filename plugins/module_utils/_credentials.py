# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Registry credentials: explicit options, docker config.json, credential helpers.

Looked up on the machine that talks to the registry, in docker's order:
``credHelpers`` for the registry, then ``auths``, then ``credsStore``.
Secrets never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import AuthenticationError, ParameterError
from ansible_collections.kubesolo.fleet.plugins.module_utils._json import parse_json

# docker's name for Docker Hub in config.json and for its credential helpers.
_DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")
_DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
_HELPER_TIMEOUT = 30
_MAX_CONFIG_BYTES = 1024 * 1024


class Credentials:
    """A username and password, or an identity (refresh) token."""

    def __init__(self, username, password=None, identity_token=None):
        self.username = username
        self.password = password
        self.identity_token = identity_token

    def __repr__(self):
        return f"Credentials(username={self.username!r}, secret=<hidden>)"


def docker_config_path(explicit=None):
    if explicit:
        return explicit
    if os.environ.get("DOCKER_CONFIG"):
        return os.path.join(os.environ["DOCKER_CONFIG"], "config.json")
    return os.path.join(os.path.expanduser("~"), ".docker", "config.json")


def load_docker_config(path, required=False):
    """The parsed config.json; {} when it does not exist (unless ``required``)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if required:
            raise ParameterError(f"registry_config {path} does not exist")
        return {}
    except OSError as exc:
        raise ParameterError(f"cannot read registry_config {path}: {exc.strerror}")
    if len(data) > _MAX_CONFIG_BYTES:
        raise ParameterError(f"registry_config {path} is larger than 1 MiB")
    try:
        config = parse_json(data)
    except ValueError as exc:
        raise ParameterError(f"registry_config {path} is not valid JSON: {exc}")
    if not isinstance(config, dict):
        raise ParameterError(f"registry_config {path} is not a JSON object")
    return config


def _host_of(key):
    """``https://host:port/v1/`` and similar config keys -> ``host:port``."""
    text = key.split("://", 1)[-1]
    return text.split("/", 1)[0].lower()


def _aliases(registry):
    registry = registry.lower()
    return _DOCKER_HUB_KEYS if registry in _DOCKER_HUB_KEYS else (registry,)


def credentials_for(registry, config):
    """Credentials for ``registry`` (host[:port]) from a docker config, or None."""
    names = _aliases(registry)
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _host_of(key) in names:
                return run_credential_helper(helper, registry)
    auths = config.get("auths") or {}
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if _host_of(key) in names and isinstance(entry, dict):
                found = _from_auths_entry(entry, registry)
                if found:
                    return found
    store = config.get("credsStore")
    if store:
        return run_credential_helper(store, registry)
    return None


def _from_auths_entry(entry, registry):
    if entry.get("identitytoken"):
        return Credentials(entry.get("username") or "<token>", identity_token=entry["identitytoken"])
    if entry.get("auth"):
        try:
            username, sep, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
        except (binascii.Error, ValueError, TypeError):
            sep = ""
        if not sep:
            raise ParameterError(f"the auths entry for {registry} in the docker config is not base64 of user:password")
        return Credentials(username, password)
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"])
    return None


def run_credential_helper(name, registry):
    """Ask ``docker-credential-<name> get`` for the registry's credentials (None: it has none)."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ParameterError(f"invalid credential helper name {name!r} in the docker config")
    program = f"docker-credential-{name}"
    path = shutil.which(program)
    if not path:
        raise AuthenticationError(
            f"the docker config names the credential helper {program} for {registry}, but it is not on PATH"
        )
    server = _DOCKER_HUB_SERVER if registry.lower() in _DOCKER_HUB_KEYS else registry
    try:
        done = subprocess.run(
            [path, "get"], input=server.encode("utf-8"), capture_output=True, timeout=_HELPER_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthenticationError(f"credential helper {program} failed for {registry}: {exc}")
    if done.returncode != 0:
        said = (done.stdout or done.stderr).decode("utf-8", "replace").strip()
        if "credentials not found" in said.lower():
            return None
        last_line = said.splitlines()[-1][:200] if said else ""
        raise AuthenticationError(
            f"credential helper {program} failed for {registry} (exit {done.returncode}): {last_line}"
        )
    try:
        answer = parse_json(done.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise AuthenticationError(
            f'credential helper {program} gave an answer for {registry} that is not {{"Username": ..., "Secret": ...}}'
        )
    if username == "<token>":
        return Credentials(username, identity_token=secret)
    return Credentials(username, secret)


def resolve_credentials(registry, username=None, password=None, config_path=None):
    """Explicit options win; then the docker config; else None (anonymous)."""
    if username or password:
        if not (username and password):
            raise ParameterError("username and password must be given together")
        return Credentials(username, password)
    path = docker_config_path(config_path)
    return credentials_for(registry, load_docker_config(path, required=bool(config_path)))
