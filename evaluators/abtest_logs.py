"""Per-unit metric statistics from a canonical dataset, for sizing experiments on real traffic.

The unit of randomisation is the user; anonymous traffic (null user_id) has no user, so its unit is the session
(`anon:<session_id>`), which is what an assignment service can hash for it. The exposed population is every unit
with at least one impression. Metrics:
- ctr: clicks / impressions per unit, a ratio metric; its per-unit standard deviation is the one of the
  delta-method linearisation (y - R x) / mean(x), so the impression (metric unit) vs user (randomisation unit)
  correlation is accounted for;
- conversion: share of exposed units with at least one purchase (a proportion);
- revenue_per_user: purchase value per exposed unit, zeros included (a mean).
CUPED R^2 is estimated by splitting the logged days in half: the metric of the later half is regressed on the same
unit's metric numerator of the earlier half (zero for units not seen before).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.io import read_table

LOG_METRICS = {"ctr": "ratio", "conversion": "proportion", "revenue_per_user": "mean"}


@dataclass
class LogMetricStats:
    """What the power analysis needs from the logs."""

    metric_name: str
    kind: str
    baseline: float
    std: float
    n_units: int
    anonymous_units: int
    days: int
    daily_units: float
    cumulative_units: tuple[float, ...]
    cuped_r2: float | None
    unit_note: str

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _unit_expr() -> pl.Expr:
    return (pl.when(pl.col("user_id").is_not_null()).then(pl.col("user_id"))
            .otherwise(pl.lit("anon:") + pl.col("session_id")).alias("unit"))


def _per_unit(imps: pl.DataFrame, buys: pl.DataFrame) -> pl.DataFrame:
    u = imps.group_by("unit").agg(pl.len().cast(pl.Float64).alias("x"),
                                  pl.col("clicked").cast(pl.Float64).sum().alias("clicks"),
                                  pl.col("user_id").is_null().all().alias("anonymous"))
    b = buys.group_by("unit").agg(pl.len().alias("purchases"), pl.col("value").fill_null(0.0).sum().alias("revenue"))
    return u.join(b, on="unit", how="left").with_columns(
        pl.col("purchases").fill_null(0), pl.col("revenue").fill_null(0.0))


def _metric_columns(df: pl.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray | None]:
    if metric == "ctr":
        return df["clicks"].to_numpy(), df["x"].to_numpy()
    if metric == "conversion":
        return (df["purchases"] > 0).cast(pl.Float64).to_numpy(), None
    return df["revenue"].to_numpy(), None


def _linearised(y: np.ndarray, x: np.ndarray | None) -> tuple[float, np.ndarray]:
    if x is None:
        return float(y.mean()), y
    r = float(y.sum() / x.sum())
    return r, r + (y - r * x) / x.mean()


def log_metric_stats(dataset: str | Path, metric: str, cuped: bool = False) -> LogMetricStats:
    """Baseline, per-unit standard deviation, traffic and (optionally) CUPED R^2 of `metric` in `dataset`."""
    if metric not in LOG_METRICS:
        raise ValueError(f"metric name must be one of {', '.join(LOG_METRICS)}, got {metric!r}")
    imps = read_table(dataset, "impressions").select("ts", "user_id", "session_id", "clicked")
    if imps.height == 0:
        raise ValueError(f"{dataset}: the impressions table is empty")
    inter = read_table(dataset, "interactions").select("ts", "user_id", "session_id", "kind", "value")
    imps = imps.with_columns(_unit_expr(), pl.col("ts").dt.date().alias("day"))
    buys = inter.filter(pl.col("kind") == "purchase").with_columns(_unit_expr(), pl.col("ts").dt.date().alias("day"))
    units = _per_unit(imps, buys.join(imps.select("unit").unique(), on="unit", how="semi"))
    y, x = _metric_columns(units, metric)
    baseline, lin = _linearised(y, x)
    std = math.sqrt(baseline * (1 - baseline)) if metric == "conversion" else float(np.std(lin, ddof=1))

    per_day = imps.group_by("day").agg(pl.len().alias("rows"), pl.col("unit").n_unique().alias("n")).sort("day")
    full = per_day.filter(pl.col("rows") >= 0.5 * per_day["rows"].median())  # drop partial edge days
    days = full["day"].to_list()
    daily = full
    first = imps.group_by("unit").agg(pl.col("day").min().alias("first")).group_by("first").len()
    first_by_day = dict(zip(first["first"].to_list(), first["len"].to_list()))
    cumulative = tuple(float(v) for v in np.cumsum([first_by_day.get(d, 0) for d in days]))

    r2 = None
    if cuped:
        if len(days) < 2:
            raise ValueError(f"{dataset}: CUPED from logs needs at least 2 days of data")
        mid = days[len(days) // 2]
        pre = _per_unit(imps.filter(pl.col("day") < mid), buys.filter(pl.col("day") < mid))
        post = _per_unit(imps.filter(pl.col("day") >= mid), buys.filter(pl.col("day") >= mid))
        pre_y, _ = _metric_columns(pre, metric)
        cov = post.select("unit").join(pre.select("unit").with_columns(pl.Series("c", pre_y)), on="unit",
                                       how="left")["c"].fill_null(0.0).to_numpy()
        py, px = _metric_columns(post, metric)
        _, lin_post = _linearised(py, px)
        if np.std(cov) > 0 and np.std(lin_post) > 0:
            r2 = float(np.corrcoef(lin_post, cov)[0, 1] ** 2)
        else:
            r2 = 0.0
    n_anon = int(units["anonymous"].sum())
    note = (f"unit = user_id; {n_anon} of {units.height} exposed units are anonymous and use session_id as the unit "
            "(a returning anonymous visitor counts once per session)")
    if per_day.height > full.height:
        note += f"; {per_day.height - full.height} partial day(s) left out of the traffic estimate"
    return LogMetricStats(metric, LOG_METRICS[metric], baseline, std, units.height, n_anon, len(days),
                          float(daily["n"].mean()), cumulative, r2, note)
