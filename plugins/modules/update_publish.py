#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: update_publish
short_description: Publish a KubeSolo OS release to an OCI registry
version_added: 0.1.0
description:
  - Pushes a multi-architecture KubeSolo OS release in the layout the node agent and
    M(kubesolo.fleet.update_stage) read. For each architecture, a manifest with the kernel layer
    (C(application/vnd.kubesolo.os.kernel.v1+octet-stream)), the initramfs layer
    (C(application/vnd.kubesolo.os.initramfs.v1+gzip)) and the C(io.kubesolo.os.*) annotations,
    then an OCI image index with one entry per platform, then the tags.
  - Idempotent. Manifests are serialised deterministically; blobs and manifests the registry already
    has are not pushed again, and a tag that already points at the same index is left alone.
  - With O(signing_key), signs the index and each platform manifest the way C(cosign sign --recursive --key) does
    (a simple-signing signature at tag C(sha256-<hex>.sig)), before any tag moves. This is idempotent too; a
    digest that already carries a valid signature by this key is not signed again, and other signers' signatures
    are kept.
  - For release pipelines and test fleets; it runs where the files are, usually the controller.
author:
  - kubesolo.fleet maintainers (@kubesolo)
extends_documentation_fragment:
  - kubesolo.fleet.attributes
  - kubesolo.fleet.attributes.registry_module
  - kubesolo.fleet.attributes.no_diff
  - kubesolo.fleet.registry
