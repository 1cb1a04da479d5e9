"""The credential and transport test servers work with the real registry (plain ``requests`` only).

Covers tests/support: tls.py (CA, HTTPS and mutual TLS), htpasswd.py, tokenserver.py (Docker
token protocol), redirector.py (blob redirects to other origins), credhelper.py and mirror.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest
import requests

from tests.support import artifacts
from tests.support.credhelper import NOT_FOUND, CredentialHelper, basic_auth_field, write_docker_config
from tests.support.htpasswd import htpasswd_config, write_htpasswd
from tests.support.mirror import BlackHole, dead_address, pull_through_mirror
from tests.support.redirector import Redirector
from tests.support.tokenserver import TokenAuth, TokenServer, decode_jwt, parse_challenge, sign_jwt

USERS = {"alice": "wonderland", "bob": "builder"}
INDEX = {"Accept": artifacts.OCI_INDEX}


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    """Every server started in a test has joined all its threads by the end of it."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before]
    assert not leftover, f"threads left running: {leftover}"


def plain_session(**kwargs) -> requests.Session:
    """A session that ignores proxy and CA environment variables."""
    session = requests.Session()
    session.trust_env = False
    for name, value in kwargs.items():
        setattr(session, name, value)
    return session


# ------------------------------------------------------------------------- TLS


def test_https_registry_is_verified_with_the_test_ca_only(pki, registry_factory):
    reg = registry_factory(scheme="https", verify=str(pki.ca_bundle), extra_config=pki.registry_tls_config())

    assert plain_session(verify=str(pki.ca_bundle)).get(f"{reg.url}/v2/", timeout=5).status_code == 200
    localhost = f"https://localhost:{reg.port}/v2/"
    assert plain_session(verify=str(pki.ca_bundle)).get(localhost, timeout=5).status_code == 200
    for verify in (True, str(pki.other_ca.cert)):  # system CAs, an unrelated CA
        with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            plain_session(verify=verify).get(f"{reg.url}/v2/", timeout=5)


def test_mutual_tls_registry_wants_a_client_certificate_from_the_ca(pki, registry_factory):
    reg = registry_factory(
        scheme="https",
        verify=str(pki.ca_bundle),
        client_cert=pki.client.pair,
        extra_config=pki.registry_tls_config(mtls=True),
    )

    release = artifacts.push_release(reg, "kubesolo/os", "v1.0.0", "v1.0.0", arches=("amd64",))
    with_cert = plain_session(verify=str(pki.ca_bundle), cert=pki.client.pair)
    assert with_cert.get(f"{reg.url}/v2/kubesolo/os/manifests/v1.0.0", headers=INDEX, timeout=5).content == release.body
    for cert in (None, pki.other_client.pair):
        # TLS 1.3 reports a refused client certificate after the handshake: SSLError or a reset.
        with pytest.raises(requests.exceptions.ConnectionError):
            plain_session(verify=str(pki.ca_bundle), cert=cert).get(f"{reg.url}/v2/", timeout=5)


