"""RecBole atomic files -> canonical interactions, catalog and users.

An atomic file is tab-separated with a `name:type` header (`token`, `token_seq`, `float`, `float_seq`).
- `.inter` -> interactions: `event_id` = `<source>:<user>:<item>:<timestamp>` (stable, so re-ingesting dedups),
  `ts` = `timestamp` (epoch seconds), `kind` = `IngestConfig.interaction_kind` (default `click`), `value` =
  `rating` when present, `session_id` = `<user>:<day number>` (RecBole logs have no sessions), `request_id` null.
- `.item` -> catalog: `title` from `movie_title`/`title`/`name`, `category` = first token of `class`/`genre`/
  `categories`, `subcategory` = the whole token sequence; `created_at` = 1 January of `release_year` (else
  1970-01-01). Marketplace fields a RecBole item lacks get documented placeholders: `seller_id` `recbole`,
  `brand` empty, `price` from a `price` field or 1.0, `stock` 1, `restricted` false.
- `.user` -> users: `created_at` = the user's first interaction in the sibling `.inter` file (else 1970-01-01).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl

from recs.datasets.adapters._common import read_validated, require_columns, scanned
from recs.datasets.ingest.config import IngestConfig, IngestError
from recs.datasets.ingest.readers import ROW, Source, read_header, scan_csv_raw
from recs.datasets.ingest.scan import Scanned

SUFFIX_TABLE = {".inter": "interactions", ".item": "catalog", ".user": "users"}
PLACEHOLDER_PRICE = 1.0
EPOCH_DATE = "1970-01-01T00:00:00Z"


def parse_header(path: Path, label: Path | None = None) -> tuple[list[str], list[str]]:
    """Field names and RecBole types of an atomic file's header."""
    names, types = [], []
    for cell in read_header(path, label or path).split("\t"):
        name, sep, typ = cell.strip().partition(":")
        if not sep or typ not in ("token", "token_seq", "float", "float_seq"):
            raise IngestError(f"{label or path}: header cell {cell!r} is not `name:type` (RecBole atomic file)")
        names.append(name)
        types.append(typ)
    return names, types


def _scan(src: Source) -> tuple[pl.LazyFrame, list[str]]:
    names, _ = parse_header(src.local, src.path)
    return scan_csv_raw(src, separator="\t", names=names)


def _first(present: list[str], options: tuple[str, ...]) -> str | None:
    return next((c for c in options if c in present), None)


