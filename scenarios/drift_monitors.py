"""Monitors of the drift scenario, on what the trained pipeline served (`scenarios.drift.serve_days`).

Reference: the first `baseline_days` days in production. Per later day:

* `score_shift` (label-free early warning): PSI + KS of the ranker's scores of the items served to logged-in
  users against the reference (`evaluators.drift.monitor_windows`, clustered by request). Anonymous visitors
  are left out: without any signal they all get the same list from the context-free ranker, so their scores are
  a handful of point masses that move whenever the top items change (measured PSI 0.5 to 1.7 from one drift-free
  day to the next);
* `feature_shift` (label-free): the same on the attributes of the distinct items served each day (`features`:
  by default log price, price relative to its subcategory and category, by chi-square; `log_stock` is available);
  one row per item and day, because a popular item served to many requests would make the daily distributions
  lumpy;
* `ndcg` (matured labels): NDCG@k of the served order against the clicks, over the trailing `window_days`;
* `calibration` (matured labels): the ranker's score mapped to a click probability by a logistic (Platt) fit on
  the reference days (with the position), mean predicted minus observed CTR over the window, against the same gap
  on the reference days.

A day's labels count once `maturity_days` have passed, so a label alarm for day d is raised on day d +
maturity_days (its delay includes that lag) and days whose labels mature after the run are not evaluated.
Label alarms: beyond `z` standard errors (within-window, clustered by request) and a floor (relative NDCG drop,
calibration gap as a share of CTR) that covers the day-to-day variation the within-window error does not.
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl

from recs.evaluators.degradation import calibration, ndcg_per_request
from recs.evaluators.drift import DriftConfig, MonitorConfig, monitor_windows
from recs.scenarios.drift import DriftScenarioConfig

if TYPE_CHECKING:
    from recs.reports import Report

MONITORS = ("score_shift", "feature_shift", "ndcg", "calibration")
LABEL_MONITORS = ("ndcg", "calibration")


def _platt(base: pl.DataFrame) -> Callable[[pl.DataFrame], np.ndarray]:
    """Click probability from (ranker score, log position, anonymous, search), fitted on the reference rows."""
    from sklearn.linear_model import LogisticRegression

    def X(df: pl.DataFrame) -> np.ndarray:
        seg = df["segment"]
        return np.column_stack([df["score"].to_numpy(), np.log1p(df["position"].to_numpy().astype(float)),
                                seg.str.starts_with("anonymous").to_numpy(), seg.str.ends_with("search").to_numpy()])

    fit = LogisticRegression(C=1.0, max_iter=500).fit(X(base), base["label"].to_numpy())
    return lambda df: fit.predict_proba(X(df))[:, 1] if df.height else np.zeros(0)


def _served_items(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per distinct item served per day, with its attributes when first served that day."""
    return frame.sort("day", "request_id", "position").unique(["day", "item_id"], keep="first", maintain_order=True)


def _clustered_se(frame: pl.DataFrame, col: str, mean: float) -> float:
    """Standard error of the mean of `col` over rows clustered by request."""
    per = frame.group_by("request_id").agg(pl.col(col).sum().alias("c"), pl.len().alias("n"))
    c, n = per["c"].to_numpy().astype(float), per["n"].to_numpy().astype(float)
    return float(np.sqrt(((c - mean * n) ** 2).sum()) / max(n.sum(), 1.0))


