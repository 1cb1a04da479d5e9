# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Registry credentials end to end: real ansible-playbook, update_info and update_stage (host and
controller delivery) against an htpasswd registry over TLS and a token-auth registry.

Each module-scoped fixture runs one playbook of many tasks (all with ``ignore_errors``); the tests
assert on the per-task results, the staged bytes, the registries' access logs and the token
server's request log.  The token registry gives every case its own repository, so the token
server's log (one token scope per repository) tells the cases apart.  Every playbook run is
checked for leaked secrets at the end.
"""

from __future__ import annotations

import os
import shutil
import time
from types import SimpleNamespace

import pytest

from tests.support import artifacts
from tests.support.credhelper import CredentialHelper, write_docker_config
from tests.support.htpasswd import htpasswd_config, write_htpasswd
from tests.support.leakcheck import CENSORED, NO_LOG_MASK, LeakCheck
from tests.support.mirror import dead_address
from tests.support.playbook import run_playbook
from tests.support.registry import Registry
from tests.support.sshnode import inventory
from tests.support.staging import (
    assert_failed,
    assert_nothing_staged,
    assert_ok,
    assert_staged,
    hermetic_env,
    info_task,
    layer_digests,
    require_distribution,
    sources_of,
    stage_task,
)
from tests.support.tokenserver import TokenAuth, TokenServer

# Long, distinctive secrets: a leak check can only find what cannot occur by chance.
USERS = {
    "alice": "alice-pw-0d8f3c1b9a",  # given as username/password
    "dora": "dora-pw-5e71a2c4f0",  # in config.json auths
    "erin": "erin-pw-9b0c6d2e13",  # from the credHelpers helper
    "frank": "frank-pw-47aa1f8e6c",  # from the credsStore helper
    "gina": "gina-pw-c3e95b7d02",  # owns the identity token (never used as a password)
}
WRONG_PASSWORD = "not-the-password-6f2e"
MIRROR_PASSWORD = "mirror-pw-81d4c7e0aa"
IDENTITY_TOKEN = "identity-token-2b7f5e90c4d1"
VERSION = "v1.4.0"


@pytest.fixture(scope="module")
def leaks() -> LeakCheck:
    check = LeakCheck()
    for user, password in USERS.items():
        check.password(user, password)
    check.password("alice", WRONG_PASSWORD)
    check.password("mirror-user", MIRROR_PASSWORD)
    check.secret("identity token", IDENTITY_TOKEN)
    return check


# ----------------------------------------------------------------------------------------------
# 1. htpasswd (Basic) over TLS with the test CA; run with -vvv, which prints module arguments.


@pytest.fixture(scope="module")
def basic(pki, leaks, tmp_path_factory):
    require_distribution()
    tmp = tmp_path_factory.mktemp("basic")
    config = htpasswd_config(write_htpasswd(tmp / "htpasswd", {"alice": USERS["alice"]}))
    config.update(pki.registry_tls_config())
    with Registry(
        scheme="https", verify=str(pki.ca_bundle), auth=("alice", USERS["alice"]), extra_config=config
    ) as reg:
        release = artifacts.push_release(reg, "kubesolo/os", "stable", VERSION, arches=("amd64", "arm64"))
        repository = f"{reg.host}/kubesolo/os"
        tls = {"ca_path": str(pki.ca_bundle)}
        right = {"username": "alice", "password": USERS["alice"], **tls}
        wrong = {"username": "alice", "password": WRONG_PASSWORD, **tls}
        dead_mirror = dead_address()
        mirror = {"location": dead_mirror, "plain_http": True, "username": "mirror-user", "password": MIRROR_PASSWORD}
        dests = {
            name: tmp / name / "staged"
            for name in ("host", "controller", "host-wrong", "controller-wrong", "host-none", "controller-none")
        }
        cache = tmp / "cache"
        tasks = [
            info_task("info", repository, mirrors=[mirror], retries=0, **right),  # retries: the mirror is dead
            stage_task("stage host", repository, dests["host"], **right),
            stage_task("stage controller", repository, dests["controller"], cache=cache, **right),
            info_task("info wrong password", repository, **wrong),
            stage_task("stage host wrong password", repository, dests["host-wrong"], **wrong),
            stage_task("stage controller wrong password", repository, dests["controller-wrong"], cache=cache, **wrong),
            info_task("info no credentials", repository, **tls),
            stage_task("stage host no credentials", repository, dests["host-none"], **tls),
            stage_task("stage controller no credentials", repository, dests["controller-none"], cache=cache, **tls),
        ]
        run = run_playbook(tasks, tmp_path=tmp / "playbook", env=hermetic_env(tmp), args=["-vvv"])
        leaks.record("htpasswd over TLS (-vvv)", run)
        yield SimpleNamespace(
            reg=reg,
            release=release,
            manifest=release.manifests["amd64"],
            repository=repository,
            run=run,
            dests=dests,
            cache=cache,
            dead_mirror=dead_mirror,
        )


def test_basic_auth_over_tls_info_with_the_right_password(basic):
    result = assert_ok(basic.run, "info")

    assert result["manifest_digest"] == basic.manifest.digest
    assert result["index_digest"] == basic.release.digest
    assert result["metadata"]["version"] == VERSION
    assert result["sources"] == sources_of(
        basic.release, "amd64", index=basic.reg.host, rest=basic.reg.host, stage=False
    )
    # The dead mirror (with its own credentials) was tried for the manifest by digest, then skipped.
    assert [e.split(": ", 1)[0] for e in result["mirror_errors"]] == [basic.dead_mirror]


@pytest.mark.parametrize("delivery", ["host", "controller"])
def test_basic_auth_over_tls_stages_with_the_right_password(basic, delivery):
    result = assert_ok(basic.run, f"stage {delivery}")

    assert result["changed"] is True
    assert result["delivery"] == delivery
    assert result["bytes_downloaded"] == len(basic.manifest.kernel) + len(basic.manifest.initramfs)
    assert result["sources"] == sources_of(basic.release, "amd64", index=basic.reg.host, rest=basic.reg.host)
    assert result["mirror_errors"] == []
    assert_staged(basic.dests[delivery], basic.manifest, basic.repository)


@pytest.mark.parametrize(
    "task", ["info wrong password", "stage host wrong password", "stage controller wrong password"]
)
def test_basic_auth_wrong_password_names_registry_and_user_not_the_password(basic, task):
    result = assert_failed(basic.run, task, "authentication_failed")

    assert result["msg"] == f"registry {basic.reg.host} refused the credentials of 'alice' for kubesolo/os"
    assert WRONG_PASSWORD not in str(result)
    assert CENSORED not in str(result)  # Ansible had nothing to censor: the module never said it


@pytest.mark.parametrize(
    "task", ["info no credentials", "stage host no credentials", "stage controller no credentials"]
)
def test_basic_auth_without_credentials_says_none_were_given(basic, task):
    result = assert_failed(basic.run, task, "authentication_failed")

    assert result["msg"] == (
        f"registry {basic.reg.host} requires authentication (basic challenge) to read "
        "kubesolo/os and no credentials were given"
    )


def test_failed_stages_leave_dest_untouched(basic):
    for name in ("host-wrong", "controller-wrong", "host-none", "controller-none"):
        assert_nothing_staged(basic.dests[name])


def test_controller_cache_holds_only_verified_layers(basic):
    blobs = basic.cache / "blobs" / "sha256"
    assert sorted(p.name for p in blobs.iterdir() if not p.name.endswith(".sha256")) == sorted(
        d.split(":", 1)[1] for d in layer_digests(basic.manifest)
    )


def test_vvv_prints_the_module_arguments_with_passwords_masked(basic):
    # -vvv shows each module's invocation; no_log options are masked there, mirrors' included.
    invocation = basic.run.result("info")["invocation"]["module_args"]
    assert invocation["username"] == "alice"
    assert invocation["password"] == NO_LOG_MASK
    assert invocation["mirrors"][0]["password"] == NO_LOG_MASK
    assert basic.run.result("stage host")["invocation"]["module_args"]["password"] == NO_LOG_MASK
    assert f'"password": "{NO_LOG_MASK}"' in basic.run.stdout
    assert USERS["alice"] not in basic.run.stdout and MIRROR_PASSWORD not in basic.run.stdout


# ----------------------------------------------------------------------------------------------
# 2. Token auth: anonymous pulls of public/*, credentials from every source for private/*.

#: Repositories of the token registry, one per case.
TOKEN_REPOS = {
    "public": "public/os",
    "anonymous": "private/anonymous",
    "password": "private/password",
    "auths": "private/auths",
    "helper": "private/helper",
    "helper controller": "private/helper-controller",
    "store": "private/store",
    "missing helper": "private/missing-helper",
    "explicit wins": "private/explicit",
    "identity token": "private/identity",
}


@pytest.fixture(scope="module")
def token(pki, leaks, tmp_path_factory):
    require_distribution()
    tmp = tmp_path_factory.mktemp("token")
    with TokenServer(pki, users=USERS, anonymous_pull=["public/*"]) as server:
        leaks.token_server(server)
        server.refresh_tokens[IDENTITY_TOKEN] = "gina"
        pusher = TokenAuth("alice", USERS["alice"])
        with Registry(extra_config=server.registry_config(), auth=pusher) as reg:
            releases = {
                case: artifacts.push_release(reg, repo, "stable", VERSION, arches=("amd64",))
                for case, repo in TOKEN_REPOS.items()
            }
            pusher.close()
            host = reg.host
            helpers = tmp / "helpers"
            helper = CredentialHelper(helpers, "test", credentials={host: ("erin", USERS["erin"])})
            store = CredentialHelper(helpers, "teststore", credentials={host: ("frank", USERS["frank"])})
            configs = {
                "auths": write_docker_config(tmp / "auths", auths={host: ("dora", USERS["dora"])}),
                "helper": write_docker_config(
                    tmp / "helper", cred_helpers={host: "test"}, auths={host: ("dora", WRONG_PASSWORD)}
                ),  # credHelpers come first
                "store": write_docker_config(tmp / "store", creds_store="teststore"),
                "missing helper": write_docker_config(tmp / "missing", cred_helpers={host: "absent"}),
                "wrong": write_docker_config(tmp / "wrong", auths={host: ("dora", WRONG_PASSWORD)}),
                "identity token": write_docker_config(
                    tmp / "identity", auths={host: {"identitytoken": IDENTITY_TOKEN}}
                ),
            }
            repository = {case: f"{host}/{repo}" for case, repo in TOKEN_REPOS.items()}
            alice = {"username": "alice", "password": USERS["alice"]}
            dests = {case: tmp / case.replace(" ", "-") / "staged" for case in TOKEN_REPOS}
            cache = tmp / "cache"

            def stage(case, **args):
                return stage_task(f"stage {case}", repository[case], dests[case], plain_http=True, **args)

            tasks = [
                stage("public"),
                info_task("info anonymous", repository["anonymous"], plain_http=True),
                stage("anonymous"),
                stage("password", **alice),
                stage("auths", registry_config=str(configs["auths"])),
                stage("helper", registry_config=str(configs["helper"])),
                stage("helper controller", registry_config=str(configs["helper"]), cache=cache),
                stage("store", registry_config=str(configs["store"])),
                info_task(
                    "info missing helper",
                    repository["missing helper"],
                    plain_http=True,
                    registry_config=str(configs["missing helper"]),
                ),
                stage("missing helper", registry_config=str(configs["missing helper"]), cache=cache),
                stage("explicit wins", registry_config=str(configs["wrong"]), **alice),
                stage("identity token", registry_config=str(configs["identity token"])),
            ]
            mark, token_mark = reg.mark(), server.mark()
            run = run_playbook(tasks, tmp_path=tmp / "playbook", env=hermetic_env(tmp, PATH=helper.env()["PATH"]))
            leaks.record("token auth", run)
            yield SimpleNamespace(
                server=server,
                reg=reg,
                releases=releases,
                repository=repository,
                run=run,
                dests=dests,
                helper=helper,
                store=store,
                log=reg.access_log(since=mark),
                tokens=server.log[token_mark:],
            )


def token_requests(token, repo: str) -> list:
    """The token server's requests during the run for a scope on ``repo``."""
    return [entry for entry in token.tokens if any(s.startswith(f"repository:{repo}:") for s in entry.scopes)]


