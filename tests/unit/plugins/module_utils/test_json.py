# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The parser of JSON from outside."""

from __future__ import annotations

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils._json import parse_json


@pytest.mark.parametrize("data", [b'{"a": [1, 2]}', '{"a": [1, 2]}', bytearray(b'{"a": [1, 2]}')])
def test_bytes_and_text_parse(data):
    assert parse_json(data) == {"a": [1, 2]}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"[" * 100000 + b"]" * 100000, "the document is nested too deeply"),
        (b'{"a": ' * 50000 + b"1" + b"}" * 50000, "the document is nested too deeply"),
        (b"\xff\xfe", "can't decode"),
        (b"{", "Expecting property name"),
    ],
)
def test_anything_that_is_not_json_is_a_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        parse_json(data)
