# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options shared by the modules that talk to a registry."""

    DOCUMENTATION = r"""
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
  client_cert:
    description:
      - A PEM client certificate for registries that require mutual TLS; with O(client_key) unless the file
        holds the key too.
      - It is presented to the registry's own scheme, host and port only, never to a host a redirect leads to
        or to a token service elsewhere.
    type: path
  client_key:
    description: The PEM private key of O(client_cert).
    type: path
  timeout:
    description:
      - Seconds to wait for a connection or for the next bytes of an answer.
      - A manifest, index, token or error answer must also arrive whole within three times this, counted from
        the request; a slower one fails as unreachable (and a mirror is left for the next source). A blob
        download that delivers less than 64 KiB within this many seconds is a stall, resumed within O(retries).
    type: float
    default: 30
  retries:
    description:
      - How many times a read from the registry is tried again after a connection error, a timeout, HTTP 408,
        429 or 5xx. A broken blob download resumes where it stopped (HTTP Range) instead of starting over.
      - Other 4xx answers fail at once.
    type: int
    default: 5
  retry_max_wait:
    description:
      - The longest wait before a retry, in seconds. A C(Retry-After) answer (seconds or an HTTP date) is honoured up
        to this; otherwise waits grow exponentially with jitter from half a second.
    type: float
    default: 60
  retry_budget:
    description:
      - The most seconds the waits between retries of one run may add up to; past it the last error is reported.
    type: float
    default: 300
  username:
    description:
      - User name for the registry. With O(password), wins over O(registry_config).
      - Used for Basic challenges and to obtain bearer tokens; without any credentials the module pulls anonymously.
    type: str
  password:
    description:
      - Password or access token for O(username). Never logged or returned.
    type: str
  registry_config:
    description:
      - A docker C(config.json) to take credentials from, read on the machine that talks to the registry.
      - Defaults to C($DOCKER_CONFIG/config.json), else C(~/.docker/config.json); a missing default file means
        anonymous access, a missing explicit one is an error.
      - Supported entries, in docker's order, are C(credHelpers) for the registry host, C(auths) (C(auth) as base64
        C(user:password), or C(identitytoken)), then C(credsStore). Helpers run as C(docker-credential-<name> get)
        and must be on C(PATH).
    type: path
requirements:
  - requests (Python library) on the machine that runs the module
  - cryptography (Python library) on the machine that verifies or makes signatures
notes:
  - Public registries that hand out anonymous bearer tokens for pulls (such as C(ghcr.io))
    work without credentials. Bearer tokens are cached per scope for the run and fetched again once when
    the registry rejects one; a token realm over plain HTTP is refused for an HTTPS registry.
  - Redirects (CDN or object-store blob locations) are followed up to 10 hops, but C(Authorization) and the
    client certificate are never sent to another scheme, host or port, and a redirect from HTTPS to plain HTTP
    is refused. Proxies from the standard C(HTTPS_PROXY), C(HTTP_PROXY) and C(NO_PROXY)
    environment variables are used.
"""

    # Options of the modules that read one release for one architecture.
    RELEASE = r"""
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
        GOARCH names; C(arm64/v8) is the same as C(arm64). The architecture and the variant are names of
        lowercase letters, digits, C(.), C(_) and C(-), up to 32 characters.
      - Defaults to the architecture of the machine that runs the module.
    type: str
  mirrors:
    description:
      - Registries tried in order, before the upstream O(repository), for manifests by digest and for blobs.
        Any failure at a mirror (unreachable, missing, wrong content) falls back to the next one and finally
        to the upstream. Everything a mirror serves is verified against the digest the upstream named.
      - Tags are resolved at the upstream unless O(mirror_tags) is true.
      - Each mirror has its own TLS settings and credentials; the upstream's credentials are never sent to
        a mirror.
    type: list
    elements: dict
    default: []
    suboptions:
      location:
        description:
          - The mirror as C(host[:port]) or C(host[:port]/prefix); the repository path is appended, after the prefix.
        type: str
        required: true
      plain_http:
        description: Talk to this mirror over plain HTTP.
        type: bool
        default: false
      validate_certs:
        description: Verify this mirror's TLS certificate.
        type: bool
        default: true
      ca_path:
        description: CA bundle file or directory for this mirror.
        type: path
      client_cert:
        description: Client certificate for this mirror.
        type: path
      client_key:
        description: Private key of O(mirrors[].client_cert).
        type: path
      username:
        description: User name for this mirror; else the docker config is consulted for its host.
        type: str
      password:
        description: Password for O(mirrors[].username).
        type: str
  mirror_tags:
    description: Also resolve the tag at the mirrors (only for mirrors you trust to be current).
    type: bool
    default: false
  signature_keys:
    description:
      - Public keys (PEM) trusted to sign releases, each given inline or as the path of a file. ECDSA keys (what
        C(cosign generate-key-pair) makes) with SHA-256, RSA keys (PKCS#1 v1.5 with SHA-256) and Ed25519 keys are
        accepted, as cosign verifies them.
      - Files are read on the controller by M(kubesolo.fleet.update_stage), and on the machine that runs the module by
        M(kubesolo.fleet.update_info); a relative path is relative to the current directory there (not to a role's
        C(files/); use the P(ansible.builtin.file#lookup) lookup for that). Only regular files are read, and a private
        key is refused.
      - At most 32 signatures per digest are looked at; whoever can push to the signature tag can hide a valid
        signature behind junk (the release is then refused, never accepted).
      - A signature by any one of them is enough.
    type: list
    elements: str
    default: []
  signature_policy:
    description:
      - What the release must carry, checked after the reference is resolved to digests and before any layer is
        read, in check mode too.
      - V(required) - a cosign signature by a trusted key, on the index the reference names or on the platform
        manifest it selects, whose payload names that digest and this O(repository). Fails with C(error_code)
        V(signature_missing) when there is none and V(signature_invalid) when one is present but none verifies.
      - V(if_present) - releases without any signature pass; a signature that is present must verify, else
        V(signature_invalid).
      - V(off) - signatures are not looked at.
      - V(auto) - V(required) when O(signature_keys) are given, else V(off).
      - Signatures are looked up in cosign's layout (tag C(sha256-<hex>.sig)) at the mirror that served the digest, if
        one did, and at the upstream; a signature must name the upstream O(repository) wherever it is served.
    type: str
    default: auto
    choices: [auto, required, if_present, "off"]
"""
