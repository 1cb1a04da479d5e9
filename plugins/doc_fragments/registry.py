# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options shared by the modules that talk to a registry."""

    DOCUMENTATION = r'''
options:
  repository:
    description:
      - The OCI repository that holds the KubeSolo OS releases, as C(host[:port]/path)
        without tag or digest, for example C(ghcr.io/portainer/kubesolo-os) or
        C(registry.example.com:5000/kubesolo/os).
      - C(docker.io) is talked to at its API host C(registry-1.docker.io).
    type: str
    required: true
  plain_http:
    description:
      - Talk to the registry over plain HTTP instead of HTTPS. Only for registries on a trusted
        network or on the loopback interface.
    type: bool
    default: false
  validate_certs:
    description:
      - Verify the registry's TLS certificate. Turn this off only for testing.
    type: bool
    default: true
  ca_path:
    description:
      - A CA bundle file, or a directory of hashed CA certificates, to verify the registry's
        certificate with, instead of the system trust store.
    type: path
  timeout:
    description:
      - Seconds to wait for a connection or for the next bytes of an answer.
    type: float
    default: 30
requirements:
  - requests (Python library) on the machine that runs the module
notes:
  - Public registries that hand out anonymous bearer tokens for pulls (such as C(ghcr.io))
    work without credentials.
'''

    # Options of the modules that read one release for one architecture.
    RELEASE = r'''
options:
  tag:
    description:
      - The tag of the release, for example C(stable) or C(v0.3.0).
      - Defaults to C(stable) when O(digest) is not set.
      - The tag may point at an image index (one manifest per architecture) or at a single
        manifest.
    type: str
  digest:
    description:
      - Pin the release by the digest of its index or of a manifest, for example
        C(sha256:3b1f...). The fetched bytes must hash to it.
      - Mutually exclusive with O(tag).
    type: str
  architecture:
    description:
      - The architecture to select from an index, in GOARCH or C(uname -m) form
        (C(amd64), C(x86_64), C(arm64), C(aarch64), C(arm/v7), C(armv7l)...). It is normalized to
        GOARCH names; C(arm64/v8) is the same as C(arm64).
      - Defaults to the architecture of the machine that runs the module.
    type: str
'''
