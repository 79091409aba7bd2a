"""Input readers: globs, compression (gzip/zstd), and lazy raw scans of CSV, JSON Lines and Parquet.

Every scan is a polars LazyFrame with a `_row` column: the 1-based line number of the row in the file for CSV
(the header is line 1) and JSON Lines, the 1-based row number for Parquet. CSV and JSON values arrive as strings;
casting and checking is left to `validate.py`. A CSV scan also has `_src_field` / `_src_reason`, set for a record
the reader rejected (only in repair mode: `repair.py`). Compressed inputs are decompressed by streaming into the
run's staging folder first, so memory stays bounded whatever the file size.
"""
from __future__ import annotations

import glob as _glob
import gzip
import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recs.datasets.ingest.config import IngestError
from recs.datasets.ingest.repair import repair_csv, repair_jsonl

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
COMPRESSED_SUFFIXES = (".gz", ".gzip", ".zst", ".zstd")
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".inter", ".item", ".user")
_CHUNK = 1 << 20
ROW = "_row"
# A row rejected before validation (a ragged CSV record; an adapter's missing source column): its field and reason.
SRC_FIELD, SRC_REASON = "_src_field", "_src_reason"


@dataclass(frozen=True)
class Source:
    """One input file: where it was named, the (decompressed) local copy read, its kind and compression."""

    path: Path
    local: Path
    kind: str  # csv | jsonl | parquet
    compression: str | None  # gzip | zstd | None
    repair_to: Path | None = None  # CSV: read record by record into this staged copy (`repair.repair_csv`)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files named by `patterns` (paths, globs with ** allowed, or folders: their files), in order, deduplicated."""
    out: list[Path] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            hits = sorted(Path(p) for p in _glob.glob(pat, recursive=True) if Path(p).is_file())
            if not hits:
                raise IngestError(f"{pat}: no file matches this pattern")
        else:
            p = Path(pat)
            if p.is_dir():
                hits = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith((".", "_")))
                if not hits:
                    raise IngestError(f"{pat}: folder holds no file")
            elif p.is_file():
                hits = [p]
            else:
                raise IngestError(f"{pat}: no such file")
        out.extend(h for h in hits if h not in out)
    return out


def _magic(path: Path, n: int = 4) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as e:
        raise IngestError(f"{path}: cannot read ({e.strerror})") from None


def _decompress(path: Path, kind: str, dest: Path) -> None:
    try:
        if kind == "gzip":
            with gzip.open(path, "rb") as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        else:
            import zstandard

            with open(path, "rb") as raw, open(dest, "wb") as dst:
                reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
                while chunk := reader.read(_CHUNK):
                    dst.write(chunk)
                # A truncated frame ends the stream without an error in stream_reader: check the frame is whole.
                raw.seek(0)
                dec = zstandard.ZstdDecompressor().decompressobj()
                while chunk := raw.read(_CHUNK):
                    dec.decompress(chunk)
                if not dec.eof:
                    raise EOFError("compressed stream ended before its end marker")
    except (EOFError, OSError, zlib.error) as e:
        raise IngestError(f"{path}: truncated or corrupt {kind} data ({e})") from None
    except Exception as e:  # zstandard.ZstdError and friends
        raise IngestError(f"{path}: truncated or corrupt {kind} data ({e})") from None


def logical_suffix(path: Path) -> str:
    """The suffix of `path` once a compression suffix is taken off, lower case: `a.inter.gz` -> `.inter`."""
    name = path.name.lower()
    for suf in COMPRESSED_SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    return Path(name).suffix


