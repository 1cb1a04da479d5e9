# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Repository references, tags and digests (OCI distribution spec grammar)."""

from __future__ import annotations

import hashlib
import re

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import InvalidReferenceError
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

# Digest algorithms we can verify, with the length of their hex encoding.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}

_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::(?P<port>[0-9]{{1,5}}))?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST_RE = re.compile(r"^(?P<algorithm>[a-z0-9]+(?:[.+_-][a-z0-9]+)*):(?P<encoded>[a-zA-Z0-9=_-]+)$")

# Docker Hub's API lives on another host than its name.
_REGISTRY_ALIASES = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}


class Repository:
    """A parsed ``host[:port]/path`` repository reference (no tag, no digest)."""

    def __init__(self, registry, path):
        self.registry = registry
        self.path = path

    @property
    def api_host(self):
        return _REGISTRY_ALIASES.get(self.registry, self.registry)

    def __str__(self):
        return f"{self.registry}/{self.path}"

    def __repr__(self):
        return f"Repository({str(self)!r})"


def parse_repository(value):
    """Parse and validate a repository reference, raising InvalidReferenceError."""
    if not isinstance(value, str) or not value:
        raise InvalidReferenceError("repository must be a non-empty string like ghcr.io/owner/name")
    if "://" in value:
        raise InvalidReferenceError(f"repository {value!r} must not include a scheme; use plain_http to talk HTTP")
    if "@" in value:
        raise InvalidReferenceError(f"repository {value!r} must not include a digest; use the digest option")
    host, sep, path = value.partition("/")
    if not sep or not path:
        raise InvalidReferenceError(
            f"repository {value!r} must be host[:port]/path, for example ghcr.io/portainer/kubesolo-os"
        )
    if not ("." in host or ":" in host or host == "localhost"):
        raise InvalidReferenceError(
            f"repository {value!r} must start with a registry host ({host!r} is not a host name with a "
            "dot or a port, nor localhost)"
        )
    match = _HOST_RE.fullmatch(host)
    if not match or (match.group("port") and not 0 < int(match.group("port")) < 65536):
        raise InvalidReferenceError(f"repository {value!r} has an invalid registry host {host!r}")
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        raise InvalidReferenceError(f"repository {value!r} must not include a tag; use the tag option")
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise InvalidReferenceError(
                f"repository {value!r} has an invalid path component {component!r} (lowercase letters, digits "
                "and separators . _ __ - only)"
            )
    if len(path) > 255:
        raise InvalidReferenceError(f"repository path of {value!r} is longer than 255 characters")
    return Repository(host, path)


def validate_tag(tag):
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise InvalidReferenceError(
            f'tag {tag!r} is invalid: up to 128 letters, digits, "_", "." or "-", not starting with "." or "-"'
        )
    return tag


def parse_digest(value):
    """Split ``algorithm:hex`` and check both parts; returns (algorithm, hex)."""
    if not isinstance(value, str):
        raise InvalidReferenceError(f"digest {_shown(value)} is not a string")
    match = _DIGEST_RE.fullmatch(value)
    if not match:
        raise InvalidReferenceError(f"digest {_shown(value)} is not of the form algorithm:hex")
    algorithm, encoded = match.group("algorithm"), match.group("encoded")
    if algorithm not in DIGEST_ALGORITHMS:
        raise InvalidReferenceError(
            "digest {} uses the unsupported algorithm {} (supported: {})".format(
                _shown(value), _shown(algorithm), ", ".join(sorted(DIGEST_ALGORITHMS))
            )
        )
    if len(encoded) != DIGEST_ALGORITHMS[algorithm] or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise InvalidReferenceError(
            f"digest {_shown(value)} must have {DIGEST_ALGORITHMS[algorithm]} lowercase hex characters after {algorithm}:"
        )
    return algorithm, encoded


def _shown(value):
    """A digest (or part of one) quoted for a message: registries send them too."""
    return printable(repr(value))


def digest_of(data, algorithm="sha256"):
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
