#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: update_stage
short_description: Download and verify a KubeSolo OS release into a stage directory
version_added: 0.1.0
description:
  - Resolves a KubeSolo OS release in an OCI registry to the manifest for one architecture and
    stages its kernel layer (C(application/vnd.kubesolo.os.kernel.v1+octet-stream)) as
    C(<dest>/vmlinuz) and its initramfs layer (C(application/vnd.kubesolo.os.initramfs.v1+gzip))
    as C(<dest>/kubesolo-os.gz), with a C(<dest>/release.json) record of what was staged.
    Other layers are ignored.
  - With O(signature_keys) (or O(signature_policy) other than V(off)), the release's cosign signature is verified
    right after the reference is resolved to its digests, before any layer is read or anything is written, also
    when O(dest) already holds the release; a release that fails the policy is not staged and O(dest) keeps
    what it holds. With O(delivery=controller) the signature is verified on the controller.
  - Every byte is checked against the layer's size and digest while it streams to disk. An interrupted
    download (network fault, killed process, power loss) is kept in the store and resumed by the next run,
    and faults worth it are retried (see O(retries)).
    Both layers are downloaded into a temporary directory beside O(dest) and published together
    with one atomic rename, so O(dest) always holds either the previous release or the new one,
    complete and verified. A failed attempt leaves the previous release untouched and nothing partial
    at a final path; bytes downloaded and verified so far stay in the hidden store for the next run to resume.
  - Idempotent by digest. When O(dest) already holds this manifest (by its record, with the files
    at their recorded sizes), nothing is downloaded and C(changed) is false.
  - O(dest) is a symbolic link that the module manages, pointing into the hidden sibling
    directory C(.<name>.kubesolo-fleet) where the releases are kept. An existing empty directory
    at O(dest) is replaced; anything else at O(dest) that the module did not create is refused.
author:
  - kubesolo.fleet maintainers (@kubesolo)
extends_documentation_fragment:
  - kubesolo.fleet.attributes
  - kubesolo.fleet.attributes.registry_module
  - kubesolo.fleet.registry
  - kubesolo.fleet.registry.release