def open_source(path: Path, staging: Path, index: int) -> Source:
    """Identify `path` (sniffing magic bytes, then the extension) and decompress it into `staging` if needed."""
    magic = _magic(path)
    compression = "gzip" if magic[:2] == GZIP_MAGIC else "zstd" if magic == ZSTD_MAGIC else None
    local = path
    if compression:
        local = staging / f"input-{index:05d}{logical_suffix(path) or '.dat'}"
        _decompress(path, compression, local)
        magic = _magic(local)
    if magic == PARQUET_MAGIC:
        return Source(path, local, "parquet", compression)
    suffix = logical_suffix(path)
    if suffix == ".parquet":
        raise IngestError(f"{path}: not a Parquet file (bad magic bytes)")
    with open(local, "rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        raise IngestError(f"{path}: binary data, not CSV, JSON Lines or Parquet")
    if suffix in _JSON_SUFFIXES:
        return Source(path, local, "jsonl", compression)
    if suffix in _CSV_SUFFIXES:
        return Source(path, local, "csv", compression)
    first = head.lstrip()[:1]
    return Source(path, local, "jsonl" if first == b"{" else "csv", compression)


def read_header(path: Path, label: Path) -> str:
    with open(path, "rb") as fh:
        line = fh.readline()
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise IngestError(f"{label}: header is not UTF-8 text") from None
    if not text.strip():
        raise IngestError(f"{label}: empty file or empty header line")
    return text.lstrip("\ufeff")


def sniff_separator(header: str) -> str:
    counts = {sep: header.count(sep) for sep in (",", "\t", ";", "|")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def scan_csv_raw(src: Source, separator: str | None = None, names: list[str] | None = None
                 ) -> tuple[pl.LazyFrame, list[str]]:
    """All columns as strings plus `_row` (file line number); `names` renames the header's columns."""
    header = read_header(src.local, src.path)
    sep = separator or sniff_separator(header)
    cols = [c.strip().strip('"') for c in header.split(sep)]
    if names is not None:
        if len(names) != len(cols):
            raise IngestError(f"{src.path}: header has {len(cols)} columns, expected {len(names)}")
        cols = names
    seen = set()
    for i, c in enumerate(cols):
        if c in seen:
            raise IngestError(f"{src.path}: header names column {c!r} twice")
        seen.add(c)
        if c == "" and i > 0:
            raise IngestError(f"{src.path}: header column {i + 1} has no name")
    cols = [c if c else "_index" for c in cols]
    if src.repair_to is not None:  # polars could not read the file: Python's csv module numbers its bad records
        repair_csv(src.local, src.repair_to, sep, len(cols))
        lf = pl.scan_csv(
            src.repair_to, has_header=False, schema={c: pl.Utf8 for c in (ROW, SRC_FIELD, SRC_REASON, *cols)},
            empty_string_is_null=True, null_values=None, raise_if_empty=False, missing_columns="insert",
        )
        return lf.select(*cols, pl.col(ROW).cast(pl.Int64), SRC_FIELD, SRC_REASON), cols
    lf = pl.scan_csv(
        src.local, separator=sep, infer_schema=False, new_columns=cols, row_index_name=ROW,
        row_index_offset=2, empty_string_is_null=True, null_values=None, raise_if_empty=False,
        missing_columns="insert", extra_columns="raise",
    )
    return lf.with_columns(pl.col(ROW).cast(pl.Int64), pl.lit(None, pl.Utf8).alias(SRC_FIELD),
                           pl.lit(None, pl.Utf8).alias(SRC_REASON)), cols


def scan_parquet_raw(src: Source) -> tuple[pl.LazyFrame, list[str]]:
    try:
        cols = list(pl.read_parquet_schema(src.local))
    except Exception as e:  # noqa: BLE001 - any parquet metadata failure is a bad file
        raise IngestError(f"{src.path}: unreadable Parquet ({str(e).splitlines()[0]})") from None
    lf = pl.scan_parquet(src.local, row_index_name=ROW, row_index_offset=1)
    return lf.with_columns(pl.col(ROW).cast(pl.Int64)), cols


def _lines(src: Source) -> pl.LazyFrame:
    return pl.scan_csv(
        src.local, has_header=False, separator="\x1f", quote_char=None, new_columns=["_line"],
        row_index_name=ROW, row_index_offset=1, infer_schema=False, empty_string_is_null=False,
        raise_if_empty=False, truncate_ragged_lines=True,
    ).with_columns(pl.col(ROW).cast(pl.Int64))


JSONL_MODES = ("fast", "lines", "repair")
KEY_SAMPLE_LINES = 1000


def json_keys(src: Source, lines: int = KEY_SAMPLE_LINES) -> list[str]:
    """Top-level keys of the JSON objects on the first `lines` lines of a JSON Lines file, in the order first seen.

    A sample (the readers drop every key they are not asked for, and decoding the whole file again would cost
    more than the ingest itself): a key that first appears later is not found. Broken lines are passed over.
    """
    keys: dict[str, None] = {}
    with open(src.local, "rb") as fh:
        for _, raw in zip(range(lines), fh):
            try:
                obj = json.loads(raw)
            except ValueError:  # blank or broken line (UnicodeDecodeError is a ValueError too)
                continue
            if isinstance(obj, dict):
                keys.update(dict.fromkeys(obj))
    return list(keys)


def _line_count(src: Source, nonblank: bool) -> pl.LazyFrame:
    """One cell: the file's lines (all, or only those not blank), counted without decoding any JSON."""
    if not nonblank:
        return pl.scan_csv(src.local, has_header=False, separator="\x1f", quote_char=None, infer_schema=False,
                           raise_if_empty=False, truncate_ragged_lines=True).select(pl.len().alias("n"))
    return _lines(src).filter(pl.col("_line").str.strip_chars() != "").select(pl.len().alias("n"))


def scan_jsonl_raw(src: Source, columns: list[str], staging: Path, index: int, mode: str = "fast"
                   ) -> tuple[pl.LazyFrame, pl.DataFrame, pl.LazyFrame]:
    """Values of `columns` as strings plus `_row`; the lines that are not JSON objects polars can decode (`_row`,
    `_field`, `_reason`, the values of `columns` as text); and the file's number of records, counted apart from
    the JSON decoder.

    `mode`: `fast` (polars' NDJSON reader; it skips blank lines, so its row numbers are line numbers only when
    there are none: the count is then all lines, and a caller that streams fewer rows than that must read again
    with `lines`), `lines` (the file read line by line by polars, blank lines skipped but numbered; fails on a
    broken line like `fast`) or `repair` (Python reads the file line by line, records the broken lines, and those
    polars' decoder fails on, and blanks them in a staged copy, which `lines` then reads: `repair.repair_jsonl`).
    """
    if mode not in JSONL_MODES:
        raise ValueError(f"unknown JSON Lines mode {mode!r}")
    dtype = pl.Struct({c: pl.Utf8 for c in columns})
    no_bad = pl.DataFrame(schema={ROW: pl.Int64, "_field": pl.Utf8, "_reason": pl.Utf8,
                                  **{c: pl.Utf8 for c in columns}})

    def decoded(s: Source) -> pl.LazyFrame:
        return (_lines(s).filter(pl.col("_line").str.strip_chars() != "")
                .select(ROW, pl.col("_line").str.json_decode(dtype).alias("_j")).unnest("_j"))

    if mode == "fast":
        lf = pl.scan_ndjson(src.local, schema={c: pl.Utf8 for c in columns}, row_index_name=ROW,
                            row_index_offset=1)
        return lf.with_columns(pl.col(ROW).cast(pl.Int64)), no_bad, _line_count(src, nonblank=False)
    if mode == "lines":
        return decoded(src), no_bad, _line_count(src, nonblank=True)
    clean = staging / f"clean-{index:05d}.jsonl"
    bad = repair_jsonl(src.local, clean, columns)
    local = Source(src.path, clean, "jsonl", src.compression)
    return decoded(local), bad, _line_count(local, nonblank=True).select(pl.col("n") + bad.height)
