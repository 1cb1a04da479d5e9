# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Task results: failures, update_stage's result and its diff."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _results, _staging
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    ArchitectureNotShippedError,
    ManifestError,
    StageError,
)
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import FakeBlobClient, make_release

KERNEL_1 = b"kernel v0.3.0\n" * 30
INITRAMFS_1 = b"initramfs v0.3.0\n" * 50


def test_a_failure_has_the_message_the_code_and_the_details():
    error = ArchitectureNotShippedError("riscv64", ["amd64", "arm64"])
    assert _results.failure_result(error) == {
        "failed": True,
        "msg": str(error),
        "error_code": "architecture_not_shipped",
        "architecture": "riscv64",
        "available_architectures": ["amd64", "arm64"],
        "index_digest": None,
    }


def test_a_failure_with_a_client_carries_its_transfer_summary():
    client = FakeBlobClient([])
    client.fetched_bytes = 42
    result = _results.failure_result(StageError("disk full"), client)
    assert result["transfer"] == {"retries": 0, "last_error": "", "resumed_bytes": 0, "fetched_bytes": 42}
    assert result["error_code"] == "stage_failed"


def test_fail_module_hands_the_failure_to_fail_json():
    module = MagicMock()
    _results.fail_module(module, StageError("disk full"))
    module.fail_json.assert_called_once_with(msg="disk full", error_code="stage_failed")


def outcome(current=None, staged=None):
    release = make_release(KERNEL_1, INITRAMFS_1)
    return _staging.StageOutcome(release, release.staged_layers(), current, staged)


@pytest.mark.parametrize("delivery", ["host", "controller"])
def test_the_stage_result(delivery):
    done = outcome(staged=_staging.StagedRelease({}, 11, bytes_transferred=22 if delivery == "controller" else None))
    client = FakeBlobClient([])
    result = _results.stage_result(done, "/var/lib/kubesolo/staged", delivery, client, diff=False)
    assert result["changed"] is True
    assert result["staged"] == {
        "vmlinuz_path": "/var/lib/kubesolo/staged/vmlinuz",
        "initramfs_path": "/var/lib/kubesolo/staged/kubesolo-os.gz",
        "version": "v0.3.0",
    }
    assert result["bytes_downloaded"] == 11
    assert result["delivery"] == delivery
    assert result["manifest_digest"] == done.release.manifest_digest
    assert result["sources"] == {} and result["mirror_errors"] == []
    assert result["served_by"] == sorted(client.served_by)
    assert result["transfer"] == client.transfer_summary()
    assert "diff" not in result
    if delivery == "controller":
        assert result["bytes_transferred"] == 22
    else:
        assert "bytes_transferred" not in result


def test_an_unchanged_stage_moved_no_bytes():
    done = outcome(current={"manifest_digest": make_release(KERNEL_1, INITRAMFS_1).manifest_digest})
    result = _results.stage_result(done, "/staged", "controller", FakeBlobClient([]), diff=False)
    assert result["changed"] is False
    assert (result["bytes_downloaded"], result["bytes_transferred"]) == (0, 0)


def test_the_diff_shows_version_and_digest_before_and_after():
    before = {"version": "v0.2.0", "manifest_digest": "sha256:" + "1" * 64}
    done = outcome(current=before)
    result = _results.stage_result(done, "/staged", "host", FakeBlobClient([]), diff=True)
    assert result["diff"] == {
        "before": before,
        "after": {"version": "v0.3.0", "manifest_digest": done.release.manifest_digest},
    }
    result = _results.stage_result(outcome(), "/staged", "host", FakeBlobClient([]), diff=True)
    assert result["diff"]["before"] == {}


def test_any_other_exception_is_an_internal_error_without_a_traceback():
    result = _results.failure_result(KeyError("manifest_digest"))
    assert result == {
        "failed": True,
        "error_code": "internal_error",
        "msg": "unexpected KeyError: 'manifest_digest' (please report this as a bug)",
    }


def test_a_failure_message_is_printable_and_capped_whatever_built_it():
    result = _results.failure_result(ManifestError("bad \x1b]0;title\x07 and \u202e" + "x" * 5000))
    assert result["msg"].startswith("bad \\x1b]0;title\\x07 and \\u202exxx")
    assert result["msg"].endswith("...") and len(result["msg"]) == _results.MAX_MESSAGE_CHARS
    assert result["error_code"] == "invalid_manifest"


def test_an_internal_error_quotes_the_exception_printably():
    result = _results.failure_result(KeyError("\x1b[2J" + "k" * 1000))
    assert result["msg"] == ("unexpected KeyError: '\\x1b[2J" + "k" * 289 + "... (please report this as a bug)")


def test_the_diff_escapes_the_version_the_record_on_the_node_claims():
    done = outcome(current={"version": "v0.2.0\x1b[2J\u202e", "manifest_digest": "sha256:" + "1" * 64})
    result = _results.stage_result(done, "/staged", "controller", FakeBlobClient([]), diff=True)
    assert result["diff"]["before"]["version"] == "v0.2.0\\x1b[2J\\u202e"


def test_the_diff_of_a_record_without_a_digest_or_version():
    done = outcome(current={"metadata": "not a dict"})
    result = _results.stage_result(done, "/staged", "host", FakeBlobClient([]), diff=True)
    assert result["diff"]["before"] == {"version": "", "manifest_digest": ""}


class FailingModule:
    """Records fail_json like AnsibleModule, which exits."""

    def __init__(self):
        self.failure = None

    def fail_json(self, **result):
        self.failure = result
        raise SystemExit(1)


def test_signatures_without_cryptography_fail_like_any_missing_library(monkeypatch):
    module = FailingModule()
    _results.fail_without_cryptography(module, needed=True)  # it is installed here
    assert module.failure is None
    monkeypatch.setattr(_results, "HAS_CRYPTOGRAPHY", False)
    monkeypatch.setattr(_results, "CRYPTOGRAPHY_IMPORT_ERROR", "Traceback: No module named 'cryptography'")
    _results.fail_without_cryptography(module, needed=False)
    assert module.failure is None
    with pytest.raises(SystemExit):
        _results.fail_without_cryptography(module, needed=True)
    assert "Failed to import the required Python library (cryptography)" in module.failure["msg"]
    assert module.failure["exception"] == "Traceback: No module named 'cryptography'"
