"""A simulated online A/B test on fresh simulator traffic, with the true effect known.

Units are logged-in users and anonymous sessions (what an assignment service can hash). Each unit is hashed into
an arm (`salt` + unit id, SHA-256); each of its requests is served by that arm's policy; clicks and purchases are
sampled from the simulator's true choice model (`world.click_probs`). A pre-period of `pre_days` serves everyone with
the control policy, giving CUPED covariates (`pre_<metric>`; zero for units first seen in the experiment, such as
every anonymous session). Guardrail columns: latency (measured wall time of a trained pipeline's `rank`, or a
seeded log-normal per simulator policy) and errors (exceptions plus an optional injected error rate).

The truth (`true_effects`): each arm's policy serving all of a fresh sample of traffic generated like the
experiment's (sessions of logged-in users and anonymous visitors over the experiment's days; each session's clicks
become its later requests' recent items and are recorded in the live user histories), starting from the user
histories as they were at the experiment's start (after the pre-period), scored with the simulator's expected (not
sampled) clicks, purchases and revenue; both arms see the same sessions (common random numbers). It is the value of
deploying each policy to everybody, estimated on `truth_requests` requests (not exact: it has sampling error,
`se_ctr_diff`), and it leaves out injected errors (`error_rate`). Ratio metrics (clicks/impressions,
conversions/impressions, revenue/requests, clicks/requests) have the same expected value per request as per unit;
per-unit means (clicks, revenue, conversions) share the lift, and their difference is the per-request difference
times the experiment's mean requests per unit. `on_experiment_traffic` (`paired_truth`) scores both policies on
every experiment request as it was served (the slates computed before the request's own clicks are recorded).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from recs.sim.world import Context

SIM_POLICIES = ("logging", "uniform", "oracle")
# median simulated serving latency of the simulator's policies (ms); a trained pipeline's is measured
SIM_LATENCY_MS = {"logging": 18.0, "uniform": 6.0, "oracle": 35.0}


@dataclass
class SimABTestConfig:
    """One simulated experiment: two policies, traffic, assignment and the truth sample."""

    control: str = "logging"               # logging | uniform | oracle | a trained pipeline folder
    treatment: str = "oracle"
    days: int = 7
    pre_days: int = 7
    requests_per_day: int = 2_000
    split: float = 0.5                     # planned treatment share (recorded, used by the analysis)
    actual_split: float | None = None      # share actually assigned; differs from `split` to inject an SRM
    salt: str = "exp"
    seed: int = 0
    truth_requests: int = 5_000            # fresh requests (in sessions) per arm for the true effect
    error_rate: tuple[float, float] = (0.0, 0.0)  # injected error probability per request, (control, treatment)
    latency_sigma: float = 0.35            # log-normal sigma of simulated latency
    session_mean_requests: float | None = None  # default: the world's
    paired_truth: bool = True              # also score both policies on every experiment request (2x the cost)

    def __post_init__(self) -> None:
        for name in ("control", "treatment"):
            v = getattr(self, name)
            if v not in SIM_POLICIES and not Path(v).is_dir():
                raise ValueError(f"{name} policy {v!r}: expected {', '.join(SIM_POLICIES)} or a model folder")
        if self.days < 1 or self.pre_days < 0 or self.requests_per_day < 10:
            raise ValueError("days >= 1, pre_days >= 0 and requests_per_day >= 10 are required")
        for name in ("split", "actual_split"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        if self.truth_requests < 100:
            raise ValueError("truth_requests must be >= 100")
        if len(self.error_rate) != 2 or not all(0.0 <= e < 1.0 for e in self.error_rate):
            raise ValueError("error_rate needs two probabilities in [0, 1)")
        if self.seed < 0 or self.latency_sigma < 0:
            raise ValueError("seed and latency_sigma must be >= 0")

    @property
    def assigned_split(self) -> float:
        return self.split if self.actual_split is None else self.actual_split


@dataclass
class SimABTestResult:
    units: pl.DataFrame
    truth: dict
    summary: dict = field(default_factory=dict)


def assign_units(units: list[str], salt: str, treatment_share: float) -> np.ndarray:
    """Deterministic hash assignment: True = treatment (SHA-256 of salt:unit, mapped to [0, 1))."""
    u = np.array([int.from_bytes(hashlib.sha256(f"{salt}:{x}".encode()).digest()[:8], "big") for x in units],
                 dtype=np.float64) / 2.0**64
    return u < treatment_share


def make_policy(name: str, world):
    """A simulator policy by name, or a trained pipeline folder sharing the world's live state."""
    if name == "logging":
        return world.logging_policy()
    if name == "uniform":
        return world.uniform_policy()
    if name == "oracle":
        return world.oracle_policy()
    from recs.models import load_pipeline

    return load_pipeline(name, state=world.state)


