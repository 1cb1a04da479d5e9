# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The modules' options: argument specs, and the client and release they name.

The options are documented once, in the kubesolo.fleet.registry doc fragments.
Nothing here needs Ansible, so the action plugin, the test drivers and the
benchmark use the same functions as the modules.
"""

from __future__ import annotations

import os

from ansible_collections.kubesolo.fleet.plugins.module_utils._credentials import resolve_credentials
from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import ParameterError
from ansible_collections.kubesolo.fleet.plugins.module_utils._mirrors import MirroredClient
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._client import RegistryClient
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import (
    parse_digest,
    parse_repository,
    validate_tag,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._release import resolve
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy
from ansible_collections.kubesolo.fleet.plugins.module_utils._signatures import (
    SignaturePolicy,
    signature_argument_spec,
    verify_release,
)

DEFAULT_TAG = "stable"


def _endpoint_options():
    """How to talk to one registry: the upstream or a mirror."""
    return dict(
        plain_http=dict(type="bool", default=False),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        client_cert=dict(type="path"),
        client_key=dict(type="path"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
    )


def connection_argument_spec(**extra):
    """Options of the kubesolo.fleet.registry doc fragment."""
    spec = dict(
        repository=dict(type="str", required=True),
        timeout=dict(type="float", default=30),
        retries=dict(type="int", default=5),
        retry_max_wait=dict(type="float", default=60),
        retry_budget=dict(type="float", default=300),
        registry_config=dict(type="path"),
        **_endpoint_options(),
    )
    spec.update(extra)
    return spec


MIRROR_SPEC = dict(location=dict(type="str", required=True), **_endpoint_options())


def registry_argument_spec(**extra):
    """Connection options plus those of the kubesolo.fleet.registry.release fragment."""
    return connection_argument_spec(
        tag=dict(type="str"),
        digest=dict(type="str"),
        architecture=dict(type="str"),
        mirrors=dict(type="list", elements="dict", options=MIRROR_SPEC, default=[]),
        mirror_tags=dict(type="bool", default=False),
        **signature_argument_spec(),
        **extra,
    )


REGISTRY_MUTUALLY_EXCLUSIVE = [("tag", "digest")]


# Bytes per command of the shell stream (plugin_utils/_node_transfer.py): the controller's
# memory per node, and what a broken link costs at most.
DEFAULT_TRANSFER_CHUNK_SIZE = 8 * 1024 * 1024
MIN_TRANSFER_CHUNK_SIZE = 64 * 1024


def stage_argument_spec():
    """update_stage's options; its action plugin validates controller delivery with them."""
    return registry_argument_spec(
        dest=dict(type="path", required=True),
        verify_existing=dict(type="bool", default=False),
        delivery=dict(type="str", default="host", choices=["host", "controller"]),
        controller_cache=dict(type="path"),
        controller_cache_keep=dict(type="int", default=3),
        lock_timeout=dict(type="float", default=300),
        node_transfer=dict(type="str", default="auto", choices=["auto", "put_file", "shell"]),
        transfer_rate_limit=dict(type="int", default=0),
        transfer_chunk_size=dict(type="int", default=DEFAULT_TRANSFER_CHUNK_SIZE),
    )


def check_node_transfer(params):
    """Refuse node transfer options that cannot work."""
    if params["transfer_rate_limit"] < 0:
        raise ParameterError("transfer_rate_limit must not be negative (0 means no limit)")
    if params["transfer_chunk_size"] < MIN_TRANSFER_CHUNK_SIZE:
        raise ParameterError(f"transfer_chunk_size must be at least {MIN_TRANSFER_CHUNK_SIZE} bytes")


def default_params(argument_spec):
    """The options of ``argument_spec`` at their defaults (for callers outside Ansible)."""
    return dict((name, spec.get("default")) for name, spec in argument_spec.items())


def _client(repository, options, config_path, retry):
    """A client for ``repository`` with the TLS and credential ``options`` of one registry."""
    credentials = resolve_credentials(
        repository.registry, options.get("username"), options.get("password"), config_path
    )
    return RegistryClient(
        repository,
        plain_http=options["plain_http"],
        validate_certs=options["validate_certs"],
        ca_path=options.get("ca_path"),
        client_cert=options.get("client_cert"),
        client_key=options.get("client_key"),
        timeout=options["timeout"],
        credentials=credentials,
        retry=retry,
    )


def client_from_params(params):
    """The registry client for the connection options; raises FleetError."""
    repository = parse_repository(params["repository"])
    if params["timeout"] <= 0:
        raise ParameterError("timeout must be a positive number of seconds")
    if params["retries"] < 0 or params["retry_max_wait"] < 0 or params["retry_budget"] < 0:
        raise ParameterError("retries, retry_max_wait and retry_budget must not be negative")
    retry = RetryPolicy(params["retries"], params["retry_max_wait"], params["retry_budget"])
    return _client(repository, params, params["registry_config"], retry)


def mirrored_client_from_params(params):
    """The upstream client with the ``mirrors`` of the options in front of it."""
    upstream = client_from_params(params)
    mirrors = []
    for mirror in params["mirrors"] or []:
        host, _sep, prefix = mirror["location"].strip("/").partition("/")
        path = f"{prefix}/{upstream.repository.path}" if prefix else upstream.repository.path
        repository = parse_repository(f"{host}/{path}")
        # A mirror is not worth waiting for: any fault moves on to the next source.
        mirrors.append(
            (
                mirror["location"],
                _client(
                    repository,
                    dict(mirror, timeout=params["timeout"]),
                    params["registry_config"],
                    RetryPolicy(retries=0),
                ),
            )
        )
    return MirroredClient(upstream, mirrors, mirror_tags=params["mirror_tags"])


def resolve_from_params(client, params, default_architecture):
    """The release the release options name, read through ``client`` and checked against the
    signature policy before anything else is read; raises FleetError."""
    if params["digest"]:
        parse_digest(params["digest"])
    else:
        validate_tag(params["tag"] or DEFAULT_TAG)
    policy = SignaturePolicy.from_params(params)
    release = resolve(
        client,
        params["architecture"] or default_architecture,
        tag=params["tag"] or DEFAULT_TAG,
        digest=params["digest"],
    )
    release.signature = verify_release(client, release, policy)
    return release


def stage_dest(dest):
    """The normalised absolute ``dest`` of update_stage; raises ParameterError."""
    if not isinstance(dest, str) or not os.path.isabs(dest) or dest.rstrip("/") in ("", "/"):
        raise ParameterError(f"dest must be an absolute path below /, got {dest!r}")
    return os.path.normpath(dest)
