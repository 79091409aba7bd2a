"""Calibration harness: thousands of simulated experiments analysed at once (false-positive rate, power).

Experiments are simulated with `abtest_sim` in chunks, reduced to per (experiment, day, arm) sufficient
statistics and analysed with exactly the code `abtest-analyze` runs (`abtest_stats`, `sequential`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from recs.evaluators.abtest_input import MetricSpec, metric_kind
from recs.evaluators.abtest_sim import ExperimentSim, simulate_experiment_frame
from recs.evaluators.abtest_stats import Comparison, compare, estimate_groups, moments_from_frame
from recs.evaluators.sequential import boundaries, msprt

MODES = ("fixed", "peeking", "obf", "pocock", "msprt")


@dataclass
class Batch:
    """Treatment-vs-control comparisons of many experiments, shape (experiments, looks)."""

    cmp: Comparison
    kind: str
    n_total: np.ndarray  # units per look (all arms), shape (experiments, looks)


def simulate_batch(sim: ExperimentSim, metric: str, covariate: str | None = None, chunk: int = 250) -> Batch:
    """Simulate `sim.n_experiments` experiments and compare arm 1 with arm 0 at every daily cumulative look."""
    spec = MetricSpec.parse(metric)
    parts, kind, totals = [], None, []
    done = 0
    while done < sim.n_experiments:
        k = min(chunk, sim.n_experiments - done)
        df = simulate_experiment_frame(replace(sim, n_experiments=k, seed=sim.seed * 1_000_003 + done))
        kind = kind or metric_kind(df, spec)
        mom, _ = moments_from_frame(df, "variant", list(sim.variants[:2]), spec.numerator, spec.denominator,
                                    covariate, by=["experiment", "day"])
        mom = mom.cumsum(axis=1)
        parts.append(compare(estimate_groups(mom, cuped=covariate is not None), 1, 0, welch=kind == "mean"))
        totals.append(mom.n.sum(axis=-1))
        done += k
    fields = Comparison.__dataclass_fields__
    cmp = Comparison(**{f: np.concatenate([getattr(p, f) for p in parts], axis=0) for f in fields})
    return Batch(cmp, kind or "mean", np.concatenate(totals, axis=0))


def rejections(batch: Batch, mode: str = "fixed", alpha: float = 0.05, n_planned: float | None = None,
               tau: float = 0.05) -> np.ndarray:
    """Boolean per experiment: H0 rejected (two-sided) under `mode`.

    fixed: one analysis after the last look; peeking: naive test at every look, stop at the first p < alpha;
    obf / pocock: group-sequential with looks at n / n_planned (default: the mean final n);
    msprt: always-valid p-value below alpha at any look (tau relative to the control mean).
    """
    c = batch.cmp
    if mode == "fixed":
        return c.pvalue()[:, -1] < alpha
    if mode == "peeking":
        return (c.pvalue() < alpha).any(axis=1)
    if mode in ("obf", "pocock"):
        plan = float(n_planned or batch.n_total[:, -1].mean())
        frac = batch.n_total.mean(axis=0) / plan
        bounds = boundaries(frac, alpha, mode, final=True)
        return (np.abs(c.stat) >= bounds[None, :]).any(axis=1)
    if mode == "msprt":
        scale = np.abs(np.asarray(c.control_mean)[:, :1])      # the first look's: a mixture fixed in advance
        p, _, _ = msprt(c.diff, c.se, tau * scale, alpha, axis=1)
        return p[:, -1] < alpha
    raise ValueError(f"mode must be one of {', '.join(MODES)}")