class _Arm:
    def __init__(self, name: str, policy, error_rate: float) -> None:
        self.name, self.policy, self.error_rate = name, policy, error_rate
        self.measured = name not in SIM_POLICIES


def _traffic(world, cfg: SimABTestConfig, start, days: int, rpd: int, rng: np.random.Generator,
             counter: Iterator[int], prefix: str = "abs", day_done: Callable[[int, int], None] | None = None
             ) -> Iterator[tuple[int, str, bool, "Context", list[str]]]:
    """Sessions of `days` days of traffic from `start`: yields (day, unit, anonymous, context, recent) per request.

    The consumer serves the request and appends the items clicked on it to `recent` before asking for the next
    one: the session's later requests carry them as recent items. Each context is dropped once served."""
    from recs.sim.catalog import sample_user_vectors
    from recs.sim.world import Context

    wc = world.cfg
    mean_len = cfg.session_mean_requests or wc.session_mean_requests
    n_sess_day = max(1, int(round(rpd / mean_len)))
    for day in range(days):
        t_day = start + timedelta(days=day)
        for _ in range(n_sess_day):
            anon = rng.random() < wc.anonymous_share
            urow = -1 if anon else int(rng.choice(world.users.n, p=world.users.activity))
            ts = t_day + timedelta(seconds=float(rng.uniform(0, 86_400 - 3_600)))
            length = int(min(rng.geometric(1.0 / mean_len), 8))
            session_id = f"{prefix}{cfg.seed}-{next(counter):09d}"
            vec = ps = None
            if anon:
                vec = sample_user_vectors(world.catalog, 1, wc.dim, rng)[0]
                ps = float(rng.gamma(2.0, 0.3))
            unit = f"anon:{session_id}" if anon else str(world.user_ids[urow])
            recent: list[str] = []
            for _r in range(length):
                surface = "search" if rng.random() < wc.search_share else "home"
                ctx = world.new_context(ts, surface, rng, session_id=session_id, user_row=urow,
                                        recent_items=tuple(recent[-10:]))
                if anon:  # keep one visitor per anonymous session (new_context draws a fresh one)
                    ctx = Context(ctx.request, -1, vec, ps, ctx.intent)
                    world.contexts[ctx.request.request_id] = ctx
                yield day + 1, unit, anon, ctx, recent
                world.contexts.pop(ctx.request.request_id, None)
                ts += timedelta(seconds=float(rng.integers(30, 300)))
        if day_done:
            day_done(day + 1, days)


def _simulate_period(world, arms: list[_Arm], assign: Callable[[str], int], start, days: int, rpd: int,
                     cfg: SimABTestConfig, rng: np.random.Generator, counter: Iterator[int],
                     paired: bool = False, progress=None) -> pl.DataFrame:
    """Per-request rows of `days` of traffic from `start`: unit, arm, impressions, clicks, purchases, ...

    With `paired`, both policies' expected outcomes on each request (`exp0_*`, `exp1_*`), computed before the
    request is served: serving records its clicks in the live histories, which a trained pipeline reads, so
    ranking afterwards would score another slate than the one served."""
    rows: dict[str, list] = {c: [] for c in ("unit", "anonymous", "arm", "day", "impressions", "clicks",
                                             "conversions", "revenue", "exp_clicks", "latency_ms", "error",
                                             "fallback")}
    for day, unit, anon, ctx, recent in _traffic(world, cfg, start, days, rpd, rng, counter, day_done=progress):
        a = arms[assign(unit)]
        if paired:
            for j, arm_j in enumerate(arms):
                e = _expected(world, arm_j.policy, ctx)
                for name, v in zip(("impressions", "clicks", "conversions", "revenue"), e):
                    rows.setdefault(f"exp{j}_{name}", []).append(v)
        _serve(world, a, ctx, rng, rows, cfg, recent)
        rows["unit"].append(unit)
        rows["anonymous"].append(anon)
        rows["arm"].append(assign(unit))
        rows["day"].append(day)
    return pl.DataFrame(rows)


def _expected(world, policy, ctx) -> tuple[float, float, float, float]:
    """Expected impressions, clicks, purchases and revenue of the policy's slate for this request (no sampling)."""
    try:
        ids = list(policy.rank(ctx.request, world.k_for(ctx.request)).item_ids)
    except Exception:  # noqa: BLE001 - an erroring policy shows nothing
        return 0.0, 0.0, 0.0, 0.0
    r = world.expected_reward(ctx.request, ids)
    return float(len(ids)), r.clicks, r.purchases, r.revenue


