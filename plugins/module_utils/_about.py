# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Collection identity, for the User-Agent and records (kept equal to galaxy.yml by a test)."""

from __future__ import annotations

COLLECTION_NAME = "kubesolo.fleet"
COLLECTION_VERSION = "0.1.0"
