"""Export a trained model folder as a signed bundle (folder or reproducible .tar.gz)."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recs.bundle.archive import is_archive
from recs.bundle.errors import BundleExportError, BundleVerificationError
from recs.bundle.keys import key_id, load_private_key
from recs.bundle.manifest import (
    CHUNK, FORMAT, FORMAT_VERSION, MANIFEST_NAME, MAX_MANIFEST_BYTES, RESERVED_NAMES, SIGNATURE_NAME, FileEntry,
    Manifest, canonical_json, check_relpath, environment_versions, model_metadata,
)
from recs.bundle.signature import sign_manifest
from recs.datasets.io import atomic_dir

MODEL_JSON = "model.json"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: Manifest
    key_id: str
    archive: bool
    archive_sha256: str | None = None

    @property
    def n_files(self) -> int:
        return len(self.manifest.files)


def list_model_files(model_dir: Path) -> list[str]:
    """Sorted POSIX relative paths of every regular file under `model_dir`; symlinks and special files are refused."""
    if not model_dir.is_dir():
        raise BundleExportError(f"{model_dir}: model folder not found")
    found: list[str] = []
    for root, dirs, files in os.walk(model_dir, followlinks=False):
        rootp = Path(root)
        for name in dirs + files:
            full = rootp / name
            rel = full.relative_to(model_dir).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise BundleExportError(f"{full}: symlinks are not allowed in a bundle (copy the target instead)")
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise BundleExportError(f"{full}: not a regular file (devices, sockets and FIFOs are not allowed)")
            try:
                check_relpath(rel, str(model_dir))
            except BundleVerificationError as exc:
                raise BundleExportError(str(exc)) from None
            if rel in RESERVED_NAMES:
                raise BundleExportError(f"{full}: {rel!r} is reserved for the bundle's own manifest/signature")
            found.append(rel)
    if not found:
        raise BundleExportError(f"{model_dir}: model folder holds no files")
    return sorted(found)


def read_model_json(model_dir: Path, shown: Path | None = None) -> dict[str, Any] | None:
    """`model.json` of `model_dir` as a dict, or None when absent; malformed JSON is an error naming the file
    (`shown`, when given, is the folder named in errors: export reads the staged copy but names the source)."""
    path = model_dir / MODEL_JSON
    name = (shown or model_dir) / MODEL_JSON
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleExportError(f"{name}: too large for a metadata file")
    try:  # lenient: training code may write NaN metrics; they are recorded as null in the manifest
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise BundleExportError(f"{name}: not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleExportError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BundleExportError(f"{name}: top level is not a JSON object")
    return doc


def _copy_hashing(src: Path, dst: Path) -> tuple[int, str]:
    """Copy src -> dst, hashing the bytes actually written (so the manifest describes the copy, not the source)."""
    h = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        while chunk := fi.read(CHUNK):
            h.update(chunk)
            fo.write(chunk)
            size += len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    return size, h.hexdigest()


def build_manifest_doc(
    entries: list[FileEntry], model_json: dict[str, Any] | None, signer_key_id: str, created_at: str
) -> dict[str, Any]:
    toolkit, deps = environment_versions()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": created_at,
        "toolkit": toolkit,
        "dependencies": deps,
        "model": model_metadata(model_json),
        "signer": {"algorithm": "ed25519", "key_id": signer_key_id},
        "files": [e.to_json() for e in entries],
        "totals": {"files": len(entries), "bytes": sum(e.size for e in entries)},
    }


def _stage(model_dir: Path, dest: Path, private_key: Ed25519PrivateKey, created_at: str) -> Manifest:
    rels = list_model_files(model_dir)
    read_model_json(model_dir)  # a malformed model.json fails before anything is copied
    entries: list[FileEntry] = []
    for rel in rels:
        size, digest = _copy_hashing(model_dir / rel, dest / rel)
        entries.append(FileEntry(rel, size, digest))
    # provenance from the staged copy, the bytes just hashed (the source may have changed since it was copied)
    model_json = read_model_json(dest, shown=model_dir) if MODEL_JSON in rels else None
    doc = build_manifest_doc(entries, model_json, key_id(private_key.public_key()), created_at)
    manifest_bytes = canonical_json(doc)
    (dest / MANIFEST_NAME).write_bytes(manifest_bytes)
    (dest / SIGNATURE_NAME).write_bytes(sign_manifest(manifest_bytes, private_key))
    return Manifest(doc, tuple(entries))


def _write_tar(staged: Path, manifest: Manifest, out: Path, mtime: int, compresslevel: int) -> str:
    """Write a reproducible .tar.gz of `staged` (manifest first, sorted files, fixed owner/mode/mtime).

    Returns the archive's sha256."""
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=compresslevel) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for rel in [MANIFEST_NAME, SIGNATURE_NAME] + [f.path for f in manifest.files]:
                        src = staged / rel
                        info = tarfile.TarInfo(rel)
                        info.size = src.stat().st_size
                        info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = mtime, 0o644, 0, 0, "", ""
                        with open(src, "rb") as fh:
                            tar.addfile(info, fh)
            raw.flush()
            os.fsync(raw.fileno())
        with open(tmp, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        os.replace(tmp, out)
        return digest
    finally:
        if tmp.exists():
            tmp.unlink()


def _is_bundle_archive(path: Path) -> bool:
    """True for a .tar.gz whose first member is `manifest.json` (how `export_bundle` writes archives)."""
    if not is_archive(path):
        return False
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            first = tar.next()
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return False
    return first is not None and first.name == MANIFEST_NAME


def _check_output(model_dir: Path, out: Path, tar: bool, overwrite: bool) -> None:
    """Refuse an output that is, is inside, or contains the model folder, and an existing output that is not a
    bundle of the requested kind (`overwrite` replaces only a bundle folder or a bundle archive, nothing else)."""
    m, o = model_dir.resolve(), out.resolve()
    if o == m or m in o.parents:
        raise BundleExportError(f"{out}: the bundle may not be written inside the model folder {model_dir}")
    if o in m.parents:
        raise BundleExportError(f"{out}: contains the model folder {model_dir} (replacing it would delete the model)")
    if not out.exists() and not out.is_symlink():
        return
    if tar:
        if out.is_dir():
            raise BundleExportError(f"{out}: already exists and is a folder")
        if not overwrite:
            raise BundleExportError(f"{out}: already exists (pass --overwrite)")
        if not _is_bundle_archive(out):
            raise BundleExportError(f"{out}: already exists and is not a bundle archive (not replaced)")
        return
    if not out.is_dir():
        raise BundleExportError(f"{out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise BundleExportError(f"{out}: exists and is not empty (pass --overwrite)")
    if not (out / MANIFEST_NAME).is_file():
        raise BundleExportError(f"{out}: exists and is not a bundle folder (no {MANIFEST_NAME}; not replaced)")


def export_bundle(
    model_dir: str | Path,
    out: str | Path,
    private_key: Ed25519PrivateKey | str | Path,
    tar: bool = False,
    overwrite: bool = False,
    created_at: datetime | None = None,
    compresslevel: int = 1,
) -> ExportResult:
    """Copy every file of `model_dir` into a bundle at `out`, write `manifest.json` and sign it into `manifest.sig`.

    `compresslevel` (gzip 0-9) only affects archives; 1 is the default because model indexes are mostly
    incompressible floats and level 6 costs several times the CPU for a few percent.
    The output appears atomically: a folder is built beside `out` and renamed; an archive is written to a
    temporary file and renamed. An existing `out` is refused unless `overwrite`, and even then unless it is a
    bundle (a folder holding `manifest.json`, or a bundle archive); an `out` holding the model folder is refused.
    """
    model_dir, out = Path(model_dir), Path(out)
    if not 0 <= compresslevel <= 9:
        raise BundleExportError(f"compresslevel must be in 0..9, got {compresslevel}")
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    when = (created_at or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    _check_output(model_dir, out, tar, overwrite)
    if tar:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".recs-bundle-", dir=out.parent))
        try:
            manifest = _stage(model_dir, staging, key, stamp)
            digest = _write_tar(staging, manifest, out, int(when.timestamp()), compresslevel)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return ExportResult(out, manifest, key_id(key.public_key()), True, digest)
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            manifest = _stage(model_dir, tmp, key, stamp)
    except FileExistsError:
        raise BundleExportError(f"{out}: exists and is not empty (pass --overwrite)") from None
    return ExportResult(out, manifest, key_id(key.public_key()), False)


def bundle_summary(result: ExportResult) -> dict[str, Any]:
    """A JSON-able summary for the CLI."""
    return {
        "bundle": str(result.path),
        "archive": result.archive,
        "archive_sha256": result.archive_sha256,
        "files": result.n_files,
        "bytes": result.manifest.total_bytes,
        "key_id": result.key_id,
        "created_at": result.manifest.doc["created_at"],
        "model": result.manifest.doc["model"],
    }


__all__ = ["ExportResult", "export_bundle", "bundle_summary", "list_model_files", "read_model_json"]