def _serve(world, arm: _Arm, ctx, rng: np.random.Generator, rows: dict, cfg: SimABTestConfig,
           recent: list[str]) -> None:
    req = ctx.request
    k = world.k_for(req)
    t0 = time.perf_counter()
    error, fallback, ids = False, False, ()
    try:
        ranking = arm.policy.rank(req, k)
        ids, fallback = tuple(ranking.item_ids)[:k], bool(getattr(ranking, "fallback", False))
    except Exception:  # noqa: BLE001 - a failing policy is an error of its arm, counted as a guardrail
        error = True
    wall_ms = (time.perf_counter() - t0) * 1e3
    if not error and arm.error_rate > 0 and rng.random() < arm.error_rate:
        error, ids = True, ()
    latency = wall_ms if arm.measured else \
        SIM_LATENCY_MS[arm.name] * math.exp(cfg.latency_sigma * float(rng.standard_normal()))
    clicks = buys = 0
    revenue = exp_clicks = 0.0
    if ids:
        idx = world.state.indices(list(ids))
        idx = idx[idx >= 0]
        p_click, p_buy, _ = world.click_probs(ctx, idx)
        clicked = rng.random(len(idx)) < p_click
        bought = clicked & (rng.random(len(idx)) < np.divide(p_buy, p_click, out=np.zeros_like(p_buy),
                                                               where=p_click > 0))
        clicks, buys = int(clicked.sum()), int(bought.sum())
        revenue = float(world.state.price[idx[bought]].sum())
        exp_clicks = float(p_click.sum())
        for j in np.flatnonzero(clicked):
            iid = str(world.item_ids[idx[j]])
            recent.append(iid)
            world.state.record_event(req.user_id, req.session_id, iid, "click")
        ids = idx
    rows["impressions"].append(len(ids))
    rows["clicks"].append(clicks)
    rows["conversions"].append(buys)
    rows["revenue"].append(revenue)
    rows["exp_clicks"].append(exp_clicks)
    rows["latency_ms"].append(latency)
    rows["error"].append(error)
    rows["fallback"].append(fallback)


def _per_unit(req: pl.DataFrame) -> pl.DataFrame:
    return req.group_by("unit").agg(
        pl.col("anonymous").first(), pl.col("arm").first(), pl.col("day").min().alias("first_day"),
        pl.len().alias("requests"), pl.col("impressions").sum(), pl.col("clicks").sum(),
        pl.col("conversions").sum(), pl.col("revenue").sum(), pl.col("exp_clicks").sum(),
        pl.col("latency_ms").mean().alias("latency_ms"), pl.col("latency_ms").max().alias("max_latency_ms"),
        pl.col("error").sum().alias("errors"), pl.col("fallback").sum().alias("fallbacks"))


HISTORIES = ("user_history", "session_history", "user_purchases")   # what serving writes into the live state


def _histories(state) -> dict:
    """A copy of the live state's user and session histories (the only state a simulated experiment changes)."""
    return {h: copy.deepcopy(getattr(state, h)) for h in HISTORIES}


def _policy_value(world, policy, cfg: SimABTestConfig, start, hist0: dict, seq0: int):
    """`policy` serving all of `cfg.truth_requests` fresh requests (in sessions like the experiment's, over its
    days) from the histories `hist0`; expected outcomes of each served slate, its sampled clicks fed back."""
    from recs.sim.run import RequestRewards

    for h, v in copy.deepcopy(hist0).items():
        setattr(world.state, h, v)
    world._ctx_seq = seq0               # the same request ids for every policy (simulator policies hash them)
    rng = np.random.default_rng([world.cfg.seed, 37, cfg.seed])        # traffic: identical for every policy
    click_rng = np.random.default_rng([world.cfg.seed, 38, cfg.seed])
    rpd = max(1, math.ceil(cfg.truth_requests / cfg.days))
    out: dict[str, list] = {c: [] for c in ("clicks", "purchases", "revenue", "shown", "violations")}
    for _day, _unit, _anon, ctx, recent in _traffic(world, cfg, start, cfg.days, rpd, rng, itertools.count(1),
                                                    prefix="abt"):
        req = ctx.request
        k = world.k_for(req)
        try:
            ids = list(policy.rank(req, k).item_ids)[:k]
        except Exception:  # noqa: BLE001 - an erroring policy shows nothing
            ids = []
        idx = world.state.indices(ids)
        idx = idx[idx >= 0]
        p_click, p_buy, avail = world.click_probs(ctx, idx)
        out["clicks"].append(float(p_click.sum()))
        out["purchases"].append(float(p_buy.sum()))
        out["revenue"].append(float((p_buy * world.state.price[idx]).sum()))
        out["shown"].append(float(len(idx)))
        out["violations"].append(int((~avail).sum()))
        for j in np.flatnonzero(click_rng.random(len(idx)) < p_click):
            iid = str(world.item_ids[idx[j]])
            recent.append(iid)
            world.state.record_event(req.user_id, req.session_id, iid, "click")
    return RequestRewards(*(np.array(out[c], dtype=np.int64 if c == "violations" else float) for c in out)).value()


