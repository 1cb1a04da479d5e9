# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Repository references, tags and digests."""

from __future__ import annotations

import hashlib
import re

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _reference
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import InvalidReferenceError

SHA256_HEX = hashlib.sha256(b"kubesolo").hexdigest()
SHA512_HEX = hashlib.sha512(b"kubesolo").hexdigest()


@pytest.mark.parametrize(
    "value, registry, path, api_host",
    [
        ("ghcr.io/portainer/kubesolo-os", "ghcr.io", "portainer/kubesolo-os", "ghcr.io"),
        ("127.0.0.1:5000/kubesolo/os", "127.0.0.1:5000", "kubesolo/os", "127.0.0.1:5000"),
        ("localhost/x", "localhost", "x", "localhost"),
        ("localhost:5000/a/b", "localhost:5000", "a/b", "localhost:5000"),
        ("[::1]:5000/x", "[::1]:5000", "x", "[::1]:5000"),
        ("registry.example.com/a__b/c-d.e", "registry.example.com", "a__b/c-d.e", "registry.example.com"),
        ("registry.example.com/a--b/c_d", "registry.example.com", "a--b/c_d", "registry.example.com"),
        ("docker.io/library/alpine", "docker.io", "library/alpine", "registry-1.docker.io"),
        ("index.docker.io/library/alpine", "index.docker.io", "library/alpine", "registry-1.docker.io"),
        ("Registry.Example.com/os", "Registry.Example.com", "os", "Registry.Example.com"),
    ],
)
def test_parse_repository_accepts(value, registry, path, api_host):
    repository = _reference.parse_repository(value)
    assert (repository.registry, repository.path, repository.api_host) == (registry, path, api_host)
    assert str(repository) == value
    assert repr(repository) == f"Repository({value!r})"


def test_parse_repository_accepts_a_path_of_255_characters():
    path = "a/" + "b" * 253
    assert _reference.parse_repository("ghcr.io/" + path).path == path


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "repository must be a non-empty string like ghcr.io/owner/name"),
        (None, "repository must be a non-empty string"),
        (42, "repository must be a non-empty string"),
        ("ghcr.io", "repository 'ghcr.io' must be host[:port]/path"),
        ("ghcr.io/", "repository 'ghcr.io/' must be host[:port]/path"),
        ("https://ghcr.io/portainer/kubesolo-os", "must not include a scheme; use plain_http"),
        ("ghcr.io/portainer/kubesolo-os:v0.3.0", "must not include a tag; use the tag option"),
        ("localhost:5000/kubesolo/os:stable", "must not include a tag"),
        ("ghcr.io/portainer/kubesolo-os@sha256:" + SHA256_HEX, "must not include a digest; use the digest option"),
        ("ghcr.io/Portainer/kubesolo-os", "invalid path component 'Portainer'"),
        ("ghcr.io/portainer/KubeSolo", "invalid path component 'KubeSolo'"),
        ("ghcr.io/portainer//os", "invalid path component ''"),
        ("ghcr.io/portainer/os/", "invalid path component ''"),
        ("ghcr.io/-portainer/os", "invalid path component '-portainer'"),
        ("ghcr.io/a___b/os", "invalid path component 'a___b'"),
        ("ghcr.io/a..b/os", "invalid path component 'a..b'"),
        ("bad_host.example.com/x", "invalid registry host 'bad_host.example.com'"),
        ("-bad.example.com/x", "invalid registry host '-bad.example.com'"),
        ("ghcr..io/x", "invalid registry host 'ghcr..io'"),
        ("localhost:0/x", "invalid registry host 'localhost:0'"),
        ("localhost:99999/x", "invalid registry host 'localhost:99999'"),
        ("localhost:123456/x", "invalid registry host 'localhost:123456'"),
        ("localhost:port/x", "invalid registry host 'localhost:port'"),
        ("portainer/kubesolo-os", "'portainer' is not a host name with a dot or a port, nor localhost"),
        ("kubesolo-os/x", "must start with a registry host"),
        ("ghcr.io/" + "a" * 256, "is longer than 255 characters"),
    ],
)
def test_parse_repository_rejects(value, message):
    with pytest.raises(InvalidReferenceError, match=re.escape(message)) as raised:
        _reference.parse_repository(value)
    assert raised.value.code == "invalid_reference"