# ------------------------------------------------------------------------- htpasswd


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_htpasswd_registry_challenges_and_checks_passwords(scheme, pki, registry_factory, tmp_path):
    config = htpasswd_config(write_htpasswd(tmp_path / "htpasswd", USERS), realm="kubesolo-test")
    if scheme == "https":
        config.update(pki.registry_tls_config())
    # Distribution 2.8 serves htpasswd auth over plain HTTP too (no TLS check, no warning).
    reg = registry_factory(
        scheme=scheme, verify=str(pki.ca_bundle), auth=("alice", USERS["alice"]), extra_config=config
    )
    artifacts.push_release(reg, "kubesolo/os", "v1.0.0", "v1.0.0", arches=("amd64",))
    session = plain_session(verify=str(pki.ca_bundle))
    url = f"{reg.url}/v2/kubesolo/os/manifests/v1.0.0"

    anonymous = session.get(url, headers=INDEX, timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="kubesolo-test"'
    assert session.get(url, headers=INDEX, auth=("bob", USERS["bob"]), timeout=5).status_code == 200
    assert session.get(url, headers=INDEX, auth=("bob", "wrong"), timeout=5).status_code == 401
    assert session.get(url, headers=INDEX, auth=("mallory", "x"), timeout=5).status_code == 401


# ------------------------------------------------------------------------- token server


@pytest.fixture
def token_registry(pki, registry_factory):
    """``(token server, registry)``: ``public/*`` is anonymously pullable, alice can push."""
    with TokenServer(pki, users=USERS, anonymous_pull=["public/*"], grants={"bob": {"public/*": ["pull"]}}) as server:
        auth = TokenAuth("alice", USERS["alice"])
        yield server, registry_factory(extra_config=server.registry_config(), auth=auth)
        auth.close()


def test_anonymous_pull_goes_challenge_token_retry(token_registry):
    server, reg = token_registry
    release = artifacts.push_release(reg, "public/os", "v1.0.0", "v1.0.0", arches=("amd64",))
    mark = server.mark()
    session = plain_session()
    url = f"{reg.url}/v2/public/os/manifests/v1.0.0"

    challenged = session.get(url, headers=INDEX, timeout=5)
    scheme, challenge = parse_challenge(challenged.headers["WWW-Authenticate"])
    token = session.get(
        challenge["realm"], params={"service": challenge["service"], "scope": challenge["scope"]}, timeout=5
    )
    pulled = session.get(url, headers={**INDEX, "Authorization": f"Bearer {token.json()['token']}"}, timeout=5)

    assert challenged.status_code == 401 and scheme == "bearer"
    assert challenge == {"realm": server.realm, "service": server.service, "scope": "repository:public/os:pull"}
    assert pulled.status_code == 200 and pulled.content == release.body
    [request] = server.log[mark:]
    assert (request.method, request.authorization, request.user, request.granted) == (
        "GET",
        None,
        None,
        [{"type": "repository", "name": "public/os", "actions": ["pull"]}],
    )
    header, claims = decode_jwt(request.token)
    assert set(header) == {"typ", "alg", "x5c"} and header["alg"] == "ES256"
    assert claims["aud"] == server.service and claims["iss"] == server.issuer and claims["sub"] == ""


def test_private_repository_needs_credentials(token_registry):
    server, reg = token_registry
    artifacts.push_release(reg, "private/os", "v1.0.0", "v1.0.0", arches=("amd64",))
    url = f"{reg.url}/v2/private/os/manifests/v1.0.0"

    def pull(auth):
        session = plain_session(auth=TokenAuth(*auth) if auth else TokenAuth())
        return session.get(url, headers=INDEX, timeout=5)

    anonymous = pull(None)
    assert anonymous.status_code == 401  # the token came with an empty access list
    assert 'error="insufficient_scope"' in anonymous.headers["WWW-Authenticate"]
    assert server.log[-1].granted == [] and server.log[-1].status == 200
    with pytest.raises(requests.HTTPError, match="401"):
        pull(("alice", "wrong"))
    assert pull(("bob", USERS["bob"])).status_code == 401  # bob may only pull public/*
    assert pull(("alice", USERS["alice"])).status_code == 200
    assert server.log[-1].user == "alice" and server.log[-1].authorization.startswith("Basic ")


def test_push_needs_a_token_granting_push(token_registry):
    server, reg = token_registry
    mark = server.mark()

    artifacts.push_release(reg, "private/os", "v2.0.0", "v2.0.0", arches=("amd64",))  # as alice

    # Distribution asks for "push,pull" on uploads; the order is of no consequence.
    [scope] = {scope for entry in server.log[mark:] for scope in entry.scopes}
    assert scope.rpartition(":")[0] == "repository:private/os" and sorted(scope.rpartition(":")[2].split(",")) == [
        "pull",
        "push",
    ]
    assert sorted(server.log[-1].granted[0]["actions"]) == ["pull", "push"]
    refused = plain_session(auth=TokenAuth("bob", USERS["bob"])).post(
        f"{reg.url}/v2/public/os/blobs/uploads/", timeout=5
    )
    assert refused.status_code == 401
    assert server.log[-1].granted == [{"type": "repository", "name": "public/os", "actions": ["pull"]}]


def test_short_lived_token_is_refused_once_expired(token_registry):
    server, reg = token_registry
    artifacts.push_release(reg, "public/os", "v1.0.0", "v1.0.0", arches=("amd64",))
    server.lifetime = 2
    auth = TokenAuth()
    session = plain_session(auth=auth)
    url = f"{reg.url}/v2/public/os/manifests/v1.0.0"
    assert session.get(url, headers=INDEX, timeout=5).status_code == 200
    token = server.log[-1].token
    assert server.log[-1].status == 200

    deadline = time.monotonic() + 10
    while (
        expired := plain_session().get(url, headers={**INDEX, "Authorization": f"Bearer {token}"}, timeout=5)
    ).status_code == 200:
        assert time.monotonic() < deadline, "the registry kept accepting an expired token"
        time.sleep(0.2)
    assert expired.status_code == 401 and 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
    issued = server.tokens_issued
    refreshed = session.get(url, headers=INDEX, timeout=5)  # TokenAuth gets a new token once
    assert refreshed.status_code == 200 and [r.status_code for r in refreshed.history] == [401]
    assert server.tokens_issued == issued + 1
    auth.close()


@pytest.mark.parametrize("key_header", ["x5c", "kid"])
def test_rsa_signer_with_x5c_or_kid_header(key_header, pki, registry_factory):
    signer = pki.issue(f"rsa-signer-{key_header}", key_type="rsa")
    with TokenServer(pki, anonymous_pull=["*"], signer=signer) as server:
        server.key_header = key_header
        reg = registry_factory(extra_config=server.registry_config())
        response = plain_session(auth=TokenAuth()).get(f"{reg.url}/v2/nothing/here/tags/list", timeout=5)
        assert response.status_code == 404  # authorized; the repository just does not exist
        assert response.json()["errors"][0]["code"] == "NAME_UNKNOWN"
        header, _claims = decode_jwt(server.log[-1].token)
        assert header["alg"] == "RS256" and key_header in header


def test_distribution_2_8_refuses_an_audience_list(pki, registry_factory):
    with TokenServer(pki, anonymous_pull=["*"]) as server:
        reg = registry_factory(extra_config=server.registry_config())
        now = int(time.time())
        claims = {
            "iss": server.issuer,
            "sub": "",
            "aud": [server.service],
            "exp": now + 60,
            "nbf": now,
            "iat": now,
            "jti": "x",
            "access": [],
        }
        response = plain_session().get(
            f"{reg.url}/v2/", headers={"Authorization": f"Bearer {sign_jwt(claims, pki.token)}"}, timeout=5
        )
        assert response.status_code == 401
        claims["aud"] = server.service
        response = plain_session().get(
            f"{reg.url}/v2/", headers={"Authorization": f"Bearer {sign_jwt(claims, pki.token)}"}, timeout=5
        )
        assert response.status_code == 200


def test_token_server_answers_and_misbehaves_on_request(pki):
    with TokenServer(pki, users=USERS, tls=pki.server_context()) as server:
        session = plain_session(verify=str(pki.ca_bundle))
        assert server.realm.startswith("https://127.0.0.1:")
        assert set(session.get(server.realm, timeout=5).json()) == {"token", "expires_in", "issued_at"}
        with pytest.raises(requests.exceptions.SSLError):
            plain_session().get(server.realm, timeout=5)  # system CAs only
        deadline = time.monotonic() + 5
        while not server.handshake_errors:  # recorded by the server's connection thread
            assert time.monotonic() < deadline, "the refused handshake was not recorded"
            time.sleep(0.01)

        server.token_field = "access_token"
        assert "token" not in session.get(server.realm, timeout=5).json()
        server.token_field = "token"

        server.body = "oversized"
        server.oversized_bytes = 3 * 1024 * 1024
        assert len(session.get(server.realm, timeout=5).content) > server.oversized_bytes

        server.body = "endless"
        with session.get(server.realm, stream=True, timeout=5) as response:
            received = 0
            for chunk in response.iter_content(65536):
                received += len(chunk)
                if received > 2 * 1024 * 1024:
                    break  # a client with a size limit gives up here
        server.body = None

        server.status = 503
        assert session.get(server.realm, timeout=5).status_code == 503
        server.status = None
        assert session.get(server.realm, auth=("alice", "nope"), timeout=5).status_code == 401
        assert [entry.status for entry in server.log] == [200, 200, 200, 200, 503, 401]
        assert server.tokens_issued == 4


def test_oauth2_password_and_refresh_token_grants(token_registry):
    server, reg = token_registry
    server.issue_refresh_tokens = True
    server.refresh_tokens["seeded-identity-token"] = "alice"  # what a config.json identitytoken holds
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": USERS["alice"],
        "service": server.service,
        "client_id": "kubesolo-test",
        "access_type": "offline",
        "scope": "repository:private/os:pull",
    }
    session = plain_session()

    first = session.post(server.realm, data=form, timeout=5).json()
    assert set(first) >= {"access_token", "refresh_token"}
    for refresh in (first["refresh_token"], "seeded-identity-token"):
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": server.service,
            "client_id": "kubesolo-test",
            "scope": "repository:private/os:pull",
        }
        token = session.post(server.realm, data=form, timeout=5).json()["access_token"]
        response = session.get(
            f"{reg.url}/v2/private/os/tags/list", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert response.status_code == 404  # authorized; nothing pushed there
    form["refresh_token"] = "unknown"
    assert session.post(server.realm, data=form, timeout=5).status_code == 401


# ------------------------------------------------------------------------- redirects


@pytest.fixture
def basic_registry(registry_factory, tmp_path):
    """An htpasswd registry with one single-arch release; returns ``(registry, kernel digest, kernel)``."""
    reg = registry_factory(
        auth=("alice", USERS["alice"]), extra_config=htpasswd_config(write_htpasswd(tmp_path / "htpasswd", USERS))
    )
    manifest = artifacts.push_arch_manifest(reg, "kubesolo/os", "amd64", "v1.0.0", tag="v1.0.0")
    return reg, manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE], manifest.kernel