def true_effects(world, control, treatment, cfg: SimABTestConfig, start, hist0: dict,
                 mean_requests_per_unit: float) -> dict:
    """Each arm's true value on the same fresh traffic (sessions like the experiment's from `start`, over its days,
    from the user histories `hist0` of the experiment's start) and the effect per experiment metric.

    The live histories, the world's contexts and its request counter are as before on return (the counter moves
    past the ids used here)."""
    end_hist, seq0 = _histories(world.state), world._ctx_seq
    try:
        vc = _policy_value(world, control, cfg, start, hist0, seq0)
        seq_end = world._ctx_seq
        vt = _policy_value(world, treatment, cfg, start, hist0, seq0)
        seq_end = max(seq_end, world._ctx_seq)
    finally:
        for h, v in end_hist.items():
            setattr(world.state, h, v)
    world._ctx_seq = seq_end
    shown = [v.clicks_per_request / v.ctr if v.ctr > 0 else 0.0 for v in (vc, vt)]  # impressions per request
    per_req = {  # expected value per request of each arm
        "clicks": (vc.clicks_per_request, vt.clicks_per_request),
        "conversions": (vc.purchase_rate * shown[0], vt.purchase_rate * shown[1]),
        "revenue": (vc.revenue_per_request, vt.revenue_per_request),
    }
    metrics: dict[str, dict] = {}

    def add(name, c, t, scale=1.0, note=""):
        metrics[name] = {"control": c * scale, "treatment": t * scale, "diff": (t - c) * scale,
                         "lift": (t / c - 1.0) if c else None, **({"note": note} if note else {})}

    add("clicks/impressions", vc.ctr, vt.ctr)
    add("conversions/impressions", vc.purchase_rate, vt.purchase_rate)
    for m, (c, t) in per_req.items():
        add(f"{m}/requests", c, t)
        add(m, c, t, mean_requests_per_unit,
            "per-unit mean: per-request value x the experiment's mean requests per unit")
    return {"control": vc.to_json(), "treatment": vt.to_json(), "n_requests": vc.n_requests, "metrics": metrics,
            "se_ctr_diff": math.hypot(vc.ctr_stderr, vt.ctr_stderr),
            "note": "each policy serving all of a fresh sample of sessions like the experiment's (same sessions for "
                    "both), over the experiment's days, from the user histories at its start; expected outcomes, "
                    "sampling error se_ctr_diff; injected errors left out"}


def paired_effects(req: pl.DataFrame, mean_requests_per_unit: float) -> dict:
    """The effect on the experiment's own requests: both policies' expected outcomes on every request."""
    tot = {c: float(req[c].sum()) for c in req.columns if c.startswith("exp0_") or c.startswith("exp1_")}
    n = max(req.height, 1)
    out: dict[str, dict] = {}

    def add(name, c, t, scale=1.0):
        out[name] = {"control": c * scale, "treatment": t * scale, "diff": (t - c) * scale,
                     "lift": (t / c - 1.0) if c else None}

    for m in ("clicks", "conversions"):
        add(f"{m}/impressions", tot[f"exp0_{m}"] / max(tot["exp0_impressions"], 1e-12),
            tot[f"exp1_{m}"] / max(tot["exp1_impressions"], 1e-12))
    for m in ("clicks", "conversions", "revenue"):
        add(f"{m}/requests", tot[f"exp0_{m}"] / n, tot[f"exp1_{m}"] / n)
        add(m, tot[f"exp0_{m}"] / n, tot[f"exp1_{m}"] / n, mean_requests_per_unit)
    return {"n_requests": req.height, "metrics": out,
            "note": "expected outcomes of both policies on every experiment request (conditional on the traffic)"}


