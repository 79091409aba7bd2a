"""Model degradation: NDCG and calibration on matured labels over rolling windows, and a label-free early
warning (shift of the model's score distribution) for the days before labels mature.

Labels (purchases especially) arrive late: a request's label is trusted only once `maturity_days` have passed
since the request, as of the evaluation time `as_of`. Rows younger than that are left out of the label-based
metrics; the score-shift alarm needs no labels and covers those days.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Mapping, Sequence

import numpy as np
import polars as pl

from recs.evaluators.drift import Day, DayVerdict, MonitorConfig, monitor_windows


def _matured(frame: pl.DataFrame, ts_col: str, as_of: datetime | None, maturity_days: float) -> pl.DataFrame:
    if as_of is None:
        return frame
    cutoff = as_of - timedelta(days=maturity_days)
    dtype = frame.schema[ts_col]
    lit = pl.lit(cutoff).cast(dtype) if isinstance(dtype, pl.Datetime) else pl.lit(cutoff.date())
    return frame.filter(pl.col(ts_col) <= lit)


def _check(frame: pl.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: no column {missing[0]!r} (has {', '.join(frame.columns[:12])})")


def _rolling(daily: pl.DataFrame, window_days: int, value: str, weight: str) -> pl.DataFrame:
    """Add `<value>_rolling`: weight-averaged `value` over the trailing `window_days` calendar days."""
    w = f"{window_days}d"
    return daily.sort("day").with_columns(
        (pl.col(value) * pl.col(weight)).rolling_sum_by("day", window_size=w).alias("__num"),
        pl.col(weight).rolling_sum_by("day", window_size=w).alias("__den"),
    ).with_columns((pl.col("__num") / pl.col("__den")).alias(f"{value}_rolling")).drop("__num", "__den")


def ndcg_per_request(
    frame: pl.DataFrame,
    k: int = 10,
    group_col: str = "request_id",
    label_col: str = "label",
    score_col: str | None = "score",
    position_col: str = "position",
    gain: Literal["linear", "exponential"] = "exponential",
) -> pl.DataFrame:
    """NDCG@k of each request's ranking (by `score_col` descending, or by `position_col` when no score column)
    against the ideal order of its labels. Requests without any positive label are dropped (NDCG undefined).

    Returns columns `group_col`, `ndcg`.
    """
    order_col = score_col if score_col and score_col in frame.columns else position_col
    _check(frame, [group_col, label_col, order_col], "ndcg")
    descending = order_col == score_col
    g = pl.col(label_col).cast(pl.Float64)
    g = (2.0 ** g - 1.0) if gain == "exponential" else g
    disc = 1.0 / (pl.int_range(1, pl.len() + 1).cast(pl.Float64) + 1.0).log(2)
    df = frame.select(group_col, order_col, label_col).with_columns(__gain=g)
    dcg = (
        df.sort([group_col, order_col], descending=[False, descending])
        .group_by(group_col, maintain_order=True)
        .agg((pl.col("__gain").head(k) * disc.head(k)).sum().alias("dcg"))
    )
    idcg = (
        df.sort([group_col, "__gain"], descending=[False, True])
        .group_by(group_col, maintain_order=True)
        .agg((pl.col("__gain").head(k) * disc.head(k)).sum().alias("idcg"))
    )
    return dcg.join(idcg, on=group_col).filter(pl.col("idcg") > 0).select(
        group_col, (pl.col("dcg") / pl.col("idcg")).alias("ndcg")
    )


def rolling_ndcg(
    labels_frame: pl.DataFrame,
    window_days: int = 7,
    k: int = 10,
    as_of: datetime | None = None,
    maturity_days: float = 0.0,
    ts_col: str = "ts",
    group_col: str = "request_id",
    label_col: str = "label",
    score_col: str | None = "score",
    position_col: str = "position",
) -> pl.DataFrame:
    """Daily and trailing-window NDCG@k on matured labels.

    `labels_frame`: one row per (request, item shown) with `ts_col`, `group_col`, `label_col` (graded or 0/1)
    and a `score_col` (or `position_col`). Returns `day`, `n_requests`, `ndcg`, `ndcg_rolling` (request-weighted
    mean over the `window_days` days ending that day).
    """
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    _check(labels_frame, [ts_col, group_col], "rolling_ndcg")
    df = _matured(labels_frame, ts_col, as_of, maturity_days)
    days = df.group_by(group_col).agg(pl.col(ts_col).min().cast(pl.Date).alias("day"))
    per = ndcg_per_request(df, k, group_col, label_col, score_col, position_col).join(days, on=group_col)
    daily = per.group_by("day").agg(pl.len().alias("n_requests"), pl.col("ndcg").mean())
    return _rolling(daily, window_days, "ndcg", "n_requests")


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error and its reliability table (one row per non-empty bin)."""

    ece: float  # sum_b n_b / N * |mean_pred_b - frac_pos_b|
    mce: float  # max_b |mean_pred_b - frac_pos_b|
    brier: float
    n: int
    table: pl.DataFrame  # bin, lo, hi, n, mean_pred, frac_pos, gap


