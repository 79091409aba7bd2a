"""Open Bandit Dataset (ZOZOTOWN) CSV -> canonical impressions.

The layout (as shipped by the `obp` package, e.g. `obd/random/all/all.csv`): an unnamed index column, `timestamp`,
`item_id`, `position` (1-based), `click` (0/1), `propensity_score`, `user_feature_*` and `user-item_affinity_*`.
Mapping: `position` - 1 -> `position`; `propensity_score` -> `propensity`; `click` -> `clicked`; surface `home`;
`user_id` null (OBD users are described by hashed features, not ids); each row is its own request
(`obd-<behavior policy>-<campaign>-<index>`, so `random/all/all.csv` and `bts/all/all.csv` never share one;
the policy is the `random` / `bts` folder of the path, the campaign the file stem; a file outside such a folder
gives `obd-<stem>-<index>`) unless `obd_request_grouping="timestamp"` (rows sharing a timestamp form one slate).
`policy_id` is `obd:<behavior policy>` read off the path (`random` or `bts`) unless given.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from recs.datasets.adapters._common import or_raw, read_validated, require_columns, scanned
from recs.datasets.ingest.config import IngestConfig
from recs.datasets.ingest.readers import SRC_FIELD, SRC_REASON, Source, scan_csv_raw
from recs.datasets.ingest.scan import Scanned

OBD_COLUMNS = ["timestamp", "item_id", "position", "click", "propensity_score"]


def _behavior_policy(path: Path) -> str | None:
    """`random` or `bts`: the innermost folder of `path` named after a behavior policy (None outside the layout)."""
    return next((p.lower() for p in reversed(path.parts[:-1]) if p.lower() in ("random", "bts")), None)


def _policy_id(path: Path, given: str | None) -> str:
    return given or f"obd:{_behavior_policy(path) or 'unknown'}"


def _request_prefix(path: Path, source_name: str | None = None) -> str:
    """`obd-<policy>-<campaign>`: request ids unique per behavior policy and campaign (file stem)."""
    campaign = source_name or path.name.split(".")[0]
    policy = _behavior_policy(path)
    return f"obd-{policy}-{campaign}" if policy else f"obd-{campaign}"


def scan_obd(src: Source, cfg: IngestConfig) -> Scanned:
    """Raw canonical impressions from an OBD CSV (values still text; the ingest validation types them)."""
    lf, present = scan_csv_raw(src, separator=",")
    require_columns(src, present, OBD_COLUMNS, "Open Bandit Dataset")
    prefix = _request_prefix(src.path, cfg.source_name) + "-"
    index = pl.col("_index") if "_index" in present else (pl.col("_row") - 2).cast(pl.Utf8)
    rid = pl.concat_str(pl.lit(prefix), pl.col("timestamp") if cfg.obd_request_grouping == "timestamp" else index)
    pos = pl.col("position").str.strip_chars().cast(pl.Int64, strict=False) - 1
    ignored = [c for c in present if c not in OBD_COLUMNS and c != "_index"]
    out = lf.select(
        rid.alias("request_id"),
        pl.col("timestamp").alias("ts"),
        pl.lit(None, pl.Utf8).alias("user_id"),
        rid.alias("session_id"),
        pl.lit("home").alias("surface"),
        pl.lit(None, pl.Utf8).alias("query"),
        pl.col("item_id"),
        or_raw(pos, pl.col("position")).alias("position"),
        pl.col("propensity_score").alias("propensity"),
        pl.lit(_policy_id(src.path, cfg.obd_policy_id)).alias("policy_id"),
        pl.col("click").alias("clicked"),
        pl.col("_row"), pl.col(SRC_FIELD), pl.col(SRC_REASON),
    )
    return scanned(out, "impressions", ignored)


def read_obd_csv(path: str | Path, policy_id: str | None = None, request_grouping: str = "row") -> pl.DataFrame:
    """An OBD CSV as a validated canonical `impressions` frame (raises `IngestError` naming file:line on a bad row)."""
    cfg = IngestConfig(table="impressions", format="obd", obd_policy_id=policy_id,
                       obd_request_grouping=request_grouping)
    return read_validated(path, cfg, scan_obd)
