"""Turn one input file of a given `--format` into a raw frame of canonical columns plus `_row`."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from recs.datasets.ingest.config import IngestConfig, IngestError
from recs.datasets.ingest.readers import (ROW, SRC_FIELD, SRC_REASON, Source, json_keys, scan_csv_raw, scan_jsonl_raw,
                                          scan_parquet_raw)
from recs.datasets.schemas import TABLES


@dataclass
class Scanned:
    """A raw lazy frame (canonical column names, values still raw) and what the reader learnt on the way."""

    lf: pl.LazyFrame
    count: pl.LazyFrame  # one cell: the number of data rows in the file, counted apart from the parse
    ignored_columns: list[str] = field(default_factory=list)
    # JSON lines that are not rows polars can read (broken JSON, 1e400): `_row`, `_field`, `_reason`, raw values
    bad_lines: pl.DataFrame | None = None


def _require(src: Source, table: str, present: list[str]) -> None:
    missing = [c for c in TABLES[table].required_columns if c not in present]
    if missing:
        raise IngestError(f"{src.path}: missing required column(s) {', '.join(missing)} for table {table}")


def scan_canonical(src: Source, cfg: IngestConfig, staging: Path, index: int, mode: str) -> Scanned:
    cols = TABLES[cfg.table].columns
    if src.kind == "jsonl":
        lf, bad, count = scan_jsonl_raw(src, cols, staging, index, mode)
        return Scanned(lf, count, [k for k in json_keys(src) if k not in cols], bad)
    lf, present = scan_csv_raw(src) if src.kind == "csv" else scan_parquet_raw(src)
    _require(src, cfg.table, present)
    ignored = [c for c in present if c not in cols]
    src_cols = [SRC_FIELD, SRC_REASON] if src.kind == "csv" else []
    return Scanned(lf.select(*(c for c in cols if c in present), ROW, *src_cols), lf.select(pl.len().alias("n")),
                   ignored)


def scan_source(src: Source, cfg: IngestConfig, staging: Path, index: int, mode: str = "fast") -> Scanned:
    """Dispatch on `cfg.format` (adapters are imported lazily: they import the readers of this package).

    `mode` is how a JSON Lines file is read (`readers.scan_jsonl_raw`); a CSV file in `repair` mode is read record
    by record into a staged copy (`repair.repair_csv`); Parquet ignores it.
    """
    if src.kind == "csv" and mode == "repair":
        src = replace(src, repair_to=staging / f"clean-{index:05d}.csv")
    if cfg.format == "canonical":
        return scan_canonical(src, cfg, staging, index, mode)
    if cfg.format == "obd":
        from recs.datasets.adapters.obd import scan_obd

        return scan_obd(src, cfg)
    if cfg.format == "recbole":
        from recs.datasets.adapters.recbole_atomic import scan_recbole

        return scan_recbole(src, cfg)
    if cfg.format == "sessions":
        from recs.datasets.adapters.sessions import scan_sessions

        return scan_sessions(src, cfg)
    raise IngestError(f"unknown format {cfg.format!r}")