def monitor_run(cfg: DriftScenarioConfig, frame: pl.DataFrame) -> dict:
    """The four monitors on each day after the reference days of one served run."""
    first = cfg.ref_days + cfg.baseline_days
    frame = frame.with_columns(pl.col("score").fill_nan(None))
    base = frame.filter(pl.col("day") < first)
    base_scored = base.drop_nulls("score")
    platt = _platt(base_scored)
    scored = frame.drop_nulls("score")
    scored = scored.with_columns(pl.Series("pred", platt(scored)))
    base_scored = scored.filter(pl.col("day") < first)
    days = list(range(first, cfg.days))
    as_date = {date(2000, 1, 1) + timedelta(days=d): d for d in days}
    mon = MonitorConfig(DriftConfig(psi_warn=cfg.psi_warn, psi_drift=cfg.psi_drift, cluster_column="request_id"))
    personal = scored.filter(pl.col("segment").str.starts_with("user"))
    score_v = monitor_windows({dt: personal.filter(pl.col("day") == d).select("request_id", "score")
                               for dt, d in as_date.items()},
                              personal.filter(pl.col("day") < first).select("request_id", "score"),
                              columns=["score"], config=mon)
    items = _served_items(frame)
    feats = list(cfg.features)
    feat_v = monitor_windows({dt: items.filter(pl.col("day") == d).select(feats) for dt, d in as_date.items()},
                             items.filter(pl.col("day") < first).select(feats), columns=feats,
                             categorical=[c for c in feats if c == "category"], config=MonitorConfig(DriftConfig(
                                 psi_warn=cfg.psi_warn, psi_drift=cfg.psi_drift)))
    req_day = frame.group_by("request_id").agg(pl.col("day").first())
    nd = ndcg_per_request(frame, k=cfg.ndcg_k, label_col="label", score_col=None, gain="linear").join(
        req_day, on="request_id")
    nd_ref = nd.filter(pl.col("day") < first)["ndcg"]
    ref_ndcg = float(nd_ref.mean())
    ref_gap = float(base_scored["pred"].mean() - base_scored["label"].mean())
    ref_ctr_se = _clustered_se(base_scored, "label", float(base_scored["label"].mean()))
    last_label_day = cfg.days - 1 - cfg.maturity_days
    rows = []
    for i, d in enumerate(days):
        g = frame.filter(pl.col("day") == d)
        row = {"day": d, "impressions": g.height, "requests": g["request_id"].n_unique(),
               "true_ctr": float(g["p_click"].mean()), "ctr": float(g["label"].mean()),
               "mean_score": float(scored.filter(pl.col("day") == d)["score"].mean()),
               "score_psi": score_v[i].max_psi, "feature_max_psi": feat_v[i].max_psi,
               "flagged_features": list(feat_v[i].flagged), "score_shift_alarm": bool(score_v[i].alarm),
               "feature_shift_alarm": bool(feat_v[i].alarm), "labels_matured": d <= last_label_day,
               "ndcg": None, "ndcg_ref": ref_ndcg, "ndcg_z": None, "mean_pred": None, "window_ctr": None,
               "calibration_z": None, "ece": None, "ndcg_alarm": None, "calibration_alarm": None}
        if d <= last_label_day:
            lo = max(first, d - cfg.window_days + 1)
            nd_w = nd.filter(pl.col("day").is_between(lo, d))["ndcg"]
            se = float(np.sqrt(nd_w.var() / max(nd_w.len(), 1) + nd_ref.var() / max(nd_ref.len(), 1)))
            drop = ref_ndcg - float(nd_w.mean())
            w = scored.filter(pl.col("day").is_between(lo, d))
            ctr, pred = float(w["label"].mean()), float(w["pred"].mean())
            se_ctr = float(np.hypot(_clustered_se(w, "label", ctr), ref_ctr_se))
            gap = pred - ctr - ref_gap
            row |= {"ndcg": float(nd_w.mean()), "ndcg_z": drop / se if se > 0 else 0.0, "mean_pred": pred,
                    "window_ctr": ctr, "calibration_z": gap / se_ctr if se_ctr > 0 else 0.0,
                    "ece": calibration(w["pred"].to_numpy(), w["label"].to_numpy().astype(float), 10, "quantile").ece,
                    "ndcg_alarm": bool(drop > max(cfg.z * se, cfg.min_ndcg_drop * ref_ndcg)),
                    "calibration_alarm": bool(abs(gap) > max(cfg.z * se_ctr, cfg.min_calibration_gap * ctr))}
        rows.append(row)
    return {"days": rows, "reference": {"days": list(range(cfg.ref_days, first)), "ndcg": ref_ndcg,
                                        "ctr": float(base["label"].mean()), "true_ctr": float(base["p_click"].mean()),
                                        "mean_pred": float(base_scored["pred"].mean()),
                                        "mean_score": float(base_scored["score"].mean())}}


def _delay(rows: list[dict], monitor: str, cfg: DriftScenarioConfig) -> float | None:
    lag = cfg.maturity_days if monitor in LABEL_MONITORS else 0
    for r in rows:
        if r["day"] >= cfg.onset_day and r[f"{monitor}_alarm"]:
            return float(r["day"] - cfg.onset_day + lag)
    return None


