"""Verify a bundle (folder or .tar.gz): signature first, then every file's size and SHA-256, and nothing unlisted."""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recs.bundle.archive import ArchiveLimits, is_archive, scan_archive
from recs.bundle.errors import BundleVerificationError
from recs.bundle.keys import key_id, load_public_key
from recs.bundle.manifest import (
    MANIFEST_NAME, MAX_MANIFEST_BYTES, SIGNATURE_NAME, Manifest, hash_file, hash_stream, parse_manifest,
)
from recs.bundle.signature import MAX_SIGNATURE_BYTES, verify_signature


@dataclass
class VerifyReport:
    """Outcome of verification. `reason` is the first problem in one line; `problems` lists them all."""

    bundle: Path
    kind: str  # "folder" | "archive"
    ok: bool
    problems: list[str] = field(default_factory=list)
    manifest: Manifest | None = None
    key_id: str | None = None
    # (size, sha256) of the manifest.json / manifest.sig bytes that were verified (used by load to re-check).
    signed_files: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        if not self.problems:
            return None
        more = len(self.problems) - 1
        first = "".join(c if c.isprintable() else repr(c)[1:-1] for c in self.problems[0])  # stays one line
        return first + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "bundle": str(self.bundle),
            "kind": self.kind,
            "ok": self.ok,
            "reason": self.reason,
            "problems": self.problems,
            "key_id": self.key_id,
            "files": len(m.files) if m else None,
            "bytes": m.total_bytes if m else None,
            "created_at": m.doc.get("created_at") if m else None,
            "model": m.doc.get("model") if m else None,
        }


def _read_small_regular(path: Path, limit: int, label: str) -> bytes:
    try:
        st = path.lstat()
    except FileNotFoundError:
        hint = " (unsigned bundle)" if label == SIGNATURE_NAME else ""
        raise BundleVerificationError(f"{label} is missing{hint}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleVerificationError(f"{label} is not a regular file (symlink or special file)")
    if st.st_size > limit:
        raise BundleVerificationError(f"{label} is too large ({st.st_size} bytes)")
    return path.read_bytes()


def _signed_hashes(manifest_bytes: bytes, sig_bytes: bytes) -> dict[str, tuple[int, str]]:
    return {
        MANIFEST_NAME: (len(manifest_bytes), hashlib.sha256(manifest_bytes).hexdigest()),
        SIGNATURE_NAME: (len(sig_bytes), hashlib.sha256(sig_bytes).hexdigest()),
    }


def _compare(manifest: Manifest, found: dict[str, tuple[int, str | None]], extra_dirs: list[str]) -> list[str]:
    """Problems from comparing the manifest with what is present (name -> (size, sha256 or None if not hashed))."""
    problems: list[str] = []
    listed = manifest.by_path
    for p in sorted(set(listed) - set(found)):
        problems.append(f"missing file {p}")
    for p in sorted(set(found) - set(listed)):
        problems.append(f"unlisted file {p}")
    for d in extra_dirs:
        problems.append(f"unlisted folder {d}/")
    for p in sorted(set(listed) & set(found)):
        size, digest = found[p]
        want = listed[p]
        if size != want.size:
            problems.append(f"changed file {p} (size {size}, manifest says {want.size})")
        elif digest != want.sha256:
            problems.append(f"changed file {p} (sha256 mismatch)")
    return problems


def _unneeded_dirs(manifest: Manifest, dirs: set[str] | frozenset[str]) -> list[str]:
    """The folders in `dirs` that hold no listed file (at any depth), sorted."""
    needed = {"/".join(p.split("/")[:j]) for p in manifest.by_path for j in range(1, p.count("/") + 1)}
    return sorted(set(dirs) - needed)


def _verify_folder(root: Path, public_key: Ed25519PublicKey, report: VerifyReport) -> None:
    manifest_bytes = _read_small_regular(root / MANIFEST_NAME, MAX_MANIFEST_BYTES, MANIFEST_NAME)
    sig_bytes = _read_small_regular(root / SIGNATURE_NAME, MAX_SIGNATURE_BYTES, SIGNATURE_NAME)
    verify_signature(manifest_bytes, sig_bytes, public_key)
    manifest = parse_manifest(manifest_bytes)
    report.manifest = manifest
    report.signed_files = _signed_hashes(manifest_bytes, sig_bytes)
    listed = manifest.by_path
    found: dict[str, tuple[int, str | None]] = {}
    folders: set[str] = set()
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirs + files):
            full = base / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISDIR(st.st_mode):
                folders.add(rel)
            elif stat.S_ISLNK(st.st_mode):
                report.problems.append(f"symlink {rel} is not allowed in a bundle")
            elif not stat.S_ISREG(st.st_mode):
                report.problems.append(f"special file {rel} is not allowed in a bundle")
            elif rel not in (MANIFEST_NAME, SIGNATURE_NAME):
                want = listed.get(rel)
                if want is not None and want.size == st.st_size:
                    found[rel] = hash_file(full)
                else:
                    found[rel] = (st.st_size, None)
    report.problems.extend(_compare(manifest, found, _unneeded_dirs(manifest, folders)))


