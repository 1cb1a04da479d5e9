# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every registry module shares: options, client set-up, error reporting.

The options here are documented once, in the kubesolo.fleet.registry doc fragment.
"""

from __future__ import annotations

import platform

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError, ParameterError
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import (
    parse_digest,
    parse_repository,
    validate_tag,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._registry import (
    HAS_REQUESTS,
    REQUESTS_IMPORT_ERROR,
    RegistryClient,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._release import resolve

DEFAULT_TAG = 'stable'


def connection_argument_spec(**extra):
    """Options of the kubesolo.fleet.registry doc fragment."""
    spec = dict(
        repository=dict(type='str', required=True),
        plain_http=dict(type='bool', default=False),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        timeout=dict(type='float', default=30),
    )
    spec.update(extra)
    return spec


def registry_argument_spec(**extra):
    """Connection options plus those of the kubesolo.fleet.registry.release fragment."""
    return connection_argument_spec(tag=dict(type='str'), digest=dict(type='str'),
                                    architecture=dict(type='str'), **extra)


REGISTRY_MUTUALLY_EXCLUSIVE = [('tag', 'digest')]


def require_requests(module):
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib('requests'), exception=REQUESTS_IMPORT_ERROR)


def fail(module, error, **extra):
    """Fail with the error's message and its stable code (never a traceback)."""
    extra.update(error.details())
    module.fail_json(msg=str(error), error_code=error.code, **extra)


def new_client(module):
    """Validate the connection options and build the client; fails the module on error."""
    require_requests(module)
    params = module.params
    try:
        repository = parse_repository(params['repository'])
        if params['timeout'] <= 0:
            raise ParameterError('timeout must be a positive number of seconds')
    except FleetError as exc:
        fail(module, exc)
    return RegistryClient(repository, plain_http=params['plain_http'],
                          validate_certs=params['validate_certs'], ca_path=params['ca_path'],
                          timeout=params['timeout'])


def resolve_release(module):
    """Connect and resolve the release the options name.

    Returns (client, release); fails the module on any error.
    """
    client = new_client(module)
    params = module.params
    try:
        if params['digest']:
            parse_digest(params['digest'])
        else:
            validate_tag(params['tag'] or DEFAULT_TAG)
        release = resolve(client, params['architecture'] or platform.machine(),
                          tag=params['tag'] or DEFAULT_TAG, digest=params['digest'])
    except FleetError as exc:
        fail(module, exc)
    return client, release