def calibration(
    pred: np.ndarray | Sequence[float],
    label: np.ndarray | Sequence[float],
    bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> Calibration:
    """Calibration of predicted probabilities `pred` (shape (n,), in [0, 1]) against 0/1 `label` (shape (n,))."""
    p = np.asarray(pred, dtype=float)
    y = np.asarray(label, dtype=float)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"pred and label must be 1-d of one length, got {p.shape} and {y.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("pred must be probabilities in [0, 1]")
    if p.size == 0:
        empty = pl.DataFrame(schema={"bin": pl.Int64, "lo": pl.Float64, "hi": pl.Float64, "n": pl.Int64,
                                     "mean_pred": pl.Float64, "frac_pos": pl.Float64, "gap": pl.Float64})
        return Calibration(float("nan"), float("nan"), float("nan"), 0, empty)
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
        edges[0], edges[-1] = 0.0, 1.0
    else:
        edges = np.linspace(0.0, 1.0, bins + 1)
    nb = len(edges) - 1
    if strategy == "quantile":  # bins are [lo, hi); the last one also holds 1.0
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, nb - 1)
    else:
        idx = np.clip(np.floor(p * nb).astype(np.int64), 0, nb - 1)
    n = np.bincount(idx, minlength=nb)
    sp = np.bincount(idx, weights=p, minlength=nb)
    sy = np.bincount(idx, weights=y, minlength=nb)
    keep = n > 0
    mean_pred = sp[keep] / n[keep]
    frac_pos = sy[keep] / n[keep]
    gap = np.abs(mean_pred - frac_pos)
    table = pl.DataFrame({
        "bin": np.arange(nb)[keep], "lo": edges[:-1][keep], "hi": edges[1:][keep], "n": n[keep],
        "mean_pred": mean_pred, "frac_pos": frac_pos, "gap": gap,
    })
    return Calibration(
        ece=float(np.sum(n[keep] / p.size * gap)), mce=float(gap.max()),
        brier=float(np.mean((p - y) ** 2)), n=int(p.size), table=table,
    )


def rolling_calibration(
    frame: pl.DataFrame,
    window_days: int = 7,
    bins: int = 10,
    as_of: datetime | None = None,
    maturity_days: float = 0.0,
    ts_col: str = "ts",
    pred_col: str = "pred",
    label_col: str = "label",
) -> pl.DataFrame:
    """ECE and mean predicted vs observed rate per day and over the trailing `window_days` days, on matured
    labels. Returns `day`, `n`, `mean_pred`, `frac_pos`, `ece` (that day), `ece_rolling` (the window's pooled rows).
    """
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    _check(frame, [ts_col, pred_col, label_col], "rolling_calibration")
    df = _matured(frame, ts_col, as_of, maturity_days).with_columns(pl.col(ts_col).cast(pl.Date).alias("day"))
    days = sorted(df["day"].unique().to_list())
    by_day = {d[0]: g for d, g in df.partition_by("day", as_dict=True).items()}
    rows = []
    for d in days:
        g = by_day[d]
        win = df.filter((pl.col("day") <= d) & (pl.col("day") > d - timedelta(days=window_days)))
        c_day = calibration(g[pred_col].to_numpy(), g[label_col].cast(pl.Float64).to_numpy(), bins)
        c_win = calibration(win[pred_col].to_numpy(), win[label_col].cast(pl.Float64).to_numpy(), bins)
        rows.append({"day": d, "n": g.height, "mean_pred": float(g[pred_col].mean()),
                     "frac_pos": float(g[label_col].cast(pl.Float64).mean()), "ece": c_day.ece,
                     "ece_rolling": c_win.ece})
    schema = {"day": pl.Date, "n": pl.Int64, "mean_pred": pl.Float64, "frac_pos": pl.Float64,
              "ece": pl.Float64, "ece_rolling": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def score_shift_alarm(
    reference_scores: np.ndarray | Sequence[float],
    daily_scores: Mapping[Day, np.ndarray | Sequence[float]],
    config: MonitorConfig = MonitorConfig(),
) -> list[DayVerdict]:
    """Label-free early warning: PSI + KS of each day's model scores against reference scores (one column
    `score`; the same rules as feature drift). One `DayVerdict` per day, in day order."""
    ref = pl.DataFrame({"score": np.asarray(reference_scores, dtype=float)})
    days = {d: pl.DataFrame({"score": np.asarray(s, dtype=float)}) for d, s in daily_scores.items()}
    return monitor_windows(days, ref, columns=["score"], config=config)