def test_token_anonymous_pull_of_a_public_repository(token):
    result = assert_ok(token.run, "stage public")
    release = token.releases["public"]

    assert result["changed"] is True
    assert result["sources"] == sources_of(release, "amd64", index=token.reg.host, rest=token.reg.host)
    assert_staged(token.dests["public"], release.manifests["amd64"])
    # Challenge, token, retry: one anonymous token for the whole run.
    [request] = token_requests(token, "public/os")
    assert (request.method, request.authorization, request.user, request.status) == ("GET", None, None, 200)
    assert request.scopes == ["repository:public/os:pull"]
    assert request.granted == [{"type": "repository", "name": "public/os", "actions": ["pull"]}]
    tag_gets = [
        e.status for e in token.log if e.repo == "public/os" and e.kind == "manifest" and e.reference == "stable"
    ]
    assert tag_gets == [401, 200]


@pytest.mark.parametrize("task", ["info anonymous", "stage anonymous"])
def test_token_private_repository_refuses_anonymous_access(token, task):
    result = assert_failed(token.run, task, "authentication_failed")

    assert result["msg"] == (
        f"registry {token.reg.host} refused anonymous access to private/anonymous (no credentials were given)"
    )
    assert_nothing_staged(token.dests["anonymous"])
    assert {(e.user, e.status, str(e.granted)) for e in token_requests(token, "private/anonymous")} == {
        (None, 200, "[]")
    }


