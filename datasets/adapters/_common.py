"""Helpers shared by the adapters."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl

from recs.datasets.ingest.config import IngestConfig, IngestError
from recs.datasets.ingest.readers import ROW, SRC_FIELD, SRC_REASON, Source, open_source
from recs.datasets.ingest.scan import Scanned
from recs.datasets.ingest.validate import REASON, FIELD, good_rows, table_columns, with_validation
from recs.datasets.schemas import TABLES, validate


def or_raw(parsed: pl.Expr, raw: pl.Expr) -> pl.Expr:
    """A transformed value as text, or the raw text where the transform failed (so quarantine shows the input)."""
    return pl.coalesce(parsed.cast(pl.Utf8), raw)


def scanned(lf: pl.LazyFrame, table: str, ignored: list[str] | None = None) -> Scanned:
    """Wrap an adapter frame (canonical names + `_row`, and `_src_field` / `_src_reason` if the adapter rejected
    rows itself): keep the table's columns, count rows from the same scan."""
    schema = lf.collect_schema()
    cols = [c for c in TABLES[table].columns if c in schema]
    src_cols = [c for c in (SRC_FIELD, SRC_REASON) if c in schema]
    return Scanned(lf.select(*cols, ROW, *src_cols), lf.select(pl.len().alias("n")), ignored or [])


def rejected(*sources: tuple[str, str]) -> list[pl.Expr]:
    """`_src_field` / `_src_reason` of an adapter row read by `scan_csv_raw`: the reader's (a ragged record), else
    the first of `sources` ((input column, its name in the report) pairs, the inputs of a derived key) that is
    empty, with `required value is missing`: the row is reported under the input column it lacks, not under the
    key that is null because of it."""
    lacking = [pl.when(pl.col(c).is_null()).then(pl.lit(label)) for c, label in sources]
    field = pl.coalesce(pl.col(SRC_FIELD), *lacking)
    reason = pl.coalesce(pl.col(SRC_REASON), pl.when(field.is_not_null()).then(pl.lit("required value is missing")))
    return [field.alias(SRC_FIELD), reason.alias(SRC_REASON)]


def require_columns(src: Source, present: list[str], needed: list[str], layout: str) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise IngestError(f"{src.path}: missing column(s) {', '.join(missing)} of the {layout} layout")


def read_validated(path: str | Path, cfg: IngestConfig, scan) -> pl.DataFrame:
    """Scan one file with an adapter and return the typed canonical frame; raise `IngestError` on the first bad row.

    A CSV file polars cannot parse is read again record by record (`repair.repair_csv`), so the error names the
    line of the first bad record."""
    import tempfile

    def validated(src: Source) -> tuple[list[str], pl.DataFrame]:
        sc = scan(src, cfg)
        cols = table_columns(cfg.table, list(sc.lf.collect_schema()))
        return cols, with_validation(sc.lf, cfg.table, cols, cfg.assume_timezone, epochs=cfg.epoch_bounds_us).collect()

    with tempfile.TemporaryDirectory() as tmp:
        src = open_source(Path(path), Path(tmp), 0)
        retry = [replace(src, repair_to=Path(tmp) / "clean.csv")] if src.kind == "csv" else []
        for attempt in [src, *retry]:
            try:
                cols, v = validated(attempt)
                break
            except pl.exceptions.PolarsError as e:
                error = f"{path}: unreadable {src.kind} input ({(str(e).strip().splitlines() or ['?'])[0]})"
        else:
            raise IngestError(error)
    bad = v.filter(pl.col(REASON).is_not_null())
    if bad.height:
        r = bad.row(0, named=True)
        raise IngestError(f"{path}:{r[ROW]}: {r[FIELD]}: {r[REASON]}")
    df = good_rows(v.lazy(), cols).drop(ROW).collect()
    return validate(cfg.table, df)
