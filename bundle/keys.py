"""Ed25519 signing keys: generate a PEM key pair, load keys, derive a short key id."""
from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recs.bundle.errors import BundleKeyError
from recs.datasets.io import atomic_write_bytes

PRIVATE_KEY_NAME = "signing_key.pem"
PUBLIC_KEY_NAME = "signing_key.pub.pem"
MAX_KEY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class KeyPairPaths:
    private_key: Path
    public_key: Path
    key_id: str


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short, stable fingerprint of a public key: first 16 hex chars of SHA-256 over the raw 32 key bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_private(path: Path, data: bytes) -> None:
    """Write with mode 0600 from the first byte (never world-readable, even briefly), fsync, rename into place."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # in case the umask or filesystem widened it
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def generate_keypair(out_dir: str | Path, overwrite: bool = False) -> KeyPairPaths:
    """Write `signing_key.pem` (PKCS#8, mode 0600) and `signing_key.pub.pem` (SubjectPublicKeyInfo) into `out_dir`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BundleKeyError(f"{out_dir}: exists and is not a folder")
    priv_path, pub_path = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    for p in (priv_path, pub_path):
        if p.exists() and not overwrite:
            raise BundleKeyError(f"{p}: already exists (pass --overwrite to replace the key pair)")
    out_dir.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    priv_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_private(priv_path, priv_pem)
    atomic_write_bytes(pub_path, pub_pem)
    return KeyPairPaths(priv_path, pub_path, key_id(private.public_key()))


def _read_key_file(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise BundleKeyError(f"{path}: key file not found")
    if path.stat().st_size > MAX_KEY_FILE_BYTES:
        raise BundleKeyError(f"{path}: too large to be a key file")
    return path.read_bytes()


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Load an unencrypted PEM Ed25519 private key."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BundleKeyError(f"{path}: private key is passphrase-protected (not supported)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise BundleKeyError(f"{path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleKeyError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Load a PEM Ed25519 public key (a private key file is refused: verification needs only the public half)."""
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        raise BundleKeyError(f"{path}: is a private key; pass the public key (.pub.pem)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise BundleKeyError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleKeyError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key
