"""Safe, single-pass reading of bundle archives (.tar.gz).

Every member header is checked before its data is handed to the caller: only regular files and folders, no
absolute paths, no `..`, no symlinks / hard links / devices / FIFOs / sparse files, no duplicate names, bounded
member count and expanded size. The gzip stream is read to its end so a truncated or corrupt archive is always
reported (tarfile alone stops at the end-of-archive block and would miss a cut-off gzip trailer).

`verify` runs `scan_archive` with a hashing callback that writes nothing to disk; `load` extracts only after that
pass succeeded, re-checking every byte it writes against the verified manifest.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from recs.bundle.errors import BundleVerificationError
from recs.bundle.manifest import CHUNK, check_relpath

GZIP_MAGIC = b"\x1f\x8b"
_TYPE_NAMES = {
    tarfile.SYMTYPE: "a symlink",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds that stop decompression bombs and absurd archives before they cost disk or memory."""

    max_members: int = 200_000
    max_total_bytes: int = 256 * 1024**3
    max_trailing_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_members", "max_total_bytes", "max_trailing_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ArchiveLimits.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class ArchiveScan:
    n_files: int
    n_dirs: int
    total_bytes: int
    dirs: frozenset[str] = frozenset()   # every folder: folder members and the parents of any member


def is_archive(path: str | Path) -> bool:
    """True when `path` is a file starting with the gzip magic bytes."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _member_name(member: tarfile.TarInfo, where: str) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/") if member.isdir() else name
    if name.startswith("/") or "/../" in f"/{name}/":
        raise BundleVerificationError(f"{where}: unsafe path {member.name!r} in archive (absolute or '..')")
    try:
        return check_relpath(name, where)
    except BundleVerificationError as exc:
        raise BundleVerificationError(f"{where}: unsafe member name {member.name!r} ({exc})") from None


class _Tracker:
    """Rejects duplicate names and file/folder conflicts as members arrive."""

    def __init__(self, where: str) -> None:
        self.where, self.files, self.dirs = where, set[str](), set[str]()

    def add(self, name: str, is_dir: bool) -> None:
        if name in self.files or (not is_dir and name in self.dirs):
            raise BundleVerificationError(f"{self.where}: duplicate or conflicting member {name!r} in archive")
        parts = name.split("/")
        for j in range(1, len(parts)):
            parent = "/".join(parts[:j])
            if parent in self.files:
                raise BundleVerificationError(f"{self.where}: {parent!r} is both a file and a folder in archive")
            self.dirs.add(parent)
        (self.dirs if is_dir else self.files).add(name)


def _drain(gz: BinaryIO, limits: ArchiveLimits, where: str) -> None:
    """Read the rest of the gzip stream: checks CRC/length trailer; only zero padding may follow the tar end."""
    seen = 0
    while chunk := gz.read(CHUNK):
        seen += len(chunk)
        if seen > limits.max_trailing_bytes or chunk.count(0) != len(chunk):
            raise BundleVerificationError(f"{where}: unexpected data after the end of the tar archive")


def scan_archive(
    path: str | Path,
    on_file: Callable[[str, int, BinaryIO], None],
    limits: ArchiveLimits | None = None,
) -> ArchiveScan:
    """Stream through a .tar.gz once, checking each member header, calling `on_file(name, size, stream)` per file.

    The result lists the folders the archive holds (as a folder bundle would on disk), for the unlisted-folder check.
    Raises BundleVerificationError with a one-line reason for an unsafe, truncated or corrupt archive.
    """
    limits = limits or ArchiveLimits()
    path = Path(path)
    where = str(path)
    tracker = _Tracker(where)
    n_files = n_dirs = total = 0
    try:
        with open(path, "rb") as raw:
            if raw.read(2) != GZIP_MAGIC:
                raise BundleVerificationError(f"{where}: not a .tar.gz archive (no gzip header)")
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                with tarfile.open(fileobj=gz, mode="r|") as tar:
                    for member in tar:
                        if n_files + n_dirs >= limits.max_members:
                            raise BundleVerificationError(f"{where}: more than {limits.max_members} archive members")
                        if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                            kind_dir = False
                        elif member.type == tarfile.DIRTYPE:
                            kind_dir = True
                        else:
                            what = _TYPE_NAMES.get(member.type, f"an unsupported member type {member.type!r}")
                            raise BundleVerificationError(f"{where}: archive member {member.name!r} is {what}")
                        if kind_dir and member.name.strip("/") in ("", "."):
                            continue
                        name = _member_name(member, where)
                        tracker.add(name, kind_dir)
                        if kind_dir:
                            n_dirs += 1
                            continue
                        total += member.size
                        if total > limits.max_total_bytes:
                            raise BundleVerificationError(
                                f"{where}: archive expands beyond {limits.max_total_bytes} bytes"
                            )
                        n_files += 1
                        stream = tar.extractfile(member)
                        assert stream is not None  # regular file
                        on_file(name, member.size, stream)
                _drain(gz, limits, where)
    except BundleVerificationError:
        raise
    except EOFError:
        raise BundleVerificationError(f"{where}: truncated archive (compressed stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise BundleVerificationError(f"{where}: corrupt archive ({exc})") from None
    except tarfile.ReadError as exc:
        msg = str(exc)
        if "unexpected end" in msg or "truncated" in msg:
            raise BundleVerificationError(f"{where}: truncated archive ({msg})") from None
        raise BundleVerificationError(f"{where}: not a valid tar archive ({msg})") from None
    except tarfile.TarError as exc:
        raise BundleVerificationError(f"{where}: not a valid tar archive ({exc})") from None
    if n_files == 0:
        raise BundleVerificationError(f"{where}: archive holds no files")
    return ArchiveScan(n_files, n_dirs, total, frozenset(tracker.dirs))


def extract_checked(
    path: str | Path, dest: str | Path, expected: dict[str, tuple[int, str]], limits: ArchiveLimits | None = None
) -> ArchiveScan:
    """Extract a .tar.gz into the empty folder `dest`, accepting only members in `expected` (name -> size, sha256).

    Each file is created exclusively (O_EXCL | O_NOFOLLOW, mode 0644) and hashed as it is written; any byte that
    differs from `expected`, any extra or missing member, raises BundleVerificationError (caller removes `dest`).
    """
    dest = Path(dest)
    if any(dest.iterdir()):
        raise BundleVerificationError(f"{dest}: extraction folder is not empty")
    written: set[str] = set()
    where = str(path)

    def _write(name: str, size: int, stream: BinaryIO) -> None:
        want = expected.get(name)
        if want is None:
            raise BundleVerificationError(f"{where}: unlisted file {name!r} (archive changed after verification?)")
        target = dest.joinpath(*name.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        h, n = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as fo:
            while chunk := stream.read(CHUNK):
                h.update(chunk)
                fo.write(chunk)
                n += len(chunk)
        if (n, h.hexdigest()) != want:
            raise BundleVerificationError(f"{where}: {name!r} changed after verification (hash mismatch on extract)")
        written.add(name)

    scan = scan_archive(path, _write, limits)
    missing = sorted(set(expected) - written)
    if missing:
        raise BundleVerificationError(f"{where}: missing file {missing[0]!r} on extract")
    return scan