def test_token_private_repository_with_username_and_password(token):
    result = assert_ok(token.run, "stage password")
    release = token.releases["password"]

    assert result["changed"] is True
    assert_staged(token.dests["password"], release.manifests["amd64"])
    # One token per scope for the whole run: the tag, the manifest and both layers share it.
    [request] = token_requests(token, "private/password")
    assert (request.user, request.status, request.scopes) == ("alice", 200, ["repository:private/password:pull"])
    assert request.authorization.startswith("Basic ")
    statuses = [
        (e.kind, e.reference, e.status) for e in token.log if e.repo == "private/password" and e.method == "GET"
    ]
    kernel, initramfs = layer_digests(release.manifests["amd64"])
    assert statuses[:3] == [
        ("manifest", "stable", 401),
        ("manifest", "stable", 200),
        ("manifest", release.manifests["amd64"].digest, 200),
    ]
    # The layers download at the same time, in either order.
    assert sorted(statuses[3:]) == sorted([("blob", kernel, 200), ("blob", initramfs, 200)])


@pytest.mark.parametrize(
    ("case", "user"),
    [
        ("auths", "dora"),
        ("helper", "erin"),
        ("helper controller", "erin"),
        ("store", "frank"),
        ("explicit wins", "alice"),
    ],
)
def test_token_credentials_from_each_source(token, case, user):
    result = assert_ok(token.run, f"stage {case}")

    assert result["changed"] is True
    assert result["delivery"] == ("controller" if case == "helper controller" else "host")
    assert_staged(token.dests[case], token.releases[case].manifests["amd64"])
    assert [(e.user, e.status) for e in token_requests(token, TOKEN_REPOS[case])] == [(user, 200)]


