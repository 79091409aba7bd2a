"""Analyse an A/B test: sample-ratio check, effects with intervals, CUPED, guardrails, corrections, decision.

Tests: Welch t for means, z (unpooled) for proportions, z on the delta-method linearisation for ratios,
all optionally CUPED-adjusted (`evaluators/abtest_stats.py`). Success metrics are corrected together (every
treatment arm x metric is one family). Guardrails are one-sided non-inferiority tests; since the ship decision
needs all of them to pass (an intersection-union test), they need no multiplicity correction.
Sequential modes are described in `evaluators/sequential.py`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
from scipy import stats

from recs.evaluators.abtest_input import (
    ExperimentInputError,
    Guardrail,
    MetricSpec,
    metric_kind,
    parse_covariates,
    parse_split,
    validate_experiment,
)
from recs.evaluators.abtest_stats import compare, estimate_groups, moments_from_frame, srm_test
from recs.evaluators.multiple_testing import CORRECTIONS, adjust_pvalues
from recs.evaluators.sequential import SEQUENTIAL_METHODS, SEQUENTIAL_NAMES, boundaries, msprt

TEST_NAMES = {
    "mean": "Welch t-test",
    "proportion": "z-test for two proportions (unpooled standard error)",
    "ratio": "z-test, delta-method variance of the ratio (unit-level randomisation)",
}


@dataclass
class AnalyzeConfig:
    """How to analyse the experiment table."""

    metrics: list[str]
    unit: str = "user_id"
    variant: str = "variant"
    control: str | None = None  # default: an arm named "control", else the first arm in sorted order
    covariates: str | None = None  # COL, metric=COL,..., or auto
    guardrails: list[str] = field(default_factory=list)
    split: str | None = None
    alpha: float = 0.05
    srm_threshold: float = 0.001
    correction: str = "holm"
    sequential: str | None = None  # obf | pocock | msprt
    planned_n_per_arm: int | None = None
    time_column: str | None = None
    previous_looks: list[float] = field(default_factory=list)  # information fractions of earlier looks
    final_look: bool = False
    msprt_tau: float = 0.05  # mixing sd as a fraction of the control mean

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("give at least one success metric")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not 0 < self.srm_threshold < 1:
            raise ValueError(f"SRM threshold must be in (0, 1), got {self.srm_threshold}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")
        if self.sequential is not None and self.sequential not in SEQUENTIAL_METHODS:
            raise ValueError(f"sequential method must be one of {', '.join(SEQUENTIAL_METHODS)}")
        if self.sequential in ("obf", "pocock") and not self.planned_n_per_arm:
            raise ValueError("group-sequential analysis needs the planned sample size (--planned-n-per-arm); "
                             "use --sequential-method msprt for an always-valid test without a plan")
        if self.planned_n_per_arm is not None and self.planned_n_per_arm < 2:
            raise ValueError("planned n per arm must be >= 2")
        if not self.msprt_tau > 0:
            raise ValueError("msprt tau must be > 0")


@dataclass
class MetricResult:
    metric: str
    role: str  # success | guardrail
    kind: str
    arm: str
    method: str
    n_control: int
    n_treatment: int
    control_mean: float
    treatment_mean: float
    diff: float
    ci: tuple[float, float]
    lift: float
    lift_ci: tuple[float, float]
    p_value: float
    p_adjusted: float | None = None
    significant: bool = False
    outcome: str = ""  # win | loss | flat | pass | fail
    covariate: str | None = None
    variance_reduction: float | None = None
    margin: str | None = None
    bound: float | None = None  # guardrail: one-sided bound compared with the margin
    sequential: dict | None = None


@dataclass
class AnalysisResult:
    source: str
    unit: str
    control: str
    arms: dict[str, int]
    srm: dict
    alpha: float
    correction: str
    sequential: str | None
    metrics: list[MetricResult]
    guardrails: list[MetricResult]
    decisions: dict[str, dict]
    verdict: str
    notes: list[str]

    @property
    def srm_mismatch(self) -> bool:
        return bool(self.srm["mismatch"])

    def to_json(self) -> dict:
        d = asdict(self)
        d["metrics"] = [asdict(m) for m in self.metrics]
        d["guardrails"] = [asdict(m) for m in self.guardrails]
        return _clean(d)


def _clean(o):
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def analyze(df: pl.DataFrame, cfg: AnalyzeConfig, source: str = "data") -> AnalysisResult:
    """Run the full analysis on a one-row-per-unit table."""
    success = [MetricSpec.parse(m) for m in cfg.metrics]
    guards = [Guardrail.parse(g) for g in cfg.guardrails]
    all_specs = success + [g.metric for g in guards]
    cols = [c for s in all_specs for c in s.columns]
    covs = parse_covariates(cfg.covariates, all_specs, df, source)
    extra = list(covs.values()) + ([cfg.time_column] if cfg.time_column else [])
    for col in extra:
        if col not in df.columns:
            raise ExperimentInputError(f"{source}: no column {col!r}")
    df = validate_experiment(df, cfg.unit, cfg.variant, cols + list(covs.values()), source)
    if cfg.time_column and df[cfg.time_column].null_count():
        row = int(df[cfg.time_column].is_null().arg_max())
        raise ExperimentInputError(f"{source}: row {row + 1}: field {cfg.time_column!r} is empty")

    labels = sorted(df[cfg.variant].unique().to_list())
    if len(labels) < 2:
        raise ExperimentInputError(f"{source}: field {cfg.variant!r} has {len(labels)} arm(s); need at least 2")
    control = cfg.control or ("control" if "control" in labels else labels[0])
    if control not in labels:
        raise ExperimentInputError(f"{source}: control arm {control!r} not found in {cfg.variant!r} ({labels})")
    arms = [control] + [a for a in labels if a != control]
    counts = df.group_by(cfg.variant).len().to_dict(as_series=False)
    n_by_arm = dict(zip(counts[cfg.variant], counts["len"]))
    arm_counts = np.array([n_by_arm[a] for a in arms], dtype=float)
    if arm_counts.min() < 2:
        raise ExperimentInputError(f"{source}: every arm needs at least 2 units ({dict(zip(arms, arm_counts))})")
    share = parse_split(cfg.split, arms)
    chi2, p_srm = srm_test(arm_counts, np.array(share))
    srm = {"counts": {a: int(c) for a, c in zip(arms, arm_counts)}, "expected_share": dict(zip(arms, share)),
           "chi2": float(chi2), "p_value": float(p_srm), "threshold": cfg.srm_threshold,
           "mismatch": bool(p_srm < cfg.srm_threshold)}

    notes: list[str] = []
    looks = _looks(df, cfg, arms, notes)
    results = []
    for spec in success:
        results += _metric_results(df, cfg, spec, arms, covs.get(spec.name), "success", looks)
    guard_results = []
    for g in guards:
        for r in _metric_results(df, cfg, g.metric, arms, covs.get(g.metric.name), "guardrail", looks):
            guard_results.append(_guardrail(r, g, cfg, looks))
    _success_decisions(results, cfg, looks)
    decisions, verdict = _decide(arms[1:], results, guard_results, srm, cfg, looks)
    if cfg.sequential in ("obf", "pocock") and cfg.correction != "bonferroni" and len(results) > 1:
        notes.append("group-sequential boundaries split alpha evenly across success comparisons (Bonferroni); "
                     f"the requested {cfg.correction} correction applies to fixed-horizon p-values only")
    return AnalysisResult(source, cfg.unit, control, srm["counts"], srm, cfg.alpha, cfg.correction,
                          cfg.sequential, results, guard_results, decisions, verdict, notes)


# ------------------------------------------------------------------------------------------------------ looks
@dataclass
class _Looks:
    method: str | None
    by: list[str]  # [time_column] when every cumulative look is analysed, else []
    fractions: np.ndarray | None  # information fraction per look (group-sequential)
    c_success: np.ndarray | None = None  # two-sided boundaries per look
    c_guard: np.ndarray | None = None  # one-sided boundaries per look for guardrails
    n_prev: int = 0  # earlier looks given only as information fractions
    complete: bool = True  # the planned sample is reached (or the analyst says this is the last look)


def _looks(df: pl.DataFrame, cfg: AnalyzeConfig, arms: list[str], notes: list[str]) -> _Looks:
    if cfg.sequential is None:
        return _Looks(None, [], None)
    by = [cfg.time_column] if cfg.time_column else []
    if cfg.sequential == "msprt":    # always valid at any look; complete once the planned sample (if any) is in
        done = cfg.final_look or (cfg.planned_n_per_arm is not None
                                  and df.height >= cfg.planned_n_per_arm * len(arms))
        return _Looks("msprt", by, None, complete=done)
    n_plan = cfg.planned_n_per_arm * len(arms)  # type: ignore[operator]
    if by:
        per = df.group_by(by).len().sort(by)["len"].to_numpy()
        n_look = np.cumsum(per).astype(float)
    else:
        n_look = np.array([float(df.height)])
    fr = np.concatenate([np.asarray(cfg.previous_looks, dtype=float), n_look / n_plan])
    if np.any(np.diff(fr) < 0) or np.any(fr <= 0):
        raise ExperimentInputError("information fractions of the looks must be positive and increasing "
                                   f"(got {np.round(fr, 4).tolist()})")
    if fr[-1] > 1:
        notes.append(f"the data hold {fr[-1]:.0%} of the planned sample; the last look spends the rest of alpha")
    k = max(1, (len(arms) - 1) * len(cfg.metrics))
    c_s = boundaries(fr, cfg.alpha / k, cfg.sequential, final=cfg.final_look)
    c_g = boundaries(fr, 2 * cfg.alpha, cfg.sequential, final=cfg.final_look)
    n_prev = len(cfg.previous_looks)
    return _Looks(cfg.sequential, by, fr, c_s[n_prev:], c_g[n_prev:], n_prev, complete=cfg.final_look or fr[-1] >= 1)


def _metric_results(df, cfg, spec, arms, cov, role, looks: _Looks) -> list[MetricResult]:
    kind = metric_kind(df, spec)
    mom, _ = moments_from_frame(df, cfg.variant, arms, spec.numerator, spec.denominator, cov, by=looks.by)
    if looks.by:
        mom = mom.cumsum(axis=0)
    est = estimate_groups(mom, cuped=cov is not None)
    out = []
    for t in range(1, len(arms)):
        cmp_all = compare(est, t, 0, welch=kind == "mean")
        last = (lambda a: a[-1]) if looks.by else (lambda a: a)
        cmp = type(cmp_all)(**{k: np.asarray(last(getattr(cmp_all, k))) for k in cmp_all.__dataclass_fields__})
        lo, hi = cmp.ci(cfg.alpha)
        llo, lhi = cmp.lift_ci(cfg.alpha)
        vr = None
        if cov is not None:
            v0 = float(last(est.unit_var_unadjusted[..., [0, t]]).sum())
            v1 = float(last(est.unit_var[..., [0, t]]).sum())
            vr = 1 - v1 / v0 if v0 > 0 else None
        r = MetricResult(
            metric=spec.name, role=role, kind=kind, arm=arms[t], method=TEST_NAMES[kind] + (
                f", CUPED on {cov}" if cov else ""),
            n_control=int(cmp.n_control), n_treatment=int(cmp.n_treatment),
            control_mean=float(cmp.control_mean), treatment_mean=float(cmp.treatment_mean),
            diff=float(cmp.diff), ci=(float(lo), float(hi)), lift=float(cmp.lift), lift_ci=(float(llo), float(lhi)),
            p_value=float(cmp.pvalue()), covariate=cov, variance_reduction=vr,
        )
        r._cmp_all = cmp_all  # type: ignore[attr-defined]
        r._lower_is_better = spec.lower_is_better  # type: ignore[attr-defined]
        out.append(r)
    return out


# --------------------------------------------------------------------------------------------------- decisions
def _success_decisions(results: list[MetricResult], cfg: AnalyzeConfig, looks: _Looks) -> None:
    if not results:
        return
    if looks.method in ("obf", "pocock"):
        for r in results:
            c = r._cmp_all  # type: ignore[attr-defined]
            z = np.atleast_1d(c.stat)
            crossed = np.abs(z) >= looks.c_success
            first = int(np.argmax(crossed)) if crossed.any() else None
            ck = float(looks.c_success[-1])
            se = float(np.atleast_1d(c.se)[-1])
            lse = _last(c.lift_se)
            if math.isfinite(ck):
                r.ci = (r.diff - ck * se, r.diff + ck * se)
                r.lift_ci = (r.lift - ck * lse, r.lift + ck * lse)
            else:
                r.ci = r.lift_ci = (-math.inf, math.inf)
            r.significant = first is not None
            zs = float(z[first]) if first is not None else float(z[-1])
            r.sequential = {"method": SEQUENTIAL_NAMES[looks.method], "looks": len(z) + looks.n_prev,
                            "information_fraction": float(looks.fractions[-1]), "z": float(z[-1]),
                            "boundary": ck,
                            "crossed_at_look": None if first is None else first + 1 + looks.n_prev,
                            "ci": "repeated confidence interval at the current look",
                            "p_value": "nominal fixed-horizon p-value; the decision uses the boundary"}
            _outcome(r, zs)
        return
    if looks.method == "msprt":
        for r in results:
            c = r._cmp_all  # type: ignore[attr-defined]
            tau = cfg.msprt_tau * _first_scale(c.control_mean, c.diff)
            p, lo, hi = msprt(np.atleast_1d(c.diff), np.atleast_1d(c.se), tau, cfg.alpha, axis=0)
            r.p_value = float(p[-1])
            r.ci = (float(lo[-1]), float(hi[-1]))
            _, llo, lhi = msprt(np.atleast_1d(c.lift), np.atleast_1d(c.lift_se), cfg.msprt_tau, cfg.alpha, axis=0)
            r.lift_ci = (float(llo[-1]), float(lhi[-1]))
            r.sequential = {"method": SEQUENTIAL_NAMES["msprt"], "looks": int(p.size),
                            "tau": float(tau[-1]), "ci": "always-valid confidence sequence"}
    p_adj = adjust_pvalues([r.p_value for r in results], cfg.correction)  # type: ignore[arg-type]
    for r, pa in zip(results, p_adj):
        r.p_adjusted = float(pa)
        r.significant = bool(pa < cfg.alpha)
        _outcome(r, r.diff)


def _first_scale(control_mean, like) -> np.ndarray:
    """|control mean| at the first look, for every look: the mSPRT mixture is fixed once, not re-fitted per look
    (its always-valid guarantee assumes a mixture chosen in advance)."""
    m = np.atleast_1d(np.asarray(control_mean, dtype=float))
    return np.full(np.shape(np.atleast_1d(like)), abs(float(m[0])))


def _outcome(r: MetricResult, signed: float) -> None:
    good = signed < 0 if r._lower_is_better else signed > 0  # type: ignore[attr-defined]
    r.outcome = "flat" if not r.significant else ("win" if good else "loss")


def _guardrail(r: MetricResult, g: Guardrail, cfg: AnalyzeConfig, looks: _Looks) -> MetricResult:
    """One-sided non-inferiority: the bound of the difference (or lift) on the harmful side vs the margin."""
    upper = g.op == "<="
    est, se = (r.lift, _last(r._cmp_all.lift_se)) if g.relative else (r.diff, _last(r._cmp_all.se))  # type: ignore
    if looks.method in ("obf", "pocock"):
        q = float(looks.c_guard[-1])
        how = "one side of the group-sequential boundary at 2 x alpha"
    elif looks.method == "msprt":
        c = r._cmp_all  # type: ignore[attr-defined]
        sc = np.atleast_1d(c.lift_se if g.relative else c.se)
        tau = cfg.msprt_tau * (np.ones_like(sc) if g.relative else _first_scale(c.control_mean, sc))
        _, lo, hi = msprt(np.atleast_1d(c.lift if g.relative else c.diff), sc, tau, cfg.alpha, axis=0)
        bound = float(hi[-1] if upper else lo[-1])
        q = abs(bound - est) / se if se > 0 else math.inf
        how = "always-valid confidence sequence"
    else:
        q = float(stats.norm.isf(cfg.alpha))
        how = f"one-sided {1 - cfg.alpha:.0%} bound"
    spread = q * se if se > 0 else 0.0  # a metric constant in both arms has no sampling error
    bound = est + spread if upper else est - spread
    passed = bool(bound <= g.margin) if upper else bool(bound >= g.margin)
    gap = (g.margin - est) if upper else (est - g.margin)
    z = gap / se if se > 0 else (math.inf if gap > 0 else (0.0 if gap == 0 else -math.inf))
    r.p_value = float(stats.norm.sf(z))  # fixed-horizon non-inferiority p-value (the decision uses `bound`)
    r.margin = g.text
    r.bound = float(bound)
    r.significant = passed
    r.outcome = "pass" if passed else "fail"
    r.method += f"; non-inferiority, {how} of the {'lift' if g.relative else 'difference'}"
    return r


def _last(a) -> float:
    return float(np.atleast_1d(a)[-1])


def _decide(treatments, results, guards, srm, cfg, looks: _Looks) -> tuple[dict, str]:
    decisions = {}
    final = looks.complete
    for arm in treatments:
        rs = [r for r in results if r.arm == arm]
        gs = [g for g in guards if g.arm == arm]
        wins = [r.metric for r in rs if r.outcome == "win"]
        losses = [r.metric for r in rs if r.outcome == "loss"]
        failed = [g.metric for g in gs if g.outcome == "fail"]
        if srm["mismatch"]:
            d, why = "INVALID", f"sample ratio mismatch (p={srm['p_value']:.2g}): fix assignment/logging first"
        elif losses:
            d, why = "DO NOT SHIP", f"success metric(s) significantly worse: {', '.join(losses)}"
        elif wins and not failed:
            d, why = "SHIP", f"win on {', '.join(wins)}" + (f"; all {len(gs)} guardrail(s) non-inferior" if gs else "")
        elif wins and not final:     # interim guardrail bounds are wide: not yet shown is not shown to fail
            d, why = "CONTINUE", f"win on {', '.join(wins)}; guardrail(s) not yet shown non-inferior: " \
                                 f"{', '.join(failed)}; keep collecting data to the planned sample"
        elif wins:
            d, why = "DO NOT SHIP", f"win on {', '.join(wins)} but guardrail(s) not shown non-inferior: " \
                                    f"{', '.join(failed)}"
        elif not final:
            d, why = "CONTINUE", "no boundary crossed yet; keep collecting data to the planned sample"
        else:
            d, why = "DO NOT SHIP", "no success metric shows a significant win"
        decisions[arm] = {"decision": d, "reason": why, "wins": wins, "losses": losses, "failed_guardrails": failed}
    order = ["INVALID", "SHIP", "CONTINUE", "DO NOT SHIP"]
    verdict = min((v["decision"] for v in decisions.values()), key=order.index)
    return decisions, verdict
