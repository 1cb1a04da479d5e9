#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: update_stage
short_description: Download and verify a KubeSolo OS release into a stage directory
version_added: 0.1.0
description:
  - Resolves a KubeSolo OS release in an OCI registry to the manifest for one architecture and
    stages its kernel layer (C(application/vnd.kubesolo.os.kernel.v1+octet-stream)) as
    C(<dest>/vmlinuz) and its initramfs layer (C(application/vnd.kubesolo.os.initramfs.v1+gzip))
    as C(<dest>/kubesolo-os.gz), with a C(<dest>/release.json) record of what was staged.
    Other layers are ignored.
  - Every byte is checked against the layer's size and digest while it streams to disk.
    Both layers are downloaded into a temporary directory beside O(dest) and published together
    with one atomic rename, so O(dest) always holds either the previous release or the new one,
    complete and verified. A failed attempt leaves the previous release untouched and no partial
    files.
  - Idempotent by digest. When O(dest) already holds this manifest (by its record, with the files
    at their recorded sizes), nothing is downloaded and C(changed) is false.
  - O(dest) is a symbolic link that the module manages, pointing into the hidden sibling
    directory C(.<name>.kubesolo-fleet) where the releases are kept. An existing empty directory
    at O(dest) is replaced; anything else at O(dest) that the module did not create is refused.
author:
  - kubesolo.fleet maintainers (@kubesolo)
extends_documentation_fragment:
  - kubesolo.fleet.attributes
  - kubesolo.fleet.registry
  - kubesolo.fleet.registry.release
options:
  dest:
    description:
      - Absolute path where the release is staged. The parent directories are created.
    type: path
    required: true
  verify_existing:
    description:
      - Re-hash an already staged release against its record instead of comparing sizes,
        to find files that were changed in place. Costs a full read of the staged files.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Resolves the release and reports whether it would be staged; downloads and writes nothing.
  diff_mode:
    support: full
    details: Shows the version and manifest digest before and after.
  idempotent:
    support: full
  action_group:
    support: full
seealso:
  - module: kubesolo.fleet.update_info
'''

EXAMPLES = r'''
- name: Stage the stable release for this node
  kubesolo.fleet.update_stage:
    repository: ghcr.io/portainer/kubesolo-os
    dest: /var/lib/kubesolo/update/staged
  register: staged

- name: Stage exactly the build that update_info resolved, whatever the tag says now
  kubesolo.fleet.update_stage:
    repository: ghcr.io/portainer/kubesolo-os
    digest: "{{ available.manifest_digest }}"
    dest: /var/lib/kubesolo/update/staged

- name: Share registry options between modules
  module_defaults:
    group/kubesolo.fleet.registry:
      repository: registry.example.com/kubesolo/os
      ca_path: /etc/pki/example-ca.pem
  block:
    - name: Stage v0.3.0
      kubesolo.fleet.update_stage:
        tag: v0.3.0
        dest: /var/lib/kubesolo/update/staged
'''

RETURN = r'''
staged:
  description: Where the release is staged (on success, also when nothing changed).
  returned: success
  type: dict
  contains:
    vmlinuz_path:
      description: Path of the staged kernel.
      type: str
      sample: /var/lib/kubesolo/update/staged/vmlinuz
    initramfs_path:
      description: Path of the staged initramfs.
      type: str
      sample: /var/lib/kubesolo/update/staged/kubesolo-os.gz
    version:
      description: Version of the staged release.
      type: str
      sample: v0.3.0
metadata:
  description: The C(io.kubesolo.os.*) annotations of the manifest, as in M(kubesolo.fleet.update_info).
  returned: success
  type: dict
  sample:
    version: v0.3.0
    channel: stable
    min_compatible_version: v0.2.0
    architecture: amd64
    release_notes: ""
    release_date: "2026-11-01T12:00:00Z"
manifest_digest:
  description: Digest of the staged per-architecture manifest.
  returned: success
  type: str
  sample: sha256:4f1b3c0d2e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c
index_digest:
  description: Digest of the index the reference points at; null for a single manifest.
  returned: success
  type: str
  sample: sha256:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e
architecture:
  description: The normalized architecture that was selected.
  returned: success
  type: str
  sample: amd64
available_architectures:
  description: The architectures the release ships.
  returned: success
  type: list
  elements: str
  sample: [amd64, arm64]
layers:
  description: The layers of the manifest (media_type, digest, size).
  returned: success
  type: list
  elements: dict
  sample:
    - media_type: application/vnd.kubesolo.os.kernel.v1+octet-stream
      digest: sha256:0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e9a8b7c6d5e4f3a2b1c
      size: 12582912
bytes_downloaded:
  description: Blob bytes fetched from the registry by this run; 0 when nothing changed or in check mode.
  returned: success
  type: int
  sample: 41943040
error_code:
  description: On failure, a stable code for the kind of error (see M(kubesolo.fleet.update_info)),
    plus C(layer_missing), C(size_mismatch) and C(stage_failed).
  returned: failure
  type: str
  sample: digest_mismatch
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError, ParameterError
from ansible_collections.kubesolo.fleet.plugins.module_utils._module import (
    REGISTRY_MUTUALLY_EXCLUSIVE,
    fail,
    registry_argument_spec,
    resolve_release,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._stage import current_release, stage


def main():
    module = AnsibleModule(
        argument_spec=registry_argument_spec(
            dest=dict(type='path', required=True),
            verify_existing=dict(type='bool', default=False),
        ),
        mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    dest = module.params['dest']
    if not os.path.isabs(dest) or dest.rstrip('/') in ('', '/'):
        fail(module, ParameterError('dest must be an absolute path below /, got %r' % dest))
    dest = os.path.normpath(dest)
    client, release = resolve_release(module)
    try:
        layers = release.staged_layers()
        current = current_release(dest, rehash=module.params['verify_existing'])
        changed = not current or current.get('manifest_digest') != release.manifest_digest
        bytes_downloaded = 0
        if changed and not module.check_mode:
            bytes_downloaded = stage(client, release, dest)[1]
    except FleetError as exc:
        fail(module, exc)
    paths = dict((name, os.path.join(dest, name)) for name, _layer in layers)
    result = dict(
        changed=changed,
        staged=dict(vmlinuz_path=paths['vmlinuz'], initramfs_path=paths['kubesolo-os.gz'],
                    version=release.metadata['version']),
        bytes_downloaded=bytes_downloaded,
        **release.summary()
    )
    if module._diff:
        result['diff'] = dict(before=_diff_view(current), after=_diff_view(release.summary()))
    module.exit_json(**result)


def _diff_view(state):
    if not state:
        return {}
    version = state.get('version') or state.get('metadata', {}).get('version', '')
    return {'version': version, 'manifest_digest': state['manifest_digest']}


if __name__ == '__main__':
    main()