def test_token_credential_helpers_are_asked_for_the_registry_host(token):
    # credHelpers (host and controller delivery both run it on this machine), then credsStore.
    assert [(c["action"], c["input"]) for c in token.helper.calls()] == [("get", token.reg.host)] * 2
    assert [(c["action"], c["input"]) for c in token.store.calls()] == [("get", token.reg.host)]


@pytest.mark.parametrize("task", ["info missing helper", "stage missing helper"])
def test_token_missing_credential_helper_is_named(token, task):
    result = assert_failed(token.run, task, "authentication_failed")

    assert result["msg"] == (
        f"the docker config names the credential helper docker-credential-absent for "
        f"{token.reg.host}, but it is not on PATH"
    )
    assert token_requests(token, "private/missing-helper") == []
    assert_nothing_staged(token.dests["missing helper"])


def test_token_identity_token_is_exchanged_with_an_oauth2_refresh_grant(token):
    result = assert_ok(token.run, "stage identity token")

    assert result["changed"] is True
    assert_staged(token.dests["identity token"], token.releases["identity token"].manifests["amd64"])
    [request] = token_requests(token, "private/identity")
    assert (request.method, request.user, request.status, request.authorization) == ("POST", "gina", 200, None)
    assert request.form["grant_type"] == ["refresh_token"]
    assert request.form["refresh_token"] == [IDENTITY_TOKEN]
    assert request.form["service"] == [token.server.service]
    assert request.form["scope"] == ["repository:private/identity:pull"]


