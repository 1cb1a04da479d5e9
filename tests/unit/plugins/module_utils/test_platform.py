# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Architecture names and index entry matching."""

from __future__ import annotations

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _platform
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    ArchitectureNotShippedError,
    InvalidReferenceError,
    ManifestError,
)


@pytest.mark.parametrize(
    "value, architecture, variant",
    [
        ("x86_64", "amd64", ""),
        ("amd64", "amd64", ""),
        ("amd64/v1", "amd64", ""),
        ("aarch64", "arm64", ""),
        ("arm64", "arm64", ""),
        ("arm64/v8", "arm64", ""),
        ("armv8", "arm64", ""),
        ("armv7l", "arm", "v7"),
        ("armhf", "arm", "v7"),
        ("arm", "arm", "v7"),
        ("arm/v7", "arm", "v7"),
        ("armv6l", "arm", "v6"),
        ("arm/v6", "arm", "v6"),
        ("i686", "386", ""),
        ("386", "386", ""),
        ("ppc64le", "ppc64le", ""),
        ("s390x", "s390x", ""),
        ("riscv64", "riscv64", ""),
        ("linux/arm64", "arm64", ""),
        ("linux/arm/v6", "arm", "v6"),
        ("X86_64", "amd64", ""),
        ("AArch64", "arm64", ""),
        ("ARM/V7", "arm", "v7"),
        ("  aarch64\n", "arm64", ""),
        ("mips64le", "mips64le", ""),
        ("sparc64", "sparc64", ""),
    ],
)
def test_normalize(value, architecture, variant):
    platform = _platform.parse_platform(value)
    assert (platform.architecture, platform.variant) == (architecture, variant)


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "architecture must be a non-empty string"),
        ("   ", "architecture must be a non-empty string"),
        (None, "architecture must be a non-empty string"),
        (64, "architecture must be a non-empty string"),
        ("x86 64", "architecture 'x86 64' is not a valid architecture name"),
        ("amd64;rm", "architecture 'amd64;rm' is not a valid architecture name"),
        ("../arm64", "architecture '../arm64' is not a valid architecture name"),
        ("linux/", "architecture 'linux/' is not a valid architecture name"),
        ("amd64\x1b[31m", "architecture 'amd64\\x1b[31m' is not a valid architecture name"),
        ("arm64/v8\x07", "architecture 'arm64/v8\\x07' is not a valid architecture name"),
        ("arm/\u009b7", "architecture 'arm/\\x9b7' is not a valid architecture name"),
        ("amd64\u202e", "architecture 'amd64\\u202e' is not a valid architecture name"),
        ("ａｍｄ64", "architecture 'ａｍｄ64' is not a valid architecture name"),
        ("arm/v7/v8", "architecture 'arm/v7/v8' is not a valid architecture name"),
        ("arm/-v7", "architecture 'arm/-v7' is not a valid architecture name"),
        ("a" * 33, "architecture '" + "a" * 33 + "' is not a valid architecture name"),
        ("a" * 500, "architecture '" + "a" * 196 + "... is not a valid architecture name"),
    ],
)
def test_normalize_rejects(value, message):
    with pytest.raises(InvalidReferenceError) as raised:
        _platform.parse_platform(value)
    assert str(raised.value).startswith(message)
    assert raised.value.code == "invalid_reference"


@pytest.mark.parametrize("name", ["amd64", "386", "loong64", "v7", "v8.2", "x86-64", "sparc_64", "a" * 32])
def test_platform_names(name):
    assert _platform.is_platform_name(name)


@pytest.mark.parametrize("name", ["", "AMD64", "-v7", ".", "_x", "a" * 33, "a/b", "a b", "amd64\x1b", "v7\u202e"])
def test_not_platform_names(name):
    assert not _platform.is_platform_name(name)


@pytest.mark.parametrize(
    "left, right",
    [
        (_platform.Platform("arm64", "v8"), _platform.Platform("arm64")),
        (_platform.Platform("amd64", "v1"), _platform.Platform("amd64")),
        (_platform.Platform("arm"), _platform.Platform("arm", "v7")),
        (_platform.Platform("arm", "V7"), _platform.Platform("arm", "v7")),
    ],
)
def test_platform_equal(left, right):
    assert left == right
    assert hash(left) == hash(right)


@pytest.mark.parametrize(
    "left, right",
    [
        (_platform.Platform("arm", "v7"), _platform.Platform("arm", "v6")),
        (_platform.Platform("arm64"), _platform.Platform("amd64")),
        (_platform.Platform("amd64", "v3"), _platform.Platform("amd64")),
        (_platform.Platform("arm64"), "arm64"),
    ],
)
def test_platform_not_equal(left, right):
    assert left != right


@pytest.mark.parametrize(
    "platform, text",
    [
        (_platform.Platform("amd64"), "amd64"),
        (_platform.Platform("arm64", "v8"), "arm64"),
        (_platform.Platform("arm"), "arm/v7"),
        (_platform.Platform("arm", "v6"), "arm/v6"),
    ],
)
def test_platform_str_and_repr(platform, text):
    assert str(platform) == text
    assert repr(platform) == f"Platform({text!r})"


def _entry(architecture, variant=None, os_name="linux", name=None):
    platform = {"os": os_name, "architecture": architecture}
    if variant is not None:
        platform["variant"] = variant
    return {"digest": name or f"{os_name}-{architecture}-{variant}", "platform": platform}


