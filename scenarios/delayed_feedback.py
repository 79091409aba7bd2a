"""`simulate delayed-feedback`: retrain a conversion model at time T with naive, matured-only and delay-corrected
labels, and score each against the simulator's truth.

A dataset is simulated (purchases arrive after a heavy-tailed delay). At T (the end of the training days) labels
are built with `datasets.labels` (attribution window `window_h`). Four LightGBM pCVR models (P(purchase |
impression)) are trained on the same features (the item's impression count and smoothed click rate are point in
time: from the days before the row's day, for training and test rows alike; until the ninth session training rows
used every impression up to T, later ones included, with the row's own click left out):

* `naive`: every impression up to T, purchases seen by T (pending rows count as negatives);
* `matured`: only impressions whose attribution window has closed by T;
* `weighted`: all rows, pending negatives weighted by 1 - p_conversion_pending (the `weight` of labels.py);
* `soft`: all rows, each pending negative split into a positive of weight p and a negative of weight 1 - p.

They predict the conversion of the following day's impressions, whose truth is known exactly (`truth/impressions`
p_purchase: expected eventual purchases; `truth/conversions`: every purchase, even after the log ends).
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.io import scan_table
from recs.datasets.labels import LabelConfig, labels_from_dataset
from recs.sim import SimConfig, generate_dataset
from recs.sim.choice import delay_cdf

VARIANTS = ("naive", "matured", "weighted", "soft")
FEATURES = ("position", "is_search", "anonymous", "log_price", "rel_price", "subcat", "item_imps", "item_ctr",
            "hour")


def _default_sim() -> SimConfig:
    return SimConfig(n_users=600, n_items=1_500, days=8, requests_per_day=3_000, seed=0, delay_median_hours=6.0,
                     delay_sigma=1.5)


@dataclass(frozen=True)
class DelayedFeedbackConfig:
    """`test_days` after T are scored against the truth; `window_h`: the label attribution window."""

    sim: SimConfig = field(default_factory=_default_sim)
    dataset: Path | None = None
    test_days: int = 1
    window_h: float = 96.0
    num_rounds: int = 120
    learning_rate: float = 0.05
    num_leaves: int = 15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.test_days < 1 or self.window_h <= 0 or self.num_rounds < 1:
            raise ValueError("test_days and num_rounds must be >= 1 and window_h > 0")
        if self.dataset is None and self.sim.days * 24 <= self.test_days * 24 + self.window_h:
            raise ValueError(f"the simulated days ({self.sim.days}) must exceed test_days + the window "
                             f"({self.test_days} d + {self.window_h:g} h) so that some labels mature")


def item_stats_before_day(imp: pl.DataFrame, start) -> pl.DataFrame:
    """Per item and day (days from `start`) with impressions: the item's impressions (`_n`) and clicks (`_c`) over
    all earlier days, i.e. what a model serving that day could know (point in time; 0 on the first day).

    `imp` holds every impression (`item_id`, `ts`, `clicked`); rows of one day share that day's statistics."""
    day = ((pl.col("ts") - pl.lit(start)).dt.total_seconds() // 86_400).cast(pl.Int32)
    daily = (imp.select("item_id", day.alias("_day"), pl.col("clicked").cast(pl.Float64))
             .group_by("item_id", "_day").agg(pl.len().cast(pl.Float64).alias("_dn"), pl.col("clicked").sum()
                                              .alias("_dc"))
             .sort("item_id", "_day"))
    return daily.select("item_id", "_day", (pl.col("_dn").cum_sum().over("item_id") - pl.col("_dn")).alias("_n"),
                        (pl.col("_dc").cum_sum().over("item_id") - pl.col("_dc")).alias("_c"))


def _features(imp: pl.DataFrame, catalog: pl.DataFrame, item_stats: pl.DataFrame, start) -> pl.DataFrame:
    """Model inputs; the item's impression count and smoothed click rate from the days before the row's day
    (`item_stats_before_day`), for training and test rows alike."""
    med = catalog.group_by("subcategory").agg(pl.col("price").median().alias("_med"))
    cat = catalog.join(med, on="subcategory").select(
        "item_id", pl.col("price").log().alias("log_price"),
        (pl.col("price") / pl.col("_med")).log().alias("rel_price"),
        pl.col("subcategory").cast(pl.Categorical).to_physical().cast(pl.Int32).alias("subcat"))
    day = ((pl.col("ts") - pl.lit(start)).dt.total_seconds() // 86_400).cast(pl.Int32).alias("_day")
    return (imp.with_columns(day).join(cat, on="item_id", how="left")
            .join(item_stats, on=["item_id", "_day"], how="left")
            .with_columns(pl.col("position").cast(pl.Int32),
                          (pl.col("surface") == "search").cast(pl.Int8).alias("is_search"),
                          pl.col("user_id").is_null().cast(pl.Int8).alias("anonymous"),
                          pl.col("_n").fill_null(0.0).log1p().alias("item_imps"),
                          ((pl.col("_c").fill_null(0.0) + 1.0) / (pl.col("_n").fill_null(0.0) + 10.0))
                          .alias("item_ctr"),
                          pl.col("ts").dt.hour().cast(pl.Int32).alias("hour")))


def _train(X: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: DelayedFeedbackConfig):
    import lightgbm as lgb

    params = {"objective": "binary", "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
              "min_data_in_leaf": 50, "verbose": -1, "seed": cfg.seed, "num_threads": 2,
              "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1}
    ds = lgb.Dataset(X, y.astype(float), weight=w, feature_name=list(FEATURES), categorical_feature=["subcat"],
                     free_raw_data=True)
    return lgb.train(params, ds, num_boost_round=cfg.num_rounds)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def _ndcg(frame: pl.DataFrame, score: str, k: int = 10) -> float:
    from recs.evaluators.degradation import ndcg_per_request

    n = ndcg_per_request(frame, k=k, label_col="p_purchase", score_col=score, gain="linear")
    return float(n["ndcg"].mean()) if n.height else float("nan")


def run_delayed_feedback(cfg: DelayedFeedbackConfig = DelayedFeedbackConfig(), progress=None) -> dict:
    """Train the four pCVR variants at T and measure their conversion-rate bias and ranking quality."""
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="recs-delayed-") as tmp:
        ds = cfg.dataset
        if ds is None:
            ds = Path(tmp) / "ds"
            generate_dataset(cfg.sim, ds)
            say("dataset simulated")
        return _run(Path(ds), cfg, say)


def _run(ds: Path, cfg: DelayedFeedbackConfig, say) -> dict:
    import json

    cfg_file = ds / "truth" / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"{ds}: not a simulated dataset (no truth/config.json)")
    sim = SimConfig.from_json(json.loads(cfg_file.read_text()))
    T = sim.start + timedelta(days=sim.days - cfg.test_days)
    end = sim.start + timedelta(days=sim.days)
    window = timedelta(hours=cfg.window_h)
    lab = labels_from_dataset(ds, LabelConfig(as_of=T, window=window, point_in_time=False)).frame
    say(f"labels at T={T.isoformat()}: {lab.height:,} impressions")
    truth = pl.read_parquet(ds / "truth" / "impressions").select("request_id", "position", "p_purchase")
    conv = (pl.read_parquet(ds / "truth" / "conversions").group_by("request_id", "position").len()
            .select("request_id", "position", pl.lit(True).alias("converted")))
    catalog = pl.read_parquet(ds / "catalog.parquet")
    test = (scan_table(ds, "impressions").filter((pl.col("ts") > pl.lit(T)) & (pl.col("ts") <= pl.lit(end)))
            .collect())
    # item statistics point in time: each row sees the impressions and clicks of the days before its own (clicks
    # are known at once; a test day also sees the test days before it, as a model serving it would)
    stats = item_stats_before_day(pl.concat([lab.select("item_id", "ts", "clicked"),
                                             test.select("item_id", "ts", "clicked")]), sim.start)
    train = _features(lab, catalog, stats, sim.start).join(truth, on=["request_id", "position"], how="left")
    test = (_features(test, catalog, stats, sim.start).join(truth, on=["request_id", "position"], how="left")
            .join(conv, on=["request_id", "position"], how="left").with_columns(pl.col("converted").fill_null(False)))
    train = train.join(conv, on=["request_id", "position"], how="left").with_columns(
        pl.col("converted").fill_null(False))
    Xtr = train.select(FEATURES).to_numpy().astype(np.float64)
    Xte = test.select(FEATURES).to_numpy().astype(np.float64)
    y_obs = train["purchase"].to_numpy().astype(bool)
    matured = (train["label_status"] == "matured").to_numpy()
    p_pend = train["p_conversion_pending"].to_numpy()
    pend_neg = ~matured & ~y_obs
    data = {
        "naive": (Xtr, y_obs, np.ones(len(y_obs))),
        "matured": (Xtr[matured], y_obs[matured], np.ones(int(matured.sum()))),
        "weighted": (Xtr, y_obs, train["weight"].to_numpy()),
        "soft": (np.vstack([Xtr, Xtr[pend_neg]]), np.concatenate([y_obs, np.ones(int(pend_neg.sum()), bool)]),
                 np.concatenate([np.where(pend_neg, 1.0 - p_pend, 1.0), p_pend[pend_neg]])),
    }
    true_rate = float(test["p_purchase"].mean())
    y_test = test["converted"].to_numpy()
    scored = test.select("request_id", "position", "p_purchase")
    variants = []
    for name in VARIANTS:
        X, y, w = data[name]
        model = _train(X, y, w, cfg)
        pred = model.predict(Xte)
        scored = scored.with_columns(pl.Series(name, pred))
        variants.append({
            "variant": name, "train_rows": int(len(y)), "train_weight": float(w.sum()),
            "train_label_rate": float((y * w).sum() / w.sum()),
            "mean_pred": float(pred.mean()), "bias": float(pred.mean() - true_rate),
            "rel_bias": float(pred.mean() / true_rate - 1.0) if true_rate > 0 else float("nan"),
            "auc": _auc(y_test, pred), "ndcg": _ndcg(scored, name),
        })
        say(f"{name}: trained")
    train_true = float(train["p_purchase"].mean())
    win_share = float(delay_cdf(np.array([window.total_seconds()]), sim)[0])
    return {
        "kind": "simulate_delayed_feedback", "config": _cfg_json(cfg, sim), "trained_at": T.isoformat(),
        "train_rows": train.height, "test_rows": test.height,
        "train": {"true_rate": train_true, "observed_rate": float(y_obs.mean()),
                  "observed_rate_matured": float(y_obs[matured].mean()) if matured.any() else None,
                  "eventual_rate": float(train["converted"].mean()), "matured_share": float(matured.mean()),
                  "pending_expected": float(p_pend.sum())},
        "test": {"true_rate": true_rate, "realised_rate": float(y_test.mean()),
                 "requests": scored["request_id"].n_unique()},
        "window_capture": win_share,
        "variants": variants,
    }


def _cfg_json(cfg: DelayedFeedbackConfig, sim: SimConfig) -> dict:
    d = asdict(cfg)
    d["sim"] = sim.to_json()
    d["dataset"] = str(cfg.dataset) if cfg.dataset else None
    return d


def delayed_feedback_report(result: dict):
    """A `Report`: bias and ranking quality per label strategy, with bar charts."""
    from recs.reports import Report

    v = result["variants"]
    names = [x["variant"] for x in v]
    rep = Report("Delayed feedback: retraining with naive, matured-only and delay-corrected labels",
                 f"trained at {result['trained_at']}; {result['test_rows']:,} test impressions")
    by = {x["variant"]: x for x in v}
    rep.callout(f"Naive labels bias the predicted conversion rate by {by['naive']['rel_bias']:+.1%}; delay-corrected "
                f"(soft) labels by {by['soft']['rel_bias']:+.1%} and matured-only by {by['matured']['rel_bias']:+.1%}.",
                "info")
    rep.table([{"variant": x["variant"], "train rows": x["train_rows"], "train label rate": x["train_label_rate"],
                "mean predicted CVR": x["mean_pred"], "relative bias": x["rel_bias"], "AUC": x["auc"],
                "NDCG@10 (true p_purchase)": x["ndcg"]} for x in v], title="Per label strategy")
    rep.bar_chart("Relative bias of predicted conversion rate (0 = unbiased)", names,
                  {"relative bias": [x["rel_bias"] for x in v]}, y_label="mean pred / true - 1")
    rep.bar_chart("Ranking quality on the test day", names, {"AUC": [x["auc"] for x in v],
                                                             "NDCG@10": [x["ndcg"] for x in v]})
    rep.kv({"train": result["train"], "test": result["test"],
            "share of conversions inside the window (true delay CDF)": result["window_capture"]},
           title="Label statistics")
    rep.paragraph("Truth: `p_purchase` of the simulator (expected eventual purchases per impression) and every "
                  "realised conversion in `truth/conversions` (AUC). Labels only count purchases inside the "
                  "attribution window, so even fully matured labels miss the share of conversions beyond it.")
    rep.kv(result["config"], title="Configuration", flatten=1)
    return rep
