# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one HTTP client of the collection for the OCI distribution API.

It knows how to talk to a registry (TLS, the bearer-token challenge, size
caps, digest checks) and nothing about KubeSolo OS releases; see _release.py
for that.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import traceback

try:
    import requests
    import urllib3
except ImportError:
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    AuthenticationError,
    ParameterError,
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    RegistryConnectionError,
    RegistryResponseError,
    SizeMismatchError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._about import COLLECTION_NAME, COLLECTION_VERSION
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import (
    RETRY_STATUSES,
    RetryPolicy,
    retry_after_seconds,
)

USER_AGENT = '%s/%s' % (COLLECTION_NAME, COLLECTION_VERSION)

MEDIA_OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
MEDIA_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
MEDIA_DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
MEDIA_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
INDEX_MEDIA_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
MANIFEST_MEDIA_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)

# Same cap as oras-go and skopeo: a manifest is metadata, never megabytes.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Token and error bodies are read only this far.
MAX_SMALL_BODY_BYTES = 64 * 1024
# Blobs are streamed in chunks this large; hashlib releases the GIL on them.
BLOB_CHUNK_BYTES = 1024 * 1024

_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header):
    """Parse a ``WWW-Authenticate`` value into (scheme, {param: value}).

    Returns (None, {}) for an empty or unparsable header.
    """
    if not header or not header.strip():
        return None, {}
    scheme, _sep, rest = header.strip().partition(' ')
    params = {}
    for match in _CHALLENGE_PARAM_RE.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r'\\(.)', r'\1', value)
    return scheme.lower(), params


def media_type_of(content_type):
    """The bare media type of a Content-Type header value."""
    return (content_type or '').split(';', 1)[0].strip().lower()


class Fetched:
    """A manifest or index as fetched: raw bytes, media type, digest and JSON."""

    def __init__(self, data, media_type, digest, document):
        self.data = data
        self.media_type = media_type
        self.digest = digest
        self.document = document

    @property
    def is_index(self):
        return self.media_type in INDEX_MEDIA_TYPES


class _OriginBoundSession(requests.Session if HAS_REQUESTS else object):
    """A session that drops Authorization on any redirect to another origin.

    requests keeps it across an http -> https upgrade of the same host and may
    add netrc credentials for the new host; neither is wanted for registries
    whose blobs redirect to a CDN or object store.
    """

    def rebuild_auth(self, prepared_request, response):
        if _origin(prepared_request.url) is None or \
                _origin(prepared_request.url) != _origin(response.request.url):
            prepared_request.headers.pop('Authorization', None)


def _origin(url):
    """(scheme, host, port) of a URL; None for a URL that cannot be parsed."""
    try:
        parsed = requests.compat.urlparse(url)
        port = parsed.port or {'http': 80, 'https': 443}.get(parsed.scheme)
    except ValueError:
        return None
    return parsed.scheme, (parsed.hostname or '').lower(), port


def _tls_hint(reason, has_client_cert):
    """What to change, from an SSL error's reason."""
    text = reason.lower()
    if 'certificate_verify_failed' in text or 'certificate verify failed' in text or 'hostname' in text:
        return 'set ca_path to trust a private CA, or validate_certs=false to skip verification'
    if 'wrong_version_number' in text or 'wrong version number' in text or 'record layer' in text:
        return 'if the registry speaks plain HTTP, set plain_http=true'
    if has_client_cert:
        return 'the registry refused the handshake: check that it accepts client_cert and client_key'
    return ('the registry refused the handshake: if it requires mutual TLS, set client_cert and client_key; '
            'if it speaks plain HTTP, set plain_http=true')


def _no_netrc(request):
    """Session-wide auth that changes nothing: it only keeps requests from
    applying ~/.netrc over the registry's Authorization header."""
    return request


