# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The one parser for JSON that comes from outside (registries, token services, nodes, files)."""

from __future__ import annotations

import json


def parse_json(data):
    """The document of ``data`` (bytes or text); ValueError for anything that is not JSON.

    That includes bytes that are not UTF-8 and documents nested too deeply for the parser (which
    raises RecursionError on its own: a hostile answer must fail like any other bad one).
    """
    try:
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8")
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("the document is nested too deeply") from exc
