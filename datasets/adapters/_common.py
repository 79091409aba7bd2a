"""Helpers shared by the adapters."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from recs.datasets.ingest.config import IngestConfig, IngestError
from recs.datasets.ingest.readers import ROW, Source, open_source
from recs.datasets.ingest.scan import Scanned
from recs.datasets.ingest.validate import REASON, FIELD, good_rows, table_columns, with_validation
from recs.datasets.schemas import TABLES, validate


def or_raw(parsed: pl.Expr, raw: pl.Expr) -> pl.Expr:
    """A transformed value as text, or the raw text where the transform failed (so quarantine shows the input)."""
    return pl.coalesce(parsed.cast(pl.Utf8), raw)


def scanned(lf: pl.LazyFrame, table: str, ignored: list[str] | None = None) -> Scanned:
    """Wrap an adapter frame (canonical names + `_row`): keep the table's columns, count rows from the same scan."""
    cols = [c for c in TABLES[table].columns if c in lf.collect_schema()]
    return Scanned(lf.select(*cols, ROW), lf.select(pl.len().alias("n")), ignored or [])


def require_columns(src: Source, present: list[str], needed: list[str], layout: str) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise IngestError(f"{src.path}: missing column(s) {', '.join(missing)} of the {layout} layout")


def read_validated(path: str | Path, cfg: IngestConfig, scan) -> pl.DataFrame:
    """Scan one file with an adapter and return the typed canonical frame; raise `IngestError` on the first bad row."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = open_source(Path(path), Path(tmp), 0)
        sc = scan(src, cfg)
        cols = table_columns(cfg.table, list(sc.lf.collect_schema()))
        v = with_validation(sc.lf, cfg.table, cols, cfg.assume_timezone).collect()
    bad = v.filter(pl.col(REASON).is_not_null())
    if bad.height:
        r = bad.row(0, named=True)
        raise IngestError(f"{path}:{r[ROW]}: {r[FIELD]}: {r[REASON]}")
    df = good_rows(v.lazy(), cols).drop(ROW).collect()
    return validate(cfg.table, df)
