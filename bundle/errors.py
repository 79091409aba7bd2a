"""Exceptions of the bundle package; every message is one line naming the file and the problem."""
from __future__ import annotations


class BundleError(Exception):
    """Base class: a bundle operation failed."""


class BundleKeyError(BundleError, ValueError):
    """A key file is missing, unreadable, or not an Ed25519 key of the expected kind."""


class BundleExportError(BundleError, ValueError):
    """The model folder cannot be exported (unsupported file type, reserved name, bad model.json)."""


class BundleVerificationError(BundleError):
    """The bundle did not verify: bad signature, changed/missing/extra file, unsafe or truncated archive."""
