# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TLS and redirects end to end: real ansible-playbook, update_info and update_stage (host and
controller delivery) against registries with the test CA, with mutual TLS, and behind a
Redirector that sends blob downloads to other origins.

Each module-scoped fixture runs one playbook of many tasks (all with ``ignore_errors``); the
tests assert on the per-task results, the staged bytes and the Redirector's request log (which
has every header, so it shows where ``Authorization`` went).
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from tests.support import artifacts
from tests.support.htpasswd import htpasswd_config, write_htpasswd
from tests.support.leakcheck import LeakCheck
from tests.support.playbook import run_playbook
from tests.support.redirector import Redirector
from tests.support.registry import Registry
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
    store_entries,
    store_of,
)
from tests.support.tokenserver import TokenAuth, TokenServer

PASSWORD = "alice-pw-7c2e91d0b4"
VERSION = "v2.1.0"
NEXT_VERSION = "v2.2.0"


@pytest.fixture(scope="module")
def leaks() -> LeakCheck:
    check = LeakCheck()
    check.password("alice", PASSWORD)
    return check


# ----------------------------------------------------------------------------------------------
# 1. TLS: the test CA through ca_path, validate_certs, mutual TLS.


@pytest.fixture(scope="module")
def tls(pki, leaks, tmp_path_factory):
    require_distribution()
    tmp = tmp_path_factory.mktemp("tls")
    ca = str(pki.ca_bundle)
    # The mutual-TLS registry's readiness probe needs the client certificate before it starts.
    reg = Registry(scheme="https", verify=ca, extra_config=pki.registry_tls_config())
    mtls = Registry(scheme="https", verify=ca, extra_config=pki.registry_tls_config(mtls=True))
    mtls.session.cert = pki.client.pair
    with reg, mtls:
        release = artifacts.push_release(reg, "kubesolo/os", "stable", VERSION, arches=("amd64", "arm64"))
        mtls_release = artifacts.push_release(mtls, "kubesolo/os", "stable", VERSION, arches=("amd64", "arm64"))
        repository, mtls_repository = f"{reg.host}/kubesolo/os", f"{mtls.host}/kubesolo/os"
        client = {"client_cert": str(pki.client.cert), "client_key": str(pki.client.key)}
        other_client = {"client_cert": str(pki.other_client.cert), "client_key": str(pki.other_client.key)}
        dests = {
            name: tmp / name / "staged"
            for name in (
                "host ca_path",
                "controller ca_path",
                "controller no ca_path",
                "host no verify",
                "mtls host",
                "mtls controller",
                "mtls controller no cert",
            )
        }

        def stage(name, repo, controller=False, **args):
            return stage_task(
                f"stage {name}", repo, dests[name], cache=tmp / "cache" / name if controller else None, **args
            )

        # retries=0 where the connection is expected to fail: a refused handshake is not worth retrying here.
        tasks = [
            info_task("info ca_path", repository, ca_path=ca),
            info_task("info no ca_path", repository, retries=0),
            info_task("info other CA", repository, ca_path=str(pki.other_ca.cert), retries=0),
            info_task("info no verify", repository, validate_certs=False),
            stage("host ca_path", repository, ca_path=ca),
            stage("controller ca_path", repository, controller=True, ca_path=ca),
            stage("controller no ca_path", repository, controller=True, retries=0),
            stage("host no verify", repository, validate_certs=False),
            stage("mtls host", mtls_repository, ca_path=ca, **client),
            stage("mtls controller", mtls_repository, controller=True, ca_path=ca, **client),
            info_task("info mtls no cert", mtls_repository, ca_path=ca, retries=0),
            info_task("info mtls other cert", mtls_repository, ca_path=ca, retries=0, **other_client),
            stage("mtls controller no cert", mtls_repository, controller=True, ca_path=ca, retries=0),
            info_task("info key without cert", mtls_repository, ca_path=ca, client_key=str(pki.client.key)),
        ]
        run = run_playbook(tasks, tmp_path=tmp / "playbook", env=hermetic_env(tmp))
        leaks.record("TLS", run)
        yield SimpleNamespace(
            reg=reg,
            mtls=mtls,
            release=release,
            mtls_release=mtls_release,
            repository=repository,
            mtls_repository=mtls_repository,
            run=run,
            dests=dests,
        )


def test_tls_ca_path_trusts_the_test_ca(tls):
    result = assert_ok(tls.run, "info ca_path")

    assert result["manifest_digest"] == tls.release.manifests["amd64"].digest
    assert result["sources"] == sources_of(tls.release, "amd64", index=tls.reg.host, rest=tls.reg.host, stage=False)