def summarise(monitor: str, cfg: DriftScenarioConfig, drifted: list[dict], clean: list[dict]) -> dict:
    """Detection delay (days from onset to alarm, maturity lag included) and false-alarm rates of one monitor."""
    key = f"{monitor}_alarm"
    delays = [_delay(r["days"], monitor, cfg) for r in drifted]
    found = [d for d in delays if d is not None]
    clean_days = [r[key] for run in clean for r in run["days"] if r[key] is not None]
    pre = [r[key] for run in drifted for r in run["days"] if r["day"] < cfg.onset_day and r[key] is not None]
    return {"detection_delay_days": delays, "mean_detection_delay_days": float(np.mean(found)) if found else None,
            "detected_share": len(found) / len(delays),
            "false_alarm_rate": float(np.mean(clean_days)) if clean_days else None, "clean_days": len(clean_days),
            "runs_with_false_alarm": float(np.mean([any(r[key] for r in run["days"]) for run in clean])),
            "false_alarm_rate_before_onset": float(np.mean(pre)) if pre else None}


def drift_report(result: dict) -> "Report":
    """A `Report`: per-monitor detection delay and false alarms; daily true CTR, NDCG, calibration and PSI charts."""
    from recs.reports import Report

    dr, cfg = result["drift"], result["config"]
    rep = Report(f"Drift: {dr['kind']} shift from day {dr['onset_day']} (magnitude {dr['magnitude']})",
                 f"{cfg['seeds']} seed(s), drifted and drift-free runs; the trained pipeline serves "
                 f"{cfg['requests_per_day']} requests a day")
    rows = [{"monitor": m, "detected": s["detected_share"], "mean detection delay (days)":
             s["mean_detection_delay_days"], "false-alarm rate (days, no drift)": s["false_alarm_rate"],
             "runs with a false alarm": s["runs_with_false_alarm"],
             "alarm rate before onset": s["false_alarm_rate_before_onset"]} for m, s in result["monitors"].items()]
    rep.table(rows, title="Monitors")
    run, clean = result["runs"][0]["days"], result["clean_runs"][0]["days"]
    x = [r["day"] for r in run]
    onset = [(dr["onset_day"], "onset")]

    def series(rs: list[dict], key: str) -> tuple[list, list]:
        pts = [(r["day"], r[key]) for r in rs if r[key] is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    rep.line_chart("True CTR of the served slates (the damage)", {
        "drift": series(run, "true_ctr"), "no drift": series(clean, "true_ctr")}, x_label="day", y_label="true CTR",
        vlines=onset)
    rep.line_chart(f"NDCG@{cfg['ndcg_k']} of the served order on matured click labels", {
        "drift": series(run, "ndcg"), "no drift": series(clean, "ndcg")}, x_label="day", y_label="NDCG",
        vlines=onset)
    rep.line_chart("Calibration: predicted vs observed CTR (matured labels)", {
        "predicted (drift)": series(run, "mean_pred"), "observed (drift)": series(run, "window_ctr"),
        "observed (no drift)": series(clean, "window_ctr")}, x_label="day", y_label="CTR", vlines=onset)
    rep.line_chart("Label-free: PSI of the ranker's scores and max feature PSI", {
        "score PSI (drift)": series(run, "score_psi"), "feature max PSI (drift)": series(run, "feature_max_psi"),
        "score PSI (no drift)": series(clean, "score_psi")}, x_label="day", y_label="PSI", vlines=onset,
        hlines=[(cfg["psi_drift"], "drift threshold")])
    rep.table([{k: v for k, v in r.items() if k != "flagged_features"} | {"flagged": ", ".join(r["flagged_features"])}
               for r in run], title="Drifted run (first seed), day by day")
    rep.paragraph("Label monitors alarm when the window's NDCG falls (or its calibration gap moves) beyond z standard "
                  "errors and a minimum relative change; their detection delay includes the label maturity lag, and "
                  "days whose labels mature after the run are not evaluated. Score and feature monitors use PSI/KS "
                  "(chi-square for the category) clustered by request (`evaluators.drift`) and can alarm on the day "
                  "itself. What changed: " + ", ".join(f"{k} {v}" for k, v in dr["changed"].items()) + ".")
    rep.kv(cfg, title="Configuration", flatten=1)
    return rep
