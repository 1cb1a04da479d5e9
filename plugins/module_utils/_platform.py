# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Platform names: kernel machine names to GOARCH, and index entry matching."""

from __future__ import annotations

import re

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    ArchitectureNotShippedError,
    InvalidPlatformError,
    ManifestError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

# uname -m / distribution names -> (GOARCH, variant); the variant is only kept
# where it changes what runs (32-bit ARM).
_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv8": ("arm64", ""),
    "armv8l": ("arm", "v7"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "arm": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv6": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "386": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "loongarch64": ("loong64", ""),
    "loong64": ("loong64", ""),
    "mips64": ("mips64", ""),
    "mips64le": ("mips64le", ""),
}

# An architecture or variant name (lowercased): GOARCH names and variants such as v7 or v8.2
# fit, and nothing that a terminal, a shell or a path would read as more than a name.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}", re.ASCII)

# Variants that mean "the baseline" and so match an entry without one.
_DEFAULT_VARIANTS = {"amd64": ("", "v1"), "arm64": ("", "v8"), "arm": ("v7", "")}


class Platform:
    """A GOARCH architecture and its normalised variant ('' when irrelevant)."""

    def __init__(self, architecture, variant=""):
        self.architecture = architecture
        self.variant = _canonical_variant(architecture, variant)

    def __eq__(self, other):
        return isinstance(other, Platform) and (self.architecture, self.variant) == (other.architecture, other.variant)

    def __hash__(self):
        return hash((self.architecture, self.variant))

    def __str__(self):
        return f"{self.architecture}/{self.variant}" if self.variant else self.architecture

    def __repr__(self):
        return f"Platform({str(self)!r})"


def _canonical_variant(architecture, variant):
    variant = (variant or "").lower()
    defaults = _DEFAULT_VARIANTS.get(architecture)
    if defaults and variant in defaults:
        return defaults[0]
    return variant


def parse_platform(value):
    """Turn ``x86_64``, ``aarch64``, ``armv7l``, ``arm/v7``, ``arm64/v8`` ... into a Platform."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidPlatformError("architecture must be a non-empty string such as amd64 or arm64")
    text = value.strip().lower()
    if text.startswith("linux/"):
        text = text[len("linux/") :]
    architecture, _sep, variant = text.partition("/")
    if not is_platform_name(architecture) or (variant and not is_platform_name(variant)):
        raise InvalidPlatformError(f"architecture {printable(repr(value))} is not a valid architecture name")
    if architecture in _ALIASES:
        goarch, implied_variant = _ALIASES[architecture]
        return Platform(goarch, variant or implied_variant)
    return Platform(architecture, variant)


def is_platform_name(text):
    """Whether ``text`` is a (lowercase) architecture or variant name by the grammar above."""
    return _NAME_RE.fullmatch(text) is not None


def descriptor_platform(descriptor):
    """The Platform of an index entry, or None when it is not a linux entry with a well-formed platform.

    An entry naming its architecture or variant outside the grammar is ignored like any other
    malformed one: it can be neither matched nor listed (nor shown to anyone).
    """
    platform = descriptor.get("platform")
    if not isinstance(platform, dict):
        return None
    architecture = platform.get("architecture")
    if platform.get("os") != "linux" or not isinstance(architecture, str) or not is_platform_name(architecture.lower()):
        return None
    variant = platform.get("variant") or ""
    if not isinstance(variant, str) or (variant and not is_platform_name(variant.lower())):
        return None
    return Platform(architecture.lower(), variant)


def select_manifest(descriptors, wanted):
    """Pick the single index entry for ``wanted``.

    Raises ArchitectureNotShippedError listing what the index ships when none
    matches, and ManifestError when several entries claim the same platform
    (an ambiguous index must not be resolved by list order).
    """
    matches = [d for d in descriptors if descriptor_platform(d) == wanted]
    if len(matches) > 1:
        raise ManifestError(
            f"the index lists {len(matches)} manifests for platform {wanted}; refusing an ambiguous release"
        )
    if not matches:
        raise ArchitectureNotShippedError(str(wanted), available_platforms(descriptors))
    return matches[0]


def available_platforms(descriptors):
    """Sorted, de-duplicated platform names of the linux entries of an index."""
    names = set(str(p) for p in (descriptor_platform(d) for d in descriptors) if p)
    return sorted(names)
