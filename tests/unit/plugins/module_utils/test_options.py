# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules' options and what they build: clients, mirrors, the release, dest."""

from __future__ import annotations

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _options
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import InvalidReferenceError, ParameterError
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._client import RegistryClient
from ansible_collections.kubesolo.fleet.tests.unit.plugins.module_utils.fakes import (
    FakeManifestClient,
    fetched,
    image_manifest,
    release_annotations,
    release_layers,
)


def params(**values):
    base = _options.default_params(_options.stage_argument_spec())
    base.update(repository="registry.example.com:5000/kubesolo/os", dest="/staged", **values)
    return base


def test_default_params_are_the_spec_defaults():
    spec = _options.stage_argument_spec()
    defaults = _options.default_params(spec)
    assert sorted(defaults) == sorted(spec)
    assert defaults["timeout"] == 30 and defaults["delivery"] == "host" and defaults["mirrors"] == []
    assert defaults["tag"] is None and defaults["lock_timeout"] == 300


def test_the_stage_spec_extends_the_release_and_connection_specs():
    connection = set(_options.connection_argument_spec())
    release = set(_options.registry_argument_spec())
    stage = set(_options.stage_argument_spec())
    assert connection < release < stage
    assert release - connection == {
        "tag",
        "digest",
        "architecture",
        "mirrors",
        "mirror_tags",
        "signature_keys",
        "signature_policy",
    }
    assert _options.stage_argument_spec()["password"]["no_log"] is True
    assert _options.MIRROR_SPEC["password"]["no_log"] is True


@pytest.mark.parametrize(
    "values, message",
    [
        ({"timeout": 0}, "timeout must be a positive number of seconds"),
        ({"timeout": -1}, "timeout must be a positive number of seconds"),
        ({"retries": -1}, "retries, retry_max_wait and retry_budget must not be negative"),
        ({"retry_max_wait": -0.5}, "retries, retry_max_wait and retry_budget must not be negative"),
        ({"retry_budget": -3}, "retries, retry_max_wait and retry_budget must not be negative"),
    ],
)
def test_bad_connection_options_are_refused(values, message):
    with pytest.raises(ParameterError, match=message):
        _options.client_from_params(params(**values))


@pytest.fixture
def no_docker_config(tmp_path, monkeypatch):
    """An empty DOCKER_CONFIG, so that no credentials of this machine are looked up."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))


def test_the_client_carries_the_connection_options(no_docker_config):
    client = _options.client_from_params(params(plain_http=True, timeout=7, retries=2))
    assert isinstance(client, RegistryClient)
    assert client.base_url == "http://registry.example.com:5000/v2/kubesolo/os"
    assert client.timeout == 7
    assert client.retry.retries == 2


def test_mirrors_get_their_own_client_path_and_no_retries(no_docker_config):
    mirrors = [
        dict(_options.default_params(_options.MIRROR_SPEC), location="mirror.example/cache/"),
        dict(_options.default_params(_options.MIRROR_SPEC), location="other.example:5000", plain_http=True),
    ]
    client = _options.mirrored_client_from_params(params(mirrors=mirrors))
    assert [location for location, _client in client.mirrors] == ["mirror.example/cache/", "other.example:5000"]
    assert [mirror.base_url for _location, mirror in client.mirrors] == [
        "https://mirror.example/v2/cache/kubesolo/os",
        "http://other.example:5000/v2/kubesolo/os",
    ]
    assert [mirror.retry.retries for _location, mirror in client.mirrors] == [0, 0]
    assert client.upstream.retry.retries == 5
    assert client.mirror_tags is False


def test_the_release_options_default_to_the_stable_tag():
    manifest = fetched(image_manifest(release_layers(b"k", b"i"), release_annotations()))
    client = FakeManifestClient({"stable": manifest})
    release = _options.resolve_from_params(client, params(), "x86_64")
    assert release.manifest_digest == manifest.digest
    assert str(release.platform) == "amd64"
    assert [reference for reference, _accept in client.calls] == ["stable"]


@pytest.mark.parametrize("values", [{"digest": "sha256:abc"}, {"tag": "has space"}, {"tag": "-dash"}])
def test_malformed_tags_and_digests_are_refused_before_any_request(values):
    client = FakeManifestClient({})
    with pytest.raises(InvalidReferenceError):
        _options.resolve_from_params(client, params(**values), "amd64")
    assert client.calls == []


@pytest.mark.parametrize(
    "dest, normalised",
    [
        ("/var/lib/kubesolo/staged", "/var/lib/kubesolo/staged"),
        ("/var/lib/kubesolo/staged/", "/var/lib/kubesolo/staged"),
        ("/var/lib//kubesolo/./staged", "/var/lib/kubesolo/staged"),
    ],
)
def test_stage_dest_is_normalised(dest, normalised):
    assert _options.stage_dest(dest) == normalised


@pytest.mark.parametrize("dest", ["relative/path", "", "/", "//", None])
def test_stage_dest_must_be_below_the_root(dest):
    with pytest.raises(ParameterError, match="dest must be an absolute path below /"):
        _options.stage_dest(dest)