def test_blob_redirect_to_another_port_drops_authorization(basic_registry):
    reg, digest, kernel = basic_registry
    with Redirector(reg) as front:
        session = plain_session(auth=("alice", USERS["alice"]))
        response = session.get(f"{front.url}/v2/kubesolo/os/blobs/{digest}", timeout=5)
        anonymous = plain_session().get(f"{front.url}/v2/kubesolo/os/blobs/{digest}", timeout=5)
        manifest = session.get(
            f"{front.url}/v2/kubesolo/os/manifests/v1.0.0", headers={"Accept": artifacts.OCI_MANIFEST}, timeout=5
        )

        assert response.status_code == 200 and response.content == kernel
        assert [(r.status_code, r.headers["Location"]) for r in response.history] == [
            (307, f"{front.store.url}/hop/1/{digest}")
        ]
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic ")
        assert manifest.status_code == 200  # everything else is proxied unchanged
        [store_request] = front.requests_to("store")
        assert store_request.authorization is None
        assert front.requests_to("front")[0].authorization.startswith("Basic ")


def test_redirector_log_catches_a_leaked_authorization_header(basic_registry):
    reg, digest, _kernel = basic_registry
    with Redirector(reg) as front:
        session = plain_session(auth=("alice", USERS["alice"]))
        redirect = session.get(f"{front.url}/v2/kubesolo/os/blobs/{digest}", allow_redirects=False, timeout=5)
        # A careless client: follows by hand and keeps the header.
        session.get(
            redirect.headers["Location"],
            headers={"Authorization": redirect.request.headers["Authorization"]},
            timeout=5,
        )

        assert front.requests_to("store")[0].authorization == "Basic " + basic_auth_field("alice", USERS["alice"])


