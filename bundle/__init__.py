"""recs.bundle: signed model bundles (export, verify, verify-then-load).

Public API:
    generate_keypair(out_dir) -> KeyPairPaths
    export_bundle(model_dir, out, private_key, tar=False) -> ExportResult
    check_bundle(bundle, public_key) -> VerifyReport      # never raises for a bundle that fails
    verify_bundle(bundle, public_key) -> VerifyReport     # raises BundleVerificationError
    load_verified(bundle, public_key, copy_max_bytes=0) -> VerifiedBundle   # the server's entry point
"""
from recs.bundle.errors import BundleError, BundleExportError, BundleKeyError, BundleVerificationError
from recs.bundle.export import ExportResult, export_bundle
from recs.bundle.keys import KeyPairPaths, generate_keypair, key_id, load_private_key, load_public_key
from recs.bundle.load import VerifiedBundle, load_verified
from recs.bundle.verify import VerifyReport, check_bundle, verify_bundle

__all__ = [
    "BundleError", "BundleExportError", "BundleKeyError", "BundleVerificationError",
    "ExportResult", "export_bundle", "KeyPairPaths", "generate_keypair", "key_id", "load_private_key",
    "load_public_key", "VerifiedBundle", "load_verified", "VerifyReport", "check_bundle", "verify_bundle",
]
