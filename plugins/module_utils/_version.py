# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SemVer 2.0.0 parsing and precedence, with an optional leading ``v``.

Invalid versions raise; they are never guessed at (``0.3`` is not ``0.3.0``).
"""

from __future__ import annotations

import functools
import re

_SEMVER_RE = re.compile(
    r"^v?(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*)"
    r"(?:-(?P<pre>(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$",
    re.ASCII,
)


class InvalidVersion(ValueError):
    pass


@functools.total_ordering
class Version:
    """A parsed version; compares by SemVer precedence (build metadata ignored)."""

    def __init__(self, text):
        match = _SEMVER_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if not match:
            raise InvalidVersion(
                f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH, optional leading v, -prerelease and +build)"
            )
        self.text = text.strip()
        self.release = (int(match.group("major")), int(match.group("minor")), int(match.group("patch")))
        pre = match.group("pre")
        self.prerelease = tuple(pre.split(".")) if pre else ()
        self.build = match.group("build") or ""

    def _key(self):
        # A release sorts after all of its pre-releases; numeric identifiers
        # sort numerically and before alphanumeric ones.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return self.release, not self.prerelease, pre

    def __eq__(self, other):
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other):
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self):
        return hash(self._key())

    def __str__(self):
        return self.text

    def __repr__(self):
        return f"Version({self.text!r})"
