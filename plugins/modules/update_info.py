#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: update_info
short_description: Show which KubeSolo OS release a registry offers for an architecture
version_added: 0.1.0
description:
  - Resolves a KubeSolo OS release in an OCI registry (a tag or a digest) to the manifest for
    one architecture and returns its metadata annotations and layers.
  - The cheap "what is available" probe; it reads the index and one manifest (and, with a signature
    policy, their signatures) and never downloads a layer.
author:
  - kubesolo.fleet maintainers (@kubesolo)
extends_documentation_fragment:
  - kubesolo.fleet.attributes
  - kubesolo.fleet.attributes.registry_module
  - kubesolo.fleet.attributes.no_diff
  - kubesolo.fleet.registry
  - kubesolo.fleet.registry.release
attributes:
  check_mode:
    support: full
    details: The module only reads; it behaves the same in check mode.
seealso:
  - module: kubesolo.fleet.update_stage
"""

EXAMPLES = r"""
- name: Find the stable release for this node's architecture
  kubesolo.fleet.update_info:
    repository: ghcr.io/portainer/kubesolo-os
  register: available

- name: Show the version
  ansible.builtin.debug:
    msg: "{{ available.metadata.version }} ({{ available.manifest_digest }})"

- name: Look up the arm64 build of a given version on a private mirror with its own CA
  kubesolo.fleet.update_info:
    repository: registry.example.com/kubesolo/os
    tag: v0.3.0
    architecture: arm64
    ca_path: /etc/pki/example-ca.pem

- name: Only accept a release signed with the publisher's cosign key
  kubesolo.fleet.update_info:
    repository: ghcr.io/portainer/kubesolo-os
    signature_keys:
      - "{{ lookup('ansible.builtin.file', 'kubesolo-release.pub') }}"
  register: signed

- name: Show who signed it
  ansible.builtin.debug:
    msg: "{{ signed.metadata.version }} signed by {{ signed.signature.key_fingerprint }}"
"""

RETURN = r"""
metadata:
  description: The C(io.kubesolo.os.*) annotations of the manifest; missing ones are empty strings.
  returned: success
  type: dict
  contains:
    version:
      description: The release version.
      type: str
      sample: v0.3.0
    channel:
      description: The release channel.
      type: str
      sample: stable
    min_compatible_version:
      description: The oldest version that may update straight to this release.
      type: str
      sample: v0.2.0
    architecture:
      description: The architecture the manifest declares.
      type: str
      sample: amd64
    release_notes:
      description: Short release notes.
      type: str
      sample: Fixes the boot counter reset.
    release_date:
      description: Release date, RFC 3339.
      type: str
      sample: "2026-11-01T12:00:00Z"
manifest_digest:
  description: Digest of the per-architecture manifest; stage by it to pin exactly this build.
  returned: success
  type: str
  sample: sha256:4f1b3c0d2e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c
index_digest:
  description: Digest of the image index the reference points at; null for a single manifest.
  returned: success
  type: str
  sample: sha256:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e
architecture:
  description: The normalized architecture (GOARCH, with a variant for 32-bit ARM) that was selected.
  returned: success
  type: str
  sample: arm64
available_architectures:
  description:
    - The architectures the release ships, from the index; for a single manifest the one it declares.
    - Index entries whose platform is not a well-formed name are not listed (they cannot be selected either).
  returned: success
  type: list
  elements: str
  sample: [amd64, arm64]
layers:
  description: The layers of the manifest.
  returned: success
  type: list
  elements: dict
  contains:
    media_type:
      description: Media type of the layer.
      type: str
      sample: application/vnd.kubesolo.os.kernel.v1+octet-stream
    digest:
      description: Digest of the layer.
      type: str
      sample: sha256:0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e9a8b7c6d5e4f3a2b1c
    size:
      description: Size of the layer in bytes.
      type: int
      sample: 12582912
signature:
  description:
    - What the signature policy (O(signature_policy)) found. Also returned when the task fails with C(error_code)
      V(signature_missing) or V(signature_invalid).
  returned: success, and failure by the signature policy
  type: dict
  contains:
    policy:
      description: The policy applied, V(required), V(if_present) or V(off) (V(auto) resolved).
      type: str
      sample: required
    verified:
      description: Whether a signature by a trusted key verified; false when the policy is V(off) or none is present.
      type: bool
      sample: true
    digest:
      description: The digest the verified signature signs, the index's or the platform manifest's; null if none.
      type: str
      sample: sha256:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e
    key_fingerprint:
      description:
        - C(sha256:) and the hex SHA-256 of the DER SubjectPublicKeyInfo of the key that verified it (what
          C(openssl pkey -pubin -outform DER | sha256sum) prints for its PEM); null if none.
      type: str
      sample: sha256:0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e9a8b7c6d5e4f3a2b1c
    source:
      description: The registry or mirror location that served the verified signature; null if none.
      type: str
      sample: ghcr.io
    problems:
      description: Why each signature that was found did not verify (at V(signature_invalid)); empty otherwise.
      type: list
      elements: str
      sample: []
sources:
  description: Which registry (the upstream or a mirror location) served each manifest, by digest.
  returned: success
  type: dict
  sample: {"sha256:4f1b3c0d2e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c": "mirror.example.com:5000"}
served_by:
  description:
    - Every host (C(host:port)) that answered this run with content, whatever led there - the upstream, a
      mirror, a host a redirect pointed to (a CDN, an object store) or a token service.
  returned: success
  type: list
  elements: str
  sample: ["ghcr.io:443", "pkg-containers.githubusercontent.com:443"]
mirror_errors:
  description: Why mirrors that were tried did not serve, in order (the next source was then used).
  returned: success
  type: list
  elements: str
  sample: ["mirror.example.com:5000: cannot reach registry mirror.example.com:5000: Connection refused"]
error_code:
  description:
    - On failure, a stable code for the kind of error, for example C(architecture_not_shipped),
      C(not_found), C(registry_unreachable), C(authentication_failed), C(invalid_manifest),
      C(digest_mismatch), C(invalid_reference), C(registry_error) (for example a redirect from HTTPS to
      plain HTTP, which is refused), C(signature_missing) and C(signature_invalid) (see O(signature_policy)).
    - C(internal_error) is an unexpected failure (a bug); it is reported like any other, never as a traceback.
  returned: failure
  type: str
  sample: architecture_not_shipped
"""

import platform

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubesolo.fleet.plugins.module_utils import _options, _signatures
from ansible_collections.kubesolo.fleet.plugins.module_utils._results import (
    fail_module,
    fail_without_cryptography,
    fail_without_requests,
)


def main():
    module = AnsibleModule(
        argument_spec=_options.registry_argument_spec(),
        mutually_exclusive=_options.REGISTRY_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    fail_without_requests(module)
    fail_without_cryptography(module, _signatures.effective_policy(module.params) != _signatures.POLICY_OFF)
    client = None
    try:
        client = _options.mirrored_client_from_params(module.params)
        release = _options.resolve_from_params(client, module.params, platform.machine())
    except Exception as exc:  # pylint: disable=broad-except  # a result with an error_code, never a traceback
        fail_module(module, exc, client)
    module.exit_json(
        changed=False,
        sources=client.sources,
        served_by=sorted(client.served_by),
        mirror_errors=client.mirror_errors,
        **release.summary(),
    )


if __name__ == "__main__":
    main()