class RegistryClient:
    """Reads manifests and blobs of one repository.

    ``credentials`` (_auth.Credentials) answer Basic challenges and obtain
    bearer tokens; without them the client pulls anonymously, which is what
    public registries such as ghcr.io expect. Bearer tokens are cached per
    realm, service and scope for the life of the client and fetched anew once
    when the registry rejects a cached one.
    """

    def __init__(self, repository, plain_http=False, validate_certs=True, ca_path=None,
                 timeout=30, credentials=None, client_cert=None, client_key=None, retry=None):
        self.repository = repository
        self.retry = retry or RetryPolicy()
        self.resumed_bytes = 0
        self.fetched_bytes = 0
        # Layers download in parallel threads: they count into the two above
        # under one lock and refresh a rejected token under the other.
        self._count_lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self.scheme = 'http' if plain_http else 'https'
        self.timeout = timeout
        self.credentials = credentials
        self.session = _OriginBoundSession()
        self.session.headers['User-Agent'] = USER_AGENT
        # Passed with every request: a session-level value loses to
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment.
        self.verify = (ca_path or True) if validate_certs else False
        self.session.max_redirects = 10
        self.session.auth = _no_netrc
        if client_key and not client_cert:
            raise ParameterError('client_key needs client_cert')
        if client_cert:
            self.session.cert = (client_cert, client_key) if client_key else client_cert
        self._authorization = None
        self._tokens = {}

    @property
    def base_url(self):
        return '%s://%s/v2/%s' % (self.scheme, self.repository.api_host, self.repository.path)

    # -- HTTP plumbing -------------------------------------------------

    def _send(self, method, url, headers=None, stream=False, data=None):
        """One request; reads (GET, HEAD) are tried again on faults worth it."""
        attempt = 0
        while True:
            attempt += 1
            retryable = method in ('GET', 'HEAD')
            try:
                response = self.session.request(method, url, headers=headers, stream=stream, data=data,
                                                timeout=self.timeout, verify=self.verify)
            except requests.exceptions.SSLError as exc:
                reason = _reason(exc)
                raise RegistryConnectionError('TLS with %s failed: %s (%s)'
                                              % (self.repository.registry, reason,
                                                 _tls_hint(reason, bool(self.session.cert))))
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
                if isinstance(exc, requests.exceptions.Timeout):
                    error = 'timed out after %ss talking to %s' % (self.timeout, self.repository.registry)
                else:
                    error = 'cannot reach registry %s: %s' % (self.repository.registry, _reason(exc))
                if retryable and self.retry.wait(attempt, error):
                    continue
                raise RegistryConnectionError(error)
            except requests.exceptions.RequestException as exc:
                raise RegistryConnectionError(
                    'cannot reach registry %s: %s' % (self.repository.registry, _reason(exc)))
            if retryable and response.status_code in RETRY_STATUSES:
                error = 'registry %s answered HTTP %d' % (self.repository.registry, response.status_code)
                if self.retry.wait(attempt, error, retry_after_seconds(response.headers.get('Retry-After'))):
                    response.close()
                    continue
            return response

    def count_bytes(self, fetched=0, resumed=0):
        with self._count_lock:
            self.fetched_bytes += fetched
            self.resumed_bytes += resumed

    def transfer_summary(self):
        """Retries and resumed bytes of this client, for module results."""
        return dict(self.retry.summary(), resumed_bytes=self.resumed_bytes, fetched_bytes=self.fetched_bytes)

    def request(self, method, url, headers=None, stream=False, data=None):
        """Send a request, answering one authentication challenge if needed.

        A file-like ``data`` is rewound before a retry.
        """
        headers = dict(headers or {})
        # Credentials go to the registry itself only, never to an upload or
        # blob location on another host.
        if _origin(url) != _origin(self.base_url):
            return self._send(method, url, headers=headers, stream=stream, data=data)
        if self._authorization:
            headers['Authorization'] = self._authorization
        response = self._send(method, url, headers=headers, stream=stream, data=data)
        if response.status_code != 401:
            return response
        challenge = response.headers.get('WWW-Authenticate', '')
        response.close()
        rejected = headers.get('Authorization')
        # One refresh for all parallel downloads: the others find the new token cached.
        with self._auth_lock:
            self._authorization = self._authorize(challenge, rejected)
        headers['Authorization'] = self._authorization
        if hasattr(data, 'seek'):
            data.seek(0)
        response = self._send(method, url, headers=headers, stream=stream, data=data)
        if response.status_code == 401:
            response.close()
            raise AuthenticationError(self._refused())
        return response

    def _refused(self):
        if self.credentials:
            return 'registry %s refused the credentials of %r for %s' % (
                self.repository.registry, self.credentials.username, self.repository.path)
        return 'registry %s refused anonymous access to %s (no credentials were given)' % (
            self.repository.registry, self.repository.path)

    def _authorize(self, challenge, rejected):
        """The Authorization value answering ``challenge``; ``rejected`` was just refused."""
        scheme, params = parse_challenge(challenge)
        if scheme == 'bearer':
            key = (params.get('realm'), params.get('service'),
                   params.get('scope') or 'repository:%s:pull' % self.repository.path)
            cached = self._tokens.get(key)
            if cached is None or 'Bearer ' + cached == rejected:
                self._tokens[key] = cached = self._fetch_token(*key)
            return 'Bearer ' + cached
        if scheme == 'basic' and self.credentials and self.credentials.password is not None:
            basic = requests.auth._basic_auth_str(self.credentials.username, self.credentials.password)
            if basic == rejected:
                raise AuthenticationError(self._refused())
            return basic
        raise AuthenticationError(
            'registry %s requires authentication (%s challenge) to read %s%s'
            % (self.repository.registry, scheme or 'no', self.repository.path,
               '' if self.credentials else ' and no credentials were given'))

    def _fetch_token(self, realm, service, scope):
        """A bearer token from the registry's token service (docker token or OAuth2 refresh)."""
        origin = _origin(realm) if realm else None
        if not origin or origin[0] not in ('http', 'https') or not origin[1]:
            raise AuthenticationError('registry %s sent a bearer challenge without a usable realm'
                                      % self.repository.registry)
        if self.scheme == 'https' and origin[0] == 'http':
            raise AuthenticationError('registry %s sent a plain-HTTP token realm %s; refusing to '
                                      'send credentials or take tokens over it'
                                      % (self.repository.registry, realm))
        query = {'scope': scope}
        if service:
            query['service'] = service
        credentials = self.credentials
        try:
            if credentials and credentials.identity_token:
                form = dict(query, grant_type='refresh_token', refresh_token=credentials.identity_token,
                            client_id=COLLECTION_NAME)
                response = self.session.post(realm, data=form, timeout=self.timeout, stream=True,
                                             allow_redirects=False, verify=self.verify)
            else:
                auth = (credentials.username, credentials.password) if credentials else None
                response = self.session.get(realm, params=query, auth=auth, timeout=self.timeout,
                                            stream=True, allow_redirects=False, verify=self.verify)
        except requests.exceptions.RequestException as exc:
            raise RegistryConnectionError(
                'cannot reach the token service of %s: %s' % (self.repository.registry, _reason(exc)))
        with response:
            body = read_capped(response, MAX_SMALL_BODY_BYTES, 'token response of %s' % self.repository.registry,
                               error=AuthenticationError)
            if response.status_code in (401, 403):
                raise AuthenticationError(self._refused().replace('registry %s' % self.repository.registry,
                                                                  'the token service of %s' % self.repository.registry))
            if response.status_code != 200:
                raise AuthenticationError('the token service of %s answered HTTP %d'
                                          % (self.repository.registry, response.status_code))
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        token = document.get('token') or document.get('access_token') if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(
                'the token service of %s answered without a token' % self.repository.registry)
        return token

    # -- Manifests -----------------------------------------------------

    def get_manifest(self, reference, accept=INDEX_MEDIA_TYPES + MANIFEST_MEDIA_TYPES):
        """Fetch a manifest or index by tag or digest.

        A digest reference is verified against the bytes received; so is the
        registry's Docker-Content-Digest header when it uses the same algorithm.
        """
        url = '%s/manifests/%s' % (self.base_url, reference)
        response = self.request('GET', url, headers={'Accept': ', '.join(accept)}, stream=True)
        with response:
            if response.status_code == 404:
                separator = '@' if ':' in reference else ':'
                raise NotFoundError('%s%s%s was not found in the registry'
                                    % (self.repository, separator, reference))
            check_status(response, 'manifest %s of %s' % (reference, self.repository))
            data = read_capped(response, MAX_MANIFEST_BYTES, 'manifest %s' % reference,
                               error=ManifestError)
            content_type = media_type_of(response.headers.get('Content-Type'))
            header_digest = response.headers.get('Docker-Content-Digest', '')
        if ':' in reference:
            digest = verify_bytes(data, reference, 'manifest')
        else:
            digest = 'sha256:%s' % hashlib.sha256(data).hexdigest()
        if header_digest.startswith(digest.split(':', 1)[0] + ':') and header_digest != digest:
            raise DigestMismatchError(
                'the registry says manifest %s has digest %s, but its bytes hash to %s'
                % (reference, header_digest, digest))
        document = parse_manifest_json(data, reference)
        return Fetched(data, manifest_media_type(document, content_type, reference), digest, document)

    # -- Blobs ---------------------------------------------------------

    def download_blob(self, digest, size, fileobj):
        """Stream blob ``digest`` of ``size`` bytes into ``fileobj``, resuming if it can.

        ``fileobj`` is opened for reading and appending; bytes it already holds
        (a partial download of an earlier attempt) are hashed first and the
        rest is asked for with a Range request. A broken transfer is resumed
        the same way within the retry policy; a server that ignores Range
        restarts the file. The bytes are hashed while they are written and
        reading stops at the declared size. Returns the blob's sha256 hex
        digest (the on-node check uses sha256 whatever the descriptor names).
        Raises on any size or digest mismatch; the caller owns removing
        ``fileobj``.
        """
        algorithm, expected_hex = parse_digest(digest)
        hashers, received = _rehash(fileobj, algorithm, size)
        attempt = 0
        while received < size:
            attempt += 1
            try:
                hashers, received = self._fetch_blob_range(digest, size, fileobj, hashers, received)
                break
            except _TransferBroken as exc:
                received = exc.received
                if not self.retry.wait(attempt, str(exc)):
                    raise RegistryConnectionError(str(exc))
        actual = hashers[algorithm].hexdigest()
        if actual != expected_hex:
            raise DigestMismatchError('blob %s has wrong content: its bytes hash to %s:%s'
                                      % (digest, algorithm, actual))
        return hashers['sha256'].hexdigest()

    def _fetch_blob_range(self, digest, size, fileobj, hashers, received):
        """GET the blob from ``received`` on; returns (hashers, bytes in the file)."""
        headers = {'Accept-Encoding': 'identity'}
        if received:
            headers['Range'] = 'bytes=%d-' % received
        response = self.request('GET', '%s/blobs/%s' % (self.base_url, digest), headers=headers, stream=True)
        with response:
            if response.status_code == 404:
                raise NotFoundError('blob %s of %s was not found in the registry' % (digest, self.repository))
            resumed = received and response.status_code == 206 and _range_start(response) == received
            if received and response.status_code == 206 and not resumed:
                # A part from somewhere else: ask for the whole blob instead.
                response.close()
                fileobj.seek(0)
                fileobj.truncate()
                return self._fetch_blob_range(digest, size, fileobj, *_rehash(fileobj, parse_digest(digest)[0], size))
            if resumed:
                self.count_bytes(resumed=received)
            else:
                check_status(response, 'blob %s' % digest)
                if received:
                    # The server ignored Range and sends the whole blob: start the file again.
                    fileobj.seek(0)
                    fileobj.truncate()
                    hashers, received = _rehash(fileobj, parse_digest(digest)[0], size)
            announced = response.headers.get('Content-Length')
            if announced is not None and announced.isdigit() and int(announced) != size - received:
                raise SizeMismatchError('blob %s: the registry announced %s bytes, the manifest declares %d'
                                        % (digest, announced, size - received))
            received = _stream_into(response.raw, fileobj, hashers, received, size, digest, self)
        return hashers, received

    # -- Pushing (used by update_publish) ----------------------------------

    def exists(self, kind, reference):
        """None when a blob or manifest is missing, else its digest header ('' if not sent)."""
        url = '%s/%s/%s' % (self.base_url, kind, reference)
        headers = {'Accept': ', '.join(INDEX_MEDIA_TYPES + MANIFEST_MEDIA_TYPES)}
        response = self.request('HEAD', url, headers=headers)
        with response:
            if response.status_code == 404:
                return None
            check_status(response, '%s %s' % (kind[:-1], reference))
            return response.headers.get('Docker-Content-Digest', '')

    def upload_blob(self, digest, size, fileobj):
        """Upload a blob in one PUT, streaming ``fileobj`` (``size`` bytes)."""
        response = self.request('POST', '%s/blobs/uploads/' % self.base_url)
        with response:
            if response.status_code != 202 or not response.headers.get('Location'):
                raise RegistryResponseError('the registry answered HTTP %d to an upload request for %s%s'
                                            % (response.status_code, self.repository, _error_detail(response)))
            location = response.headers['Location']
        url = requests.compat.urljoin('%s://%s/' % (self.scheme, self.repository.api_host), location)
        url += ('&' if '?' in url else '?') + 'digest=' + digest
        headers = {'Content-Type': 'application/octet-stream', 'Content-Length': str(size)}
        response = self.request('PUT', url, headers=headers, data=fileobj)
        with response:
            if response.status_code != 201:
                raise RegistryResponseError('the registry answered HTTP %d when uploading blob %s%s'
                                            % (response.status_code, digest, _error_detail(response)))

    def put_manifest(self, reference, data, media_type):
        url = '%s/manifests/%s' % (self.base_url, reference)
        response = self.request('PUT', url, headers={'Content-Type': media_type}, data=data)
        with response:
            if response.status_code != 201:
                raise RegistryResponseError('the registry answered HTTP %d when pushing manifest %s%s'
                                            % (response.status_code, reference, _error_detail(response)))