def _scan_inter(src: Source, cfg: IngestConfig) -> Scanned:
    lf, present = _scan(src)
    require_columns(src, present, ["user_id", "item_id", "timestamp"], "RecBole .inter")
    stem = cfg.source_name or src.path.name.split(".")[0]
    secs = pl.col("timestamp").str.strip_chars().cast(pl.Float64, strict=False)
    day = (secs // 86400).cast(pl.Int64).cast(pl.Utf8)
    value = pl.col("rating") if "rating" in present else pl.lit(None, pl.Utf8)
    out = lf.select(
        pl.concat_str(pl.lit(stem), pl.col("user_id"), pl.col("item_id"), pl.col("timestamp"), separator=":")
        .alias("event_id"),
        pl.col("timestamp").alias("ts"),
        pl.col("user_id"),
        pl.coalesce(pl.concat_str(pl.col("user_id"), day, separator=":"), pl.col("user_id")).alias("session_id"),
        pl.lit(cfg.interaction_kind).alias("kind"),
        pl.col("item_id"),
        pl.lit(None, pl.Utf8).alias("request_id"),
        value.alias("value"),
        pl.col(ROW),
    )
    used = {"user_id", "item_id", "timestamp", "rating"}
    return scanned(out, "interactions", [c for c in present if c not in used])


def _scan_item(src: Source, cfg: IngestConfig) -> Scanned:
    lf, present = _scan(src)
    require_columns(src, present, ["item_id"], "RecBole .item")
    title = _first(present, ("movie_title", "title", "name"))
    cls = _first(present, ("class", "genre", "genres", "categories", "category"))
    seq = pl.col(cls).str.strip_chars() if cls else pl.lit(None, pl.Utf8)
    year = pl.col("release_year").str.extract(r"^\s*(\d{4})\s*$") if "release_year" in present else pl.lit(None)
    out = lf.select(
        pl.col("item_id"),
        seq.str.split(" ").list.first().fill_null("unknown").alias("category"),
        seq.fill_null("unknown").alias("subcategory"),
        pl.lit("recbole").alias("seller_id"),
        pl.lit("").alias("brand"),
        (pl.col(title) if title else pl.col("item_id")).fill_null("").alias("title"),
        (pl.col("price") if "price" in present else pl.lit(str(PLACEHOLDER_PRICE))).alias("price"),
        pl.lit("1").alias("stock"),
        pl.lit("false").alias("restricted"),
        pl.coalesce(pl.concat_str(year, pl.lit("-01-01T00:00:00Z")), pl.lit(EPOCH_DATE)).alias("created_at"),
        pl.col(ROW),
    )
    used = {"item_id", title, cls, "release_year", "price"}
    return scanned(out, "catalog", [c for c in present if c not in used])


def _scan_user(src: Source, cfg: IngestConfig) -> Scanned:
    lf, present = _scan(src)
    require_columns(src, present, ["user_id"], "RecBole .user")
    created = pl.lit(EPOCH_DATE)
    inter = src.path.with_suffix(".inter")
    if inter.is_file():
        names, _ = parse_header(inter)
        if "timestamp" in names and "user_id" in names:
            first = (pl.scan_csv(inter, separator="\t", infer_schema=False, new_columns=names, quote_char=None)
                     .group_by("user_id").agg(pl.col("timestamp").cast(pl.Float64, strict=False).min()
                                              .alias("_first")))
            lf = lf.join(first, on="user_id", how="left", maintain_order="left")
            created = pl.coalesce(pl.col("_first").cast(pl.Int64).cast(pl.Utf8), pl.lit(EPOCH_DATE))
    out = lf.select(pl.col("user_id"), created.alias("created_at"), pl.col(ROW))
    return scanned(out, "users", [c for c in present if c != "user_id"])


def scan_recbole(src: Source, cfg: IngestConfig) -> Scanned:
    """Dispatch on the file suffix; the suffix must match the table being ingested."""
    suffix = src.path.suffix if src.path.suffix in SUFFIX_TABLE else Path(src.path.stem).suffix
    table = SUFFIX_TABLE.get(suffix)
    if table is None:
        raise IngestError(f"{src.path}: not a RecBole atomic file (.inter, .item or .user)")
    if table != cfg.table:
        raise IngestError(f"{src.path}: a RecBole {suffix} file holds {table}, not {cfg.table}")
    return {"interactions": _scan_inter, "catalog": _scan_item, "users": _scan_user}[table](src, cfg)


def split_by_table(files: list[Path], table: str, side_tables: bool) -> dict[str, list[Path]]:
    """Group atomic files by the table they feed: `table`'s own, plus sibling `.item`/`.user` when `side_tables`."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        t = SUFFIX_TABLE.get(f.suffix)
        if t is None:
            continue
        if t == table:
            groups.setdefault(t, []).append(f)
    if side_tables and table == "interactions":
        for f in groups.get("interactions", []):
            for suffix in (".item", ".user"):
                sib = f.with_suffix(suffix)
                if sib.is_file():
                    groups.setdefault(SUFFIX_TABLE[suffix], [])
                    if sib not in groups[SUFFIX_TABLE[suffix]]:
                        groups[SUFFIX_TABLE[suffix]].append(sib)
    return groups


def ingest_recbole(inputs: list[str | Path], dataset: str | Path, config: IngestConfig) -> list:
    """Ingest RecBole atomic files: `config.table`'s files, then (for interactions) the sibling item/user files."""
    from recs.datasets.ingest import ingest
    from recs.datasets.ingest.readers import expand_inputs

    files = expand_inputs([str(p) for p in inputs])
    groups = split_by_table(files, config.table, config.side_tables)
    if config.table not in groups:
        raise IngestError(f"no RecBole file for table {config.table} among the inputs "
                          f"(expected {', '.join(s for s, t in SUFFIX_TABLE.items() if t == config.table)})")
    reports = []
    for i, (table, paths) in enumerate(sorted(groups.items(), key=lambda kv: kv[0] != config.table)):
        cfg = replace(config, table=table, run_id=config.run_id if i == 0 else f"{config.run_id}-{table}")
        reports.append(ingest(paths, dataset, cfg))
    return reports


def read_recbole(path: str | Path, kind: str = "click") -> pl.DataFrame:
    """One atomic file as a validated canonical frame (interactions, catalog or users, by its suffix)."""
    path = Path(path)
    table = SUFFIX_TABLE.get(path.suffix)
    if table is None:
        raise IngestError(f"{path}: not a RecBole atomic file (.inter, .item or .user)")
    return read_validated(path, IngestConfig(table=table, format="recbole", interaction_kind=kind), scan_recbole)
