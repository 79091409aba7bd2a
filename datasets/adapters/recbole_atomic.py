"""RecBole atomic files -> canonical interactions, catalog and users.

An atomic file is tab-separated with a `name:type` header (`token`, `token_seq`, `float`, `float_seq`).
- `.inter` -> interactions: `event_id` = `<source>:<user>:<item>:<timestamp>` (stable, so re-ingesting dedups),
  `ts` = `timestamp` (epoch seconds), `kind` = `IngestConfig.interaction_kind` (default `click`), `value` =
  `rating` when present, `session_id` = `<user>:<day number>` (RecBole logs have no sessions), `request_id` null.
- `.item` -> catalog: `title` from `movie_title`/`title`/`name`, `category` = first token of `class`/`genre`/
  `categories`, `subcategory` = the whole token sequence; `created_at` = 1 January of `release_year` (else
  1970-01-01). Marketplace fields a RecBole item lacks get documented placeholders: `seller_id` `recbole`,
  `brand` empty, `price` from a `price` field or 1.0, `stock` 1, `restricted` false.
- `.user` -> users: `created_at` = the user's first interaction in the sibling `.inter` file if it is plain (not
  compressed), else 1970-01-01.
Each file may be compressed (`ml.inter.gz`, `ml.item.zst`). `ingest_recbole` lists every input file it does not
ingest, with the reason, in the report's `skipped_files`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl

from recs.datasets.adapters._common import read_validated, rejected, require_columns, scanned
from recs.datasets.ingest.config import IngestConfig, IngestError
from recs.datasets.ingest.readers import (COMPRESSED_SUFFIXES, ROW, SRC_FIELD, SRC_REASON, Source, logical_suffix,
                                          read_header, scan_csv_raw)
from recs.datasets.ingest.scan import Scanned

SUFFIX_TABLE = {".inter": "interactions", ".item": "catalog", ".user": "users"}
PLACEHOLDER_PRICE = 1.0
EPOCH_DATE = "1970-01-01T00:00:00Z"
NOT_ATOMIC = "not a RecBole atomic file (.inter, .item or .user, plain, gzip or zstd)"


def table_of(path: Path) -> str | None:
    """The table an atomic file feeds, by its suffix under any compression suffix (`ml.inter.gz`: interactions)."""
    return SUFFIX_TABLE.get(logical_suffix(path))


def sibling(path: Path, suffix: str, compressed: bool = True) -> Path | None:
    """The atomic file of the same name with `suffix` (`ml.inter.gz`, `.item` -> `ml.item.gz` or `ml.item`...)."""
    name = path.name
    comp = next((c for c in COMPRESSED_SUFFIXES if name.lower().endswith(c)), "")
    base = Path(name[: len(name) - len(comp)]).stem
    ends = (comp, "", *COMPRESSED_SUFFIXES) if compressed else ("",)
    return next((p for p in (path.with_name(f"{base}{suffix}{c}") for c in ends) if p.is_file()), None)


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


def _scan(src: Source) -> tuple[pl.LazyFrame, list[str], dict[str, str]]:
    """The raw frame, its field names and each field's header cell (`timestamp` -> `timestamp:float`)."""
    names, types = parse_header(src.local, src.path)
    lf, present = scan_csv_raw(src, separator="\t", names=names)
    return lf, present, {n: f"{n}:{t}" for n, t in zip(names, types)}


def _first(present: list[str], options: tuple[str, ...]) -> str | None:
    return next((c for c in options if c in present), None)


def _scan_inter(src: Source, cfg: IngestConfig) -> Scanned:
    lf, present, cells = _scan(src)
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
        # a row lacking an input of event_id is reported under that field (`timestamp:float`), not event_id
        *rejected(*((c, cells[c]) for c in present if c in ("user_id", "item_id", "timestamp"))),
    )
    used = {"user_id", "item_id", "timestamp", "rating"}
    return scanned(out, "interactions", [c for c in present if c not in used])


def _scan_item(src: Source, cfg: IngestConfig) -> Scanned:
    lf, present, _ = _scan(src)
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
        pl.col(ROW), pl.col(SRC_FIELD), pl.col(SRC_REASON),
    )
    used = {"item_id", title, cls, "release_year", "price"}
    return scanned(out, "catalog", [c for c in present if c not in used])


