# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""Pushing to a registry (update_publish): existence checks, blob uploads, manifest puts."""

from __future__ import annotations

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import RegistryResponseError
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._manifests import ANY_MANIFEST_MEDIA_TYPES
from ansible_collections.kubesolo.fleet.plugins.module_utils._oci._transport import (
    check_status,
    registry_error_message,
    requests,
)


def exists(client, kind, reference):
    """None when a blob or manifest (``kind`` 'blobs' or 'manifests') is missing, else its digest
    header ('' if not sent)."""
    url = f"{client.base_url}/{kind}/{reference}"
    response = client.request("HEAD", url, headers={"Accept": ", ".join(ANY_MANIFEST_MEDIA_TYPES)})
    with response:
        if response.status_code == 404:
            return None
        check_status(client, response, f"{kind[:-1]} {reference}")
        return response.headers.get("Docker-Content-Digest", "")


def upload_blob(client, digest, size, fileobj):
    """Upload a blob in one PUT, streaming ``fileobj`` (``size`` bytes)."""
    response = client.request("POST", f"{client.base_url}/blobs/uploads/")
    with response:
        if response.status_code != 202 or not response.headers.get("Location"):
            raise RegistryResponseError(
                f"the registry answered HTTP {response.status_code} to an upload request for {client.repository}{registry_error_message(client, response)}"
            )
        location = response.headers["Location"]
    url = requests.compat.urljoin(f"{client.scheme}://{client.repository.api_host}/", location)
    url += ("&" if "?" in url else "?") + "digest=" + digest
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    response = client.request("PUT", url, headers=headers, data=fileobj)
    with response:
        if response.status_code != 201:
            raise RegistryResponseError(
                f"the registry answered HTTP {response.status_code} when uploading blob {digest}{registry_error_message(client, response)}"
            )


def put_manifest(client, reference, data, media_type):
    """PUT a manifest or index under ``reference`` (a tag or its digest)."""
    url = f"{client.base_url}/manifests/{reference}"
    response = client.request("PUT", url, headers={"Content-Type": media_type}, data=data)
    with response:
        if response.status_code != 201:
            raise RegistryResponseError(
                f"the registry answered HTTP {response.status_code} when pushing manifest {reference}{registry_error_message(client, response)}"
            )
