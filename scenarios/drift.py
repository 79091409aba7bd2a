"""`simulate drift`: shift user preferences or price levels from a given day and watch the monitors catch it.

The monitored model is a pCTR model (logistic regression on what the production ranker knows: its belief of the
user . item vector, item prior, relative price, position, surface) fitted on the first `ref_days` days of traffic
logged by the simulator's logging policy. From `onset_day` the world changes:

* `preference`: every logged-in user's true preference vector is rotated by `magnitude` x 90 degrees (the
  ranker's beliefs stay as they were, so its scores do not move but the clicks do);
* `price`: live prices of half of the categories rise by a factor 1 + `magnitude`.

Monitors, day by day after the reference days: label-free (PSI/KS of the model's score distribution, and of its
input features, via `evaluators.drift.monitor_windows`, clustered by request) and label-based on matured click
labels (NDCG@k of the model's order within each logged slate, and calibration: mean predicted vs observed CTR).
A label-based alarm on day d can only be raised once day d's labels have matured, `maturity_days` later.
Detection delay: days from the onset to the first alarm (plus the maturity lag for label monitors). False-alarm
rate: share of monitored days that alarmed in runs without drift (and the share of such runs with any alarm).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl

from recs.evaluators.drift import DriftConfig, MonitorConfig, monitor_windows
from recs.scenarios.common import Clock, small_sim
from recs.sim import SimConfig, World

KINDS = ("preference", "price")
FEATURES = ("affinity", "prior", "rel_price", "log_pos", "is_search")
MONITORS = ("score_shift", "feature_shift", "ndcg", "calibration")


@dataclass(frozen=True)
class DriftScenarioConfig:
    """Days, the drift (kind, onset, magnitude), the monitors' thresholds and the number of seeds."""

    sim: SimConfig = field(default_factory=lambda: small_sim(days=10, requests_per_day=4_000))
    kind: str = "preference"
    onset_day: int = 6
    magnitude: float = 0.5
    ref_days: int = 3
    maturity_days: int = 1
    ndcg_k: int = 10
    z: float = 3.0               # label monitors: alarm beyond z standard errors ...
    min_ndcg_drop: float = 0.03   # ... and a relative NDCG drop of at least this much
    min_calibration_gap: float = 0.08  # ... or a calibration gap of at least this share of the day's CTR
    seeds: int = 2
    psi_warn: float = 0.1
    psi_drift: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 1 <= self.ref_days < self.onset_day < self.sim.days:
            raise ValueError(f"need 1 <= ref_days ({self.ref_days}) < onset_day ({self.onset_day}) < days "
                             f"({self.sim.days})")
        if not (0 <= self.min_ndcg_drop < 1 and 0 <= self.min_calibration_gap < 1):
            raise ValueError("min_ndcg_drop and min_calibration_gap must be in [0, 1)")
        if self.magnitude <= 0 or self.seeds < 1 or self.maturity_days < 0 or self.z <= 0:
            raise ValueError("magnitude and z must be > 0, seeds >= 1 and maturity_days >= 0")