@pytest.mark.parametrize("task", ["info no ca_path", "info other CA", "stage controller no ca_path"])
def test_tls_without_the_ca_fails_suggesting_ca_path_or_validate_certs(tls, task):
    result = assert_failed(tls.run, task, "registry_unreachable")

    assert result["msg"].startswith(f"TLS with {tls.reg.host} failed: [SSL: CERTIFICATE_VERIFY_FAILED]")
    assert result["msg"].endswith("(set ca_path to trust a private CA, or validate_certs=false to skip verification)")


def test_tls_validate_certs_false_skips_verification(tls):
    result = assert_ok(tls.run, "info no verify")

    assert result["manifest_digest"] == tls.release.manifests["amd64"].digest


@pytest.mark.parametrize("name", ["host ca_path", "controller ca_path", "host no verify"])
def test_tls_stages_over_verified_or_unverified_tls(tls, name):
    result = assert_ok(tls.run, f"stage {name}")

    assert result["changed"] is True
    assert result["delivery"] == ("controller" if name.startswith("controller") else "host")
    assert result["sources"] == sources_of(tls.release, "amd64", index=tls.reg.host, rest=tls.reg.host)
    assert_staged(tls.dests[name], tls.release.manifests["amd64"], tls.repository)


def test_tls_failed_stage_leaves_dest_untouched(tls):
    assert_nothing_staged(tls.dests["controller no ca_path"])
    assert_nothing_staged(tls.dests["mtls controller no cert"])


@pytest.mark.parametrize("name", ["mtls host", "mtls controller"])
def test_mutual_tls_with_the_client_certificate(tls, name):
    result = assert_ok(tls.run, f"stage {name}")

    assert result["changed"] is True
    assert result["sources"] == sources_of(tls.mtls_release, "amd64", index=tls.mtls.host, rest=tls.mtls.host)
    assert_staged(tls.dests[name], tls.mtls_release.manifests["amd64"], tls.mtls_repository)


MTLS_REFUSED = ["info mtls no cert", "info mtls other cert", "stage mtls controller no cert"]


@pytest.mark.parametrize("task", MTLS_REFUSED)
def test_mutual_tls_without_an_accepted_client_certificate_fails(tls, task):
    result = assert_failed(tls.run, task, "registry_unreachable")

    # The registry refuses the handshake; TLS 1.3 reports that after it, as an alert, EOF or a reset.
    assert result["msg"].startswith(
        (f"TLS with {tls.mtls.host} failed: ", f"cannot reach registry {tls.mtls.host}: ")
    ), result["msg"]


@pytest.mark.parametrize("task", MTLS_REFUSED)
def test_mutual_tls_failure_points_at_the_client_certificate(tls, task):
    # The server's certificate was trusted (ca_path): a hint at ca_path, validate_certs or plain_http
    # sends the user after the wrong setting; client_cert/client_key is what to look at.
    msg = assert_failed(tls.run, task, "registry_unreachable")["msg"]
    assert "client_cert" in msg, msg


def test_client_key_without_client_cert_is_a_parameter_error(tls):
    result = assert_failed(tls.run, "info key without cert", "invalid_parameter")

    assert result["msg"] == "client_key needs client_cert"


# ----------------------------------------------------------------------------------------------
# 2. requests' CA bundle variables must not override ca_path or validate_certs.
#
# requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's ``verify`` unless the
# session ignores the environment; many systems set them (to the system bundle).  Every other
# run here empties them (see hermetic_env); this one sets REQUESTS_CA_BUNDLE to a bundle that
# does not hold the test CA.


@pytest.fixture(scope="module")
def ca_bundle_env(pki, leaks, tmp_path_factory):
    require_distribution()
    tmp = tmp_path_factory.mktemp("ca-bundle-env")
    with Registry(scheme="https", verify=str(pki.ca_bundle), extra_config=pki.registry_tls_config()) as reg:
        release = artifacts.push_release(reg, "kubesolo/os", "stable", VERSION, arches=("amd64",))
        repository = f"{reg.host}/kubesolo/os"
        dest = tmp / "controller" / "staged"
        tasks = [
            info_task("info ca_path", repository, ca_path=str(pki.ca_bundle), retries=0),
            info_task("info no verify", repository, validate_certs=False, retries=0),
            stage_task(
                "stage controller ca_path", repository, dest, cache=tmp / "cache", ca_path=str(pki.ca_bundle), retries=0
            ),
        ]
        run = run_playbook(
            tasks, tmp_path=tmp / "playbook", env=hermetic_env(tmp, REQUESTS_CA_BUNDLE=str(pki.other_ca.cert))
        )
        leaks.record("REQUESTS_CA_BUNDLE set", run)
        yield SimpleNamespace(reg=reg, release=release, run=run, dest=dest)