def _rehash(fileobj, algorithm, size):
    """Fresh hashers fed with what ``fileobj`` holds; a file longer than ``size`` is emptied."""
    hashers = {algorithm: hashlib.new(algorithm)}
    hashers.setdefault('sha256', hashlib.sha256())
    fileobj.seek(0, 2)
    if fileobj.tell() > size:
        fileobj.truncate(0)
    fileobj.seek(0)
    received = 0
    for chunk in iter(lambda: fileobj.read(BLOB_CHUNK_BYTES), b''):
        received += len(chunk)
        for hasher in hashers.values():
            hasher.update(chunk)
    return hashers, received


def _range_start(response):
    match = re.match(r'bytes (\d+)-', response.headers.get('Content-Range', ''))
    return int(match.group(1)) if match else None


class _TransferBroken(Exception):
    """The connection broke mid-blob; ``received`` bytes are safely in the file."""

    def __init__(self, message, received):
        super().__init__(message)
        self.received = received


# Less than this many bytes within ``timeout`` seconds counts as a stalled transfer.
STALL_BYTES = 64 * 1024


def _stream_into(raw, fileobj, hashers, received, size, digest, client):
    """Copy the body into ``fileobj`` up to ``size``; returns the bytes now in the file.

    Counts what arrives in ``client.fetched_bytes``; ``client.timeout`` bounds a stall.
    """
    timeout = client.timeout
    framed = _framed_response(raw, size - received) if hasattr(fileobj, 'reserve') else None
    # read1 returns what has arrived, so a stall is noticed; urllib3 1.26 lacks it.
    read = getattr(raw, 'read1', None) or raw.read
    window_start, window_bytes = time.monotonic(), 0
    while received < size:
        wanted = min(BLOB_CHUNK_BYTES, size - received)
        view = fileobj.reserve(wanted) if framed is not None else None
        try:
            if view is not None:
                chunk = view[:_receive_into(framed, view)]
            else:
                chunk = read(wanted)
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
            raise _TransferBroken('download of blob %s broke off after %d of %d bytes: %s'
                                  % (digest, received, size, _reason(exc)), received)
        if not chunk:
            raise SizeMismatchError('blob %s ended after %d bytes, the manifest declares %d'
                                    % (digest, received, size))
        client.count_bytes(fetched=len(chunk))
        for hasher in hashers.values():
            hasher.update(chunk)
        if view is not None:
            fileobj.commit(len(chunk))
        else:
            fileobj.write(chunk)
        received += len(chunk)
        window_bytes += len(chunk)
        if window_bytes >= STALL_BYTES:
            window_start, window_bytes = time.monotonic(), 0
        elif time.monotonic() - window_start > timeout:
            raise _TransferBroken('download of blob %s stalled at %d of %d bytes (less than %d bytes in %ss)'
                                  % (digest, received, size, STALL_BYTES, timeout), received)
    if framed is not None:
        return received  # its Content-Length ended the body
    try:
        extra = read(1)
    except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError):
        extra = b''
    if extra:
        raise SizeMismatchError('blob %s is longer than the %d bytes the manifest declares' % (digest, size))
    return received


