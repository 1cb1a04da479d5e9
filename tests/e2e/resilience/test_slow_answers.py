# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Registries that answer too slowly, end to end: real ansible-playbook against a FakeRegistry that
drips a manifest or a token one byte at a time (each byte well inside ``timeout``), a mirror that
drips, and a redirect whose body never ends.

A small answer must arrive whole within 3 times ``timeout`` (1 s here): the module then fails with
``registry_unreachable``, and a dripping mirror is left for the upstream.  Each case is its own
playbook run, all at once, each bounded by RUN_LIMIT so that a client without the deadline ends
the test instead of hanging it for minutes.
"""

from __future__ import annotations

import hashlib
import subprocess
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from tests.support import artifacts
from tests.support.fakeregistry import Answer, FakeRegistry
from tests.support.playbook import run_playbook
from tests.support.staging import (
    assert_failed,
    assert_ok,
    assert_staged,
    hermetic_env,
    info_task,
    layer_digests,
    require_distribution,
    stage_task,
)

DRIP = 0.4  # seconds between two bytes: each read returns well within the timeout
TIMEOUT = 1
DEADLINE = 3 * TIMEOUT
RUN_LIMIT = 45  # seconds one playbook may take before the test gives up on it
# The deadline, one read past it and module start-up, which takes several seconds with four runs
# (and anything else) on two cores. A dripped body would take minutes: far beyond this bound.
CASE_LIMIT = DEADLINE + 15


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def bearer(case: str) -> Answer:
    return Answer(
        401,
        b'{"errors":[{"code":"UNAUTHORIZED"}]}',
        {
            "Content-Type": "application/json",
            "WWW-Authenticate": f'Bearer realm="{{base}}/token/{case}",service="fake",scope="repository:s/{case}:pull"',
        },
    )


def timed_task(task: dict) -> list[dict]:
    """``task`` between two clock tasks, so the test can tell how long it took."""
    name = task["name"]
    return [
        {"name": f"clock before {name}", "ansible.builtin.debug": {"msg": "{{ now().timestamp() }}"}},
        task,
        {"name": f"clock after {name}", "ansible.builtin.debug": {"msg": "{{ now().timestamp() }}"}},
    ]


def finished(slow, name: str):
    """The run of case ``name``; the test fails when it did not end within RUN_LIMIT."""
    run = slow.runs[name]
    if run is None:
        pytest.fail(f"{name}: ansible-playbook was still waiting after {RUN_LIMIT}s")
    return run


def seconds_of(run, name: str) -> float:
    return float(run.result(f"clock after {name}")["msg"]) - float(run.result(f"clock before {name}")["msg"])


@pytest.fixture(scope="module")
def slow(registry, tmp_path_factory):
    require_distribution()
    tmp = tmp_path_factory.mktemp("slow-answers")
    release = artifacts.push_release(registry, "slow/mirrored", "stable", "v4.0.1", arches=("amd64",))
    manifest = release.manifests["amd64"]
    mirrored = "/v2/slow/mirrored"
    with FakeRegistry() as fake:
        good = artifacts.canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": artifacts.OCI_MANIFEST,
                "config": {"mediaType": artifacts.OCI_CONFIG, "digest": digest(b"{}"), "size": 2},
                "layers": [],
            }
        )
        fake.routes.update(
            {
                "/v2/s/manifest-drip/manifests/t": Answer(
                    200, good, {"Content-Type": artifacts.OCI_MANIFEST}, drip=DRIP
                ),
                "/v2/s/token-drip/manifests/t": bearer("token-drip"),
                "/token/token-drip": Answer(
                    200, b'{"token": "' + b"t" * 200 + b'"}', {"Content-Type": "application/json"}, drip=DRIP
                ),
                # requests used to read a redirect's whole body before it followed the redirect.
                "/v2/s/redirect-endless-body/manifests/t": Answer(
                    307,
                    b"x" * 1024,
                    {"Location": "{base}/v2/s/redirect-endless-body/manifests/there"},
                    endless=True,
                ),
                "/v2/s/redirect-endless-body/manifests/there": Answer(
                    200, good, {"Content-Type": artifacts.OCI_MANIFEST}
                ),
                # The mirror drips the manifest and both layers: everything comes from the upstream.
                f"{mirrored}/manifests/{manifest.digest}": Answer(
                    200, manifest.body, {"Content-Type": manifest.media_type}, drip=DRIP
                ),
                **{
                    f"{mirrored}/blobs/{digest(data)}": Answer(200, data, drip=DRIP)
                    for data in manifest.layers.values()
                },
            }
        )
        on_fake = {"plain_http": True, "timeout": TIMEOUT, "retries": 0}
        runs = {
            "manifest drip": [info_task("manifest drip", f"{fake.host}/s/manifest-drip", tag="t", **on_fake)],
            "token drip": [info_task("token drip", f"{fake.host}/s/token-drip", tag="t", **on_fake)],
            "redirect endless body": [
                info_task("redirect endless body", f"{fake.host}/s/redirect-endless-body", tag="t", **on_fake)
            ],
            "mirror drip": [
                stage_task(
                    "mirror drip",
                    f"{registry.host}/slow/mirrored",
                    tmp / "mirror-drip" / "staged",
                    tag="stable",
                    mirrors=[{"location": fake.host, "plain_http": True}],
                    **on_fake,
                )
            ],
        }
        env = hermetic_env(tmp)

        def run(name):
            try:
                return run_playbook(
                    timed_task(runs[name][0]), tmp_path=tmp / name.replace(" ", "-"), env=env, timeout=RUN_LIMIT
                )
            except subprocess.TimeoutExpired:
                return None  # the module still waited: each test fails on its own

        with ThreadPoolExecutor(len(runs)) as pool:
            done = dict(zip(runs, pool.map(run, runs)))
        yield SimpleNamespace(
            runs=done,
            fake=fake,
            release=release,
            manifest=manifest,
            registry=registry,
            dest=tmp / "mirror-drip" / "staged",
        )


def test_a_dripping_manifest_fails_at_the_deadline(slow):
    run = finished(slow, "manifest drip")
    result = assert_failed(run, "manifest drip", "registry_unreachable")

    assert result["msg"] == (
        f"manifest t did not arrive whole from {slow.fake.host} within {DEADLINE}s (3 times timeout={TIMEOUT}); "
        "a registry this slow counts as unreachable"
    )
    assert seconds_of(run, "manifest drip") < CASE_LIMIT


def test_a_dripping_token_response_fails_at_the_deadline(slow):
    run = finished(slow, "token drip")
    result = assert_failed(run, "token drip", "registry_unreachable")

    assert result["msg"].startswith(
        f"token response of {slow.fake.host} did not arrive whole from {slow.fake.host} within {DEADLINE}s"
    ), result["msg"]
    assert seconds_of(run, "token drip") < CASE_LIMIT


def test_a_redirect_whose_body_never_ends_is_followed_without_reading_it(slow):
    run = finished(slow, "redirect endless body")
    result = assert_ok(run, "redirect endless body")

    assert result["sources"] == {result["manifest_digest"]: slow.fake.host}
    assert seconds_of(run, "redirect endless body") < CASE_LIMIT
    followed = [r.path for r in slow.fake.requests("/v2/s/redirect-endless-body/")]
    assert followed == ["/v2/s/redirect-endless-body/manifests/t", "/v2/s/redirect-endless-body/manifests/there"]


def test_a_dripping_mirror_falls_back_to_the_upstream(slow):
    run = finished(slow, "mirror drip")
    result = assert_ok(run, "mirror drip")
    upstream = slow.registry.host
    kernel, initramfs = layer_digests(slow.manifest)

    assert result["changed"] is True
    # Every digest was served by the upstream in the end.
    assert result["sources"] == {
        slow.release.digest: upstream,
        slow.manifest.digest: upstream,
        kernel: upstream,
        initramfs: upstream,
    }
    assert_staged(slow.dest, slow.manifest)
    manifest_error, *blob_errors = result["mirror_errors"]
    assert manifest_error == (
        f"{slow.fake.host}: manifest {slow.manifest.digest} did not arrive whole from {slow.fake.host} within "
        f"{DEADLINE}s (3 times timeout={TIMEOUT}); a registry this slow counts as unreachable"
    )
    # Blobs keep their own rule: less than 64 KiB within the timeout is a stall.
    assert sorted(error.split(" stalled at ")[0] for error in blob_errors) == sorted(
        f"{slow.fake.host}: download of blob {layer}" for layer in (kernel, initramfs)
    ), blob_errors
    assert seconds_of(run, "mirror drip") < CASE_LIMIT + 2 * TIMEOUT