@pytest.mark.parametrize(
    "value",
    [
        "ghcr.io/portainer/kubesolo-os\n",
        "ghcr.io\n/portainer/kubesolo-os",
    ],
)
def test_parse_repository_rejects_a_trailing_newline(value):
    # A newline would end up in the request URL; the grammar has no place for it.
    with pytest.raises(InvalidReferenceError):
        _reference.parse_repository(value)


@pytest.mark.parametrize("tag", ["stable", "v0.3.0", "v0.3.0-amd64", "_private", "V1.2.3_rc.1", "a" * 128, "0"])
def test_validate_tag_accepts(tag):
    assert _reference.validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".hidden", "-dash", "a" * 129, "v1/2", "v1:2", "v1 2", "v1@x", "ü", None, 3])
def test_validate_tag_rejects(tag):
    with pytest.raises(InvalidReferenceError, match="is invalid: up to 128 letters") as raised:
        _reference.validate_tag(tag)
    assert raised.value.code == "invalid_reference"


def test_validate_tag_rejects_a_trailing_newline():
    with pytest.raises(InvalidReferenceError, match="is invalid"):
        _reference.validate_tag("v0.3.0\n")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("sha256:" + SHA256_HEX, ("sha256", SHA256_HEX)),
        ("sha512:" + SHA512_HEX, ("sha512", SHA512_HEX)),
    ],
)
def test_parse_digest_accepts(value, expected):
    assert _reference.parse_digest(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("sha256:" + SHA256_HEX[:-1], "must have 64 lowercase hex characters after sha256:"),
        ("sha256:" + SHA256_HEX + "0", "must have 64 lowercase hex characters after sha256:"),
        ("sha256:" + SHA256_HEX.upper(), "must have 64 lowercase hex characters after sha256:"),
        ("sha256:" + "g" * 64, "must have 64 lowercase hex characters after sha256:"),
        ("sha512:" + SHA256_HEX, "must have 128 lowercase hex characters after sha512:"),
        ("md5:" + hashlib.md5(b"x").hexdigest(), "uses the unsupported algorithm 'md5' (supported: sha256, sha512)"),
        ("sha384:" + hashlib.sha384(b"x").hexdigest(), "uses the unsupported algorithm 'sha384'"),
        ("sha256:../../etc", "is not of the form algorithm:hex"),
        ("sha256:" + SHA256_HEX[:32] + "/" + SHA256_HEX[33:], "is not of the form algorithm:hex"),
        (SHA256_HEX, "is not of the form algorithm:hex"),
        ("sha256:", "is not of the form algorithm:hex"),
        ("", "is not of the form algorithm:hex"),
        ("SHA256:" + SHA256_HEX, "is not of the form algorithm:hex"),
        (None, "digest None is not a string"),
        (b"sha256:" + SHA256_HEX.encode(), "is not a string"),
    ],
)
def test_parse_digest_rejects(value, message):
    with pytest.raises(InvalidReferenceError, match=re.escape(message)) as raised:
        _reference.parse_digest(value)
    assert raised.value.code == "invalid_reference"


def test_parse_digest_rejects_a_trailing_newline():
    with pytest.raises(InvalidReferenceError):
        _reference.parse_digest(f"sha256:{SHA256_HEX}\n")


@pytest.mark.parametrize(
    "algorithm, expected",
    [
        ("sha256", "sha256:" + SHA256_HEX),
        ("sha512", "sha512:" + SHA512_HEX),
    ],
)
def test_digest_of(algorithm, expected):
    assert _reference.digest_of(b"kubesolo", algorithm) == expected


def test_digest_of_defaults_to_sha256():
    assert _reference.digest_of(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
