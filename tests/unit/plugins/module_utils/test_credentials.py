# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Registry credentials: explicit options, docker config.json and credential helpers.

Credential helpers are real executables written to a temporary directory
that is put first on PATH.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import textwrap

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _credentials
from ansible_collections.kubesolo.fleet.plugins.module_utils._credentials import Credentials
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import AuthenticationError, ParameterError

REGISTRY = "registry.example.com"
PASSWORD = "pw-7f3a-never-shown"
IDENTITY_TOKEN = "idt-91c2-never-shown"
HELPER_SECRET = "helper-5e0d-never-shown"
SECRETS = (PASSWORD, IDENTITY_TOKEN, HELPER_SECRET)


def b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def as_tuple(credentials):
    if credentials is None:
        return None
    return (credentials.username, credentials.password, credentials.identity_token)


def assert_no_secret(*texts):
    for text in texts:
        for secret in SECRETS + (b64("robot:" + PASSWORD),):
            assert secret not in text, f"a secret leaked into: {text}"


def raised_text(excinfo):
    return str(excinfo.value), repr(excinfo.value)


# -- Credential helpers on PATH --------------------------------------------


@pytest.fixture
def helper_dir(tmp_path, monkeypatch):
    """An empty directory first on PATH; ``helper(name, script)`` writes docker-credential-<name>.

    A helper records its arguments and stdin next to itself (``<name>.args``,
    ``<name>.stdin``).
    """
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory) + os.pathsep + os.environ.get("PATH", ""))
    return directory


