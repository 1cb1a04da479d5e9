# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""grubenv blocks and the A/B boot state in them; checked against Debian's grub-editenv where installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ansible_collections.kubesolo.fleet.plugins.plugin_utils import _grubenv

COMMITTED = {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}


def test_a_block_is_1024_bytes_header_warning_variables_and_padding():
    block = _grubenv.render(COMMITTED)
    assert len(block) == 1024
    assert block.startswith(_grubenv.HEADER + _grubenv.WARNING + b"active_slot=A\nboot_counter=3\nboot_success=1\n#")
    assert block.endswith(b"#") and not block.endswith(b"\n")
    assert _grubenv.parse(block) == COMMITTED


@pytest.mark.skipif(not shutil.which("grub-editenv"), reason="grub-editenv (grub-common) is not installed")
def test_grub_editenv_reads_what_render_writes_and_render_reads_what_it_writes(tmp_path):
    ours = tmp_path / "ours"
    ours.write_bytes(_grubenv.render(dict(COMMITTED, other="kept value")))
    listed = subprocess.run(["grub-editenv", str(ours), "list"], capture_output=True, text=True, check=True).stdout
    assert listed.splitlines() == ["active_slot=A", "boot_counter=3", "boot_success=1", "other=kept value"]
    theirs = tmp_path / "theirs"
    subprocess.run(["grub-editenv", str(theirs), "create"], check=True)
    subprocess.run(["grub-editenv", str(theirs), "set", "active_slot=B", "boot_counter=2"], check=True)
    assert _grubenv.parse(theirs.read_bytes()) == {"active_slot": "B", "boot_counter": "2"}
    assert theirs.read_bytes() == _grubenv.render({"active_slot": "B", "boot_counter": "2"})


@pytest.mark.parametrize(
    "data",
    [b"", b"# GRUB Environment Block\n" + b"#" * 10, b"not grub" + b"#" * 1016, _grubenv.render({})[:-1]],
)
def test_what_is_not_a_block_is_refused(data):
    with pytest.raises(_grubenv.GrubenvError) as raised:
        _grubenv.parse(data)
    assert raised.value.code == "not_ab_node"


def test_variables_that_do_not_fit_or_cannot_be_written_are_refused():
    with pytest.raises(_grubenv.GrubenvError, match="more than the block's 1024"):
        _grubenv.render({"big": "x" * 1000})
    with pytest.raises(_grubenv.GrubenvError, match="cannot be written"):
        _grubenv.render({"bad": "two\nlines"})


def test_the_boot_state_derives_the_passive_slot_and_keeps_other_variables():
    state = _grubenv.BootState(dict(COMMITTED, kept="yes"))
    assert (state.active_slot, state.passive_slot, state.boot_success) == ("A", "B", True)
    assert state.activated("B") == {"active_slot": "B", "boot_counter": "3", "boot_success": "0", "kept": "yes"}
    trial = _grubenv.BootState(state.activated("B"))
    assert not trial.boot_success and trial.passive_slot == "A"
    assert trial.committed() == {"active_slot": "B", "boot_counter": "3", "boot_success": "1", "kept": "yes"}


@pytest.mark.parametrize("slot", ["", "C", "a"])
def test_a_grubenv_without_a_valid_active_slot_is_not_an_ab_node(slot):
    with pytest.raises(_grubenv.GrubenvError, match="not A or B"):
        _grubenv.BootState({"active_slot": slot})
