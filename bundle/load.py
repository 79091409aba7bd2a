"""Verify-then-load: the only way the server should open a bundle.

Nothing from a bundle is parsed (beyond the signed manifest) or deserialised until the whole bundle verified.
A .tar.gz is verified in a streaming pass that writes nothing, then extracted into a private temporary folder
(mode 0700) with every written byte re-checked against the verified manifest, so an archive swapped between
the two passes is caught. A folder bundle of at most `copy_max_bytes` is copied the same way (every byte
re-checked as it is written); a larger one is returned in place, where a writer of that folder can still change a
file after verification: `read_bytes` re-hashes what it returns, `recheck` re-hashes everything, but a loader that
re-opens a file by path after those checks reads whatever the file holds then.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recs.bundle.archive import ArchiveLimits, extract_checked
from recs.bundle.errors import BundleVerificationError
from recs.bundle.keys import load_public_key
from recs.bundle.manifest import CHUNK, MANIFEST_NAME, FileEntry, Manifest, hash_file
from recs.bundle.verify import verify_bundle


@dataclass
class VerifiedBundle:
    """A bundle whose signature and file hashes verified. `path` is a folder laid out like the model folder."""

    path: Path
    manifest: Manifest
    source: Path
    temporary: bool = False
    manifest_sha256: str = ""   # SHA-256 of the manifest.json bytes that verified (not re-read from disk)
    _finalizer: Any = field(default=None, repr=False)

    @property
    def key_id(self) -> str | None:
        return self.manifest.key_id

    @property
    def model(self) -> dict[str, Any]:
        """Provenance copied from model.json at export (training window, dataset fingerprint, offline metrics)."""
        return dict(self.manifest.doc.get("model") or {})

    def entry(self, rel: str) -> FileEntry:
        e = self.manifest.by_path.get(rel)
        if e is None:
            raise BundleVerificationError(f"{self.source}: {rel!r} is not listed in the bundle manifest")
        return e

    def file(self, rel: str) -> Path:
        """Path of a listed file (raises for anything the manifest does not list)."""
        self.entry(rel)
        return self.path.joinpath(*rel.split("/"))

    def files(self, prefix: str = "") -> list[str]:
        """Listed paths, optionally under a folder prefix such as `retrieval/`."""
        return [f.path for f in self.manifest.files if f.path.startswith(prefix)]

    def read_bytes(self, rel: str) -> bytes:
        """Contents of a listed file, re-hashed and compared with the manifest before being returned."""
        e = self.entry(rel)
        data = self.file(rel).read_bytes()
        if len(data) != e.size or hashlib.sha256(data).hexdigest() != e.sha256:
            raise BundleVerificationError(f"{self.source}: {rel} changed after verification")
        return data

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel).decode("utf-8"))

    def recheck(self) -> None:
        """Re-hash every listed file in `path` (e.g. before a hot reload); raise on the first mismatch."""
        for e in self.manifest.files:
            if hash_file(self.file(e.path)) != (e.size, e.sha256):
                raise BundleVerificationError(f"{self.source}: {e.path} changed after verification")

    def close(self) -> None:
        """Remove the temporary folder (extracted archive or private copy; no-op for a folder used in place)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> "VerifiedBundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_verified(
    bundle_path: str | Path,
    public_key: Ed25519PublicKey | str | Path,
    limits: ArchiveLimits | None = None,
    tmp_root: str | Path | None = None,
    copy_max_bytes: int = 0,
) -> VerifiedBundle:
    """Verify `bundle_path` with `public_key`; return the verified folder (extracting an archive after verification).

    A folder bundle whose listed files total at most `copy_max_bytes` is copied into a private temporary folder,
    every byte checked against the verified manifest as it is written, so what a loader later opens by path is
    what verified; a larger one (or any, with the default 0) is returned in place.
    Raises BundleVerificationError (one-line reason) if anything fails; nothing is left on disk in that case.
    """
    bundle_path = Path(bundle_path)
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    report = verify_bundle(bundle_path, key, limits)
    manifest = report.manifest
    assert manifest is not None
    digest = report.signed_files[MANIFEST_NAME][1]
    folder = bundle_path.is_dir()
    if folder and manifest.total_bytes > copy_max_bytes:
        return VerifiedBundle(path=bundle_path, manifest=manifest, source=bundle_path, manifest_sha256=digest)
    tmp = Path(tempfile.mkdtemp(prefix="recs-bundle-", dir=tmp_root))  # mode 0700
    try:
        expected = {e.path: (e.size, e.sha256) for e in manifest.files}
        expected.update(report.signed_files)  # manifest.json / manifest.sig byte-identical to what verified
        if folder:
            copy_checked(bundle_path, tmp, expected)
        else:
            extract_checked(bundle_path, tmp, expected, limits)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    vb = VerifiedBundle(path=tmp, manifest=manifest, source=bundle_path, temporary=True, manifest_sha256=digest)
    vb._finalizer = weakref.finalize(vb, shutil.rmtree, str(tmp), True)
    return vb


def copy_checked(src: Path, dest: Path, expected: dict[str, tuple[int, str]]) -> None:
    """Copy the files of `expected` (name -> size, sha256) from the folder `src` into the empty folder `dest`.

    Each source is opened without following a final symlink and must be a regular file; each copy is created
    exclusively (mode 0644) and hashed as it is written. A file that differs from `expected` (changed since it
    verified) raises BundleVerificationError; the caller removes `dest`."""
    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    for name, want in expected.items():
        target = dest.joinpath(*name.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fi = os.open(src.joinpath(*name.split("/")), os.O_RDONLY | nofollow)
        except OSError as exc:
            raise BundleVerificationError(f"{src}: {name} unreadable after verification ({exc.strerror})") from None
        h, n = hashlib.sha256(), 0
        try:
            if not stat.S_ISREG(os.fstat(fi).st_mode):
                raise BundleVerificationError(f"{src}: {name} changed after verification (not a regular file)")
            fo = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fo, "wb") as out:
                while chunk := os.read(fi, CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    n += len(chunk)
        finally:
            os.close(fi)
        if (n, h.hexdigest()) != want:
            raise BundleVerificationError(f"{src}: {name} changed after verification (hash mismatch on copy)")