@pytest.mark.parametrize("task", ["info ca_path", "info no verify", "stage controller ca_path"])
def test_requests_ca_bundle_variable_does_not_override_ca_path_or_validate_certs(ca_bundle_env, task):
    result = assert_ok(ca_bundle_env.run, task)

    assert result["manifest_digest"] == ca_bundle_env.release.manifests["amd64"].digest


# ----------------------------------------------------------------------------------------------
# 3. Redirects: blob GETs sent to another port, another scheme, another host; a redirect loop.


def blob_requests(front: Redirector, origin: str) -> list:
    """Blob requests the front (``/v2/.../blobs/...``) or its redirect targets received."""
    return [
        seen
        for seen in front.requests_to(origin)
        if "/blobs/sha256:" in seen.path or seen.path.startswith(("/_blobs/", "/hop/", "/loop/"))
    ]


@pytest.fixture(scope="module")
def redirects(pki, leaks, tmp_path_factory):
    require_distribution()
    tmp = tmp_path_factory.mktemp("redirects")
    config = htpasswd_config(write_htpasswd(tmp / "htpasswd", {"alice": PASSWORD}))
    with (
        TokenServer(pki, users={"alice": PASSWORD}) as server,
        Registry(auth=("alice", PASSWORD), extra_config=config) as basic,
    ):
        leaks.token_server(server)
        pusher = TokenAuth("alice", PASSWORD)
        with Registry(extra_config=server.registry_config(), auth=pusher) as token_reg:
            release = artifacts.push_release(basic, "kubesolo/os", "stable", VERSION, arches=("amd64", "arm64"))
            following = artifacts.push_release(basic, "kubesolo/os", "next", NEXT_VERSION, arches=("amd64", "arm64"))
            token_release = artifacts.push_release(token_reg, "private/os", "stable", VERSION, arches=("amd64",))
            pusher.close()
            fronts = {
                "store": Redirector(basic),
                "controller": Redirector(basic),
                "other scheme": Redirector(basic, mode="other-scheme", tls=pki.server_context()),
                # Asked over HTTPS, it redirects blobs to plain HTTP: a downgrade.
                "downgrade": Redirector(basic, mode="other-scheme", tls=pki.server_context()),
                "other host": Redirector(basic, target_host="localhost", store_tls=pki.server_context()),
                "token": Redirector(token_reg),
                "loop": Redirector(basic, mode="loop"),
            }
            for front in fronts.values():
                front.start()
            try:
                creds = {"username": "alice", "password": PASSWORD, "plain_http": True, "ca_path": str(pki.ca_bundle)}
                dests = {
                    name: tmp / name.replace(" ", "-") / "staged"
                    for name in (
                        "store",
                        "controller",
                        "other scheme",
                        "downgrade",
                        "other host",
                        "token",
                        "loop",
                        "loop controller",
                    )
                }

                def via(name, repo="kubesolo/os"):
                    return f"{fronts[name].host}/{repo}"

                direct = f"{basic.host}/kubesolo/os"
                tasks = [
                    stage_task("stage store", via("store"), dests["store"], **creds),
                    stage_task(
                        "stage controller", via("controller"), dests["controller"], cache=tmp / "cache-1", **creds
                    ),
                    stage_task("stage other scheme", via("other scheme"), dests["other scheme"], **creds),
                    stage_task(
                        "stage downgrade", via("downgrade"), dests["downgrade"], **dict(creds, plain_http=False)
                    ),
                    stage_task("stage other host", via("other host"), dests["other host"], **creds),
                    stage_task("stage token", via("token", "private/os"), dests["token"], **creds),
                    # dest holds a release when the redirect loop is met: it must keep it.
                    stage_task("stage before loop", direct, dests["loop"], **creds),
                    stage_task("stage loop", via("loop"), dests["loop"], tag="next", **creds),
                    stage_task(
                        "stage before loop controller", direct, dests["loop controller"], cache=tmp / "cache-2", **creds
                    ),
                    stage_task(
                        "stage loop controller",
                        via("loop"),
                        dests["loop controller"],
                        cache=tmp / "cache-2",
                        tag="next",
                        **creds,
                    ),
                ]
                run = run_playbook(tasks, tmp_path=tmp / "playbook", env=hermetic_env(tmp))
                leaks.record("redirects", run)
                yield SimpleNamespace(
                    basic=basic,
                    token_reg=token_reg,
                    server=server,
                    release=release,
                    following=following,
                    token_release=token_release,
                    fronts=fronts,
                    run=run,
                    dests=dests,
                    cache=tmp / "cache-2",
                )
            finally:
                for front in fronts.values():
                    front.stop()