def _verify_archive(path: Path, public_key: Ed25519PublicKey, report: VerifyReport, limits: ArchiveLimits) -> None:
    found: dict[str, tuple[int, str | None]] = {}
    special: dict[str, bytes] = {}
    caps = {MANIFEST_NAME: MAX_MANIFEST_BYTES, SIGNATURE_NAME: MAX_SIGNATURE_BYTES}

    def _on_file(name: str, size: int, stream: BinaryIO) -> None:
        if name in caps:
            if size > caps[name]:
                raise BundleVerificationError(f"{name} is too large ({size} bytes)")
            special[name] = stream.read()
        else:
            found[name] = hash_stream(stream)

    scan = scan_archive(path, _on_file, limits)  # raises on unsafe / truncated / corrupt archives
    for name in (MANIFEST_NAME, SIGNATURE_NAME):
        if name not in special:
            hint = " (unsigned bundle)" if name == SIGNATURE_NAME else ""
            raise BundleVerificationError(f"{name} is missing from the archive{hint}")
    verify_signature(special[MANIFEST_NAME], special[SIGNATURE_NAME], public_key)
    manifest = parse_manifest(special[MANIFEST_NAME])
    report.manifest = manifest
    report.signed_files = _signed_hashes(special[MANIFEST_NAME], special[SIGNATURE_NAME])
    report.problems.extend(_compare(manifest, found, _unneeded_dirs(manifest, scan.dirs)))


def check_bundle(
    bundle: str | Path, public_key: Ed25519PublicKey | str | Path, limits: ArchiveLimits | None = None
) -> VerifyReport:
    """Verify `bundle` and return a report (never raises for a bundle that fails; raises for a bad key file)."""
    bundle = Path(bundle)
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    kind = "folder" if bundle.is_dir() else "archive"
    report = VerifyReport(bundle=bundle, kind=kind, ok=False, key_id=key_id(key))
    try:
        if bundle.is_dir():
            _verify_folder(bundle, key, report)
        elif bundle.is_file():
            if not is_archive(bundle):
                raise BundleVerificationError(f"{bundle}: neither a bundle folder nor a .tar.gz archive")
            _verify_archive(bundle, key, report, limits or ArchiveLimits())
        else:
            raise BundleVerificationError(f"{bundle}: not found")
    except BundleVerificationError as exc:
        report.problems.insert(0, str(exc))
    except OSError as exc:
        report.problems.insert(0, f"{bundle}: cannot read ({exc.strerror or exc})")
    report.ok = not report.problems
    return report


def verify_bundle(
    bundle: str | Path, public_key: Ed25519PublicKey | str | Path, limits: ArchiveLimits | None = None
) -> VerifyReport:
    """Verify `bundle`; return the (ok) report or raise BundleVerificationError with the one-line reason."""
    report = check_bundle(bundle, public_key, limits)
    if not report.ok or report.manifest is None:
        raise BundleVerificationError(report.reason or f"{bundle}: did not verify")
    return report