def _scan_user(src: Source, cfg: IngestConfig) -> Scanned:
    lf, present, _ = _scan(src)
    require_columns(src, present, ["user_id"], "RecBole .user")
    created = pl.lit(EPOCH_DATE)
    inter = sibling(src.path, ".inter", compressed=False)  # read here as is: a plain file only
    if inter is not None:
        names, _ = parse_header(inter)
        if "timestamp" in names and "user_id" in names:
            # (a ragged record of the .inter file is quarantined by its own ingest: here its first fields do)
            first = (pl.scan_csv(inter, separator="\t", infer_schema=False, new_columns=names, quote_char=None,
                                 truncate_ragged_lines=True)
                     .group_by("user_id").agg(pl.col("timestamp").cast(pl.Float64, strict=False).min()
                                              .alias("_first")))
            lf = lf.join(first, on="user_id", how="left", maintain_order="left")
            created = pl.coalesce(pl.col("_first").cast(pl.Int64).cast(pl.Utf8), pl.lit(EPOCH_DATE))
    out = lf.select(pl.col("user_id"), created.alias("created_at"), pl.col(ROW), pl.col(SRC_FIELD), pl.col(SRC_REASON))
    return scanned(out, "users", [c for c in present if c != "user_id"])


def scan_recbole(src: Source, cfg: IngestConfig) -> Scanned:
    """Dispatch on the file suffix; the suffix must match the table being ingested."""
    table = table_of(src.path)
    if table is None:
        raise IngestError(f"{src.path}: {NOT_ATOMIC}")
    if table != cfg.table:
        raise IngestError(f"{src.path}: a RecBole {logical_suffix(src.path)} file holds {table}, not {cfg.table}")
    return {"interactions": _scan_inter, "catalog": _scan_item, "users": _scan_user}[table](src, cfg)


def split_by_table(files: list[Path], table: str, side_tables: bool
                   ) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Group atomic files by the table they feed: `table`'s own, plus sibling `.item`/`.user` when `side_tables`.

    Also returns the files of `files` left out, each with the reason (so none is ignored silently).
    """
    groups: dict[str, list[Path]] = {table: [f for f in files if table_of(f) == table]}
    if side_tables and table == "interactions":
        for f in groups[table]:
            for suffix in (".item", ".user"):
                sib = sibling(f, suffix)
                if sib is not None and sib not in groups.setdefault(SUFFIX_TABLE[suffix], []):
                    groups[SUFFIX_TABLE[suffix]].append(sib)
    groups = {t: paths for t, paths in groups.items() if paths}
    used = {f for paths in groups.values() for f in paths}
    return groups, {str(f): _skip_reason(f, table, side_tables) for f in files if f not in used}


def _skip_reason(path: Path, table: str, side_tables: bool) -> str:
    other = table_of(path)
    if other is None:
        return NOT_ATOMIC
    why = "no .inter file of the same name among the inputs" if side_tables else "side tables off"
    return f"holds {other}, not {table}" + (f" ({why})" if table == "interactions" else "")


def ingest_recbole(inputs: list[str | Path], dataset: str | Path, config: IngestConfig) -> list:
    """Ingest RecBole atomic files: `config.table`'s files, then (for interactions) the sibling item/user files."""
    from recs.datasets.ingest import ingest
    from recs.datasets.ingest.readers import expand_inputs

    files = expand_inputs([str(p) for p in inputs])
    groups, skipped = split_by_table(files, config.table, config.side_tables)
    if config.table not in groups:
        raise IngestError(f"no RecBole file for table {config.table} among the inputs "
                          f"(expected {', '.join(s for s, t in SUFFIX_TABLE.items() if t == config.table)}; "
                          f"{len(skipped)} other file(s): {', '.join(list(skipped)[:3]) or 'none'})")
    reports = []
    for i, (table, paths) in enumerate(sorted(groups.items(), key=lambda kv: kv[0] != config.table)):
        cfg = replace(config, table=table, run_id=config.run_id if i == 0 else f"{config.run_id}-{table}")
        reports.append(ingest(paths, dataset, cfg, skipped=skipped if i == 0 else None))
    return reports


def read_recbole(path: str | Path, kind: str = "click") -> pl.DataFrame:
    """One atomic file as a validated canonical frame (interactions, catalog or users, by its suffix)."""
    path = Path(path)
    table = table_of(path)
    if table is None:
        raise IngestError(f"{path}: {NOT_ATOMIC}")
    return read_validated(path, IngestConfig(table=table, format="recbole", interaction_kind=kind), scan_recbole)
