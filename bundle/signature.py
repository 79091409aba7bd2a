"""The detached signature file `manifest.sig`: an Ed25519 signature over the exact manifest bytes."""
from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recs.bundle.errors import BundleVerificationError
from recs.bundle.keys import key_id
from recs.bundle.manifest import SIGNATURE_NAME, canonical_json, parse_json_strict

ALGORITHM = "ed25519"
MAX_SIGNATURE_BYTES = 4096


def sign_manifest(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The bytes of `manifest.sig` for `manifest_bytes`: {"algorithm", "key_id", "signature" (base64)}."""
    sig = private_key.sign(manifest_bytes)
    doc = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(sig).decode("ascii"),
    }
    return canonical_json(doc) + b"\n"


def verify_signature(manifest_bytes: bytes, sig_bytes: bytes, public_key: Ed25519PublicKey) -> None:
    """Raise BundleVerificationError with a one-line reason unless `sig_bytes` is a valid signature by `public_key`.

    Only `manifest_bytes` exactly as stored are verified; nothing in the manifest is trusted before this passes.
    The `key_id` in the signature file is used only to word the error (wrong key vs edited manifest).
    """
    if len(sig_bytes) > MAX_SIGNATURE_BYTES:
        raise BundleVerificationError(f"{SIGNATURE_NAME}: too large ({len(sig_bytes)} bytes) to be a signature file")
    doc = parse_json_strict(sig_bytes, SIGNATURE_NAME)
    if not isinstance(doc, dict) or doc.get("algorithm") != ALGORITHM:
        raise BundleVerificationError(f"{SIGNATURE_NAME}: not an {ALGORITHM} signature file")
    try:
        raw = base64.b64decode(str(doc.get("signature", "")), validate=True)
    except (binascii.Error, ValueError):
        raise BundleVerificationError(f"{SIGNATURE_NAME}: signature is not valid base64") from None
    expected_id = key_id(public_key)
    try:
        public_key.verify(raw, manifest_bytes)
    except InvalidSignature:
        claimed = doc.get("key_id")
        if isinstance(claimed, str) and re.fullmatch(r"[0-9a-f]{16}", claimed) and claimed != expected_id:
            raise BundleVerificationError(
                f"signature does not verify: wrong key (bundle signed by key {claimed}, public key is {expected_id})"
            ) from None
        raise BundleVerificationError(
            f"signature does not verify with key {expected_id}: "
            "manifest.json or manifest.sig was modified after signing"
        ) from None
