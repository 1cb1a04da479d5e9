# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""update_stage against a hostile registry: a catalogue of malformed and malicious answers.

Each case is a repository of a :class:`FakeRegistry` answering from its own table, and one task of
one ansible-playbook run (two runs side by side, half the cases each).  Every case must fail with
its exact ``error_code`` and a message that says what was wrong, in bounded time, with nothing
written outside the node directory and nothing changed at ``dest``: half the nodes hold a release
staged from the real registry first, the other half have no ``dest`` at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import artifacts
from tests.support.fakeregistry import Answer, FakeRegistry
from tests.support.playbook import run_playbook as run_playbook_in
from tests.support.resilience import copy_node, held_release, hermetic_env, snapshot, stage_ok, store_of

KERNEL = artifacts.deterministic_bytes("hostile/kernel", 4096)
INITRAMFS = artifacts.deterministic_bytes("hostile/initramfs", 6144)
OCI_MANIFEST = artifacts.OCI_MANIFEST
OCI_INDEX = artifacts.OCI_INDEX
MIB = 1024 * 1024
TIME_LIMIT = 6.0  # seconds any one case may take, module start-up included (the slowest takes about 1.5)
# A file the path-traversal digest of an index entry would name (in the temp dir); it must never appear.
ESCAPE_NAME = f"kubesolo-hostile-{uuid.uuid4().hex}"
HOSTILE_PASSWORD = "s3cret-hostile-pw"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(media_type: str, data: bytes, **override) -> dict:
    return {"mediaType": media_type, "digest": digest(data), "size": len(data), **override}


def manifest(kernel=None, initramfs=None, annotations=None, media_type=OCI_MANIFEST, **extra) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": layer(artifacts.OCI_CONFIG, b"{}"),
        "layers": [
            kernel or layer(artifacts.KERNEL_MEDIA_TYPE, KERNEL),
            initramfs or layer(artifacts.INITRAMFS_MEDIA_TYPE, INITRAMFS),
        ],
        "annotations": annotations or {artifacts.ANN_VERSION: "v9.9.9", artifacts.ANN_ARCHITECTURE: "amd64"},
        **extra,
    }
    return artifacts.canonical_json(document)


GOOD = manifest()


def index(*entries) -> bytes:
    return artifacts.canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)})


def entry(body: bytes, media_type: str = OCI_MANIFEST, arch: str = "amd64", **override) -> dict:
    return {
        "mediaType": media_type,
        "digest": digest(body),
        "size": len(body),
        "platform": {"architecture": arch, "os": "linux"},
        **override,
    }


def served(body: bytes, content_type: str = OCI_MANIFEST, **answer) -> Answer:
    headers = {"Content-Type": content_type, **answer.pop("headers", {})}
    return Answer(200, body, headers, **answer)


def blobs(**answers) -> dict:
    """Routes for both layers, good unless ``kernel=`` or ``initramfs=`` replaces the answer."""
    return {
        f"blobs/{digest(KERNEL)}": answers.get("kernel") or Answer(200, KERNEL),
        f"blobs/{digest(INITRAMFS)}": answers.get("initramfs") or Answer(200, INITRAMFS),
    }


def bearer(case: str) -> Answer:
    return Answer(
        401,
        b'{"errors":[{"code":"UNAUTHORIZED"}]}',
        {
            "Content-Type": "application/json",
            "WWW-Authenticate": f'Bearer realm="{{base}}/token/{case}",service="fake",scope="repository:h/{case}:pull"',
        },
    )


@dataclass
class Case:
    """Routes (relative to ``/v2/h/<name>/``, or absolute when starting with /), what must happen."""

    name: str
    routes: dict
    error_code: str
    fragment: str
    args: dict = field(default_factory=dict)
    downloads: bool = False  # the failure comes while a layer downloads (the store sees work)


# What a terminal acts on: ESC (clear screen, a hyperlink), BEL, the C1 CSI, a bidi override.
ESCAPES = "\x1b[2J\x1b]8;;http://evil.example/\x07\u009b31m\u202e"
ODD_MEDIA_TYPE = f"application/vnd.example{ESCAPES}+json"
NESTED = index(entry(GOOD))
SERVED_INDEX = index(entry(GOOD))
OTHER = manifest(annotations={artifacts.ANN_VERSION: "v0.0.1", artifacts.ANN_ARCHITECTURE: "amd64"})

