"""Reward columns for OPE, with delayed labels: purchases and revenue count only on matured rows by default.

A purchase can arrive days after the impression; a row whose attribution window has not closed yet has an
incomplete label, and counting it as "no purchase" biases every estimate down. Labels come from `recs labels`
(`request_id, position, purchase, revenue, label_status`), joined onto the logs; whole requests are kept or
dropped (their rows share a timestamp and the estimators cluster by request).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recs.evaluators.ope.inputs import OPEInputError, read_frame

DELAYED = ("purchase", "revenue")


@dataclass(frozen=True)
class LabelJoin:
    """Logs with the reward attached; how many requests were dropped as pending."""

    logs: pl.DataFrame
    pending_requests_dropped: int
    source: str


def read_labels(path: str | Path) -> pl.DataFrame:
    """`recs labels` output: a Parquet file, or its output folder (labels.parquet)."""
    p = Path(path)
    if p.is_dir():
        p = p / "labels.parquet"
    df = read_frame(p)
    need = ["request_id", "position", "label_status"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise OPEInputError(f"{p}: not `recs labels` output (missing {', '.join(missing)})")
    return df


def attach_labels(logs: pl.DataFrame, labels: pl.DataFrame | None, reward: str, include_pending: bool = False,
                  labels_source: str = "labels") -> LabelJoin:
    """Attach the reward column from `labels` (when given) and drop requests whose labels are still pending.

    Clicks are known at once, so `clicked` never needs maturity. Without labels, delayed rewards must already
    be logged: with a `label_status` column in the logs, pending requests are dropped the same way; without one
    (e.g. the simulator's `log_policy` output) they are taken as final (source "logs (taken as final)").
    """
    if reward not in DELAYED:
        return LabelJoin(logs, 0, "logs")
    if labels is None:
        if "label_status" not in logs.columns:
            return LabelJoin(logs, 0, "logs (taken as final)")
        out = logs.with_columns((pl.col("label_status") == "matured").fill_null(False).alias("_matured"))
        return _drop_pending(out, reward, include_pending, f"{labels_source} (label_status)")
    if reward not in labels.columns:
        raise OPEInputError(f"{labels_source}: no column {reward!r}")
    lab = labels.select("request_id", pl.col("position").cast(pl.Int64), pl.col(reward).alias("_reward"),
                        (pl.col("label_status") == "matured").fill_null(False).alias("_matured"))
    out = logs.drop(reward, strict=False).with_columns(pl.col("position").cast(pl.Int64)).join(
        lab, on=["request_id", "position"], how="left")
    missing = out.filter(pl.col("_reward").is_null())
    if missing.height:
        r = missing.row(0, named=True)
        raise OPEInputError(f"{labels_source}: no label for request_id={r['request_id']!r} position={r['position']} "
                            f"({missing.height} logged impressions unlabelled; were labels built from these logs?)")
    return _drop_pending(out.rename({"_reward": reward}), reward, include_pending, labels_source)


def _drop_pending(out: pl.DataFrame, reward: str, include_pending: bool, source: str) -> LabelJoin:
    """Drop whole requests with a pending row (flag column `_matured`) unless `include_pending`."""
    dropped = 0
    if not include_pending:
        pending = out.filter(~pl.col("_matured"))["request_id"].unique()
        dropped = len(pending)
        out = out.filter(~pl.col("request_id").is_in(pending.implode()))
        if out.height == 0:
            raise OPEInputError(f"{source}: every logged request is still pending (no matured {reward} "
                                "labels); pass --include-pending to use them anyway")
    return LabelJoin(out.drop("_matured"), dropped, source)