options:
  tags:
    description:
      - Tags that should point at the release index, for example V(v0.3.0) and V(stable).
    type: list
    elements: str
    required: true
  version:
    description: The release version (SemVer, optional leading C(v)).
    type: str
    required: true
  channel:
    description: The release channel.
    type: str
    default: stable
  min_compatible_version:
    description: The oldest version that may update straight to this release (a stepping stone).
    type: str
    default: ''
  release_notes:
    description: Short release notes.
    type: str
    default: ''
  release_date:
    description: Release date, RFC 3339.
    type: str
    default: ''
  artifacts:
    description: The build of each architecture.
    type: list
    elements: dict
    required: true
    suboptions:
      architecture:
        description: The architecture, GOARCH or C(uname -m) form (C(amd64), C(arm64), C(arm/v7)...).
        type: str
        required: true
      kernel:
        description: Path of the kernel image.
        type: path
        required: true
      initramfs:
        description: Path of the gzip-compressed initramfs.
        type: path
        required: true
  signing_key:
    description:
      - A PEM private key (PKCS#8, optionally encrypted, or a traditional EC or RSA key; ECDSA, RSA or Ed25519) to sign
        the release with, inline or the path of a file. Never logged or returned.
      - The encrypted key format of C(cosign generate-key-pair) (C(ENCRYPTED SIGSTORE PRIVATE KEY)) is not read; make
        the key with OpenSSL, for example
        C(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 | openssl pkcs8 -topk8 -out release.key),
        and publish its public key (C(openssl pkey -in release.key -pubout)) to the fleet. cosign verifies these
        signatures with that public key too.
      - The payload names the digest and O(repository) as given, which is the repository that
        M(kubesolo.fleet.update_stage) then expects.
    type: str
  signing_key_passphrase:
    description: The passphrase of an encrypted O(signing_key). Never logged or returned.
    type: str
attributes:
  check_mode:
    support: full
    details: Hashes the files and asks the registry what it has (signatures too); pushes and signs nothing.
seealso:
  - module: kubesolo.fleet.update_info
"""

EXAMPLES = r"""
- name: Publish v0.3.0 for amd64 and arm64 and move stable to it
  kubesolo.fleet.update_publish:
    repository: registry.example.com/kubesolo/os
    tags: [v0.3.0, stable]
    version: v0.3.0
    channel: stable
    min_compatible_version: v0.2.0
    release_date: "2026-11-01T12:00:00Z"
    artifacts:
      - architecture: amd64
        kernel: build/amd64/vmlinuz
        initramfs: build/amd64/kubesolo-os.gz
      - architecture: arm64
        kernel: build/arm64/Image
        initramfs: build/arm64/kubesolo-os.gz

- name: Publish and sign with the release key
  kubesolo.fleet.update_publish:
    repository: registry.example.com/kubesolo/os
    tags: [v0.3.1, stable]
    version: v0.3.1
    artifacts:
      - architecture: amd64
        kernel: build/amd64/vmlinuz
        initramfs: build/amd64/kubesolo-os.gz
    signing_key: "{{ lookup('ansible.builtin.env', 'RELEASE_KEY_FILE') }}"
    signing_key_passphrase: "{{ release_key_passphrase }}"
"""

RETURN = r"""
index_digest:
  description: Digest of the release index the tags point at.
  returned: success
  type: str
  sample: sha256:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e
manifests:
  description: Digest of the manifest of each architecture.
  returned: success
  type: dict
  sample: {amd64: "sha256:4f1b3c0d2e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c"}
pushed:
  description: What this run pushed (in check mode, would push).
  returned: success
  type: dict
  contains:
    blobs:
      description: Digests of the blobs uploaded.
      type: list
      elements: str
    manifests:
      description: Digests of the manifests and index pushed.
      type: list
      elements: str
    tags:
      description: Tags set to the index.
      type: list
      elements: str
    signed:
      description: Digests that got a new signature by O(signing_key); empty without one.
      type: list
      elements: str
signing_key_fingerprint:
  description: The fingerprint of O(signing_key)'s public key (as RV(kubesolo.fleet.update_info#module:signature.key_fingerprint)).
  returned: success and O(signing_key) is set
  type: str
  sample: sha256:0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e9a8b7c6d5e4f3a2b1c
error_code:
  description: On failure, a stable code for the kind of error (see M(kubesolo.fleet.update_info)).
  returned: failure
  type: str
  sample: invalid_parameter
"""

import functools

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubesolo.fleet.plugins.module_utils._options import (
    client_from_params,
    connection_argument_spec,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._publish import plan_release, publish
from ansible_collections.kubesolo.fleet.plugins.module_utils._results import (
    fail_module,
    fail_without_cryptography,
    fail_without_requests,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._signatures import load_signing_key, sign_digests

METADATA_OPTIONS = ("version", "channel", "min_compatible_version", "release_notes", "release_date")


def main():
    module = AnsibleModule(
        argument_spec=connection_argument_spec(
            tags=dict(type="list", elements="str", required=True),
            version=dict(type="str", required=True),
            channel=dict(type="str", default="stable"),
            min_compatible_version=dict(type="str", default=""),
            release_notes=dict(type="str", default=""),
            release_date=dict(type="str", default=""),
            artifacts=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    architecture=dict(type="str", required=True),
                    kernel=dict(type="path", required=True),
                    initramfs=dict(type="path", required=True),
                ),
            ),
            signing_key=dict(type="str", no_log=True),
            signing_key_passphrase=dict(type="str", no_log=True),
        ),
        supports_check_mode=True,
    )
    fail_without_requests(module)
    params = module.params
    fail_without_cryptography(module, bool(params["signing_key"]))
    signing_key = sign = None
    try:
        if params["signing_key"]:
            signing_key = load_signing_key(params["signing_key"], params["signing_key_passphrase"])
        client = client_from_params(params)
        plan = plan_release(params["artifacts"], dict((key, params[key]) for key in METADATA_OPTIONS), params["tags"])
        if signing_key is not None:
            sign = functools.partial(sign_digests, client, signing_key, check_mode=module.check_mode)
        pushed = publish(client, plan, check_mode=module.check_mode, sign=sign)
    except Exception as exc:  # pylint: disable=broad-except  # a result with an error_code, never a traceback
        fail_module(module, exc)
    result = dict(
        changed=any(pushed.values()),
        index_digest=plan.index.digest,
        manifests=plan.manifest_digests(),
        pushed=pushed,
    )
    if signing_key is not None:
        result["signing_key_fingerprint"] = signing_key.trusted.fingerprint
    module.exit_json(**result)


if __name__ == "__main__":
    main()
