"""Confidence intervals clustered by request: normal approximation (influence functions) and percentile bootstrap.

The bootstrap resamples requests with replacement and re-evaluates every estimate from per-request sums
(`Decomposition.columns`), sharing the same resamples across estimators and the logging value, so lift intervals
are computed on matched replicates. Nothing is re-fitted (the reward model is held fixed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from recs.evaluators.ope.base import Decomposition


@dataclass(frozen=True)
class Interval:
    """A point value with its standard error and two-sided interval."""

    value: float
    stderr: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return {k: _num(v) for k, v in (("value", self.value), ("stderr", self.stderr),
                                         ("ci_low", self.ci_low), ("ci_high", self.ci_high))}


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def normal_interval(value: float, stderr: float, level: float = 0.95) -> Interval:
    z = float(norm.ppf(0.5 + level / 2))
    return Interval(value, stderr, value - z * stderr, value + z * stderr)


def percentile_interval(value: float, replicates: np.ndarray, level: float = 0.95) -> Interval:
    """Percentile bootstrap interval; the stderr is the replicates' standard deviation."""
    reps = replicates[np.isfinite(replicates)]
    if len(reps) < 2:
        return Interval(value, float("nan"), float("nan"), float("nan"))
    lo, hi = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(value, float(reps.std(ddof=1)), float(lo), float(hi))


def lift_influence(value: float, psi: np.ndarray, base: float, psi_base: np.ndarray) -> tuple[float, np.ndarray]:
    """Lift value / base and its influence function by the delta method."""
    if base == 0:
        return float("nan"), np.full(len(psi), np.nan)
    lift = value / base
    return lift, (psi - lift * psi_base) / base


def bootstrap(decomps: dict[str, Decomposition], n_boot: int, seed: int = 0,
              chunk: int = 8) -> dict[str, np.ndarray]:
    """Replicate values (n_boot,) of every decomposition under the same request resamples."""
    if not decomps:
        return {}
    names = list(decomps)
    cols, spans = [], {}
    for name in names:
        c = decomps[name].columns()
        spans[name] = (len(cols), len(cols) + len(c))
        cols.extend(c)
    mat = np.column_stack(cols).astype(np.float64)  # (R, J)
    R = mat.shape[0]
    rng = np.random.default_rng(seed)
    out = {n: np.empty(n_boot) for n in names}
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        counts = np.empty((c, R), dtype=np.float64)
        for j in range(c):
            counts[j] = np.bincount(rng.integers(0, R, R), minlength=R)
        sums = counts @ mat  # (c, J)
        for n in names:
            lo, hi = spans[n]
            out[n][start:start + c] = Decomposition.value_from_sums(sums[:, lo:hi], R)
    return out
