"""`recs labels`: one row per impression with graded, delay-aware, point-in-time-correct labels.

Attribution: an interaction is credited to an impression by `request_id` (and `item_id`); an interaction without
a `request_id` goes to the latest earlier impression of the same item to the same user (or, when anonymous, the
same session) within the attribution window. Only interactions with `ts <= as_of` are known, and only those in
`[impression ts, impression ts + window]` count. An item shown twice in one request is credited once, at its top
position. Clicks come from the click events when the interactions hold any (only those known by `as_of`); logs
without click events fall back to the impressions' own `clicked` flag, read as known when the impression was logged.
A row is `matured` when its window has closed by `as_of`, otherwise `pending`, and a pending row with no purchase
yet carries `p_conversion_pending` from `DelayModel` (0, and the summary says so, when no row has matured).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.delay_model import DelayModel
from recs.datasets.io import read_table, scan_table
from recs.datasets.point_in_time import attributes_as_of

UTC = pl.Datetime("us", "UTC")
GRADES = {"purchase": 3, "add_to_cart": 2, "click": 1}


@dataclass
class LabelConfig:
    """`as_of`: the time labels are cut at; `window`: attribution window after each impression."""

    as_of: datetime
    window: timedelta = timedelta(days=7)
    fallback_attribution: bool = True
    point_in_time: bool = True

    def __post_init__(self) -> None:
        if self.as_of.tzinfo is None:
            self.as_of = self.as_of.replace(tzinfo=timezone.utc)
        self.as_of = self.as_of.astimezone(timezone.utc)
        if self.window <= timedelta(0):
            raise ValueError("the attribution window must be > 0")


@dataclass
class LabelResult:
    frame: pl.DataFrame
    delay_model: DelayModel
    summary: dict = field(default_factory=dict)


def label_files(path: str | Path) -> tuple[Path, Path]:
    """Where `recs labels` writes to `path` (and where readers find it): (labels, summary). `FILE.parquet` ->
    FILE.parquet and FILE.summary.json; a folder -> folder/labels.parquet and folder/summary.json."""
    path = Path(path)
    if path.suffix == ".parquet":
        return path, path.with_suffix(".summary.json")
    return path / "labels.parquet", path / "summary.json"


def parse_duration(text: str) -> timedelta:
    """`7d`, `36h`, `90m`, `45s`, `2w` (or a bare number of days) to a timedelta."""
    t = text.strip().lower()
    units = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    try:
        if t and t[-1] in units:
            return timedelta(**{units[t[-1]]: float(t[:-1])})
        return timedelta(days=float(t))
    except ValueError:
        raise ValueError(f"bad duration {text!r} (use e.g. 7d, 36h, 90m)") from None


def _actor(df: pl.DataFrame | pl.LazyFrame):
    return df.with_columns(pl.when(pl.col("user_id").is_not_null()).then(pl.lit("u:") + pl.col("user_id"))
                           .otherwise(pl.lit("s:") + pl.col("session_id")).alias("_actor"))


def attribute(impressions: pl.DataFrame, interactions: pl.DataFrame, cfg: LabelConfig) -> pl.DataFrame:
    """Interactions credited to impressions: `request_id`, `position`, `kind`, `ev_ts`, `value`, `via`."""
    as_of = pl.lit(cfg.as_of).cast(UTC)
    win = pl.duration(microseconds=int(cfg.window / timedelta(microseconds=1)))
    inter = interactions.filter(pl.col("ts") <= as_of)
    imp = impressions.select("request_id", "position", "item_id", "ts", "user_id", "session_id")
    top = imp.sort("position").unique(["request_id", "item_id"], keep="first", maintain_order=True)  # once each
    direct = (inter.filter(pl.col("request_id").is_not_null())
              .join(top.rename({"ts": "imp_ts"}).drop("user_id", "session_id"), on=["request_id", "item_id"])
              .select("request_id", "position", "kind", pl.col("ts").alias("ev_ts"), "value", "imp_ts",
                      pl.lit("request_id").alias("via")))
    parts = [direct]
    if cfg.fallback_attribution:
        loose = _actor(inter.filter(pl.col("request_id").is_null())).sort("ts")
        if loose.height:
            right = _actor(imp).select("_actor", "item_id", pl.col("ts").alias("imp_ts"),
                                       pl.col("request_id").alias("m_request_id"),
                                       pl.col("position").alias("m_position")).sort("imp_ts")
            m = loose.join_asof(right, left_on="ts", right_on="imp_ts", by=["_actor", "item_id"],
                                strategy="backward", check_sortedness=False)
            parts.append(m.filter(pl.col("m_request_id").is_not_null()).select(
                pl.col("m_request_id").alias("request_id"), pl.col("m_position").alias("position"), "kind",
                pl.col("ts").alias("ev_ts"), "value", "imp_ts", pl.lit("session_or_user").alias("via")))
    ev = pl.concat(parts, how="vertical_relaxed")
    return ev.filter((pl.col("ev_ts") >= pl.col("imp_ts")) & (pl.col("ev_ts") <= pl.col("imp_ts") + win))


def _aggregate(ev: pl.DataFrame) -> pl.DataFrame:
    purchase = pl.col("kind") == "purchase"
    return ev.group_by("request_id", "position").agg(
        (pl.col("kind") == "click").any().alias("_click_ev"),
        (pl.col("kind") == "add_to_cart").any().alias("add_to_cart"),
        purchase.any().alias("purchase"),
        pl.col("value").filter(purchase).sum().alias("revenue"),
        pl.col("ev_ts").filter(purchase).min().alias("first_purchase_ts"),
    )


def build_labels(impressions: pl.DataFrame, interactions: pl.DataFrame, cfg: LabelConfig,
                 catalog: pl.DataFrame | None = None, inventory_events: pl.DataFrame | None = None,
                 click_events: bool | None = None) -> LabelResult:
    """Label every impression with `ts <= as_of` (see the module docstring for the rules). `click_events`: whether
    the source logs click events at all (None: whether `interactions` holds any, whatever their time)."""
    as_of = pl.lit(cfg.as_of).cast(UTC)
    win_us = int(cfg.window / timedelta(microseconds=1))
    imp = impressions.filter(pl.col("ts") <= as_of)
    ev = attribute(imp, interactions, cfg)
    agg = _aggregate(ev)
    if click_events is None:
        click_events = bool((interactions["kind"] == "click").any()) if interactions.height else False
    click = pl.col("_click_ev").fill_null(False) if click_events else pl.col("clicked")
    df = (imp.join(agg, on=["request_id", "position"], how="left", maintain_order="left")
          .with_columns(
              click.alias("click"),
              pl.col("add_to_cart").fill_null(False),
              pl.col("purchase").fill_null(False),
              pl.col("revenue").fill_null(0.0),
              ((pl.col("ts") + pl.duration(microseconds=win_us)) <= as_of).alias("_matured"),
              ((as_of - pl.col("ts")).dt.total_microseconds() / 1e6).alias("_elapsed_s"),
              ((pl.col("first_purchase_ts") - pl.col("ts")).dt.total_microseconds() / 1e6).alias("_delay_s"),
          ).drop("_click_ev"))
    df = df.with_columns(
        pl.col("add_to_cart") | pl.col("purchase"),
    ).with_columns(
        (pl.col("click") | pl.col("add_to_cart")).alias("click"),
    ).with_columns(
        pl.when(pl.col("purchase")).then(3).when(pl.col("add_to_cart")).then(2).when(pl.col("click")).then(1)
        .otherwise(0).cast(pl.Int8).alias("grade"),
    )
    mat = df.filter(pl.col("_matured"))
    model = DelayModel.fit(cfg.window.total_seconds(), mat["_delay_s"].fill_null(np.nan).to_numpy(),
                           mat["click"].to_numpy(), mat["purchase"].to_numpy())
    pending_neg = (~df["_matured"] & ~df["purchase"]).to_numpy()
    p = np.zeros(df.height)
    if pending_neg.any():
        p[pending_neg] = model.p_pending(df["_elapsed_s"].to_numpy()[pending_neg], df["click"].to_numpy()[pending_neg])
    df = df.with_columns(
        pl.when(pl.col("_matured")).then(pl.lit("matured")).otherwise(pl.lit("pending")).alias("label_status"),
        pl.Series("p_conversion_pending", p),
        pl.Series("weight", np.where(pending_neg, 1.0 - p, 1.0)),
    ).drop("_matured", "_elapsed_s", "_delay_s")
    if cfg.point_in_time and catalog is not None:
        df = attributes_as_of(df, catalog, inventory_events)
    df = df.sort("ts", "request_id", "position")
    return LabelResult(df, model, _summary(df, ev, model, cfg))


def _summary(df: pl.DataFrame, ev: pl.DataFrame, model: DelayModel, cfg: LabelConfig) -> dict:
    pend = df.filter(pl.col("label_status") == "pending")
    via = dict(ev.group_by("via").len().iter_rows()) if ev.height else {}
    return {
        "as_of": cfg.as_of.isoformat(), "window_s": cfg.window.total_seconds(), "impressions": df.height,
        "matured": df.height - pend.height, "pending": pend.height,
        "clicks": int(df["click"].sum()), "add_to_carts": int(df["add_to_cart"].sum()),
        "purchases_observed": int(df["purchase"].sum()),
        "purchases_expected_pending": float(pend["p_conversion_pending"].sum()) if pend.height else 0.0,
        "revenue_observed": float(df["revenue"].sum()),
        "attributed_events": {k: int(v) for k, v in via.items()},
        "purchase_rate_matured": {str(k): v for k, v in model.rates.items()},
        "delay_model_fitted": model.n_matured > 0,   # False: no window has closed, pending rows are not corrected
        "delay_quantiles_s": model.quantiles(),
    }


def labels_from_dataset(dataset: str | Path, cfg: LabelConfig) -> LabelResult:
    """Read impressions, interactions, catalog and inventory events from a dataset folder and build labels."""
    dataset = Path(dataset)
    as_of = pl.lit(cfg.as_of).cast(UTC)
    imp = scan_table(dataset, "impressions").filter(pl.col("ts") <= as_of).collect()
    all_inter = scan_table(dataset, "interactions")
    inter = all_inter.filter(pl.col("ts") <= as_of).collect()
    clicks = all_inter.filter(pl.col("kind") == "click").head(1).collect().height > 0
    catalog = events = None
    if cfg.point_in_time:
        try:
            catalog = read_table(dataset, "catalog")
        except FileNotFoundError:
            catalog = None
        try:
            events = scan_table(dataset, "inventory_events").filter(pl.col("ts") <= as_of).collect()
        except FileNotFoundError:
            events = None
    return build_labels(imp, inter, cfg, catalog, events, click_events=clicks)
