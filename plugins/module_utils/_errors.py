# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors raised by the kubesolo.fleet registry client and stager.

Every error carries a stable ``code`` so playbooks and the os_update role can
tell "registry unreachable" from "this release does not ship for us" without
parsing messages.
"""

from __future__ import annotations

from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable


class FleetError(Exception):
    """Base class; ``str(error)`` is a complete, user-facing message."""

    code = "error"

    def details(self):
        """Extra machine-readable fields for the module result."""
        return {}


class ParameterError(FleetError):
    code = "invalid_parameter"


class InvalidReferenceError(ParameterError):
    """A malformed repository, tag, digest or platform: the parts that name a release."""

    code = "invalid_reference"


class InvalidPlatformError(InvalidReferenceError):
    """An architecture or platform name that is not one (same code: it selects the release too)."""


class RegistryConnectionError(FleetError):
    code = "registry_unreachable"


class RegistryResponseError(FleetError):
    """The registry answered, but not with something we can use."""

    code = "registry_error"


class AuthenticationError(FleetError):
    code = "authentication_failed"


class NotFoundError(FleetError):
    """The tag or digest does not exist in the repository."""

    code = "not_found"


class ManifestError(FleetError):
    """A manifest or index is malformed, too large or of an unsupported type."""

    code = "invalid_manifest"


class DigestMismatchError(FleetError):
    code = "digest_mismatch"


class SizeMismatchError(FleetError):
    code = "size_mismatch"


class ArchitectureNotShippedError(FleetError):
    """The release has no build for the wanted platform."""

    code = "architecture_not_shipped"

    def __init__(self, wanted, available):
        self.wanted = wanted
        self.available = list(available)
        self.index_digest = None  # set by the resolver, so callers can pin the index
        shipped = ", ".join(self.available) if self.available else "none"
        super().__init__(f"the release does not ship for architecture {wanted} (it ships: {shipped})")

    def details(self):
        return {
            "architecture": self.wanted,
            "available_architectures": self.available,
            "index_digest": self.index_digest,
        }


class ArchitectureMismatchError(FleetError):
    """A single-architecture manifest declares another architecture."""

    code = "architecture_mismatch"

    def __init__(self, declared, wanted):
        self.declared = declared
        self.wanted = wanted
        super().__init__(f"the manifest at this reference is for architecture {declared}, but {wanted} was wanted")


class LayerMissingError(FleetError):
    code = "layer_missing"


class InternalError(FleetError):
    """Anything that went wrong in a way no other error describes: a bug, reported without a traceback."""

    code = "internal_error"

    @classmethod
    def from_exception(cls, exc):
        return cls(f"unexpected {type(exc).__name__}: {printable(exc, limit=300)} (please report this as a bug)")


class StageError(FleetError):
    """The destination cannot be written or is not ours to replace."""

    code = "stage_failed"


class UnsafePathError(StageError):
    """A directory on the way to ``dest`` (or the store beside it) another account could change."""

    code = "unsafe_path"


class SignatureError(FleetError):
    """The release does not pass the signature policy; ``check`` is the _signatures.SignatureCheck and
    ``release`` the _release.Release, whose summary the result keeps (what was refused)."""

    def __init__(self, message, check, release):
        super().__init__(message)
        self.check = check
        self.release = release

    def details(self):
        return dict(self.release.summary(), signature=self.check.as_result())


class SignatureMissingError(SignatureError):
    """No signature of the release was found and the policy requires one."""

    code = "signature_missing"


class SignatureInvalidError(SignatureError):
    """A signature is present but none verifies with a trusted key (or it does not sign this release)."""

    code = "signature_invalid"