# The trusted key of the signature cases, and what a signature of GOOD looks like at its tag.
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
TRUSTED_KEY = (
    SIGNING_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
SIGNED = {"signature_keys": [TRUSTED_KEY]}
SIGNATURE_TAG = f"manifests/sha256-{digest(GOOD).split(':')[1]}.sig"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def signature_payload(case: str, reference: str | None = None) -> bytes:
    reference = reference or "127.0.0.1:{port}/h/" + case
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest(GOOD)},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()


def signature_routes(payload: bytes, served_payload: Answer | None = None, **layer_override) -> dict:
    """GOOD and its blobs, a signature manifest with one signature layer over ``payload``, and the payload."""
    signature = base64.b64encode(SIGNING_KEY.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    signature_layer = {**layer(SIMPLE_SIGNING, payload), "annotations": {SIGNATURE_ANNOTATION: signature}}
    signature_layer.update(layer_override)
    signature_manifest = artifacts.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": layer(artifacts.OCI_CONFIG, b"{}"),
            "layers": [signature_layer],
        }
    )
    return {
        "manifests/t": served(GOOD),
        SIGNATURE_TAG: served(signature_manifest),
        f"blobs/{digest(payload)}": served_payload or Answer(200, payload),
        **blobs(),
    }


SIGNATURE_CASES = [
    Case(
        "signature-missing",
        {"manifests/t": served(GOOD), **blobs()},
        "signature_missing",
        f"has no cosign signature (looked for {SIGNATURE_TAG.split('/')[1]})",
        args=SIGNED,
    ),
    Case(
        "signature-manifest-not-json",
        {"manifests/t": served(GOOD), SIGNATURE_TAG: served(b'{"schemaVersion": 2, "layers": [,]}'), **blobs()},
        "signature_invalid",
        ".sig is unusable: manifest sha256-",
        args=SIGNED,
    ),
    Case(
        "signature-manifest-endless",
        {"manifests/t": served(GOOD), SIGNATURE_TAG: served(b" " * 65536, endless=True), **blobs()},
        "signature_invalid",
        "over the 4194304 byte limit",
        args=SIGNED,
    ),
    Case(
        "signature-payload-declared-huge",
        signature_routes(signature_payload("signature-payload-declared-huge"), size=64 * 1024 + 1),
        "signature_invalid",
        "declares the size 65537 (1 to 65536 bytes allowed)",
        args=SIGNED,
    ),
    Case(
        "signature-payload-other-bytes",
        signature_routes(
            signature_payload("signature-payload-other-bytes"),
            served_payload=Answer(200, signature_payload("signature-payload-other-bytes").replace(b"null", b"[42]")),
        ),
        "signature_invalid",
        "cannot be read",
        args=SIGNED,
    ),
    Case(
        "signature-payload-endless",
        signature_routes(
            signature_payload("signature-payload-endless"), served_payload=Answer(200, b"x" * 4096, endless=True)
        ),
        "signature_invalid",
        "cannot be read",
        args=SIGNED,
    ),
    Case(
        "signature-annotation-not-a-string",
        signature_routes(
            signature_payload("signature-annotation-not-a-string"), annotations={SIGNATURE_ANNOTATION: 12}
        ),
        "signature_invalid",
        f"has no base64 {SIGNATURE_ANNOTATION} annotation",
        args=SIGNED,
    ),
    Case(
        # Signed by the trusted key, naming a repository full of terminal escapes: refused, and quoted harmlessly.
        "signature-names-escapes",
        signature_routes(signature_payload("signature-names-escapes", reference=f"evil.example/{ESCAPES}")),
        "signature_invalid",
        "is by a trusted key, but its payload names the repository 'evil.example/\\x1b[2J",
        args=SIGNED,
    ),
]

