# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SemVer 2.0.0 parsing and precedence, with an optional leading v."""

from __future__ import annotations

import random

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils._version import (
    InvalidVersion,
    Version,
)

# The precedence examples of the SemVer 2.0.0 specification (section 11), lowest first.
SPEC_RELEASES = ["1.0.0", "2.0.0", "2.1.0", "2.1.1"]
SPEC_PRERELEASES = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
]


def _pairs(ordered):
    return list(zip(ordered, ordered[1:]))


@pytest.mark.parametrize("lower, higher", _pairs(SPEC_RELEASES) + _pairs(SPEC_PRERELEASES))
def test_spec_precedence_adjacent_pairs(lower, higher):
    low, high = Version(lower), Version(higher)
    assert low < high
    assert high > low
    assert low != high
    assert (high < low) is False
    assert (low >= high) is False
    assert Version(lower) < Version(higher)
    assert Version(higher) > Version(lower)


@pytest.mark.parametrize("ordered", [SPEC_RELEASES, SPEC_PRERELEASES], ids=["releases", "prereleases"])
@pytest.mark.parametrize("seed", range(5))
def test_sorting_a_shuffled_list_gives_spec_order(ordered, seed):
    shuffled = list(ordered)
    random.Random(seed).shuffle(shuffled)
    assert [str(v) for v in sorted(Version(text) for text in shuffled)] == ordered
    assert sorted(shuffled, key=Version) == ordered


def test_sorting_the_reversed_list_gives_spec_order():
    assert sorted(reversed(SPEC_PRERELEASES), key=Version) == SPEC_PRERELEASES


@pytest.mark.parametrize(
    "lower, higher",
    [
        ("1.0.0-beta.2", "1.0.0-beta.11"),  # numerically, not as strings ('11' < '2')
        ("1.0.0-9", "1.0.0-10"),
        ("1.0.0-2", "1.0.0-alpha"),  # numeric identifiers before alphanumeric ones
        ("1.0.0-999", "1.0.0-0a"),  # a leading-zero alphanumeric identifier is alphanumeric
        ("1.0.0-rc.99", "1.0.0-rc.a"),
        ("1.0.0-alpha", "1.0.0-alpha.0"),  # more identifiers win when the prefix is equal
        ("1.0.0-Beta", "1.0.0-alpha"),  # alphanumeric identifiers compare in ASCII order
        ("1.9.0", "1.10.0"),  # release fields are numeric too
        ("1.0.10", "1.0.11"),
        ("0.9.9", "1.0.0-alpha"),
        ("1.0.0-rc.1", "1.0.0"),
        ("v0.2.0", "0.3.0-rc.1"),
    ],
)
def test_identifier_precedence(lower, higher):
    assert Version(lower) < Version(higher)
    assert Version(lower) < Version(higher)
    assert Version(higher) > Version(lower)


def test_parsed_fields():
    version = Version("v1.20.3-rc.1.x-y+build.5")
    assert version.release == (1, 20, 3)
    assert version.prerelease == ("rc", "1", "x-y")
    assert version.build == "build.5"
    assert str(version) == "v1.20.3-rc.1.x-y+build.5"
    assert repr(version) == "Version('v1.20.3-rc.1.x-y+build.5')"
    assert Version("0.0.0").release == (0, 0, 0)
    assert Version("0.0.0").prerelease == ()
    assert Version("0.0.0").build == ""


@pytest.mark.parametrize(
    "left, right",
    [
        ("1.0.0+a", "1.0.0+b"),
        ("1.0.0", "1.0.0+20250131"),
        ("1.0.0-rc.1+a", "1.0.0-rc.1+b.c"),
        ("v1.2.3", "1.2.3"),
        ("v1.2.3+x", "1.2.3"),
        ("1.0.0-beta.02a", "1.0.0-beta.02a"),
    ],
)
def test_equal_precedence(left, right):
    a, b = Version(left), Version(right)
    assert a == b
    assert (a < b) is False
    assert (b < a) is False
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


