# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The one sanitizer for text from outside (registries, token services, nodes) shown to a human.

Every registry- or node-supplied string that goes into a message, a result field meant for
humans or a report passes through printable(): a terminal, a log viewer or a Markdown renderer
then shows it instead of acting on it. Values that must stay exact (digests, versions, platform
names) are validated against their grammars where they are parsed instead.
"""

from __future__ import annotations

import unicodedata

# What a terminal or a renderer may act on instead of showing: control characters (ESC, BEL, C1
# such as the CSI U+009B), format characters (bidi overrides such as U+202E, zero-width ones),
# lone surrogates, and line and paragraph separators.
UNPRINTABLE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))

DEFAULT_LIMIT = 200
ELLIPSIS = "..."

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_unprintable(char):
    """Whether ``char`` (one character) is one printable() escapes."""
    return unicodedata.category(char) in UNPRINTABLE_CATEGORIES


def has_unprintable(text, allowed=""):
    """Whether ``text`` holds a character printable() would escape, other than those in ``allowed``."""
    return any(is_unprintable(char) and char not in allowed for char in text)


def _escape(char):
    """The visible escape of one character, as Python's repr() writes it."""
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text, limit=DEFAULT_LIMIT):
    """``text`` (anything else: its str()) safe to show: every unprintable character replaced by
    its escape (``\\x1b``, ``\\u202e``), and at most ``limit`` characters, cut ones ending in ``...``.

    Printable text is returned unchanged, so applying it twice changes nothing more.
    """
    if not isinstance(text, str):
        text = str(text)
    pieces, length = [], 0
    for char in text:
        piece = _escape(char) if is_unprintable(char) else char
        pieces.append(piece)
        length += len(piece)
        if length > limit:
            break
    if length <= limit:
        return "".join(pieces)
    while pieces and length + len(ELLIPSIS) > limit:
        length -= len(pieces.pop())
    return "".join(pieces) + ELLIPSIS