def test_uploads_through_the_front_stay_on_the_front(basic_registry):
    reg, _digest, _kernel = basic_registry
    with Redirector(reg) as front:
        session = plain_session(auth=("alice", USERS["alice"]))
        started = session.post(f"{front.url}/v2/kubesolo/os/blobs/uploads/", timeout=5)
        data = b"pushed through the front"
        done = session.put(
            started.headers["Location"], params={"digest": artifacts.sha256_digest(data)}, data=data, timeout=5
        )

        assert started.status_code == 202 and started.headers["Location"].startswith(front.url + "/v2/")
        assert done.status_code == 201
        assert reg.blob_data_path(artifacts.sha256_digest(data)).read_bytes() == data


@pytest.mark.parametrize("mode", ["same-origin", "other-scheme"])
def test_redirect_to_same_origin_or_other_scheme_on_the_same_port(mode, pki, basic_registry):
    reg, digest, kernel = basic_registry
    with Redirector(reg, mode=mode, tls=pki.server_context() if mode == "other-scheme" else None) as front:
        plain_url = f"http://{front.host}/v2/kubesolo/os/blobs/{digest}"
        response = plain_session(auth=("alice", USERS["alice"]), verify=str(pki.ca_bundle)).get(plain_url, timeout=5)

        assert response.content == kernel
        expected_scheme = "https" if mode == "other-scheme" else "http"
        assert response.history[0].headers["Location"] == f"{expected_scheme}://{front.host}/_blobs/{digest}"
        target = [r for r in front.requests_to("front") if r.path.startswith("/_blobs/")]
        assert [r.scheme for r in target] == [expected_scheme]
        # requests keeps Authorization on the same origin and drops it when the scheme changes.
        assert (target[0].authorization is not None) == (mode == "same-origin")
        assert front.requests_to("store") == []


