# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sanitizer of text from registries and nodes."""

from __future__ import annotations

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils._text import (
    DEFAULT_LIMIT,
    has_unprintable,
    printable,
)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v0.3.0",
        "application/vnd.oci.image.manifest.v1+json",
        "sha256:" + "ab" * 32,
        "Grüße, 日本語, emoji 🚀, math ∑",
        "spaces and\u00a0no-break spaces",
        "a backslash \\x1b stays as written",
    ],
)
def test_printable_text_is_unchanged(text):
    assert printable(text) == text
    assert not has_unprintable(text)


@pytest.mark.parametrize(
    "text, shown",
    [
        ("\x1b[2J\x07", "\\x1b[2J\\x07"),  # ESC, BEL
        ("\x00\x7f", "\\x00\\x7f"),  # NUL, DEL
        ("\u009b31m", "\\x9b31m"),  # C1: CSI
        ("\u0085", "\\x85"),  # C1: next line
        ("abc\u202edef", "abc\\u202edef"),  # right-to-left override
        ("\u2066\u2069\u200b\u200d\ufeff", "\\u2066\\u2069\\u200b\\u200d\\ufeff"),  # isolates, zero-width, BOM
        ("\u2028\u2029", "\\u2028\\u2029"),  # line and paragraph separators
        ("\ud800", "\\ud800"),  # a lone surrogate
        ("\U000e0001", "\\U000e0001"),  # a tag character (format, beyond the BMP)
        ("line\nnext\r\tend", "line\\nnext\\r\\tend"),
    ],
)
def test_unprintable_characters_are_escaped_visibly(text, shown):
    assert printable(text) == shown
    assert printable(text).isprintable()
    assert has_unprintable(text)


def test_the_escapes_are_those_of_repr():
    text = "\x1b\u009b\u202e\u2028\U000e0001"
    assert printable(text) == repr(text)[1:-1]


def test_printable_twice_is_printable_once():
    once = printable("\x1b[31m\u202e" * 100)
    assert printable(once) == once


@pytest.mark.parametrize(
    "text, limit, shown",
    [
        ("x" * DEFAULT_LIMIT, DEFAULT_LIMIT, "x" * DEFAULT_LIMIT),
        ("x" * (DEFAULT_LIMIT + 1), DEFAULT_LIMIT, "x" * (DEFAULT_LIMIT - 3) + "..."),
        ("abcdef", 5, "ab..."),
        ("abcde", 5, "abcde"),
        # An escape is never cut in half.
        ("ab\x1bcd", 7, "ab..."),
        ("ab\x1b", 6, "ab\\x1b"),
    ],
)
def test_printable_caps_the_length(text, limit, shown):
    assert printable(text, limit=limit) == shown
    assert len(printable(text, limit=limit)) <= limit


def test_a_huge_text_is_cut_without_escaping_all_of_it():
    assert printable("\x1b" * 10_000_000, limit=10) == "\\x1b..."


@pytest.mark.parametrize("value, shown", [(None, "None"), (42, "42"), (["a\x1b"], "['a\\x1b']")])
def test_anything_else_is_shown_as_its_text(value, shown):
    assert printable(value) == shown


def test_has_unprintable_allows_what_it_is_told():
    assert not has_unprintable("notes\n\tindented", allowed="\n\t")
    assert has_unprintable("notes\r\n", allowed="\n\t")
    assert has_unprintable("notes\u202e", allowed="\n\t")