def apply_drift(world: World, kind: str, magnitude: float, rng: np.random.Generator) -> None:
    """Change the world in place: rotate users' true preferences, or raise the prices of half the categories."""
    if kind == "preference":
        v = world.users.vec
        q, _ = np.linalg.qr(rng.normal(size=(v.shape[1], v.shape[1])))
        theta = magnitude * np.pi / 2
        new = np.cos(theta) * v + np.sin(theta) * (v @ q)
        norm = np.linalg.norm(new, axis=1, keepdims=True)
        world.users.vec[:] = new * np.divide(np.linalg.norm(v, axis=1, keepdims=True), norm,
                                             out=np.ones_like(norm), where=norm > 0)
    elif kind == "price":
        cats = np.unique(world.catalog.category)
        up = rng.choice(cats, size=max(1, len(cats) // 2), replace=False)
        hit = np.isin(world.catalog.category, up)
        world.state.price[hit] = np.round(world.state.price[hit] * (1 + magnitude), 2)
        world.state.version += 1
    else:
        raise ValueError(f"unknown drift kind {kind!r}")


def _frame(world: World, log, day: int) -> pl.DataFrame:
    """One row per impression of an hour's log: request, position, model features and the click."""
    a = log.arrays()
    if not len(a["imp_item"]):
        return pl.DataFrame()
    seq = a["req_seq"].astype(np.int64)
    order = np.argsort(seq)
    r = order[np.searchsorted(seq[order], a["imp_req"].astype(np.int64))]
    item = a["imp_item"].astype(np.int64)
    user = a["req_user"].astype(np.int64)[r]
    known = user >= 0
    aff = np.zeros(len(item))
    aff[known] = np.einsum("nd,nd->n", world.users.logger_vec[user[known]], world.logger_item_vec[item[known]])
    return pl.DataFrame({
        "day": np.full(len(item), day, dtype=np.int32), "request_id": a["imp_req"].astype(np.int64),
        "position": a["imp_pos"].astype(np.int64), "affinity": aff, "prior": world.catalog.prior[item],
        "rel_price": world.rel_price(item), "log_pos": np.log1p(a["imp_pos"].astype(float)),
        "is_search": a["req_search"].astype(float)[r], "click": a["imp_click"].astype(bool)})


def simulate_days(cfg: DriftScenarioConfig, seed: int, drift: bool) -> pl.DataFrame:
    """All impressions of `cfg.sim.days` days (drift from `onset_day` when `drift`)."""
    world = World.build(cfg.sim.with_(seed=seed))
    clock = Clock(world, 3600, seed)
    rng = np.random.default_rng([seed, 97])
    parts = []
    for h in range(cfg.sim.days * 24):
        if drift and h == cfg.onset_day * 24:
            apply_drift(world, cfg.kind, cfg.magnitude, rng)
        f = _frame(world, clock.step(), h // 24)
        if f.height:
            parts.append(f)
    return pl.concat(parts)


def _fit(ref: pl.DataFrame):
    from sklearn.linear_model import LogisticRegression

    X = ref.select(FEATURES).to_numpy()
    return LogisticRegression(C=1.0, max_iter=500).fit(X, ref["click"].to_numpy())


def _ndcg_by_request(frame: pl.DataFrame, k: int) -> pl.DataFrame:
    from recs.evaluators.degradation import ndcg_per_request

    return ndcg_per_request(frame.with_columns(pl.col("click").cast(pl.Int8).alias("label")), k=k, score_col="score",
                            gain="linear").join(frame.group_by("request_id").agg(pl.col("day").first()),
                                                on="request_id")


def monitor_run(cfg: DriftScenarioConfig, frame: pl.DataFrame) -> dict:
    """Fit the model on the reference days; run the four monitors on each later day."""
    ref = frame.filter(pl.col("day") < cfg.ref_days)
    model = _fit(ref)
    frame = frame.with_columns(pl.Series("score", model.predict_proba(frame.select(FEATURES).to_numpy())[:, 1]))
    ref = frame.filter(pl.col("day") < cfg.ref_days)
    days = list(range(cfg.ref_days, cfg.sim.days))
    by_day = {d: frame.filter(pl.col("day") == d) for d in days}
    mon = MonitorConfig(DriftConfig(psi_warn=cfg.psi_warn, psi_drift=cfg.psi_drift, cluster_column="request_id"))
    base = date(2000, 1, 1)
    as_date = {base + timedelta(days=d): d for d in days}
    score_v = monitor_windows({dt: by_day[d].select("request_id", "score") for dt, d in as_date.items()},
                              ref.select("request_id", "score"), columns=["score"], config=mon)
    feat_v = monitor_windows({dt: by_day[d].select("request_id", *FEATURES) for dt, d in as_date.items()},
                             ref.select("request_id", *FEATURES), columns=list(FEATURES), config=mon)
    nd = _ndcg_by_request(frame, cfg.ndcg_k)
    nd_ref = nd.filter(pl.col("day") < cfg.ref_days)["ndcg"]
    ref_ndcg, ref_ctr_gap = float(nd_ref.mean()), float(ref["score"].mean() - ref["click"].mean())
    rows = []
    for i, d in enumerate(days):
        g = by_day[d]
        nd_d = nd.filter(pl.col("day") == d)["ndcg"]
        se = float(np.sqrt(nd_d.var() / max(nd_d.len(), 1) + nd_ref.var() / max(nd_ref.len(), 1)))
        drop = ref_ndcg - float(nd_d.mean())
        ndcg_alarm = drop > max(cfg.z * se, cfg.min_ndcg_drop * ref_ndcg)
        ctr, pred = float(g["click"].mean()), float(g["score"].mean())
        gap = pred - ctr - ref_ctr_gap
        # standard error of the day's CTR, clustered by request (slates share a user)
        per_req = g.group_by("request_id").agg(pl.col("click").sum().alias("c"), pl.len().alias("n"))
        c, n = per_req["c"].to_numpy().astype(float), per_req["n"].to_numpy().astype(float)
        se_ctr = float(np.sqrt(((c - ctr * n) ** 2).sum()) / n.sum())
        cal_alarm = abs(gap) > max(cfg.z * se_ctr, cfg.min_calibration_gap * ctr)
        rows.append({"day": d, "impressions": g.height, "ctr": ctr, "mean_pred": pred,
                     "ndcg": float(nd_d.mean()), "ndcg_ref": ref_ndcg, "score_psi": score_v[i].max_psi,
                     "feature_max_psi": feat_v[i].max_psi, "flagged_features": list(feat_v[i].flagged),
                     "score_shift_alarm": bool(score_v[i].alarm), "feature_shift_alarm": bool(feat_v[i].alarm),
                     "ndcg_alarm": bool(ndcg_alarm), "calibration_alarm": bool(cal_alarm)})
    return {"days": rows, "reference": {"ndcg": ref_ndcg, "ctr": float(ref["click"].mean()),
                                        "mean_pred": float(ref["score"].mean())}}


def _lag(monitor: str, cfg: DriftScenarioConfig) -> int:
    return cfg.maturity_days if monitor in ("ndcg", "calibration") else 0


def _delay(rows: list[dict], monitor: str, cfg: DriftScenarioConfig) -> float | None:
    for r in rows:
        if r["day"] >= cfg.onset_day and r[f"{monitor}_alarm"]:
            return float(r["day"] - cfg.onset_day + _lag(monitor, cfg))
    return None


def run_drift(cfg: DriftScenarioConfig = DriftScenarioConfig(), progress=None) -> dict:
    """Drifted and drift-free runs over `cfg.seeds` seeds; detection delay and false-alarm rate per monitor."""
    say = progress or (lambda _m: None)
    drifted, clean = [], []
    for s in range(cfg.seeds):
        seed = cfg.sim.seed + s
        drifted.append(monitor_run(cfg, simulate_days(cfg, seed, True)))
        clean.append(monitor_run(cfg, simulate_days(cfg, seed, False)))
        say(f"seed {seed}: drifted and drift-free runs monitored")
    summary = {}
    for m in MONITORS:
        delays = [_delay(r["days"], m, cfg) for r in drifted]
        found = [d for d in delays if d is not None]
        clean_days = [r[f"{m}_alarm"] for run in clean for r in run["days"]]
        pre = [r[f"{m}_alarm"] for run in drifted for r in run["days"] if r["day"] < cfg.onset_day]
        summary[m] = {"detection_delay_days": delays,
                      "mean_detection_delay_days": float(np.mean(found)) if found else None,
                      "detected_share": len(found) / len(delays),
                      "false_alarm_rate": float(np.mean(clean_days)) if clean_days else None,
                      "runs_with_false_alarm": float(np.mean([any(r[f"{m}_alarm"] for r in run["days"])
                                                             for run in clean])),
                      "false_alarm_rate_before_onset": float(np.mean(pre)) if pre else None}
    return {"kind": "simulate_drift", "config": _cfg_json(cfg), "drift": {"kind": cfg.kind, "onset_day":
            cfg.onset_day, "magnitude": cfg.magnitude}, "monitors": summary,
            "run": drifted[0], "clean_run": clean[0]}


def _cfg_json(cfg: DriftScenarioConfig) -> dict:
    d = asdict(cfg)
    d["sim"] = cfg.sim.to_json()
    return d


def drift_report(result: dict):
    """A `Report`: per-monitor detection delay and false alarms; daily NDCG, calibration and PSI charts."""
    from recs.reports import Report

    dr = result["drift"]
    rep = Report(f"Drift: {dr['kind']} shift from day {dr['onset_day']} (magnitude {dr['magnitude']})",
                 f"{result['config']['seeds']} seed(s), drifted and drift-free runs")
    rows = []
    for m, s in result["monitors"].items():
        rows.append({"monitor": m, "detected": s["detected_share"],
                     "mean detection delay (days)": s["mean_detection_delay_days"],
                     "false-alarm rate (days, no drift)": s["false_alarm_rate"],
                     "runs with a false alarm": s["runs_with_false_alarm"],
                     "alarm rate before onset": s["false_alarm_rate_before_onset"]})
    rep.table(rows, title="Monitors")
    run, clean = result["run"]["days"], result["clean_run"]["days"]
    x = [r["day"] for r in run]
    onset = [(dr["onset_day"], "onset")]
    rep.line_chart("NDCG@k of the model on matured click labels", {
        "drift": (x, [r["ndcg"] for r in run]), "no drift": (x, [r["ndcg"] for r in clean])},
        x_label="day", y_label="NDCG", vlines=onset)
    rep.line_chart("Calibration: predicted vs observed CTR", {
        "predicted (drift)": (x, [r["mean_pred"] for r in run]), "observed (drift)": (x, [r["ctr"] for r in run]),
        "observed (no drift)": (x, [r["ctr"] for r in clean])}, x_label="day", y_label="CTR", vlines=onset)
    rep.line_chart("Label-free: PSI of the model's scores and max feature PSI", {
        "score PSI (drift)": (x, [r["score_psi"] for r in run]),
        "feature max PSI (drift)": (x, [r["feature_max_psi"] for r in run]),
        "score PSI (no drift)": (x, [r["score_psi"] for r in clean])},
        x_label="day", y_label="PSI", vlines=onset, hlines=[(result["config"]["psi_drift"], "drift threshold")])
    rep.table([{k: v for k, v in r.items() if k != "flagged_features"} | {"flagged": ", ".join(r["flagged_features"])}
               for r in run], title="Drifted run (first seed), day by day")
    rep.paragraph("Label monitors alarm when the day's NDCG falls (or its calibration gap moves) beyond z standard "
                  "errors and a minimum relative change (the standard errors are within-day, clustered by request, and "
                  "do not include day-to-day variation, hence the floors); their detection delay includes the "
                  "label maturity lag. "
                  "Score and feature monitors use PSI/KS clustered by request (`evaluators.drift`).")
    rep.kv(result["config"], title="Configuration", flatten=1)
    return rep