options:
  dest:
    description:
      - Absolute path where the release is staged. The parent directories are created.
      - The releases live in the hidden sibling directory C(.<name>.kubesolo-fleet) beside it. Before
        anything is read or written there, every directory above it must belong to root or the staging
        user and be writable by its owner alone (unless it is root's and sticky, like C(/tmp)), and the
        store must be a real directory of the staging user that only it can write; otherwise the task
        fails with C(error_code=unsafe_path) naming the path, since another account could swap what a
        node boots.
    type: path
    required: true
  verify_existing:
    description:
      - Re-hash an already staged release instead of comparing sizes, to find files that were changed
        in place. When it is the release being staged, its files are checked against the manifest's layer
        digests, not against its record (which whoever changed a file could have rewritten too). Costs a
        full read of the staged files (with O(delivery=controller), C(sha256sum) on the node). A new release is always checked with
        C(sha256sum) on the node after it was copied there, whatever this option says.
    type: bool
    default: false
  delivery:
    description:
      - V(host) runs the module on the node, which pulls from the registry itself; the node needs
        Python and the C(requests) library, and must reach the registry.
      - V(controller) is for nodes without Python, such as real KubeSolo OS nodes. The controller
        resolves the release and downloads each layer once into O(controller_cache) (forks staging the
        same release share one download), copies the layers to the node over the connection (sftp or
        scp) into a temporary directory beside O(dest), checks them there with C(sha256sum), and
        publishes them exactly as host delivery does. The node needs only SSH, a POSIX C(sh) and
        busybox-style C(sha256sum), C(mktemp), C(mv -T), C(ln), C(readlink), C(base64), C(df) and
        C(awk); free space for the release plus 10% is checked first. When the node already holds
        the release (record and file digests match) nothing is transferred.
      - With V(controller) and no O(architecture), the node's C(uname -m) selects the build.
    type: str
    choices: [host, controller]
    default: host
  controller_cache:
    description:
      - Directory on the controller for the content-addressed blob cache of O(delivery=controller).
      - Defaults to C(kubesolo-fleet) in C($XDG_CACHE_HOME), else in C(~/.cache).
      - The cache is private to the user that runs Ansible (directories C(0700), files C(0600)). For sha256
        layers the node checks the copied files against the manifest's digest, whatever the cache holds.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another run that is staging into the same O(dest) (a lock in the store serializes
        them, host and controller delivery alike), and with O(delivery=controller) for another run fetching
        the same blob into the controller cache; then the task fails, naming the holder.
      - The store's lock is a directory C(.lock) naming its holder (process id, start time, boot id), as a
        node may have no C(flock). A lock whose holder is gone, or was taken in an earlier boot, is taken
        over at once. With O(delivery=controller) a keeper process on the node holds it for the controller
        and its lease is renewed at every step; a controller killed without releasing it blocks a node
        for at most 30 minutes, and not at all for the next run from the same controller machine.
      - Lock files are private to the user (mode C(0600)), so another user cannot hold them.
    type: float
    default: 300
  controller_cache_keep:
    description:
      - After a controller delivery, keep the blobs of this many most recently used releases in the
        cache and remove the rest. V(0) never prunes.
    type: int
    default: 3
  node_transfer:
    description:
      - With O(delivery=controller), how the layers go from the controller to the node.
      - V(shell) streams each layer through the connection's command channel in chunks of
        O(transfer_chunk_size) bytes, so a node needs nothing but a POSIX shell (busybox will do; no
        C(sftp-server), no C(scp)). The node appends each chunk to C(<name>.part) with C(tee) while
        C(sha256sum) hashes the same bytes, and the controller compares that with its own hash of the chunk;
        the layer is kept only when every chunk matched and the controller's hash of all of them is the
        manifest's digest. The node reads each byte once, and nothing is taken on trust from the cache.
      - A broken link costs the chunk in flight. The stream is tried again (O(retries), with backoff) from the
        last chunk that matched, and a run that fails or is killed leaves what arrived in the store's
        C(partial-<digest>) directory; the next run hashes it on the node once and goes on from there if it
        is the start of the layer, or removes it.
      - V(put_file) copies each layer with the connection's own file transfer (sftp or scp with the C(ssh)
        connection, never its C(piped) fallback, which holds the whole file in the controller's memory); the
        node hashes the files when the release is published. A broken copy starts again from byte 0.
      - V(auto) uses V(put_file) while it works and switches to V(shell) for the rest of the task from the
        first layer the connection cannot copy or whose copy breaks (the stream resumes what the copy left).
        RV(transfer.method) says which moved the bytes.
    type: str
    choices: [auto, put_file, shell]
    default: auto
  transfer_rate_limit:
    description:
      - With O(delivery=controller), the most bytes per second sent to this node, on average over the
        transfer; V(0) sets no limit. Each node has its own limit, so a play's forks multiply it.
      - V(shell) paces its chunks (of at most one second's worth each); V(put_file) passes the limit to
        C(sftp -l) or C(scp -l), so with another connection than C(ssh) a limit makes V(auto) stream through
        the shell and V(put_file) fail.
    type: int
    default: 0
  transfer_chunk_size:
    description:
      - With O(node_transfer=shell), the bytes sent per command (at least 65536). The controller holds one
        chunk per node in memory; a broken link costs at most one chunk.
    type: int
    default: 8388608
attributes:
  action:
    support: full
    description: Has an action plugin that runs controller delivery on the controller.
  check_mode:
    support: full
    details: Resolves the release and reports whether it would be staged; downloads and writes nothing.
  diff_mode:
    support: full
    details: Shows the version and manifest digest before and after.
seealso:
  - module: kubesolo.fleet.update_info
"""

EXAMPLES = r"""
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

- name: Stage on a KubeSolo OS node without Python, pulling on the controller
  kubesolo.fleet.update_stage:
    repository: ghcr.io/portainer/kubesolo-os
    dest: /var/lib/kubesolo/update/staged
    delivery: controller

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

- name: Stage only what the publisher signed (the key file is on the controller)
  kubesolo.fleet.update_stage:
    repository: ghcr.io/portainer/kubesolo-os
    dest: /var/lib/kubesolo/update/staged
    signature_keys:
      - /etc/kubesolo-fleet/kubesolo-release.pub
    signature_policy: required
"""

RETURN = r"""
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
  description:
    - Blob bytes fetched from the registry by this run; 0 when nothing changed or in check mode.
    - With controller delivery, bytes fetched into the controller cache; 0 when the cache already held them.
  returned: success
  type: int
  sample: 41943040
bytes_transferred:
  description: Layer bytes sent to the node over the connection, resends included (as RV(transfer.sent_bytes)).
  returned: success and O(delivery=controller)
  type: int
  sample: 41943040
transfer:
  description: How the transfer went, also returned on failure.
  returned: always
  type: dict
  contains:
    retries:
      description: Requests tried again after a fault.
      type: int
      sample: 2
    last_error:
      description: The last fault that caused a retry, or an empty string.
      type: str
      sample: registry ghcr.io answered HTTP 503
    resumed_bytes:
      description:
        - Bytes that did not have to be moved again after an interruption - of blobs resumed from an
          interrupted download, and with O(delivery=controller) of layers the node already held from an
          interrupted transfer to it.
      type: int
      sample: 16777216
    method:
      description: With O(delivery=controller), how the layers went to the node, V(shell) or V(put_file).
      returned: O(delivery=controller)
      type: str
      sample: shell
    sent_bytes:
      description:
        - With O(delivery=controller), layer bytes sent to the node by this run, including bytes sent again
          after an interruption; 0 when the node already held the release.
      returned: O(delivery=controller)
      type: int
      sample: 41943040
    interruptions:
      description: With O(delivery=controller), how often the transfer to the node broke and was tried again.
      returned: O(delivery=controller)
      type: int
      sample: 0
    fetched_bytes:
      description: Blob bytes that arrived from registries in this run, including any that had to be fetched again.
      type: int
      sample: 41943040
signature:
  description:
    - What the signature policy (O(signature_policy)) found, with the fields of
      RV(kubesolo.fleet.update_info#module:signature). Also returned when the task fails with C(error_code)
      V(signature_missing) or V(signature_invalid).
  returned: success, and failure by the signature policy
  type: dict
  sample:
    policy: required
    verified: true
    digest: sha256:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e
    key_fingerprint: sha256:0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e9a8b7c6d5e4f3a2b1c
    source: ghcr.io
    problems: []
sources:
  description:
    - Which registry (the upstream or a mirror location) served each manifest and layer fetched by this run, by digest.
  returned: success
  type: dict
  sample: {"sha256:0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c4f1b3c0d2e9a8b7c6d5e4f3a2b1c": "mirror.example.com:5000"}
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
  sample: []
delivery:
  description: How the release was delivered, V(host) or V(controller).
  returned: success
  type: str
  sample: controller
error_code:
  description: On failure, a stable code for the kind of error (see M(kubesolo.fleet.update_info)),
    plus C(layer_missing), C(size_mismatch), C(stage_failed) and C(unsafe_path) (see O(dest)); with a signature
    policy C(signature_missing) and C(signature_invalid).
  returned: failure
  type: str
  sample: digest_mismatch
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubesolo.fleet.plugins.module_utils import _options, _signatures, _staging
from ansible_collections.kubesolo.fleet.plugins.module_utils._host_store import HostStore
from ansible_collections.kubesolo.fleet.plugins.module_utils._results import (
    fail_module,
    fail_without_cryptography,
    fail_without_requests,
    stage_result,
)


def main():
    module = AnsibleModule(
        argument_spec=_options.stage_argument_spec(),
        mutually_exclusive=_options.REGISTRY_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    params = module.params
    client = None
    try:
        store = HostStore(_options.stage_dest(params["dest"]), params["lock_timeout"])
        fail_without_requests(module)
        fail_without_cryptography(module, _signatures.effective_policy(module.params) != _signatures.POLICY_OFF)
        client = _options.mirrored_client_from_params(params)
        outcome = _staging.stage_release(client, params, store, check_mode=module.check_mode)
    except Exception as exc:  # pylint: disable=broad-except  # a result with an error_code, never a traceback
        fail_module(module, exc, client)
    module.exit_json(**stage_result(outcome, store.dest, store.delivery, client, module._diff))


if __name__ == "__main__":
    main()
