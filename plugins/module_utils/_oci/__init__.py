# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The OCI distribution protocol, and nothing about KubeSolo OS releases (see _release.py).

- _client.py: RegistryClient, the one client of the collection; it composes the rest.
- _transport.py: the HTTP session, TLS, redirects, retries, size-capped bodies within their deadline, error messages.
- _token_auth.py: answering Basic and Bearer challenges, token caching.
- _manifests.py: media types, fetching and validating manifests and indexes.
- _blobs.py: streaming a blob into a file with resume, verification and stall detection.
- _push.py: uploading blobs and manifests (update_publish).
"""