def write_helper(directory, name, body):
    path = directory / ("docker-credential-" + name)
    record = directory / name
    path.write_text(f'#!/bin/sh\nprintf "%s" "$*" > "{record}.args"\ncat > "{record}.stdin"\n{textwrap.dedent(body)}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def answering(username, secret):
    answer = json.dumps({"ServerURL": "whatever", "Username": username, "Secret": secret})
    return f"printf '%s' '{answer}'"


def helper_input(directory, name):
    return (directory / (name + ".stdin")).read_text(), (directory / (name + ".args")).read_text()


# -- docker_config_path ------------------------------------------------------


def test_docker_config_path_explicit(monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", "/elsewhere")
    assert _credentials.docker_config_path("/srv/ci/config.json") == "/srv/ci/config.json"


def test_docker_config_path_from_docker_config(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockercfg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _credentials.docker_config_path() == str(tmp_path / "dockercfg" / "config.json")


@pytest.mark.parametrize("docker_config", [None, ""])
def test_docker_config_path_in_home(monkeypatch, tmp_path, docker_config):
    if docker_config is None:
        monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    else:
        monkeypatch.setenv("DOCKER_CONFIG", docker_config)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _credentials.docker_config_path() == str(tmp_path / "home" / ".docker" / "config.json")
    assert _credentials.docker_config_path(None) == _credentials.docker_config_path("")


# -- load_docker_config ------------------------------------------------------


def test_load_docker_config(tmp_path):
    path = tmp_path / "config.json"
    config = {"auths": {REGISTRY: {"auth": b64("robot:" + PASSWORD)}}, "credsStore": "desktop"}
    path.write_text(json.dumps(config))
    assert _credentials.load_docker_config(str(path)) == config
    assert _credentials.load_docker_config(str(path), required=True) == config


def test_load_docker_config_missing(tmp_path):
    assert _credentials.load_docker_config(str(tmp_path / "absent.json")) == {}


def test_load_docker_config_missing_but_required(tmp_path):
    path = str(tmp_path / "absent.json")
    with pytest.raises(ParameterError) as raised:
        _credentials.load_docker_config(path, required=True)
    assert str(raised.value) == f"registry_config {path} does not exist"
    assert raised.value.code == "invalid_parameter"


def test_load_docker_config_unreadable(tmp_path):
    with pytest.raises(ParameterError) as raised:
        _credentials.load_docker_config(str(tmp_path))
    assert str(raised.value).startswith(f"cannot read registry_config {tmp_path}: ")


@pytest.mark.parametrize(
    "data",
    [
        b'{"auths": {',
        b"",
        b"\xff\xfe{}",
        ('{{"auths": {{"{}": {{"auth": "{}"}}}}'.format(REGISTRY, b64("robot:" + PASSWORD))).encode("utf-8"),
    ],
)
def test_load_docker_config_invalid_json(tmp_path, data):
    path = tmp_path / "config.json"
    path.write_bytes(data)
    with pytest.raises(ParameterError) as raised:
        _credentials.load_docker_config(str(path))
    assert str(raised.value).startswith(f"registry_config {path} is not valid JSON: ")
    assert_no_secret(*raised_text(raised))


@pytest.mark.parametrize("document", [[], '"config"', "null", "42"])
def test_load_docker_config_not_an_object(tmp_path, document):
    path = tmp_path / "config.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(ParameterError) as raised:
        _credentials.load_docker_config(str(path))
    assert str(raised.value) == f"registry_config {path} is not a JSON object"


def test_load_docker_config_over_one_mib(tmp_path):
    path = tmp_path / "config.json"
    body = b'{"auths": {}}'
    path.write_bytes(body + b" " * (1024 * 1024 + 1 - len(body)))
    with pytest.raises(ParameterError) as raised:
        _credentials.load_docker_config(str(path))
    assert str(raised.value) == f"registry_config {path} is larger than 1 MiB"


def test_load_docker_config_of_exactly_one_mib(tmp_path):
    path = tmp_path / "config.json"
    body = b'{"auths": {}}'
    path.write_bytes(body + b" " * (1024 * 1024 - len(body)))
    assert _credentials.load_docker_config(str(path)) == {"auths": {}}


# -- credentials_for: auths ----------------------------------------------------


@pytest.mark.parametrize(
    "key, registry",
    [
        (REGISTRY, REGISTRY),
        ("https://registry.example.com", REGISTRY),
        ("https://registry.example.com/", REGISTRY),
        ("http://registry.example.com/v1/", REGISTRY),
        ("HTTPS://Registry.Example.COM/v2/", REGISTRY),
        ("registry.example.com:5000", "registry.example.com:5000"),
        ("http://registry.example.com:5000/v1/", "registry.example.com:5000"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://index.docker.io/v1/", "registry-1.docker.io"),
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("docker.io", "docker.io"),
        ("docker.io", "registry-1.docker.io"),
        ("registry-1.docker.io", "docker.io"),
    ],
)
def test_auths_keys_in_docker_forms(key, registry):
    config = {"auths": {key: {"auth": b64("robot:" + PASSWORD)}}}
    assert as_tuple(_credentials.credentials_for(registry, config)) == ("robot", PASSWORD, None)


@pytest.mark.parametrize(
    "key, registry",
    [
        ("registry.example.com:5000", REGISTRY),
        (REGISTRY, "registry.example.com:5000"),
        ("https://registry.example.com.evil.example/", REGISTRY),
        ("evil.example/registry.example.com", REGISTRY),
        ("example.com", REGISTRY),
        ("https://index.docker.io/v1/", "ghcr.io"),
        ("ghcr.io", "docker.io"),
    ],
)
def test_auths_keys_of_other_registries_do_not_match(key, registry):
    config = {"auths": {key: {"auth": b64("robot:" + PASSWORD)}}}
    assert _credentials.credentials_for(registry, config) is None


def test_auths_base64_splits_on_the_first_colon():
    config = {"auths": {REGISTRY: {"auth": b64("robot:pa:ss:" + PASSWORD)}}}
    assert as_tuple(_credentials.credentials_for(REGISTRY, config)) == ("robot", "pa:ss:" + PASSWORD, None)


def test_auths_entry_is_picked_among_others():
    config = {
        "auths": {
            "ghcr.io": {"auth": b64("other:other-pw")},
            "https://registry.example.com": {"auth": b64("robot:" + PASSWORD)},
            "https://index.docker.io/v1/": {"auth": b64("hub:hub-pw")},
        }
    }
    assert as_tuple(_credentials.credentials_for(REGISTRY, config)) == ("robot", PASSWORD, None)
    assert as_tuple(_credentials.credentials_for("docker.io", config)) == ("hub", "hub-pw", None)
    assert _credentials.credentials_for("quay.io", config) is None


@pytest.mark.parametrize(
    "auth",
    [
        "not base64!",
        b64("robot-without-a-colon-" + PASSWORD),
        base64.b64encode(b"robot:\xff\xfe" + PASSWORD.encode("ascii")).decode("ascii"),
    ],
)
def test_auths_with_a_bad_auth_value(auth):
    config = {"auths": {"https://registry.example.com/v1/": {"auth": auth}}}
    with pytest.raises(ParameterError) as raised:
        _credentials.credentials_for(REGISTRY, config)
    assert str(raised.value) == (
        "the auths entry for registry.example.com in the docker config is not base64 of user:password"
    )
    assert auth not in str(raised.value)
    assert_no_secret(*raised_text(raised))


@pytest.mark.parametrize("auth", [12345, ["robot", PASSWORD], {"user": "robot"}])
def test_auths_with_an_auth_value_that_is_not_a_string(auth):
    # A hand-edited config.json must give a clean error, not a TypeError.
    config = {"auths": {REGISTRY: {"auth": auth}}}
    with pytest.raises(ParameterError) as raised:
        _credentials.credentials_for(REGISTRY, config)
    assert "registry.example.com" in str(raised.value)
    assert_no_secret(*raised_text(raised))


def test_auths_identity_token():
    config = {"auths": {REGISTRY: {"identitytoken": IDENTITY_TOKEN}}}
    assert as_tuple(_credentials.credentials_for(REGISTRY, config)) == ("<token>", None, IDENTITY_TOKEN)


def test_auths_identity_token_keeps_the_username_and_wins_over_auth():
    config = {
        "auths": {REGISTRY: {"identitytoken": IDENTITY_TOKEN, "username": "robot", "auth": b64("robot:" + PASSWORD)}}
    }
    assert as_tuple(_credentials.credentials_for(REGISTRY, config)) == ("robot", None, IDENTITY_TOKEN)


def test_auths_username_and_password_fields():
    config = {"auths": {REGISTRY: {"username": "robot", "password": PASSWORD}}}
    assert as_tuple(_credentials.credentials_for(REGISTRY, config)) == ("robot", PASSWORD, None)


@pytest.mark.parametrize(
    "entry",
    [
        {},
        {"auth": ""},
        {"identitytoken": ""},
        {"username": "robot"},
        {"password": PASSWORD},
        {"email": "robot@example.com"},
        "robot:pw",
        None,
    ],
)
def test_auths_entries_without_credentials(entry):
    assert _credentials.credentials_for(REGISTRY, {"auths": {REGISTRY: entry}}) is None


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"auths": {}},
        {"auths": None},
        {"auths": ["registry.example.com"]},
        {"credHelpers": None, "credsStore": ""},
        {"credHelpers": ["registry.example.com"]},
    ],
)
def test_configs_without_credentials(config):
    assert _credentials.credentials_for(REGISTRY, config) is None


# -- credentials_for: helpers and stores ------------------------------------------------


def test_cred_helpers_win_over_auths(helper_dir):
    write_helper(helper_dir, "ecr", answering("AWS", HELPER_SECRET))
    config = {
        "auths": {REGISTRY: {"auth": b64("robot:" + PASSWORD)}},
        "credHelpers": {REGISTRY: "ecr"},
        "credsStore": "desktop",
    }
    assert as_tuple(_credentials.credentials_for(REGISTRY, config)) == ("AWS", HELPER_SECRET, None)
    assert helper_input(helper_dir, "ecr") == (REGISTRY, "get")


def test_cred_helper_of_another_registry_is_not_run(helper_dir):
    write_helper(helper_dir, "ecr", "exit 7")
    config = {
        "auths": {REGISTRY: {"auth": b64("robot:" + PASSWORD)}},
        "credHelpers": {"123456789.dkr.ecr.us-east-1.amazonaws.com": "ecr"},
    }
    assert as_tuple(_credentials.credentials_for(REGISTRY, config)) == ("robot", PASSWORD, None)
    assert not (helper_dir / "ecr.stdin").exists()


def test_cred_helper_answering_none_does_not_fall_back(helper_dir):
    # docker uses the helper named for a registry exclusively.
    write_helper(helper_dir, "ecr", 'echo "credentials not found in native keychain"\nexit 1')
    config = {"auths": {REGISTRY: {"auth": b64("robot:" + PASSWORD)}}, "credHelpers": {REGISTRY: "ecr"}}
    assert _credentials.credentials_for(REGISTRY, config) is None


def test_creds_store_is_used_when_nothing_else_matches(helper_dir):
    write_helper(helper_dir, "desktop", answering("robot", HELPER_SECRET))
    config = {"auths": {"ghcr.io": {"auth": b64("other:other-pw")}}, "credsStore": "desktop"}
    assert as_tuple(_credentials.credentials_for(REGISTRY, config)) == ("robot", HELPER_SECRET, None)
    assert helper_input(helper_dir, "desktop") == (REGISTRY, "get")


def test_creds_store_is_used_for_an_empty_auths_entry(helper_dir):
    # What docker login writes when the credentials went into the store.
    write_helper(helper_dir, "desktop", answering("hub-user", HELPER_SECRET))
    config = {"auths": {"https://index.docker.io/v1/": {}}, "credsStore": "desktop"}
    assert as_tuple(_credentials.credentials_for("docker.io", config)) == ("hub-user", HELPER_SECRET, None)


def test_auths_win_over_creds_store(helper_dir):
    write_helper(helper_dir, "desktop", "exit 7")
    config = {"auths": {REGISTRY: {"auth": b64("robot:" + PASSWORD)}}, "credsStore": "desktop"}
    assert as_tuple(_credentials.credentials_for(REGISTRY, config)) == ("robot", PASSWORD, None)
    assert not (helper_dir / "desktop.stdin").exists()


@pytest.mark.parametrize(
    "registry, server",
    [
        (REGISTRY, REGISTRY),
        ("registry.example.com:5000", "registry.example.com:5000"),
        ("docker.io", "https://index.docker.io/v1/"),
        ("registry-1.docker.io", "https://index.docker.io/v1/"),
        ("index.docker.io", "https://index.docker.io/v1/"),
    ],
)
def test_the_helper_receives_the_server_url_on_stdin(helper_dir, registry, server):
    write_helper(helper_dir, "pass", answering("robot", HELPER_SECRET))
    assert as_tuple(_credentials.run_credential_helper("pass", registry)) == ("robot", HELPER_SECRET, None)
    assert helper_input(helper_dir, "pass") == (server, "get")


def test_a_token_username_from_a_helper_is_an_identity_token(helper_dir):
    write_helper(helper_dir, "desktop", answering("<token>", IDENTITY_TOKEN))
    assert as_tuple(_credentials.run_credential_helper("desktop", REGISTRY)) == ("<token>", None, IDENTITY_TOKEN)


@pytest.mark.parametrize(
    "body",
    [
        'echo "credentials not found in native keychain"\nexit 1',
        'echo "Credentials Not Found" >&2\nexit 1',
    ],
)
def test_a_helper_without_credentials(helper_dir, body):
    write_helper(helper_dir, "osxkeychain", body)
    assert _credentials.run_credential_helper("osxkeychain", REGISTRY) is None


def test_a_failing_helper_names_the_exit_code_and_its_last_line(helper_dir):
    write_helper(helper_dir, "secretservice", 'echo "first line" >&2\necho "keyring is locked" >&2\nexit 3')
    with pytest.raises(AuthenticationError) as raised:
        _credentials.run_credential_helper("secretservice", REGISTRY)
    assert str(raised.value) == (
        "credential helper docker-credential-secretservice failed for registry.example.com (exit 3): keyring is locked"
    )
    assert raised.value.code == "authentication_failed"


def test_a_failing_helper_without_output(helper_dir):
    write_helper(helper_dir, "silent", "exit 4")
    with pytest.raises(AuthenticationError) as raised:
        _credentials.run_credential_helper("silent", REGISTRY)
    assert str(raised.value) == (
        "credential helper docker-credential-silent failed for registry.example.com (exit 4): "
    )


def test_a_failing_helper_long_last_line_is_cut(helper_dir):
    write_helper(helper_dir, "chatty", 'printf "%0500d" 0\nexit 5')
    with pytest.raises(AuthenticationError) as raised:
        _credentials.run_credential_helper("chatty", REGISTRY)
    assert str(raised.value).endswith("(exit 5): " + "0" * 200)


@pytest.mark.parametrize(
    "output",
    [
        "not json",
        f'["robot", "{HELPER_SECRET}"]',
        '{"Username": "robot"}',
        f'{{"Secret": "{HELPER_SECRET}"}}',
        f"Secret: {HELPER_SECRET}",
        "",
    ],
)
def test_a_helper_answer_that_is_not_credentials(helper_dir, output):
    write_helper(helper_dir, "garbage", f"printf '%s' '{output}'")
    with pytest.raises(AuthenticationError) as raised:
        _credentials.run_credential_helper("garbage", REGISTRY)
    assert str(raised.value) == (
        "credential helper docker-credential-garbage gave an answer for "
        'registry.example.com that is not {"Username": ..., "Secret": ...}'
    )
    assert_no_secret(*raised_text(raised))


def test_a_missing_helper(helper_dir, monkeypatch):
    monkeypatch.setenv("PATH", str(helper_dir))
    with pytest.raises(AuthenticationError) as raised:
        _credentials.credentials_for(REGISTRY, {"credsStore": "nowhere"})
    assert str(raised.value) == (
        "the docker config names the credential helper docker-credential-nowhere "
        "for registry.example.com, but it is not on PATH"
    )


def test_a_helper_that_is_not_executable_is_not_run(helper_dir):
    path = write_helper(helper_dir, "noexec", answering("robot", HELPER_SECRET))
    path.chmod(0o644)
    with pytest.raises(AuthenticationError, match="docker-credential-noexec .* is not on PATH"):
        _credentials.run_credential_helper("noexec", REGISTRY)


def test_a_hanging_helper_times_out(helper_dir, monkeypatch):
    monkeypatch.setattr(_credentials, "_HELPER_TIMEOUT", 0.5)
    write_helper(helper_dir, "slow", "exec sleep 30")
    with pytest.raises(AuthenticationError) as raised:
        _credentials.run_credential_helper("slow", REGISTRY)
    assert str(raised.value).startswith("credential helper docker-credential-slow failed for registry.example.com: ")
    assert "timed out" in str(raised.value)


@pytest.mark.parametrize("name", ["../x", "/usr/bin/evil", "a/b", "", None, 5, ["desktop"]])
def test_invalid_helper_names(helper_dir, name):
    with pytest.raises(ParameterError) as raised:
        _credentials.run_credential_helper(name, REGISTRY)
    assert str(raised.value) == f"invalid credential helper name {name!r} in the docker config"


@pytest.mark.parametrize(
    "config",
    [
        {"credsStore": "../x"},
        {"credHelpers": {REGISTRY: "../x"}},
    ],
)
def test_invalid_helper_names_in_a_config(helper_dir, config):
    with pytest.raises(ParameterError, match=r"invalid credential helper name '\.\./x'"):
        _credentials.credentials_for(REGISTRY, config)


# -- resolve_credentials ---------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    """HOME in a temporary directory, DOCKER_CONFIG unset; returns HOME's .docker directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    docker = tmp_path / "home" / ".docker"
    docker.mkdir(parents=True)
    return docker


def test_resolve_explicit_credentials_win(home, helper_dir):
    write_helper(helper_dir, "desktop", "exit 7")
    (home / "config.json").write_text(
        json.dumps({"auths": {REGISTRY: {"auth": b64("other:other-pw")}}, "credsStore": "desktop"})
    )
    credentials = _credentials.resolve_credentials(REGISTRY, "robot", PASSWORD)
    assert as_tuple(credentials) == ("robot", PASSWORD, None)
    assert not (helper_dir / "desktop.stdin").exists()


def test_resolve_explicit_credentials_do_not_read_the_config(home, tmp_path):
    assert as_tuple(_credentials.resolve_credentials(REGISTRY, "robot", PASSWORD, str(tmp_path / "absent.json"))) == (
        "robot",
        PASSWORD,
        None,
    )


@pytest.mark.parametrize("username, password", [("robot", None), (None, PASSWORD), ("robot", ""), ("", PASSWORD)])
def test_resolve_username_and_password_go_together(home, username, password):
    with pytest.raises(ParameterError) as raised:
        _credentials.resolve_credentials(REGISTRY, username, password)
    assert str(raised.value) == "username and password must be given together"
    assert_no_secret(*raised_text(raised))


def test_resolve_explicit_registry_config(home, tmp_path):
    path = tmp_path / "ci-config.json"
    path.write_text(json.dumps({"auths": {"https://registry.example.com": {"auth": b64("robot:" + PASSWORD)}}}))
    (home / "config.json").write_text(json.dumps({"auths": {REGISTRY: {"auth": b64("home:home-pw")}}}))
    assert as_tuple(_credentials.resolve_credentials(REGISTRY, config_path=str(path))) == ("robot", PASSWORD, None)


def test_resolve_explicit_registry_config_that_does_not_exist(home, tmp_path):
    path = str(tmp_path / "absent.json")
    with pytest.raises(ParameterError) as raised:
        _credentials.resolve_credentials(REGISTRY, config_path=path)
    assert str(raised.value) == f"registry_config {path} does not exist"


def test_resolve_default_config_missing_is_anonymous(home):
    assert not (home / "config.json").exists()
    assert _credentials.resolve_credentials(REGISTRY) is None


def test_resolve_default_config_in_home(home):
    (home / "config.json").write_text(json.dumps({"auths": {REGISTRY: {"auth": b64("robot:" + PASSWORD)}}}))
    assert as_tuple(_credentials.resolve_credentials(REGISTRY)) == ("robot", PASSWORD, None)
    assert _credentials.resolve_credentials("ghcr.io") is None


def test_resolve_default_config_from_docker_config(home, tmp_path, monkeypatch):
    other = tmp_path / "dockercfg"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"auths": {REGISTRY: {"identitytoken": IDENTITY_TOKEN}}}))
    (home / "config.json").write_text(json.dumps({"auths": {REGISTRY: {"auth": b64("home:home-pw")}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(other))
    assert as_tuple(_credentials.resolve_credentials(REGISTRY)) == ("<token>", None, IDENTITY_TOKEN)


# -- No secret in any message or repr ------------------------------------------------------


def test_no_message_or_repr_contains_a_secret(home, helper_dir, tmp_path):
    texts = []

    def collect(call, *args, **kwargs):
        try:
            result = call(*args, **kwargs)
        except (AuthenticationError, ParameterError) as exc:
            texts.extend([str(exc), repr(exc), repr(exc.args)])
        else:
            texts.extend([repr(result), str(result)])

    write_helper(helper_dir, "good", answering("robot", HELPER_SECRET))
    write_helper(helper_dir, "token", answering("<token>", IDENTITY_TOKEN))
    write_helper(helper_dir, "bad", f"printf '%s' '{{\"Secret\": \"{HELPER_SECRET}\"}}'")
    write_helper(helper_dir, "fails", "exit 2")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{{"auths": {{"{}": {{"auth": "{}"}}'.format(REGISTRY, b64("robot:" + PASSWORD)))

    collect(Credentials, "robot", PASSWORD)
    collect(Credentials, "<token>", identity_token=IDENTITY_TOKEN)
    collect(_credentials.resolve_credentials, REGISTRY, "robot", PASSWORD)
    collect(_credentials.resolve_credentials, REGISTRY, None, PASSWORD)
    collect(_credentials.resolve_credentials, REGISTRY, config_path=str(bad_json))
    collect(_credentials.credentials_for, REGISTRY, {"auths": {REGISTRY: {"auth": b64("robot:" + PASSWORD)}}})
    collect(_credentials.credentials_for, REGISTRY, {"auths": {REGISTRY: {"auth": b64("robot" + PASSWORD)}}})
    collect(_credentials.credentials_for, REGISTRY, {"auths": {REGISTRY: {"auth": PASSWORD + "!"}}})
    collect(_credentials.credentials_for, REGISTRY, {"auths": {REGISTRY: {"identitytoken": IDENTITY_TOKEN}}})
    collect(_credentials.credentials_for, REGISTRY, {"auths": {REGISTRY: {"username": "robot", "password": PASSWORD}}})
    for helper in ("good", "token", "bad", "fails", "absent"):
        collect(_credentials.credentials_for, REGISTRY, {"credsStore": helper})
    assert len(texts) >= 2 * 15
    assert_no_secret(*texts)


@pytest.mark.parametrize(
    "credentials, secret",
    [
        (Credentials("robot", "s3cret-pw"), "s3cret-pw"),
        (Credentials("<token>", identity_token="refresh-me-please"), "refresh-me-please"),
    ],
)
def test_credentials_repr_hides_the_secret(credentials, secret):
    for text in (repr(credentials), str(credentials), repr([credentials]), f"{credentials}"):
        assert secret not in text
        assert credentials.username in text
    assert repr(credentials) == f"Credentials(username={credentials.username!r}, secret=<hidden>)"
