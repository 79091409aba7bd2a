"""The bundle manifest: canonical JSON, file hashing, safe relative paths, and the manifest schema check."""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from recs.bundle.errors import BundleVerificationError

FORMAT = "recs-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
RESERVED_NAMES = frozenset({MANIFEST_NAME, SIGNATURE_NAME})
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
CHUNK = 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Distributions whose versions are recorded, when installed.
DEPENDENCIES = (
    "numpy", "polars", "pyarrow", "scipy", "lightgbm", "faiss-cpu", "torch", "recbole", "cryptography",
    "fastapi", "uvicorn",
)


def canonical_json(obj: Any) -> bytes:
    """Canonical bytes: sorted keys, no whitespace, UTF-8, no NaN/Infinity. These exact bytes are what is signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def sanitize_json(obj: Any) -> Any:
    """Copy of a JSON-like value with non-finite floats replaced by None (they have no canonical JSON form)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): sanitize_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize_json(v) for v in obj]
    return obj


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_json_strict(data: bytes, what: str) -> Any:
    """Parse UTF-8 JSON refusing duplicate keys and NaN/Infinity (ambiguous documents are never accepted).

    Any parse failure, nesting too deep for the parser (RecursionError) included, is a BundleVerificationError:
    this runs on unsigned bytes (`manifest.sig` is parsed before the signature is checked)."""

    def _bad_constant(name: str) -> Any:
        raise ValueError(f"non-standard constant {name}")

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_bad_constant)
    except RecursionError:
        raise BundleVerificationError(f"{what}: not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleVerificationError(f"{what}: not valid JSON ({exc})") from None


def hash_stream(fh: BinaryIO, limit: int | None = None) -> tuple[int, str]:
    """(size, sha256 hex) of a binary stream read in 1 MiB chunks, optionally up to `limit` bytes."""
    h = hashlib.sha256()
    size = 0
    while True:
        want = CHUNK if limit is None else min(CHUNK, limit - size)
        if want <= 0:
            break
        chunk = fh.read(want)
        if not chunk:
            break
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def hash_file(path: str | Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file."""
    with open(path, "rb") as fh:
        return hash_stream(fh)


def check_relpath(rel: str, what: str = "path") -> str:
    """Return `rel` if it is a safe bundle-relative POSIX path, else raise (absolute, `..`, backslash, NUL, empty)."""
    if not isinstance(rel, str) or not rel:
        raise BundleVerificationError(f"{what}: empty or non-string path {rel!r}")
    if "\x00" in rel or "\\" in rel:
        raise BundleVerificationError(f"{what}: path {rel!r} contains a NUL or backslash")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise BundleVerificationError(f"{what}: absolute path {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BundleVerificationError(f"{what}: path {rel!r} has an empty, '.' or '..' component")
    return rel


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def environment_versions() -> tuple[dict[str, str], dict[str, str | None]]:
    """(toolkit info, dependency versions) of the running interpreter, for provenance."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def _v(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    toolkit = {"name": "shopnow-recs", "version": _v("shopnow-recs") or "unknown"}
    deps: dict[str, str | None] = {"python": platform.python_version()}
    deps.update({d: _v(d) for d in DEPENDENCIES})
    return toolkit, deps


def model_metadata(model_json: dict[str, Any] | None) -> dict[str, Any]:
    """The provenance fields copied from `model.json`; a missing key becomes null."""
    m = model_json or {}
    window = m.get("training_window")
    if isinstance(window, dict):
        window = {"start": window.get("start"), "end": window.get("end")}
    elif window is not None:
        window = {"start": None, "end": None, "raw": window}
    return sanitize_json({
        "training_window": window,
        "dataset_fingerprint": m.get("dataset_fingerprint"),
        "offline_metrics": m.get("offline_metrics"),
        "model_id": m.get("model_id"),
    })


@dataclass(frozen=True)
class Manifest:
    """A parsed, schema-checked manifest (only built from bytes whose signature verified, or while exporting)."""

    doc: dict[str, Any]
    files: tuple[FileEntry, ...]

    @property
    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    @property
    def key_id(self) -> str | None:
        return (self.doc.get("signer") or {}).get("key_id")

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def parse_manifest(data: bytes, what: str = MANIFEST_NAME) -> Manifest:
    """Parse and schema-check manifest bytes: format/version, unique safe paths, sizes, hex digests."""
    doc = parse_json_strict(data, what)
    if not isinstance(doc, dict):
        raise BundleVerificationError(f"{what}: top level is not an object")
    if doc.get("format") != FORMAT:
        raise BundleVerificationError(f"{what}: format is {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise BundleVerificationError(
            f"{what}: format_version {doc.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    raw_files = doc.get("files")
    if not isinstance(raw_files, list):
        raise BundleVerificationError(f"{what}: 'files' is missing or not a list")
    entries: list[FileEntry] = []
    seen: set[str] = set()
    for i, f in enumerate(raw_files):
        where = f"{what}: files[{i}]"
        if not isinstance(f, dict):
            raise BundleVerificationError(f"{where}: not an object")
        path = check_relpath(f.get("path"), where)
        if path in RESERVED_NAMES:
            raise BundleVerificationError(f"{where}: reserved name {path!r} may not be listed")
        if path in seen:
            raise BundleVerificationError(f"{where}: duplicate path {path!r}")
        size, digest = f.get("size"), f.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleVerificationError(f"{where}: size {size!r} is not a non-negative integer")
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise BundleVerificationError(f"{where}: sha256 {digest!r} is not 64 lowercase hex chars")
        seen.add(path)
        entries.append(FileEntry(path, size, digest))
    # A file may not also be a folder prefix of another file ("a" and "a/b").
    for p in seen:
        parts = p.split("/")
        for j in range(1, len(parts)):
            if "/".join(parts[:j]) in seen:
                raise BundleVerificationError(f"{what}: {'/'.join(parts[:j])!r} is listed both as a file and a folder")
    return Manifest(doc, tuple(entries))