def run_sim_abtest(world, cfg: SimABTestConfig, progress=None) -> SimABTestResult:
    """Run the pre-period and the experiment, aggregate one row per unit, and compute the truth."""
    rng = np.random.default_rng([world.cfg.seed, 31, cfg.seed])
    control, treatment = make_policy(cfg.control, world), make_policy(cfg.treatment, world)
    arms = [_Arm(cfg.control, control, cfg.error_rate[0]), _Arm(cfg.treatment, treatment, cfg.error_rate[1])]
    cache: dict[str, int] = {}

    def assign(unit: str) -> int:
        if unit not in cache:
            cache[unit] = int(assign_units([unit], cfg.salt, cfg.assigned_split)[0])
        return cache[unit]

    start = world.now
    counter = itertools.count(1)
    pre = None
    if cfg.pre_days:
        pre_arms = [arms[0], arms[0]]  # everyone sees the control policy before the experiment
        pre = _per_unit(_simulate_period(world, pre_arms, assign, start, cfg.pre_days, cfg.requests_per_day, cfg,
                                         rng, counter))
    exp_start = start + timedelta(days=cfg.pre_days)
    hist0 = _histories(world.state)     # the truth starts from the histories of the experiment's start
    req = _simulate_period(world, arms, assign, exp_start, cfg.days, cfg.requests_per_day, cfg, rng, counter,
                           cfg.paired_truth, progress)
    units = _per_unit(req)
    pre_cols = ["requests", "impressions", "clicks", "conversions", "revenue"]
    if pre is not None:
        units = units.join(pre.select("unit", *[pl.col(c).alias(f"pre_{c}") for c in pre_cols]), on="unit",
                           how="left")
    else:
        units = units.with_columns([pl.lit(None, pl.Int64).alias(f"pre_{c}") for c in pre_cols])
    names = np.array(["control", "treatment"])
    units = units.with_columns(
        [pl.col(f"pre_{c}").fill_null(0) for c in pre_cols]
        + [pl.Series("variant", names[units["arm"].to_numpy()]),
           (pl.col("conversions") > 0).alias("converted"),
           (pl.col("errors") / pl.col("requests")).alias("error_rate"),
           pl.when(pl.col("anonymous")).then(pl.lit("anonymous")).otherwise(pl.lit("user")).alias("unit_type")]
    ).drop("arm", "anonymous").rename({"unit": "unit_id"}).sort("unit_id")
    first = ["unit_id", "variant", "unit_type", "first_day"]
    units = units.select(first + [c for c in units.columns if c not in first])
    mean_req = float(units["requests"].mean())
    truth = true_effects(world, control, treatment, cfg, exp_start, hist0, mean_req)
    truth.update({"kind": "simulate_abtest", "control_policy": cfg.control, "treatment_policy": cfg.treatment,
                  "planned_split": {"control": 1 - cfg.split, "treatment": cfg.split},
                  "assigned_split": {"control": 1 - cfg.assigned_split, "treatment": cfg.assigned_split},
                  "config": {**asdict(cfg), "error_rate": list(cfg.error_rate)}, "world": world.cfg.to_json()})
    counts = units.group_by("variant").len().sort("variant")
    summary = {"units": units.height, "requests": int(units["requests"].sum()),
               "units_per_arm": dict(zip(counts["variant"].to_list(), counts["len"].to_list())),
               "anonymous_units": int((units["unit_type"] == "anonymous").sum()),
               "observed_ctr": {v: float(g["clicks"].sum() / max(g["impressions"].sum(), 1))
                                for v, g in units.group_by("variant")}}
    summary["observed_ctr"] = {k[0] if isinstance(k, tuple) else k: v for k, v in summary["observed_ctr"].items()}
    truth["summary"] = summary
    if cfg.paired_truth:
        truth["on_experiment_traffic"] = paired_effects(req, mean_req)
    return SimABTestResult(units, truth, summary)


def write_sim_abtest(result: SimABTestResult, out_dir: str | Path, fmt: str = "parquet",
                     overwrite: bool = False) -> dict[str, Path]:
    """Write `units.parquet` (or `.csv`) and `truth.json` atomically into `out_dir`."""
    from recs.datasets.io import atomic_dir

    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be parquet or csv, got {fmt!r}")
    out = Path(out_dir)
    import json

    with atomic_dir(out, overwrite=overwrite) as tmp:
        if fmt == "parquet":
            result.units.write_parquet(tmp / "units.parquet")
        else:
            result.units.write_csv(tmp / "units.csv")
        (tmp / "truth.json").write_text(json.dumps(result.truth, indent=2, default=str))
    return {"units": out / f"units.{fmt}", "truth": out / "truth.json"}