def test_redirect_to_another_host_name(pki, basic_registry):
    reg, digest, kernel = basic_registry
    with Redirector(reg, target_host="localhost", store_tls=pki.server_context()) as front:
        response = plain_session(auth=("alice", USERS["alice"]), verify=str(pki.ca_bundle)).get(
            f"{front.url}/v2/kubesolo/os/blobs/{digest}", timeout=5
        )
        assert response.content == kernel
        assert response.history[0].headers["Location"].startswith(f"https://localhost:{front.store.port}/")
        assert front.requests_to("store")[0].authorization is None


def test_redirect_loop_and_long_chain(basic_registry):
    reg, digest, kernel = basic_registry
    blob = f"/v2/kubesolo/os/blobs/{digest}"
    with Redirector(reg, mode="loop") as front:
        session = plain_session(auth=("alice", USERS["alice"]))
        session.max_redirects = 10
        with pytest.raises(requests.TooManyRedirects):
            session.get(front.url + blob, timeout=5)
        origins = [r.origin for r in front.log]
        assert origins[:4] == ["front", "store", "front", "store"] and len(origins) == 11
    with Redirector(reg, hops=30) as front:
        session = plain_session(auth=("alice", USERS["alice"]))
        session.max_redirects = 30
        response = session.get(front.url + blob, timeout=5)
        assert response.content == kernel and len(response.history) == 30
        assert len(front.requests_to("store")) == 30


# ------------------------------------------------------------------------- credential helpers


def test_credential_helper_answers_get_and_logs_calls(tmp_path):
    helper = CredentialHelper(tmp_path / "helper", credentials={"127.0.0.1:5000": ("alice", USERS["alice"])})
    helper.set_raw("broken.example", "not json")
    env = helper.env()

    def call(action, data):
        return subprocess.run(
            [shutil.which(helper.path.name, path=env["PATH"]), action],
            input=data,
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=10,
        )

    found = call("get", "127.0.0.1:5000")
    missing = call("get", "127.0.0.1:6000\n")
    garbage = call("get", "broken.example")

    assert found.returncode == 0
    assert json.loads(found.stdout) == {"ServerURL": "127.0.0.1:5000", "Username": "alice", "Secret": USERS["alice"]}
    assert (missing.returncode, missing.stdout.strip()) == (1, NOT_FOUND)
    assert (garbage.returncode, garbage.stdout) == (0, "not json")
    assert [c["input"] for c in helper.calls()] == ["127.0.0.1:5000", "127.0.0.1:6000\n", "broken.example"]
    helper.remove("127.0.0.1:5000")
    assert call("get", "127.0.0.1:5000").returncode == 1