# ----------------------------------------------------------------------------------------------
# 3. A token that expires in the middle of a run is fetched again, once.
#
# Only controller delivery has a pause between resolving the release (manifests) and downloading
# the layers that a test can stretch: the node's free space is read with ``df`` first.  On the
# local connection the node's PATH is the controller's, so a ``df`` that sleeps past the token's
# lifetime makes the first blob GET carry an expired token.  Host delivery fetches everything in
# one go; its refresh path is covered by the unit tests.

TOKEN_LIFETIME = 3  # seconds the registry accepts a token (2 to 3 s: exp is whole seconds)
DF_DELAY = 5


@pytest.fixture(scope="module")
def expiry(pki, leaks, tmp_path_factory):
    require_distribution()
    tmp = tmp_path_factory.mktemp("expiry")
    slow = tmp / "slow-bin"
    slow.mkdir()
    real_df = shutil.which("df")
    (slow / "df").write_text(f'#!/bin/sh\nsleep {DF_DELAY}\nexec {real_df} "$@"\n', encoding="utf-8")
    (slow / "df").chmod(0o755)
    with TokenServer(pki, users=USERS, lifetime=300) as server:
        leaks.token_server(server)
        pusher = TokenAuth("alice", USERS["alice"])
        with Registry(extra_config=server.registry_config(), auth=pusher) as reg:
            release = artifacts.push_release(reg, "private/expiry", "stable", VERSION, arches=("amd64",))
            pusher.close()
            server.lifetime = TOKEN_LIFETIME
            dest = tmp / "node" / "staged"
            task = stage_task(
                "stage",
                f"{reg.host}/private/expiry",
                dest,
                cache=tmp / "cache",
                plain_http=True,
                username="alice",
                password=USERS["alice"],
            )
            mark, token_mark = reg.mark(), server.mark()
            started = time.monotonic()
            run = run_playbook(
                [task],
                tmp_path=tmp / "playbook",
                env=hermetic_env(tmp, PATH=os.pathsep.join([str(slow), os.environ["PATH"]])),
            )
            leaks.record("expiring token", run)
            yield SimpleNamespace(
                server=server,
                reg=reg,
                release=release,
                dest=dest,
                run=run,
                log=reg.access_log(since=mark),
                tokens=server.log[token_mark:],
                seconds=time.monotonic() - started,
            )


def test_an_expired_token_is_fetched_again_once(expiry):
    result = assert_ok(expiry.run, "stage")
    manifest = expiry.release.manifests["amd64"]
    kernel, initramfs = layer_digests(manifest)

    assert result["changed"] is True and result["delivery"] == "controller"
    assert_staged(expiry.dest, manifest)
    assert expiry.seconds > DF_DELAY  # the slow df did run
    # Two tokens: the first for the manifests, the second after the registry refused it as expired.
    assert [(e.user, e.status, e.scopes) for e in expiry.tokens] == [
        ("alice", 200, ["repository:private/expiry:pull"])
    ] * 2
    gets = [(e.kind, e.reference, e.status) for e in expiry.log if e.method == "GET"]
    assert gets[:3] == [("manifest", "stable", 401), ("manifest", "stable", 200), ("manifest", manifest.digest, 200)]
    # The layers download at the same time: each may have been sent with the expired token
    # before the one refresh, and each was then served once.
    blobs = gets[3:]
    assert sorted(e for e in blobs if e[2] == 200) == sorted([("blob", kernel, 200), ("blob", initramfs, 200)])
    refused = [e for e in blobs if e[2] != 200]
    assert 1 <= len(refused) == len(set(refused)) and set(refused) <= {("blob", kernel, 401), ("blob", initramfs, 401)}


