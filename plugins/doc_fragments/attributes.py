# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Descriptions of the module attributes; modules state only their support."""

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
  action_group:
    description: Use C(group/kubesolo.fleet.registry) in C(module_defaults) to set defaults for this module.
    membership:
      - kubesolo.fleet.registry
"""

    # What every module of the registry action group supports.
    REGISTRY_MODULE = r"""
options: {}
attributes:
  idempotent:
    support: full
  action_group:
    support: full
"""

    # For modules whose result says what they did, with no before/after to show.
    NO_DIFF = r"""
options: {}
attributes:
  diff_mode:
    support: none
"""