def test_docker_config_json_has_every_credential_source(tmp_path):
    path = write_docker_config(
        tmp_path / "docker",
        auths={"127.0.0.1:5000": ("alice", "pw:with:colons"), "127.0.0.1:6000": {"identitytoken": "refresh-me"}},
        cred_helpers={"127.0.0.1:7000": "test"},
        creds_store="teststore",
    )
    config = json.loads(path.read_text())

    assert config == {
        "auths": {
            "127.0.0.1:5000": {"auth": "YWxpY2U6cHc6d2l0aDpjb2xvbnM="},
            "127.0.0.1:6000": {"identitytoken": "refresh-me"},
        },
        "credHelpers": {"127.0.0.1:7000": "test"},
        "credsStore": "teststore",
    }


# ------------------------------------------------------------------------- mirrors


def test_pull_through_mirror_fetches_from_the_upstream(registry_factory):
    upstream = registry_factory()
    release = artifacts.push_release(upstream, "kubesolo/os", "v1.0.0", "v1.0.0", arches=("amd64",))
    manifest = release.manifests["amd64"]
    kernel_digest = manifest.layer_digests[artifacts.KERNEL_MEDIA_TYPE]
    mirror = registry_factory(pull_through_mirror(upstream))
    mark = upstream.mark()

    by_digest = mirror.request(
        "GET", f"/v2/kubesolo/os/manifests/{manifest.digest}", headers={"Accept": artifacts.OCI_MANIFEST}
    )
    blob = mirror.request("GET", f"/v2/kubesolo/os/blobs/{kernel_digest}")

    assert by_digest.status_code == 200 and by_digest.content == manifest.body
    assert blob.status_code == 200 and blob.content == manifest.kernel
    fetched = [(e.method, e.kind, e.reference) for e in upstream.access_log(since=mark) if e.status == 200]
    assert ("GET", "manifest", manifest.digest) in fetched
    assert ("GET", "blob", kernel_digest) in fetched
    assert mirror.request("POST", "/v2/kubesolo/os/blobs/uploads/").status_code >= 400  # a cache refuses pushes


def test_mirror_logs_in_to_a_token_protected_upstream(token_registry, registry_factory):
    server, upstream = token_registry
    release = artifacts.push_release(upstream, "private/os", "v1.0.0", "v1.0.0", arches=("amd64",))
    # The mirror asks the upstream for its token realm when it starts: start it after the upstream.
    mirror = registry_factory(pull_through_mirror(upstream, username="bob", password=USERS["bob"]))
    public = artifacts.push_release(upstream, "public/os", "v1.0.0", "v1.0.0", arches=("amd64",))
    mark = server.mark()

    refused = mirror.request("GET", f"/v2/private/os/manifests/{release.digest}", headers=INDEX)
    allowed = mirror.request("GET", f"/v2/public/os/manifests/{public.digest}", headers=INDEX)

    assert refused.status_code >= 400  # bob may not pull private/*
    assert allowed.status_code == 200 and allowed.content == public.body
    assert {entry.user for entry in server.log[mark:]} == {"bob"}


def test_mirror_cannot_log_in_to_a_basic_auth_upstream(registry_factory, tmp_path):
    # Distribution 2.8 keys proxy credentials by the upstream's *Bearer* realm: with htpasswd
    # (Basic) upstreams it never sends them, and answers 500 with the upstream's UNAUTHORIZED.
    upstream = registry_factory(
        auth=("alice", USERS["alice"]), extra_config=htpasswd_config(write_htpasswd(tmp_path / "htpasswd", USERS))
    )
    release = artifacts.push_release(upstream, "kubesolo/os", "v1.0.0", "v1.0.0", arches=("amd64",))
    mirror = registry_factory(pull_through_mirror(upstream, username="bob", password=USERS["bob"]))

    response = mirror.request("GET", f"/v2/kubesolo/os/manifests/{release.digest}", headers=INDEX)

    assert response.status_code == 500 and "UNAUTHORIZED" in response.text


def test_dead_and_silent_addresses():
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        plain_session().get(f"http://{dead_address()}/v2/", timeout=5)
    assert time.monotonic() - started < 2  # refused, not timed out
    with BlackHole() as hole:
        with pytest.raises(requests.ReadTimeout):
            plain_session().get(f"http://{hole.host}/v2/", timeout=0.3)