# ----------------------------------------------------------------------------------------------
# 4. Controller delivery to a Python-less SSH node: the credential helper runs on the controller.


def test_ssh_node_stages_from_a_credentialed_tls_registry(pki, registry_factory, ssh_node_factory, leaks, tmp_path):
    config = htpasswd_config(write_htpasswd(tmp_path / "htpasswd", {"erin": USERS["erin"]}))
    config.update(pki.registry_tls_config())
    reg = registry_factory(scheme="https", verify=str(pki.ca_bundle), auth=("erin", USERS["erin"]), extra_config=config)
    release = artifacts.push_release(reg, "kubesolo/os", "stable", VERSION, arches=("amd64", "arm64"))
    repository = f"{reg.host}/kubesolo/os"
    helper = CredentialHelper(tmp_path / "helpers", "test", credentials={reg.host: ("erin", USERS["erin"])})
    docker_config = write_docker_config(tmp_path / "docker", cred_helpers={reg.host: "test"})
    (node,) = ssh_node_factory(names=["arm64"])
    dest = "/var/lib/kubesolo/update/staged"
    common = {
        "repository": repository,
        "architecture": "arm64",
        "dest": dest,
        "delivery": "controller",
        "controller_cache": str(tmp_path / "cache"),
        "ca_path": str(pki.ca_bundle),
    }
    tasks = [
        {
            "name": "wrong password",
            "kubesolo.fleet.update_stage": {**common, "username": "erin", "password": WRONG_PASSWORD},
            "ignore_errors": True,
        },
        {
            "name": "helper",
            "kubesolo.fleet.update_stage": {**common, "registry_config": str(docker_config)},
            "ignore_errors": True,
        },
    ]

    run = run_playbook(
        [{"name": "node", "hosts": "all", "gather_facts": False, "tasks": tasks}],
        tmp_path=tmp_path / "playbook",
        inventory=inventory([node]),
        env=hermetic_env(tmp_path, PATH=helper.env()["PATH"]),
    )
    leaks.record("ssh node", run)

    leaks.assert_clean(run)
    failed = assert_failed(run, "wrong password", "authentication_failed", host="arm64")
    assert failed["msg"] == f"registry {reg.host} refused the credentials of 'erin' for kubesolo/os"
    result = assert_ok(run, "helper", host="arm64")
    manifest = release.manifests["arm64"]
    assert result["changed"] is True and result["delivery"] == "controller"
    assert result["bytes_transferred"] == len(manifest.kernel) + len(manifest.initramfs)
    assert result["sources"] == sources_of(release, "arm64", index=reg.host, rest=reg.host)
    staged = node.path(dest)
    assert staged.is_symlink()
    assert (staged / "vmlinuz").read_bytes() == manifest.kernel
    assert (staged / "kubesolo-os.gz").read_bytes() == manifest.initramfs
    assert [(c["action"], c["input"]) for c in helper.calls()] == [("get", reg.host)]


# ----------------------------------------------------------------------------------------------
# 5. No password, identity token or bearer token in anything ansible-playbook printed or returned.


def test_no_secret_in_any_playbook_output(leaks, basic, token, expiry):
    # The bearer tokens the token servers issued are among the secrets checked.
    assert any(label.startswith("bearer token for alice") for label in leaks.secrets())
    assert any(label.startswith("bearer token for gina") for label in leaks.secrets())
    leaks.assert_clean_all()