def _framed_response(raw, remaining):
    """The http.client response under urllib3's ``raw`` when its body can be received straight
    into a buffer: exactly ``remaining`` bytes by Content-Length, not chunked. Else None.

    urllib3 reads only through bytes objects, which costs a copy of every byte; its response
    wraps the standard library's, whose buffered socket file can read into a buffer with one
    receive a call (what a stall check needs).
    """
    response = getattr(raw, '_fp', None)
    if getattr(response, 'chunked', True) or getattr(response, 'length', None) != remaining:
        return None
    if not hasattr(getattr(response, 'fp', None), 'readinto1'):
        return None
    return response


def _receive_into(response, view):
    """One receive into ``view``; keeps the response's count of what is left, as its own reads do.

    The end of the stream before the announced length is a broken connection (resumable), as
    urllib3 reports it, not a short blob.
    """
    count = response.fp.readinto1(view)
    if not count and len(view):
        raise ConnectionError('the connection closed %d bytes before the announced end of the body'
                              % response.length)
    response.length -= count
    return count


def read_capped(response, limit, what, error=RegistryResponseError):
    """Read a (streamed) response body, refusing more than ``limit`` bytes."""
    announced = response.headers.get('Content-Length')
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise error('%s is %s bytes, over the %d byte limit' % (what, announced, limit))
    data = bytearray()
    try:
        for chunk in response.iter_content(65536):
            data += chunk
            if len(data) > limit:
                raise error('%s is over the %d byte limit' % (what, limit))
    except requests.exceptions.RequestException as exc:
        raise RegistryConnectionError('reading %s failed: %s' % (what, _reason(exc)))
    return bytes(data)


