"""Signed releases through ansible-playbook against a real registry: update_publish signs, update_info
and update_stage verify, and every way a signature can be wrong or missing stages nothing."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.kubesolo.fleet.plugins.module_utils import _cosign, _publish, _signatures
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._client import RegistryClient
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import MEDIA_OCI_MANIFEST
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_repository
from tests.support.artifacts import deterministic_bytes
from tests.support.registry import Registry

PASSPHRASE = "correct horse battery staple"
ARCHES = ("amd64", "arm64")


class KeyPair:
    """A signing key written as an encrypted PKCS#8 file, and its public key file."""

    def __init__(self, root, name):
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.private_path = root / f"{name}.key"
        self.public_path = root / f"{name}.pub"
        self.private_path.write_bytes(
            self.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(PASSPHRASE.encode()),
            )
        )
        self.public_pem = (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        self.public_path.write_text(self.public_pem)
        self.signing_key = _cosign.SigningKey(self.private_key)
        self.fingerprint = self.signing_key.trusted.fingerprint


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return {"release": KeyPair(root, "release"), "other": KeyPair(root, "other")}


def build(root, seed):
    """Kernel and initramfs files of every architecture, as a build pipeline leaves them."""
    files = []
    for arch in ARCHES:
        kernel, initramfs = root / f"{seed}-{arch}-vmlinuz", root / f"{seed}-{arch}-kubesolo-os.gz"
        kernel.write_bytes(deterministic_bytes(f"{seed} kernel {arch}", 6000))
        initramfs.write_bytes(deterministic_bytes(f"{seed} initramfs {arch}", 9000))
        files.append({"architecture": arch, "kernel": str(kernel), "initramfs": str(initramfs)})
    return files


def client(registry, repo):
    return RegistryClient(parse_repository(f"{registry.host}/{repo}"), plain_http=True)


def publish(registry, repo, files, version, tags=("stable",), key=None):
    """Publish with the collection's own code (the module is exercised in the round trip)."""
    registry_client = client(registry, repo)
    plan = _publish.plan_release(files, {"version": version, "channel": "stable"}, list(tags))
    sign = None
    if key is not None:

        def sign(digests):
            return _signatures.sign_digests(registry_client, key.signing_key, digests)

    _publish.publish(registry_client, plan, sign=sign)
    return plan


def copy_manifest(registry, source_repo, reference, target_repo, target_reference=None):
    """Copy a manifest with its blobs to another repository (or tag), as anyone who can push could."""
    source, target = client(registry, source_repo), client(registry, target_repo)
    manifest = source.get_manifest(reference)
    descriptors = [manifest.document["config"]] + manifest.document["layers"]
    for descriptor in descriptors:
        blob = registry.request("GET", f"/v2/{source_repo}/blobs/{descriptor['digest']}").content
        _publish.upload_missing(target, [_publish.Blob.from_bytes(descriptor["mediaType"], blob)])
    target.put_manifest(target_reference or reference, manifest.data, manifest.media_type)


def tamper_payload(registry, repo, digest):
    """Rewrite the payload of the first signature of ``digest``, keeping its signature."""
    registry_client = client(registry, repo)
    tag = _cosign.signature_tag(digest)
    document = registry_client.get_manifest(tag).document
    layer = document["layers"][0]
    payload = registry.request("GET", f"/v2/{repo}/blobs/{layer['digest']}").content
    tampered = payload.replace(b'"optional":null', b'"optional":{"note":"swapped"}')
    blob = _publish.Blob.from_bytes(_cosign.MEDIA_SIMPLE_SIGNING, tampered)
    _publish.upload_missing(registry_client, [blob])
    layer.update(digest=blob.digest, size=blob.size)
    registry_client.put_manifest(tag, json.dumps(document).encode(), MEDIA_OCI_MANIFEST)


def publish_task(registry, repo, files, key, name):
    return {
        "name": name,
        "kubesolo.fleet.update_publish": {
            "repository": f"{registry.host}/{repo}",
            "plain_http": True,
            "tags": ["v1.0.0", "stable"],
            "version": "v1.0.0",
            "artifacts": files,
            "signing_key": str(key.private_path),
            "signing_key_passphrase": PASSPHRASE,
        },
    }


def test_publish_signs_and_info_and_stage_verify(registry, keys, run_playbook, tmp_path):
    files = build(tmp_path, "round-trip")
    repo = "sig/round-trip"
    release = keys["release"]
    verify_args = {
        "repository": f"{registry.host}/{repo}",
        "plain_http": True,
        "signature_keys": [str(keys["other"].public_path), str(release.public_path)],
    }
    run = run_playbook(
        [
            publish_task(registry, repo, files, release, "publish"),
            publish_task(registry, repo, files, release, "publish again"),
            {"name": "info", "kubesolo.fleet.update_info": dict(verify_args, architecture="arm64")},
            {
                "name": "stage",
                "kubesolo.fleet.update_stage": dict(verify_args, architecture="amd64", dest=str(tmp_path / "staged")),
            },
        ],
        args=["-v"],
    )
    assert run.rc == 0, run
    published = run.result("publish")
    assert published["changed"] is True
    assert published["signing_key_fingerprint"] == release.fingerprint
    signed = published["pushed"]["signed"]
    assert signed == [published["index_digest"], published["manifests"]["amd64"], published["manifests"]["arm64"]]
    # Published in order: the signatures exist before any tag points at the release.
    order = [entry.reference for entry in registry.access_log() if entry.kind == "manifest" and entry.method == "PUT"]
    assert order.index("stable") > max(order.index(_cosign.signature_tag(digest)) for digest in signed)
    again = run.result("publish again")
    assert again["changed"] is False and again["pushed"]["signed"] == []

    info = run.result("info")
    assert info["signature"] == {
        "policy": "required",
        "verified": True,
        "digest": published["index_digest"],
        "key_fingerprint": release.fingerprint,
        "source": registry.host,
        "problems": [],
    }
    staged = run.result("stage")
    assert staged["changed"] is True and staged["signature"]["verified"] is True
    assert (tmp_path / "staged" / "vmlinuz").read_bytes() == deterministic_bytes("round-trip kernel amd64", 6000)
    # The key and its passphrase are no_log: never in the output, even with -v.
    assert PASSPHRASE not in run.stdout + run.stderr
    assert "PRIVATE KEY" not in run.stdout + run.stderr


REFUSALS = {
    # case: (error_code, what the message says)
    "wrong-key": ("signature_invalid", "verifies with no trusted key"),
    "unsigned": ("signature_missing", "has no cosign signature"),
    "tampered": ("signature_invalid", "verifies with no trusted key"),
    "other-digest": ("signature_invalid", "its payload signs"),
    "other-repository": ("signature_invalid", "its payload names the repository"),
    "tag-moved": ("signature_missing", "has no cosign signature"),
    "check-mode": ("signature_invalid", "verifies with no trusted key"),
}


@pytest.fixture(scope="module")
def refused_releases(registry, keys, tmp_path_factory):
    """One repository per way to be refused, each holding a release the trusted key does not vouch for."""
    root = tmp_path_factory.mktemp("refused")
    release = keys["release"]
    publish(registry, "sig/good", build(root, "good"), "v0.9.0", key=release)
    publish(registry, "sig/wrong-key", build(root, "wrong-key"), "v1.0.0", key=keys["other"])
    publish(registry, "sig/check-mode", build(root, "check-mode"), "v1.0.0", key=keys["other"])
    publish(registry, "sig/unsigned", build(root, "unsigned"), "v1.0.0")

    plan = publish(registry, "sig/tampered", build(root, "tampered"), "v1.0.0", key=release)
    tamper_payload(registry, "sig/tampered", plan.index.digest)
    for manifest in plan.manifests:
        tamper_payload(registry, "sig/tampered", manifest.digest)

    signed = publish(registry, "sig/other-digest", build(root, "other-digest-old"), "v1.0.0", tags=["old"], key=release)
    unsigned = publish(registry, "sig/other-digest", build(root, "other-digest-new"), "v1.1.0")
    for old, new in [(signed.index, unsigned.index)] + list(zip(signed.manifests, unsigned.manifests)):
        copy_manifest(
            registry, "sig/other-digest", _cosign.signature_tag(old.digest), "sig/other-digest",
            _cosign.signature_tag(new.digest),
        )  # fmt: skip

    files = build(root, "other-repository")
    elsewhere = publish(registry, "sig/elsewhere", files, "v1.0.0", key=release)
    publish(registry, "sig/other-repository", files, "v1.0.0")
    for document in [elsewhere.index] + elsewhere.manifests:
        copy_manifest(registry, "sig/elsewhere", _cosign.signature_tag(document.digest), "sig/other-repository")

    publish(registry, "sig/tag-moved", build(root, "tag-moved-signed"), "v1.0.0", key=release)
    publish(registry, "sig/tag-moved", build(root, "tag-moved-unsigned"), "v1.0.1")
    return sorted(REFUSALS)


def stage_task(registry, repo, dest, name, public_key, **extra):
    args = {
        "repository": f"{registry.host}/{repo}",
        "plain_http": True,
        "architecture": "amd64",
        "dest": str(dest),
        "signature_keys": [str(public_key)],
    }
    args.update(extra)
    return {"name": name, "kubesolo.fleet.update_stage": args, "ignore_errors": True}


def test_every_refused_signature_stages_nothing_and_keeps_the_previous_release(
    registry, keys, refused_releases, run_playbook, tmp_path
):
    public_key = keys["release"].public_path
    tasks = []
    for case in refused_releases:
        dest = tmp_path / case
        tasks.append(stage_task(registry, "sig/good", dest, f"good {case}", public_key))
        task = stage_task(registry, f"sig/{case}", dest, case, public_key)
        if case == "check-mode":
            task["check_mode"] = True
        tasks.append(task)
    run = run_playbook(tasks)
    assert run.rc == 0, run
    for case in refused_releases:
        good = run.result(f"good {case}")
        assert good["changed"] is True and good["signature"]["verified"] is True, good
        result = run.result(case)
        error_code, message = REFUSALS[case]
        assert run.status(case) == "failed", (case, result)
        assert result["error_code"] == error_code, (case, result)
        assert message in result["msg"], (case, result["msg"])
        assert result["signature"]["verified"] is False
        record = json.loads((tmp_path / case / "release.json").read_text())
        assert record["manifest_digest"] == good["manifest_digest"], case
        assert (tmp_path / case / "vmlinuz").read_bytes() == deterministic_bytes("good kernel amd64", 6000)
        store = tmp_path / f".{case}.kubesolo-fleet"
        # Nothing of the refused release was downloaded: its manifest digest names no directory.
        assert not any(result["manifest_digest"].split(":")[1] in entry.name for entry in store.iterdir()), case


def test_no_layer_of_a_refused_release_is_downloaded(registry, keys, refused_releases, run_playbook, tmp_path):
    mark = registry.mark()
    run = run_playbook(
        [
            stage_task(registry, "sig/wrong-key", tmp_path / "a", "wrong key", keys["release"].public_path),
            stage_task(
                registry,
                "sig/unsigned",
                tmp_path / "b",
                "unsigned, controller delivery",
                keys["release"].public_path,
                delivery="controller",
                controller_cache=str(tmp_path / "cache"),
            ),
        ]
    )
    assert run.rc == 0, run
    assert run.result("wrong key")["error_code"] == "signature_invalid"
    assert run.result("unsigned, controller delivery")["error_code"] == "signature_missing"
    # The only blobs read are the two signature payloads of the wrong key's release (its index's and its
    # amd64 manifest's, a few hundred bytes each); no layer (6000 and 9000 bytes) of either release.
    blob_gets = registry.blob_gets(since=mark)
    assert [entry.repo for entry in blob_gets] == ["sig/wrong-key", "sig/wrong-key"], blob_gets
    assert all(entry.size < 1000 for entry in blob_gets), blob_gets
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_if_present_lets_an_unsigned_release_through_and_still_refuses_a_bad_signature(
    registry, keys, refused_releases, run_playbook, tmp_path
):
    public_key = keys["release"].public_path
    run = run_playbook(
        [
            stage_task(
                registry, "sig/unsigned", tmp_path / "unsigned", "unsigned", public_key, signature_policy="if_present"
            ),
            stage_task(
                registry, "sig/wrong-key", tmp_path / "wrong", "wrong key", public_key, signature_policy="if_present"
            ),
        ]
    )
    assert run.rc == 0, run
    unsigned = run.result("unsigned")
    assert unsigned["changed"] is True
    assert unsigned["signature"]["policy"] == "if_present" and unsigned["signature"]["verified"] is False
    assert run.result("wrong key")["error_code"] == "signature_invalid"
    assert not (tmp_path / "wrong").exists()


def test_a_mirror_can_neither_hide_nor_forge_a_signature(registry, keys, run_playbook, tmp_path):
    with Registry() as mirror:
        # Signed upstream; the mirror holds the same release without its signatures.
        files = build(tmp_path, "mirror-hides")
        signed = publish(registry, "sig/mirror-hides", files, "v1.0.0", key=keys["release"])
        publish(mirror, "sig/mirror-hides", files, "v1.0.0")
        # Unsigned upstream; the mirror adds a signature of its own.
        files = build(tmp_path, "mirror-forges")
        publish(registry, "sig/mirror-forges", files, "v1.0.0")
        publish(mirror, "sig/mirror-forges", files, "v1.0.0", key=keys["other"])
        mirrors = [{"location": mirror.host, "plain_http": True}]
        public_key = keys["release"].public_path
        run = run_playbook(
            [
                stage_task(registry, "sig/mirror-hides", tmp_path / "hides", "hides", public_key, mirrors=mirrors),
                stage_task(registry, "sig/mirror-forges", tmp_path / "forges", "forges", public_key, mirrors=mirrors),
            ]
        )
        assert run.rc == 0, run
        hides = run.result("hides")
        assert hides["changed"] is True
        assert hides["sources"][hides["manifest_digest"]] == mirror.host  # the mirror served the release
        assert hides["signature"]["source"] == registry.host  # the upstream vouched for it
        assert hides["signature"]["digest"] == signed.index.digest
        forges = run.result("forges")
        assert forges["error_code"] == "signature_invalid"
        assert f"{mirror.host}: signature" in forges["msg"]
        assert not (tmp_path / "forges").exists()