AMD64 = _entry("amd64")
ARM64_V8 = _entry("arm64", "v8")
ARM_V7 = _entry("arm", "v7")
ARM_V6 = _entry("arm", "v6")
WINDOWS_ARM64 = _entry("arm64", os_name="windows")
NO_PLATFORM = {"digest": "attestation"}


@pytest.mark.parametrize(
    "wanted, entries, expected",
    [
        ("amd64", [ARM64_V8, AMD64], AMD64),
        ("x86_64", [AMD64, ARM64_V8], AMD64),
        ("arm64", [AMD64, ARM64_V8], ARM64_V8),
        ("aarch64", [AMD64, ARM64_V8], ARM64_V8),
        ("arm64", [WINDOWS_ARM64, _entry("arm64", name="linux")], _entry("arm64", name="linux")),
        ("amd64", [NO_PLATFORM, {"digest": "bad", "platform": "linux/amd64"}, AMD64], AMD64),
        ("armv7l", [ARM_V6, ARM_V7], ARM_V7),
        ("armv6l", [ARM_V7, ARM_V6], ARM_V6),
        ("arm", [ARM_V6, _entry("arm", name="plain-arm")], _entry("arm", name="plain-arm")),
        ("amd64", [_entry("AMD64", name="upper")], _entry("AMD64", name="upper")),
    ],
)
def test_select_manifest(wanted, entries, expected):
    assert _platform.select_manifest(entries, _platform.parse_platform(wanted)) == expected


@pytest.mark.parametrize(
    "wanted, entries, available",
    [
        ("s390x", [ARM64_V8, AMD64, ARM_V7], ["amd64", "arm/v7", "arm64"]),
        ("arm64", [WINDOWS_ARM64, AMD64, NO_PLATFORM], ["amd64"]),
        ("armv6l", [ARM_V7], ["arm/v7"]),
        ("armv7l", [ARM_V6], ["arm/v6"]),
        ("amd64", [], []),
    ],
)
def test_select_manifest_not_shipped(wanted, entries, available):
    platform = _platform.parse_platform(wanted)
    with pytest.raises(ArchitectureNotShippedError) as raised:
        _platform.select_manifest(entries, platform)
    error = raised.value
    assert error.code == "architecture_not_shipped"
    assert error.wanted == str(platform)
    assert error.available == available
    assert error.details() == {
        "architecture": str(platform),
        "available_architectures": available,
        "index_digest": None,
    }
    assert str(error) == "the release does not ship for architecture {} (it ships: {})".format(
        platform,
        ", ".join(available) or "none",
    )


def test_select_manifest_not_shipped_message_lists_sorted_platforms():
    with pytest.raises(ArchitectureNotShippedError) as raised:
        _platform.select_manifest([ARM64_V8, ARM_V6, AMD64], _platform.parse_platform("riscv64"))
    assert str(raised.value) == ("the release does not ship for architecture riscv64 (it ships: amd64, arm/v6, arm64)")


@pytest.mark.parametrize(
    "entries",
    [
        [AMD64, ARM64_V8, _entry("amd64", name="second")],
        [_entry("arm64", name="plain"), ARM64_V8],
    ],
)
def test_select_manifest_refuses_duplicates(entries):
    wanted = _platform.parse_platform(entries[-1]["platform"]["architecture"])
    with pytest.raises(ManifestError) as raised:
        _platform.select_manifest(entries, wanted)
    assert str(raised.value) == (f"the index lists 2 manifests for platform {wanted}; refusing an ambiguous release")
    assert raised.value.code == "invalid_manifest"


@pytest.mark.parametrize(
    "entry",
    [
        NO_PLATFORM,
        {"platform": None},
        {"platform": {"architecture": "amd64"}},
        {"platform": {"os": "Linux", "architecture": "amd64"}},
        {"platform": {"os": "linux", "architecture": ""}},
        {"platform": {"os": "linux", "architecture": 64}},
        {"platform": {"os": "linux", "architecture": "arm", "variant": 7}},
        {"platform": {"os": "linux", "architecture": "amd64\x1b[31m"}},
        {"platform": {"os": "linux", "architecture": "amd64\u202e"}},
        {"platform": {"os": "linux", "architecture": "arm", "variant": "v7\x9b"}},
        {"platform": {"os": "linux", "architecture": "../amd64"}},
        WINDOWS_ARM64,
    ],
)
def test_descriptor_platform_ignores_non_linux_or_malformed_entries(entry):
    assert _platform.descriptor_platform(entry) is None


def test_descriptor_platform_of_a_linux_entry():
    assert _platform.descriptor_platform(ARM64_V8) == _platform.Platform("arm64")
    assert str(_platform.descriptor_platform(ARM_V6)) == "arm/v6"


def test_available_platforms_deduplicates_and_sorts():
    entries = [
        ARM_V7,
        AMD64,
        ARM64_V8,
        _entry("arm64"),
        _entry("amd64", name="again"),
        WINDOWS_ARM64,
        NO_PLATFORM,
        ARM_V6,
        _entry("arm"),
    ]
    assert _platform.available_platforms(entries) == ["amd64", "arm/v6", "arm/v7", "arm64"]
