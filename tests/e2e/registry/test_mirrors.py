# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mirrors end to end: real ansible-playbook, update_info and update_stage (host and controller
delivery) pulling from a token-auth upstream through mirrors.

The mirrors: a Distribution pull-through cache of the upstream; an address where nothing listens;
a standalone registry holding the same content with one blob tampered with; and an htpasswd
registry with the same content behind a Redirector, whose request log shows every header (so
which credentials reached the mirror).  One playbook; every case has its own repository (and
release version), so the registries' access logs tell the cases apart.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.support import artifacts
from tests.support.credhelper import basic_auth_field
from tests.support.htpasswd import htpasswd_config, write_htpasswd
from tests.support.leakcheck import LeakCheck
from tests.support.mirror import dead_address, pull_through_mirror
from tests.support.playbook import run_playbook
from tests.support.redirector import Redirector
from tests.support.registry import Registry
from tests.support.staging import (
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

USERS = {
    "alice": "alice-pw-e4b1097c3d",  # the modules' upstream credentials
    "mirror-svc": "mirror-svc-pw-2a6c5f",  # the pull-through cache's own upstream login
}
CAROL_PASSWORD = "carol-pw-d90f3b7e21"  # the credentialed mirror's user
#: Case -> (repository, version of the release pushed there).
CASES = {
    "cache": ("mirror/cache", "v3.0.1"),
    "dead first": ("mirror/dead-first", "v3.0.2"),
    "tampered": ("mirror/tampered", "v3.0.3"),
    "credentials": ("mirror/credentials", "v3.0.4"),
    "no credentials": ("mirror/no-credentials", "v3.0.5"),
    "controller": ("mirror/controller", "v3.0.6"),
    "info": ("mirror/info", "v3.0.7"),
    "mirror tags": ("mirror/tags", "v3.0.8"),
}
MODULE_AGENT = "kubesolo.fleet/"
DEAD_RETRY_MAX_WAIT = 0.2  # keeps any retry at the upstream short


def push(reg: Registry, case: str) -> artifacts.PushedRelease:
    repo, version = CASES[case]
    return artifacts.push_release(reg, repo, "stable", version, arches=("amd64", "arm64"))


@pytest.fixture(scope="module")
def leaks() -> LeakCheck:
    check = LeakCheck()
    for user, password in USERS.items():
        check.password(user, password)
    check.password("carol", CAROL_PASSWORD)
    return check


@pytest.fixture(scope="module")
def mirrors(pki, leaks, tmp_path_factory):  # pylint: disable=too-many-locals
    require_distribution()
    tmp = tmp_path_factory.mktemp("mirrors")
    with TokenServer(pki, users=USERS) as server:
        leaks.token_server(server)
        pusher = TokenAuth("alice", USERS["alice"])
        with Registry(extra_config=server.registry_config(), auth=pusher) as upstream:
            releases = {case: push(upstream, case) for case in CASES}
            pusher.close()
            # Started after the upstream: it asks for the upstream's token realm when it starts.
            with (
                pull_through_mirror(upstream, username="mirror-svc", password=USERS["mirror-svc"]) as cache,
                Registry() as tampered,
                Registry(
                    auth=("carol", CAROL_PASSWORD),
                    extra_config=htpasswd_config(write_htpasswd(tmp / "htpasswd", {"carol": CAROL_PASSWORD})),
                ) as copy,
            ):
                assert push(tampered, "tampered").digest == releases["tampered"].digest
                kernel = layer_digests(releases["tampered"].manifests["amd64"])[0]
                data = tampered.blob_data_path(kernel)
                data.write_bytes(bytes(b ^ 0xFF for b in data.read_bytes()))  # same size, other bytes
                for case in ("credentials", "no credentials"):
                    assert push(copy, case).digest == releases[case].digest
                with Redirector(copy) as front:
                    dead = dead_address()
                    alice = {"username": "alice", "password": USERS["alice"], "plain_http": True}
                    on_cache = {"location": cache.host, "plain_http": True}
                    dests = {case: tmp / case.replace(" ", "-") / "staged" for case in CASES}

                    def stage(case, mirror_list, **args):
                        return stage_task(
                            f"stage {case}",
                            f"{upstream.host}/{CASES[case][0]}",
                            dests[case],
                            mirrors=mirror_list,
                            **alice,
                            **args,
                        )

                    tasks = [
                        stage("cache", [on_cache]),
                        stage(
                            "dead first",
                            [{"location": dead, "plain_http": True}, on_cache],
                            retry_max_wait=DEAD_RETRY_MAX_WAIT,
                        ),
                        stage("tampered", [{"location": tampered.host, "plain_http": True}]),
                        stage(
                            "credentials",
                            [
                                {
                                    "location": front.host,
                                    "plain_http": True,
                                    "username": "carol",
                                    "password": CAROL_PASSWORD,
                                }
                            ],
                        ),
                        stage("no credentials", [{"location": front.host, "plain_http": True}]),
                        stage("controller", [on_cache], cache=tmp / "controller-cache"),
                        info_task("info", f"{upstream.host}/{CASES['info'][0]}", mirrors=[on_cache], **alice),
                        info_task(
                            "info mirror tags",
                            f"{upstream.host}/{CASES['mirror tags'][0]}",
                            mirrors=[on_cache],
                            mirror_tags=True,
                            **alice,
                        ),
                    ]
                    marks = {
                        name: reg.mark()
                        for name, reg in (("upstream", upstream), ("cache", cache), ("tampered", tampered))
                    }
                    run = run_playbook(tasks, tmp_path=tmp / "playbook", env=hermetic_env(tmp))
                    leaks.record("mirrors", run)
                    logs = {
                        name: reg.access_log(since=marks[name])
                        for name, reg in (("upstream", upstream), ("cache", cache), ("tampered", tampered))
                    }
                    yield SimpleNamespace(
                        upstream=upstream,
                        cache=cache,
                        tampered=tampered,
                        copy=copy,
                        front=front,
                        dead=dead,
                        releases=releases,
                        run=run,
                        dests=dests,
                        logs=logs,
                        tampered_kernel=kernel,
                    )


def requests_for(entries, case: str, *, module_only: bool = False) -> list[tuple[str, str, str, int]]:
    """``(method, kind, reference, status)`` of the log ``entries`` for the repository of ``case``."""
    repo = CASES[case][0]
    return [
        (e.method, e.kind, e.reference, e.status)
        for e in entries
        if e.repo == repo and (not module_only or e.user_agent.startswith(MODULE_AGENT))
    ]


def test_mirror_serves_manifests_by_digest_and_layers_while_the_tag_is_resolved_upstream(mirrors):
    result = assert_ok(mirrors.run, "stage cache")
    release = mirrors.releases["cache"]
    manifest = release.manifests["amd64"]
    kernel, initramfs = layer_digests(manifest)

    assert result["changed"] is True
    assert result["sources"] == sources_of(release, "amd64", index=mirrors.upstream.host, rest=mirrors.cache.host)
    assert result["mirror_errors"] == []
    assert_staged(mirrors.dests["cache"], manifest)
    # The module asked the upstream for the tag only (challenge, then with the token) ...
    assert requests_for(mirrors.logs["upstream"], "cache", module_only=True) == [
        ("GET", "manifest", "stable", 401),
        ("GET", "manifest", "stable", 200),
    ]
    # ... and the mirror for everything by digest, never for the tag (the layers at the same time).
    cached = requests_for(mirrors.logs["cache"], "cache")
    assert cached[0] == ("GET", "manifest", manifest.digest, 200)
    assert sorted(cached[1:]) == sorted([("GET", "blob", kernel, 200), ("GET", "blob", initramfs, 200)])


def test_a_dead_mirror_is_skipped_for_the_next_one(mirrors):
    result = assert_ok(mirrors.run, "stage dead first")
    release = mirrors.releases["dead first"]

    assert result["changed"] is True
    assert result["sources"] == sources_of(release, "amd64", index=mirrors.upstream.host, rest=mirrors.cache.host)
    assert_staged(mirrors.dests["dead first"], release.manifests["amd64"])
    # Tried once for the manifest and each layer: a mirror is never retried, the next source is.
    assert len(result["mirror_errors"]) == 3, result["mirror_errors"]
    for error in result["mirror_errors"]:
        assert error.startswith(f"{mirrors.dead}: cannot reach registry {mirrors.dead}: "), error
    assert result["transfer"]["retries"] == 0


def test_a_mirror_serving_wrong_bytes_is_rejected_and_the_upstream_serves(mirrors):
    result = assert_ok(mirrors.run, "stage tampered")
    release = mirrors.releases["tampered"]
    manifest = release.manifests["amd64"]
    kernel, initramfs = layer_digests(manifest)
    host = mirrors.tampered.host

    assert result["changed"] is True
    assert result["sources"] == {
        release.digest: mirrors.upstream.host,
        manifest.digest: host,
        kernel: mirrors.upstream.host,
        initramfs: host,
    }
    [error] = result["mirror_errors"]
    assert error.startswith(f"{host}: blob {kernel} has wrong content: its bytes hash to sha256:"), error
    assert_staged(mirrors.dests["tampered"], manifest)  # the right bytes, from the upstream
    assert [r for r in requests_for(mirrors.logs["upstream"], "tampered", module_only=True) if r[1] == "blob"] == [
        ("GET", "blob", kernel, 200)
    ]
    assert mirrors.tampered_kernel == kernel


def front_requests(front: Redirector, case: str) -> list:
    """What the Redirector in front of the credentialed mirror received for the repository of ``case``."""
    return [seen for seen in front.requests_to("front") if seen.path.startswith(f"/v2/{CASES[case][0]}/")]


def test_a_mirror_gets_its_own_credentials_never_the_upstreams(mirrors):
    result = assert_ok(mirrors.run, "stage credentials")
    release = mirrors.releases["credentials"]

    assert result["changed"] is True
    assert result["mirror_errors"] == []
    assert result["sources"] == sources_of(release, "amd64", index=mirrors.upstream.host, rest=mirrors.front.host)
    assert_staged(mirrors.dests["credentials"], release.manifests["amd64"])
    seen = front_requests(mirrors.front, "credentials")
    carol = "Basic " + basic_auth_field("carol", CAROL_PASSWORD)
    assert {request.authorization for request in seen} <= {None, carol}
    assert carol in {request.authorization for request in seen}
    # The blob downloads the mirror redirected went out without any credentials.
    assert [request.authorization for request in mirrors.front.requests_to("store")] == [None, None]


def test_a_mirror_without_credentials_is_asked_anonymously_then_the_upstream_serves(mirrors):
    result = assert_ok(mirrors.run, "stage no credentials")
    release = mirrors.releases["no credentials"]
    host = mirrors.front.host

    assert result["changed"] is True
    assert result["sources"] == sources_of(release, "amd64", index=mirrors.upstream.host, rest=mirrors.upstream.host)
    assert_staged(mirrors.dests["no credentials"], release.manifests["amd64"])
    expected = (
        f"{host}: registry {host} requires authentication (basic challenge) to read "
        f"{CASES['no credentials'][0]} and no credentials were given"
    )
    assert result["mirror_errors"] == [expected] * 3
    seen = front_requests(mirrors.front, "no credentials")
    assert len(seen) == 3
    assert [request.authorization for request in seen] == [None, None, None]


def test_no_upstream_credential_ever_reached_the_credentialed_mirror(mirrors):
    for request in mirrors.front.log:
        assert request.authorization is None or request.authorization == "Basic " + basic_auth_field(
            "carol", CAROL_PASSWORD
        ), request


def test_controller_delivery_through_a_mirror(mirrors):
    result = assert_ok(mirrors.run, "stage controller")
    release = mirrors.releases["controller"]

    assert result["changed"] is True and result["delivery"] == "controller"
    assert result["sources"] == sources_of(release, "amd64", index=mirrors.upstream.host, rest=mirrors.cache.host)
    assert result["mirror_errors"] == []
    assert_staged(mirrors.dests["controller"], release.manifests["amd64"])
    assert requests_for(mirrors.logs["upstream"], "controller", module_only=True) == [
        ("GET", "manifest", "stable", 401),
        ("GET", "manifest", "stable", 200),
    ]


def test_info_through_a_mirror(mirrors):
    result = assert_ok(mirrors.run, "info")
    release = mirrors.releases["info"]

    assert result["manifest_digest"] == release.manifests["amd64"].digest
    assert result["sources"] == sources_of(
        release, "amd64", index=mirrors.upstream.host, rest=mirrors.cache.host, stage=False
    )
    assert result["mirror_errors"] == []


def test_mirror_tags_resolves_the_tag_at_the_mirror(mirrors):
    result = assert_ok(mirrors.run, "info mirror tags")
    release = mirrors.releases["mirror tags"]

    assert result["sources"] == sources_of(
        release, "amd64", index=mirrors.cache.host, rest=mirrors.cache.host, stage=False
    )
    assert requests_for(mirrors.logs["upstream"], "mirror tags", module_only=True) == []
    assert ("GET", "manifest", "stable", 200) in requests_for(mirrors.logs["cache"], "mirror tags")


def test_no_secret_in_any_playbook_output(leaks, mirrors):
    assert any(label.startswith("bearer token for alice") for label in leaks.secrets())
    leaks.assert_clean_all()
