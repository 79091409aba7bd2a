"""Anonymous session item-view logs (the DIGINETICA / CIKM Cup 2016 layout) -> canonical interactions.

Layout: `;`-separated `session_id;user_id;item_id;timeframe;eventdate` where `timeframe` is milliseconds since
the session's start and `eventdate` its date. Mapping: `ts` = `eventdate` 00:00 UTC + `timeframe` ms;
`user_id` null where `NA` or empty (anonymous); `kind` = `IngestConfig.interaction_kind` (default `click`: a
view is the weakest positive the schema has); `event_id` = `<source>:<session>:<item>:<timeframe>`;
`request_id` and `value` null. A log with a `ts` column instead of `timeframe`/`eventdate` is read too.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from recs.datasets.adapters._common import or_raw, read_validated, rejected, require_columns, scanned
from recs.datasets.ingest.config import IngestConfig
from recs.datasets.ingest.readers import ROW, Source, scan_csv_raw
from recs.datasets.ingest.scan import Scanned
from recs.datasets.ingest.config import IngestError

ANONYMOUS_USER = ("NA", "", "null", "None")


def scan_sessions(src: Source, cfg: IngestConfig) -> Scanned:
    if cfg.table != "interactions":
        raise IngestError(f"{src.path}: the sessions format feeds interactions, not {cfg.table}")
    lf, present = scan_csv_raw(src)
    require_columns(src, present, ["session_id", "item_id"], "sessions")
    stem = cfg.source_name or src.path.name.split(".")[0]
    if "ts" in present:
        ts = pl.col("ts")
        tkey = "ts"
    else:
        require_columns(src, present, ["timeframe", "eventdate"], "sessions")
        day = pl.col("eventdate").str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
        ms = pl.col("timeframe").str.strip_chars().cast(pl.Int64, strict=False)
        parsed = (day.cast(pl.Datetime("ms")) + pl.duration(milliseconds=ms)).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        ts = or_raw(parsed, pl.concat_str(pl.col("eventdate"), pl.lit(" + "), pl.col("timeframe"),
                                          pl.lit(" ms"), ignore_nulls=True))
        tkey = "timeframe"
    user = pl.col("user_id") if "user_id" in present else pl.lit(None, pl.Utf8)
    user = pl.when(user.str.strip_chars().is_in(ANONYMOUS_USER)).then(None).otherwise(user)
    out = lf.select(
        pl.concat_str(pl.lit(stem), pl.col("session_id"), pl.col("item_id"), pl.col(tkey), separator=":")
        .alias("event_id"),
        ts.alias("ts"),
        user.alias("user_id"),
        pl.col("session_id"),
        pl.lit(cfg.interaction_kind).alias("kind"),
        pl.col("item_id"),
        pl.lit(None, pl.Utf8).alias("request_id"),
        pl.lit(None, pl.Utf8).alias("value"),
        pl.col(ROW),
        *rejected(*((c, c) for c in present if c in ("session_id", "item_id", tkey))),  # the inputs of event_id
    )
    used = {"session_id", "user_id", "item_id", "timeframe", "eventdate", "ts"}
    return scanned(out, "interactions", [c for c in present if c not in used])


def read_sessions(path: str | Path, kind: str = "click") -> pl.DataFrame:
    """A session log as a validated canonical `interactions` frame."""
    cfg = IngestConfig(table="interactions", format="sessions", interaction_kind=kind)
    return read_validated(path, cfg, scan_sessions)
