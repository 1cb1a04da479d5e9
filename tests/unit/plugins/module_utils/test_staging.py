# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one staging flow both deliveries share, with a fake store and a fake registry."""

from __future__ import annotations

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _options, _release, _staging
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import LayerMissingError
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    KERNEL,
    FakeBlobClient,
    FakeManifestClient,
    descriptor,
    fetched,
    image_manifest,
    make_release,
    release_annotations,
)

KERNEL_1 = b"kernel v0.3.0\n" * 30
INITRAMFS_1 = b"initramfs v0.3.0\n" * 50


class FakeStore:
    """A store that holds ``current`` and records what the flow asked of it."""

    delivery = "fake"

    def __init__(self, current=None, architecture="amd64"):
        self.current = current
        self.architecture = architecture
        self.calls = []

    def default_architecture(self):
        self.calls.append("default_architecture")
        return self.architecture

    def current_release(self, rehash=False, layers=None):
        self.calls.append(("current_release", rehash))
        return self.current

    def stage(self, client, release, layers):
        self.calls.append(("stage", release.manifest_digest, [staged.name for staged in layers]))
        return _staging.StagedRelease({"manifest_digest": release.manifest_digest}, 123, bytes_transferred=456)


@pytest.fixture
def release(monkeypatch):
    """Resolution stands in for the registry: every architecture gets this release."""
    served = make_release(KERNEL_1, INITRAMFS_1)
    asked = []

    def resolve(_client, params, default_architecture):
        asked.append(params["architecture"] or default_architecture)
        return served

    monkeypatch.setattr(_options, "resolve_from_params", resolve)
    served.asked = asked
    return served


def params(**values):
    return dict(_options.default_params(_options.stage_argument_spec()), dest="/staged", **values)


def test_a_release_not_yet_held_is_staged(release):
    store = FakeStore()
    outcome = _staging.stage_release(FakeBlobClient([]), params(), store)
    assert store.calls == [
        "default_architecture",
        ("current_release", False),
        ("stage", release.manifest_digest, ["vmlinuz", "kubesolo-os.gz"]),
    ]
    assert outcome.changed is True
    assert outcome.current is None
    assert outcome.release is release
    assert [staged.name for staged in outcome.layers] == ["vmlinuz", "kubesolo-os.gz"]
    assert (outcome.bytes_downloaded, outcome.bytes_transferred) == (123, 456)


def test_a_release_already_held_is_not_staged_again(release):
    store = FakeStore(current={"manifest_digest": release.manifest_digest})
    outcome = _staging.stage_release(FakeBlobClient([]), params(verify_existing=True), store)
    assert store.calls == ["default_architecture", ("current_release", True)]
    assert outcome.changed is False
    assert outcome.staged is None
    assert (outcome.bytes_downloaded, outcome.bytes_transferred) == (0, 0)


def test_another_release_held_is_replaced(release):
    store = FakeStore(current={"manifest_digest": "sha256:" + "0" * 64})
    outcome = _staging.stage_release(FakeBlobClient([]), params(), store)
    assert outcome.changed is True
    assert store.calls[-1][0] == "stage"


def test_check_mode_compares_but_stages_nothing(release):
    store = FakeStore()
    outcome = _staging.stage_release(FakeBlobClient([]), params(), store, check_mode=True)
    assert store.calls == ["default_architecture", ("current_release", False)]
    assert outcome.changed is True
    assert outcome.staged is None


def test_an_explicit_architecture_never_asks_the_store(release):
    store = FakeStore()
    _staging.stage_release(FakeBlobClient([]), params(architecture="arm64"), store, check_mode=True)
    assert "default_architecture" not in store.calls
    assert release.asked == ["arm64"]


def test_the_store_architecture_is_the_default(release):
    store = FakeStore(architecture="riscv64")
    _staging.stage_release(FakeBlobClient([]), params(), store, check_mode=True)
    assert release.asked == ["riscv64"]


def test_a_missing_layer_fails_before_the_store_is_read(monkeypatch):
    manifest = fetched(image_manifest([descriptor(KERNEL, b"kernel")], release_annotations()))
    kernel_only = _release.resolve(FakeManifestClient({"stable": manifest}), "amd64", tag="stable")
    monkeypatch.setattr(_options, "resolve_from_params", lambda _client, _params, _arch: kernel_only)
    store = FakeStore()
    with pytest.raises(LayerMissingError):
        _staging.stage_release(FakeBlobClient([]), params(), store)
    assert store.calls == ["default_architecture"]


@pytest.mark.parametrize(
    "current, changed",
    [
        (None, True),
        ({}, True),
        ({"manifest_digest": "sha256:" + "1" * 64}, True),
    ],
)
def test_needs_staging(current, changed):
    release = make_release(KERNEL_1, INITRAMFS_1)
    assert _staging.needs_staging(current, release) is changed
    assert _staging.needs_staging({"manifest_digest": release.manifest_digest}, release) is False