@pytest.mark.parametrize("name", ["store", "controller", "other host"])
def test_redirect_to_another_origin_drops_authorization(redirects, name):
    front = redirects.fronts[name]
    result = assert_ok(redirects.run, f"stage {name}")
    manifest = redirects.release.manifests["amd64"]

    assert result["changed"] is True
    assert result["sources"] == sources_of(redirects.release, "amd64", index=front.host, rest=front.host)
    assert_staged(redirects.dests[name], manifest, f"{front.host}/kubesolo/os")
    # The front got the credentials with each blob GET and redirected it; the target never saw them.
    front_blobs = blob_requests(front, "front")
    assert sorted(seen.path.rsplit("/", 1)[1] for seen in front_blobs) == sorted(layer_digests(manifest))
    assert all(seen.authorization and seen.authorization.startswith("Basic ") for seen in front_blobs)
    targets = blob_requests(front, "store")
    assert sorted(seen.path.rsplit("/", 1)[1] for seen in targets) == sorted(layer_digests(manifest))
    assert [seen.authorization for seen in targets] == [None, None]
    assert {seen.headers.get("Host", "").split(":")[0] for seen in targets} == {
        "localhost" if name == "other host" else "127.0.0.1"
    }
    # Every host that served content is reported, the redirect target included.
    target_host = "localhost" if name == "other host" else "127.0.0.1"
    assert result["served_by"] == sorted([front.host, f"{target_host}:{front.store.port}"]), result


def test_redirect_to_the_other_scheme_on_the_same_port_drops_authorization(redirects):
    front = redirects.fronts["other scheme"]
    result = assert_ok(redirects.run, "stage other scheme")
    manifest = redirects.release.manifests["amd64"]

    assert result["changed"] is True
    assert_staged(redirects.dests["other scheme"], manifest)
    targets = [seen for seen in front.requests_to("front") if seen.path.startswith("/_blobs/")]
    assert [(seen.scheme, seen.authorization) for seen in targets] == [("https", None), ("https", None)]
    blob_gets = [seen for seen in front.requests_to("front") if "/blobs/sha256:" in seen.path]
    assert [seen.scheme for seen in blob_gets] == ["http", "http"]
    assert all(seen.authorization and seen.authorization.startswith("Basic ") for seen in blob_gets)


def test_a_redirect_from_https_to_plain_http_is_refused(redirects):
    front = redirects.fronts["downgrade"]
    result = assert_failed(redirects.run, "stage downgrade", "registry_error")
    assert (
        f"{front.host} redirected an HTTPS request to http://127.0.0.1:{front.front.port}/_blobs/sha256:"
        in result["msg"]
    )
    assert result["msg"].endswith("; refusing to leave HTTPS"), result["msg"]
    assert not os.path.lexists(redirects.dests["downgrade"])
    # The manifests came over HTTPS; the plain-HTTP leg was never requested.
    assert {seen.scheme for seen in front.requests_to("front") if "/manifests/" in seen.path} == {"https"}
    assert [seen for seen in front.requests_to("front") if seen.path.startswith("/_blobs/")] == []


def test_redirect_from_a_token_registry_drops_the_bearer_token(redirects):
    front = redirects.fronts["token"]
    result = assert_ok(redirects.run, "stage token")
    manifest = redirects.token_release.manifests["amd64"]

    assert result["changed"] is True
    assert_staged(redirects.dests["token"], manifest)
    front_blobs = blob_requests(front, "front")
    assert len(front_blobs) == 2
    assert all(seen.authorization and seen.authorization.startswith("Bearer ") for seen in front_blobs)
    assert [seen.authorization for seen in blob_requests(front, "store")] == [None, None]