def check_status(response, what):
    if response.status_code == 200:
        return
    if response.status_code == 403:
        raise AuthenticationError('the registry refused access to %s (HTTP 403)' % what)
    raise RegistryResponseError('the registry answered HTTP %d for %s%s'
                                % (response.status_code, what, _error_detail(response)))


def verify_bytes(data, digest, what):
    algorithm, expected_hex = parse_digest(digest)
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected_hex:
        raise DigestMismatchError('%s %s has wrong content: its bytes hash to %s:%s'
                                  % (what, digest, algorithm, actual))
    return digest


def parse_manifest_json(data, reference):
    try:
        document = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError('manifest %s is not valid JSON: %s' % (reference, exc))
    if not isinstance(document, dict):
        raise ManifestError('manifest %s is not a JSON object' % reference)
    if document.get('schemaVersion') != 2:
        raise ManifestError('manifest %s has schemaVersion %r, only 2 is supported'
                            % (reference, document.get('schemaVersion')))
    return document


def manifest_media_type(document, content_type, reference):
    """The media type of a manifest; body and Content-Type must agree."""
    declared = document.get('mediaType')
    if declared is not None and not isinstance(declared, str):
        raise ManifestError('manifest %s has a non-string mediaType' % reference)
    generic = ('', 'application/json', 'application/octet-stream')
    if declared and content_type not in generic and declared != content_type:
        raise ManifestError('manifest %s says its mediaType is %s but was served as %s'
                            % (reference, declared, content_type))
    media_type = declared or (content_type if content_type not in generic else '')
    if not media_type:
        media_type = MEDIA_OCI_INDEX if 'manifests' in document else MEDIA_OCI_MANIFEST
    if media_type not in INDEX_MEDIA_TYPES + MANIFEST_MEDIA_TYPES:
        raise ManifestError('unsupported media type %s at %s (expected an OCI or Docker index '
                            'or manifest)' % (media_type, reference))
    return media_type


def _error_detail(response):
    """The first registry error message, size-capped and printable only."""
    try:
        body = read_capped(response, MAX_SMALL_BODY_BYTES, 'error body')
        errors = json.loads(body).get('errors') or []
        message = errors[0].get('message') or errors[0].get('code')
    except Exception:  # pylint: disable=broad-except
        return ''
    text = ''.join(c for c in str(message)[:200] if c.isprintable())
    return ': %s' % text if text else ''


def _reason(exc):
    """A short reason for a requests/urllib3 exception (not its whole retry chain)."""
    reason = exc
    for _depth in range(8):
        if isinstance(reason, requests.exceptions.RequestException) and reason.args:
            reason = reason.args[0]
        elif getattr(reason, 'reason', None) is not None and reason.reason is not reason:
            reason = reason.reason
        else:
            break
    text = str(reason)
    return text if len(text) < 300 else text[:300] + '...'