def test_build_metadata_is_kept_but_ignored():
    assert Version("1.0.0+a").build == "a"
    assert Version("1.0.0+b").build == "b"
    assert Version("1.0.0+a") == Version("1.0.0+b")
    assert Version("1.0.0-alpha+zzz") < Version("1.0.0-alpha.1+aaa")


@pytest.mark.parametrize(
    "left, right, expected",
    [
        ("1.0.0", "2.0.0", -1),
        ("2.0.0", "1.0.0", 1),
        ("1.0.0", "1.0.0", 0),
        ("v0.3.0", "0.3.0-rc.1", 1),
        ("0.3.0-rc.1", "v0.3.0", -1),
        ("1.0.0+x", "v1.0.0+y", 0),
    ],
)
def test_precedence_with_a_leading_v_and_build_metadata(left, right, expected):
    a, b = Version(left), Version(right)
    assert ((a > b) - (a < b)) == expected


def test_comparing_with_a_non_version():
    assert Version("1.0.0") != "1.0.0"
    assert (Version("1.0.0") == "1.0.0") is False
    with pytest.raises(TypeError):
        Version("1.0.0") < "2.0.0"  # pylint: disable=expression-not-assigned


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1.2",
        "0.3",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-",
        "1.2.3-01",  # numeric pre-release identifiers must not have leading zeros
        "1.2.3-rc.01",
        "1.2.3-rc..1",
        "1.2.3+",
        "1.2.3+a..b",
        "1.2.3-+a",
        "V1.2.3",  # only a lowercase v is accepted
        "vv1.2.3",
        "v 1.2.3",
        "version1.2.3",
        "1.2.3-alpha_1",
        "1.2.3+build!",
        "1.2.3\n4",
        "-1.2.3",
        "1.-2.3",
        " ",
        "latest",
    ],
)
def test_invalid_versions_raise(text):
    with pytest.raises(InvalidVersion) as info:
        Version(text)
    message = str(info.value)
    assert repr(text) in message
    assert "is not a semantic version" in message
    assert "MAJOR.MINOR.PATCH" in message


@pytest.mark.parametrize(
    "text",
    [
        "1\u0662.0.0",  # ARABIC-INDIC DIGIT TWO inside the major version
        "1.0.1\u0660",  # ... ZERO inside the patch version
        "1.0.0-1\u0662",  # ... inside a numeric pre-release identifier
        "1.0.0-\u0661a",  # ... ONE heading an alphanumeric pre-release identifier
        "1.0.0-rc\u0661",
        "1.0.0+b\u0661",
    ],
)
def test_non_ascii_digits_are_not_semver(text):
    # SemVer identifiers comprise only ASCII alphanumerics and hyphens [0-9A-Za-z-].
    with pytest.raises(InvalidVersion):
        Version(text)


def test_invalid_version_is_a_value_error():
    assert issubclass(InvalidVersion, ValueError)


@pytest.mark.parametrize("value", [None, 1, 1.0, b"1.2.3", ["1.2.3"], (1, 2, 3)])
def test_non_strings_raise(value):
    with pytest.raises(InvalidVersion) as info:
        Version(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("text", ["1.2.3\n", " 1.2.3 ", "\t1.2.3", "v1.2.3\r\n"])
def test_surrounding_whitespace_is_stripped(text):
    # The parser strips the text before matching (a version read from a file
    # keeps its newline); the stored text is the stripped one.
    version = Version(text)
    assert version.release == (1, 2, 3)
    assert version == Version("1.2.3")
    assert str(version) == text.strip()


@pytest.mark.parametrize("text", ["1.2.3 4", "1.2.3\n-rc.1", "1. 2.3"])
def test_inner_whitespace_is_invalid(text):
    with pytest.raises(InvalidVersion):
        Version(text)