@pytest.mark.parametrize("task", ["stage loop", "stage loop controller"])
def test_redirect_loop_fails_and_keeps_the_staged_release(redirects, task):
    result = assert_failed(redirects.run, task, "registry_unreachable")
    front = redirects.fronts["loop"]
    dest = redirects.dests["loop controller" if task.endswith("controller") else "loop"]

    assert result["msg"].startswith(f"cannot reach registry {front.host}: ")
    assert "redirects" in result["msg"], result["msg"]
    # The release staged before is still published, untouched.
    assert_ok(redirects.run, "stage before loop controller" if task.endswith("controller") else "stage before loop")
    manifest = redirects.release.manifests["amd64"]
    assert os.readlink(dest) == f"{store_of(dest).name}/{manifest.digest.replace(':', '-')}"
    assert (dest / "vmlinuz").read_bytes() == manifest.kernel
    assert (dest / "kubesolo-os.gz").read_bytes() == manifest.initramfs
    assert json.loads((dest / "release.json").read_text(encoding="utf-8"))["version"] == VERSION


def test_redirect_loop_leaves_nothing_in_the_controller_cache(redirects):
    following = redirects.following.manifests["amd64"]
    blobs = redirects.cache / "blobs" / "sha256"
    names = [p.name for p in blobs.iterdir()]
    assert not any(digest.split(":", 1)[1] in name for name in names for digest in layer_digests(following))
    assert [name for name in names if name.startswith(".")] == []


def test_redirect_loop_on_the_host_keeps_only_the_published_release(redirects):
    # What a failed run may keep beside the published release: its resumable partial download.
    entries = store_entries(store_of(redirects.dests["loop"]))
    current = redirects.release.manifests["amd64"].digest.replace(":", "-")
    assert current in entries
    assert set(entries) - {current} <= {"partial-" + redirects.following.manifests["amd64"].digest.replace(":", "-")}


# ----------------------------------------------------------------------------------------------
# 4. Mutual TLS behind redirects: the client certificate goes to the registry's origin only.


@pytest.fixture(scope="module")
def mtls_redirects(pki, leaks, tmp_path_factory):
    require_distribution()
    tmp = tmp_path_factory.mktemp("mtls-redirects")
    with Registry() as reg:
        release = artifacts.push_release(reg, "kubesolo/os", "stable", VERSION, arches=("amd64",))
        # The front requires the client certificate; the blob store asks for one and takes none.
        front = Redirector(
            reg, tls=pki.server_context(client_ca=True), store_tls=pki.server_context(ask_client_cert=True)
        )
        with front:
            tls_args = {
                "ca_path": str(pki.ca_bundle),
                "client_cert": str(pki.client.cert),
                "client_key": str(pki.client.key),
            }
            dests = {name: tmp / name / "staged" for name in ("host", "controller")}
            repository = f"{front.host}/kubesolo/os"
            tasks = [
                stage_task("stage mtls redirect host", repository, dests["host"], **tls_args),
                stage_task(
                    "stage mtls redirect controller", repository, dests["controller"], cache=tmp / "cache", **tls_args
                ),
            ]
            run = run_playbook(tasks, tmp_path=tmp / "playbook", env=hermetic_env(tmp))
            leaks.record("mutual TLS redirects", run)
            yield SimpleNamespace(front=front, release=release, run=run, dests=dests, repository=repository)


@pytest.mark.parametrize("delivery", ["host", "controller"])
def test_a_redirect_target_is_not_offered_the_client_certificate(mtls_redirects, delivery):
    front = mtls_redirects.front
    result = assert_ok(mtls_redirects.run, f"stage mtls redirect {delivery}")
    manifest = mtls_redirects.release.manifests["amd64"]

    assert result["changed"] is True
    assert_staged(mtls_redirects.dests[delivery], manifest, mtls_redirects.repository)
    # The front (the registry's origin) got the certificate with every request...
    assert {seen.client_certificate for seen in front.requests_to("front")} == {"client"}
    # ...the blob store on another port asked for one with every handshake and was offered none.
    targets = blob_requests(front, "store")
    assert len(targets) == 4  # both layers, once per delivery
    assert [seen.client_certificate for seen in targets] == [None] * 4
    assert front.store.handshake_errors == []


# ----------------------------------------------------------------------------------------------
# 5. No password or bearer token in anything ansible-playbook printed or returned.


def test_no_secret_in_any_playbook_output(leaks, tls, ca_bundle_env, redirects, mtls_redirects):
    assert any(label.startswith("bearer token for alice") for label in leaks.secrets())
    leaks.assert_clean_all()