CASES = [
    Case(
        "manifest-over-4mib-announced",
        {"manifests/t": served(b"{" + b" " * (5 * MIB) + b"}")},
        "invalid_manifest",
        "manifest t is 5242882 bytes, over the 4194304 byte limit",
    ),
    Case(
        "manifest-over-4mib-unannounced",
        {"manifests/t": served(b" " * 65536, endless=True)},
        "invalid_manifest",
        "manifest t is over the 4194304 byte limit",
    ),
    Case(
        "manifest-truncated-json",
        {"manifests/t": served(GOOD[: len(GOOD) // 2])},
        "invalid_manifest",
        "manifest t is not valid JSON",
    ),
    Case(
        "manifest-invalid-json",
        {"manifests/t": served(b'{"schemaVersion": 2, "layers": [,]}')},
        "invalid_manifest",
        "manifest t is not valid JSON",
    ),
    Case(
        "manifest-schema-version-1",
        {"manifests/t": served(manifest(schemaVersion=1))},
        "invalid_manifest",
        "has schemaVersion 1, only 2 is supported",
    ),
    Case(
        "media-type-disagrees-with-content-type",
        {"manifests/t": served(GOOD, OCI_INDEX)},
        "invalid_manifest",
        f"says its mediaType is {OCI_MANIFEST} but was served as {OCI_INDEX}",
    ),
    Case(
        "unsupported-media-type",
        {"manifests/t": served(manifest(media_type="application/vnd.example+json"), "application/vnd.example+json")},
        "invalid_manifest",
        "unsupported media type application/vnd.example+json",
    ),
    Case(
        "content-digest-header-disagrees",
        {"manifests/t": served(GOOD, headers={"Docker-Content-Digest": digest(OTHER)})},
        "digest_mismatch",
        f"the registry says manifest t has digest {digest(OTHER)}, but its bytes hash to {digest(GOOD)}",
    ),
    Case(
        "layer-size-zero",
        {"manifests/t": served(manifest(kernel=layer(artifacts.KERNEL_MEDIA_TYPE, KERNEL, size=0)))},
        "invalid_manifest",
        f"declares an empty {artifacts.KERNEL_MEDIA_TYPE} layer",
    ),
    Case(
        "layer-size-negative",
        {"manifests/t": served(manifest(kernel=layer(artifacts.KERNEL_MEDIA_TYPE, KERNEL, size=-1)))},
        "invalid_manifest",
        f"lists {digest(KERNEL)} with an invalid size -1",
    ),
    Case(
        "layer-size-absurd",
        {"manifests/t": served(manifest(kernel=layer(artifacts.KERNEL_MEDIA_TYPE, KERNEL, size=17 * 1024**3)))},
        "invalid_manifest",
        f"lists {digest(KERNEL)} with an invalid size {17 * 1024**3}",
    ),
    Case(
        "layer-digest-md5",
        {
            "manifests/t": served(
                manifest(
                    kernel=layer(artifacts.KERNEL_MEDIA_TYPE, KERNEL, digest="md5:" + hashlib.md5(KERNEL).hexdigest())
                )
            )
        },
        "invalid_manifest",
        "uses the unsupported algorithm 'md5'",
    ),
    Case(
        "layer-digest-path-characters",
        {
            "manifests/t": served(
                manifest(kernel=layer(artifacts.KERNEL_MEDIA_TYPE, KERNEL, digest="sha256:../../etc/passwd"))
            )
        },
        "invalid_manifest",
        "bad digest: digest 'sha256:../../etc/passwd' is not of the form algorithm:hex",
    ),
    Case(
        "index-digest-path-characters",
        {
            "manifests/t": served(
                index(entry(GOOD, digest=f"sha256:../../../../../../../../tmp/{ESCAPE_NAME}")), OCI_INDEX
            )
        },
        "invalid_manifest",
        "lists a manifests entry with a bad digest",
    ),
    Case(
        "index-of-an-index",
        {
            "manifests/t": served(index(entry(NESTED, OCI_INDEX)), OCI_INDEX),
            f"manifests/{digest(NESTED)}": served(NESTED, OCI_INDEX),
        },
        "invalid_manifest",
        f"points at {OCI_INDEX} for amd64; only image manifests are supported there",
    ),
    Case(
        "index-entry-serves-an-index",
        {
            "manifests/t": served(index(entry(SERVED_INDEX)), OCI_INDEX),
            f"manifests/{digest(SERVED_INDEX)}": served(SERVED_INDEX, OCI_INDEX),
        },
        "invalid_manifest",
        f"is a {OCI_INDEX}, not an image manifest",
    ),
    Case(
        "duplicate-architecture",
        {"manifests/t": served(index(entry(GOOD), entry(OTHER)), OCI_INDEX)},
        "invalid_manifest",
        "the index lists 2 manifests for platform amd64; refusing an ambiguous release",
    ),
    Case(
        "index-entry-size-disagrees",
        {
            "manifests/t": served(index(entry(GOOD, size=len(GOOD) - 1)), OCI_INDEX),
            f"manifests/{digest(GOOD)}": served(GOOD),
        },
        "size_mismatch",
        f"manifest {digest(GOOD)} is {len(GOOD)} bytes, the index declares {len(GOOD) - 1}",
    ),
    Case(
        "manifest-by-digest-has-other-bytes",
        {"manifests/t": served(index(entry(GOOD)), OCI_INDEX), f"manifests/{digest(GOOD)}": served(OTHER)},
        "digest_mismatch",
        f"manifest {digest(GOOD)} has wrong content: its bytes hash to {digest(OTHER)}",
    ),
    Case(
        "annotation-control-characters",
        {
            "manifests/t": served(
                manifest(annotations={artifacts.ANN_VERSION: "v1.0.0\x1b[2J\x07", artifacts.ANN_ARCHITECTURE: "amd64"})
            )
        },
        "invalid_manifest",
        "annotation io.kubesolo.os.version of",
    ),
    Case(
        "index-platform-control-characters",
        {
            "manifests/t": served(
                index(
                    entry(GOOD, arch=f"amd64{ESCAPES}"),
                    entry(GOOD, arch="\u009b2Jamd64"),
                    entry(GOOD, arch="amd64", platform={"architecture": "amd64", "os": "linux", "variant": ESCAPES}),
                ),
                OCI_INDEX,
            )
        },
        "architecture_not_shipped",
        "the release does not ship for architecture amd64 (it ships: none)",
    ),
    Case(
        "ignored-layer-media-type-control-characters",
        {
            "manifests/t": served(
                manifest(
                    layers=[
                        layer(artifacts.KERNEL_MEDIA_TYPE, KERNEL),
                        layer(artifacts.INITRAMFS_MEDIA_TYPE, INITRAMFS),
                        layer(ODD_MEDIA_TYPE, b"{}"),
                    ]
                )
            ),
            **blobs(),
        },
        "invalid_manifest",
        "lists a layers entry with the malformed mediaType 'application/vnd.example\\x1b[2J\\x1b]8;;",
    ),
    Case(
        "manifest-media-type-control-characters",
        {"manifests/t": served(manifest(media_type=OCI_MANIFEST + ESCAPES), "application/json")},
        "invalid_manifest",
        f"manifest t has the malformed mediaType '{OCI_MANIFEST}\\x1b[2J\\x1b]8;;http://evil.example/\\x07",
    ),
    Case(
        "content-type-control-characters",
        {"manifests/t": served(GOOD, OCI_MANIFEST + "\x1b[2J\x07")},
        "invalid_manifest",
        f"manifest t was served with the malformed Content-Type '{OCI_MANIFEST}\\x1b[2j\\x07'",
    ),
    Case(
        "content-digest-header-control-characters",
        {"manifests/t": served(GOOD, headers={"Docker-Content-Digest": "sha256:\x1b[2J\x1b]0;owned\x07"})},
        "digest_mismatch",
        "the registry says manifest t has digest sha256:\\x1b[2J\\x1b]0;owned\\x07, but",
    ),
    Case(
        "annotation-c1-and-bidi-characters",
        {
            "manifests/t": served(
                manifest(
                    annotations={
                        artifacts.ANN_VERSION: "v1.0.0\u009b2J",
                        artifacts.ANN_CHANNEL: "\u202estable",
                        artifacts.ANN_ARCHITECTURE: "amd64",
                    }
                )
            ),
            **blobs(),
        },
        "invalid_manifest",
        "annotation io.kubesolo.os.version of",
    ),
    Case(
        "challenge-scheme-control-characters",
        {"manifests/t": Answer(401, b"{}", {"WWW-Authenticate": '\x1b]8;;http://evil.example/\x07Evil realm="x"'})},
        "authentication_failed",
        "requires authentication (\\x1b]8;;http://evil.example/\\x07evil challenge)",
    ),
    Case(
        "blob-longer-announced",
        {"manifests/t": served(GOOD), **blobs(kernel=Answer(200, KERNEL + b"\0" * 100))},
        "size_mismatch",
        f"blob {digest(KERNEL)}: the registry announced 4196 bytes, the manifest declares 4096",
        downloads=True,
    ),
    Case(
        "blob-longer-unannounced",
        {"manifests/t": served(GOOD), **blobs(kernel=Answer(200, KERNEL + b"\0" * 100, length=None))},
        "size_mismatch",
        f"blob {digest(KERNEL)} is longer than the 4096 bytes the manifest declares",
        downloads=True,
    ),
    Case(
        "blob-shorter-announced",
        {"manifests/t": served(GOOD), **blobs(initramfs=Answer(200, INITRAMFS[:3000]))},
        "size_mismatch",
        f"blob {digest(INITRAMFS)}: the registry announced 3000 bytes, the manifest declares 6144",
        downloads=True,
    ),
    Case(
        "blob-shorter-unannounced",
        {"manifests/t": served(GOOD), **blobs(initramfs=Answer(200, INITRAMFS[:3000], close=True))},
        "size_mismatch",
        f"blob {digest(INITRAMFS)} ended after 3000 bytes, the manifest declares 6144",
        downloads=True,
    ),
    Case(
        "blob-missing",
        {"manifests/t": served(GOOD), **blobs(initramfs=Answer(404, b"{}"))},
        "not_found",
        f"blob {digest(INITRAMFS)} of",
        downloads=True,
    ),
    Case(
        "blob-slow-drip",
        {"manifests/t": served(GOOD), **blobs(kernel=Answer(200, KERNEL, drip=0.1))},
        "registry_unreachable",
        f"download of blob {digest(KERNEL)} stalled at",
        args={"timeout": 1, "retries": 0},
        downloads=True,
    ),
    Case(
        "blob-redirect-loop",
        {
            "manifests/t": served(GOOD),
            **blobs(kernel=Answer(307, b"", {"Location": f"{{base}}/v2/h/blob-redirect-loop/blobs/{digest(KERNEL)}"})),
        },
        "registry_unreachable",
        "more than 10 redirects, the last to",
        downloads=True,
    ),
    Case(
        "token-huge",
        {
            "manifests/t": bearer("token-huge"),
            "/token/token-huge": served(b'{"token": "' + b"x" * MIB + b'"}', "application/json"),
        },
        "authentication_failed",
        "token response of 127.0.0.1:{port} is 1048589 bytes, over the 65536 byte limit",
    ),
    Case(
        "token-endless",
        {
            "manifests/t": bearer("token-endless"),
            "/token/token-endless": served(b"x" * 4096, "application/json", endless=True),
        },
        "authentication_failed",
        "token response of 127.0.0.1:{port} is over the 65536 byte limit",
    ),
    Case(
        "token-not-json",
        {
            "manifests/t": bearer("token-not-json"),
            "/token/token-not-json": served(b"<html>sign in</html>", "text/html"),
        },
        "authentication_failed",
        "the token service of 127.0.0.1:{port} answered without a token",
    ),
    Case(
        "redirect-then-401-elsewhere",
        {
            "manifests/t": Answer(
                307, b"", {"Location": "http://localhost:{port}/elsewhere/redirect-then-401-elsewhere"}
            ),
            "/elsewhere/redirect-then-401-elsewhere": Answer(
                401,
                b"{}",
                {"WWW-Authenticate": 'Bearer realm="http://localhost:{port}/token/redirect-then-401-elsewhere"'},
            ),
        },
        "authentication_failed",
        "http://localhost:{port} asked for authentication after registry 127.0.0.1:{port} redirected there; "
        "credentials are only sent to the registry itself",
        args={"username": "robot", "password": HOSTILE_PASSWORD},
    ),
    Case(
        "manifest-nested-too-deeply",
        {"manifests/t": served(b'{"schemaVersion": 2, "layers": ' + b"[" * 100000 + b"]" * 100000 + b"}")},
        "invalid_manifest",
        "manifest t is not valid JSON: the document is nested too deeply",
    ),
    Case(
        "token-nested-too-deeply",
        {
            "manifests/t": bearer("token-nested-too-deeply"),
            "/token/token-nested-too-deeply": served(b"[" * 20000 + b"]" * 20000, "application/json"),
        },
        "authentication_failed",
        "the token service of 127.0.0.1:{port} answered without a token",
    ),
    Case(
        "bearer-without-realm",
        {"manifests/t": Answer(401, b"{}", {"WWW-Authenticate": 'Bearer service="fake"'})},
        "authentication_failed",
        "sent a bearer challenge without a usable realm",
    ),
    *SIGNATURE_CASES,
]


@pytest.fixture(scope="module")
def hostile(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    playbook_dir = tmp_path_factory.mktemp("hostile-playbooks")
    env = hermetic_env(playbook_dir)
    previous = artifacts.push_release(registry, "hostile/previous", "a", "v0.3.0", ("amd64",)).manifests["amd64"]
    template = tmp / "template"
    stage_ok(env, repository=f"{registry.host}/hostile/previous", tag="a", dest=template / "staged")
    with FakeRegistry() as fake:
        playbooks, cases = ([], []), {}
        for number, case in enumerate(CASES):
            for path, answer in case.routes.items():
                fake.routes[path if path.startswith("/") else f"/v2/h/{case.name}/{path}"] = answer
            root = tmp / "cases" / case.name
            node = root / "node"
            if number % 2 == 0:
                copy_node(template, node)
            else:
                node.mkdir(parents=True)
            args = {
                "repository": f"{fake.host}/h/{case.name}",
                "plain_http": True,
                "tag": "t",
                "architecture": "amd64",
                "dest": str(node / "staged"),
                "retries": 1,
                "retry_max_wait": 0.5,
                "timeout": 3,
                **case.args,
            }
            playbooks[number % 2].extend(
                [
                    {"name": f"clock {case.name}", "ansible.builtin.debug": {"msg": "{{ now().timestamp() }}"}},
                    {"name": case.name, "kubesolo.fleet.update_stage": args, "ignore_errors": True},
                ]
            )
            cases[case.name] = SimpleNamespace(
                case=case, root=root, node=node, dest=node / "staged", prestaged=number % 2 == 0, before=snapshot(root)
            )
        for playbook in playbooks:
            playbook.append({"name": "clock end", "ansible.builtin.debug": {"msg": "{{ now().timestamp() }}"}})
        outside_before = sorted(p.name for p in tmp.iterdir())
        with ThreadPoolExecutor(2) as pool:
            runs = list(
                pool.map(lambda n: run_playbook_in(playbooks[n], tmp_path=playbook_dir / str(n), env=env), (0, 1))
            )
        port = fake.port
        log = list(fake.log)
    return SimpleNamespace(
        previous=previous, cases=cases, runs=runs, port=port, log=log, tmp=tmp, outside_before=outside_before
    )


def strings_in(value):
    """Every string in a result (keys too), however deeply nested."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def run_of(hostile, task: str):
    return next(run for run in hostile.runs if run.records(task))


def duration(hostile, name: str) -> float:
    """Seconds from the clock task before the case to the next clock task."""
    run = run_of(hostile, name)
    clocks = [r for r in run.results if r["task"].startswith("clock ")]
    for before, after in zip(clocks, clocks[1:]):
        if before["task"] == f"clock {name}":
            return float(after["result"]["msg"]) - float(before["result"]["msg"])
    raise KeyError(name)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_answer_fails_clearly_and_changes_nothing(hostile, case):
    this = hostile.cases[case.name]
    run = run_of(hostile, case.name)
    result = run.result(case.name)

    assert run.status(case.name) == "failed", result
    assert result.get("error_code") == case.error_code, result
    assert case.fragment.format(port=hostile.port) in result["msg"], result["msg"]
    assert len(result["msg"]) < 1000 and result["msg"].isprintable(), result["msg"]
    # No field of the result carries what a terminal would act on, quoted or not (the task's own
    # arguments, echoed as its invocation, hold a PEM key's newlines and nothing the registry sent).
    answered = {key: value for key, value in result.items() if key != "invocation"}
    assert all(text.isprintable() for text in strings_in(answered)), result
    assert "Traceback" not in json.dumps(result)
    assert duration(hostile, case.name) < TIME_LIMIT

    after = snapshot(this.root)
    store = store_of(this.dest)
    if this.prestaged:
        assert held_release(this.dest, {"A": hostile.previous}) == "A"
    else:
        assert not os.path.lexists(this.dest)
    # Nothing changed but work in the store; before any download, not even that.
    changed = sorted(path for path in set(after) | set(this.before) if after.get(path) != this.before.get(path))
    store_name = store.name
    if not case.downloads:
        assert changed == [], changed
    else:
        assert all(path == f"node/{store_name}" or path.startswith(f"node/{store_name}/") for path in changed), changed
        assert all("/partial-" in path or path.endswith(("/.lock", store_name)) for path in changed), changed


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.error_code in ("size_mismatch",) and c.downloads], ids=lambda c: c.name
)
def test_a_layer_of_the_wrong_size_leaves_no_part_file(hostile, case):
    # The other layer downloads at the same time and may keep a part (a prefix, see below).
    wrong = "vmlinuz.part" if digest(KERNEL) in case.fragment else "kubesolo-os.gz.part"
    store = store_of(hostile.cases[case.name].dest)
    assert sorted(str(p.relative_to(store)) for p in store.rglob(wrong)) == []


def test_what_a_failed_download_keeps_is_a_prefix_of_the_right_bytes(hostile):
    layers = {"vmlinuz.part": KERNEL, "kubesolo-os.gz.part": INITRAMFS}
    for name, this in hostile.cases.items():
        store = store_of(this.dest)
        for part in store.rglob("*.part") if store.is_dir() else []:
            data = part.read_bytes()
            assert data == layers[part.name][: len(data)], f"{name}: {part.relative_to(store)}"


def test_nothing_was_written_outside_the_node_directories(hostile):
    assert sorted(p.name for p in hostile.tmp.iterdir()) == hostile.outside_before
    assert not os.path.lexists(os.path.join(tempfile.gettempdir(), ESCAPE_NAME))
    for this in hostile.cases.values():
        assert sorted(p.name for p in this.root.iterdir()) == ["node"]
        assert set(p.name for p in this.node.iterdir()) <= {"staged", store_of(this.dest).name}


def test_the_module_never_asked_for_a_path_it_was_fed(hostile):
    # Digests with path characters are refused before they reach a URL.
    assert [r.path for r in hostile.log if ".." in r.path or "md5:" in r.path] == []


def test_credentials_never_went_to_the_origin_a_redirect_led_to(hostile):
    # It asked for authentication with a token service of its own: nothing was sent there at all.
    assert [r for r in hostile.log if "redirect-then-401-elsewhere" in r.path and r.path.startswith("/token/")] == []
    asked = [r for r in hostile.log if r.path == "/elsewhere/redirect-then-401-elsewhere"]
    assert len(asked) == 1
    assert "Authorization" not in asked[0].headers
    assert all(HOSTILE_PASSWORD not in json.dumps(run.results) for run in hostile.runs)


def test_the_terminal_got_nothing_it_would_act_on(hostile):
    # Ansible prints every failure (msg and result) as the registry's text made it.
    for run in hostile.runs:
        for line in (run.stdout + run.stderr).splitlines():
            assert line.isprintable(), line


def test_the_redirect_loop_was_followed_ten_times_only(hostile):
    loop = [r for r in hostile.log if r.path == f"/v2/h/blob-redirect-loop/blobs/{digest(KERNEL)}"]
    assert len(loop) == 11
