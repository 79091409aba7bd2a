"""Confidence intervals clustered by request: normal approximation (influence functions) and percentile bootstrap.

The bootstrap is the Poisson bootstrap over requests (Oza 2001; Hanley & MacGibbon 2006; Chamandy et al. 2012):
every request gets an independent Poisson(1) weight per replicate, and every estimate is re-evaluated from
weighted per-request sums (`Decomposition.columns`), means dividing by the replicate's total weight. It is the
multinomial "resample R requests with replacement" bootstrap with the total count left random, which makes the
weights independent, so they are generated chunk by chunk of requests in O(replicates x chunk) memory, never as a
(replicates x requests) matrix. The same weights serve every estimator and the logging value, so lift intervals
come from matched replicates. Nothing is re-fitted (the reward model is held fixed).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

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
    z = NormalDist().inv_cdf(0.5 + level / 2)
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


def _poisson_tables() -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF tables of Poisson(1) for 32-bit uniforms u: thresholds T_k = floor(2^32 P(X <= k)) (X is the
    number of thresholds <= u), and per value of u's top 16 bits that number, or -1 where a threshold falls
    inside the 2^16 values sharing those bits."""
    cdf, term, k = [], math.exp(-1.0), 0
    acc = term
    while acc * 2.0 ** 32 < 2.0 ** 32 - 1:
        cdf.append(acc)
        k += 1
        term /= k
        acc += term
    thresholds = np.floor(np.array(cdf) * 2.0 ** 32).astype(np.int64)
    start = np.arange(1 << 16, dtype=np.int64) << 16
    low = np.searchsorted(thresholds, start, side="right")
    high = np.searchsorted(thresholds, start + (1 << 16) - 1, side="right")
    return thresholds, np.where(high == low, low, -1).astype(np.float32)


_THRESHOLDS, _LUT = _poisson_tables()


def poisson_weights(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Independent Poisson(1) counts (float32) by exact inverse CDF of 32-bit uniforms: a lookup on the top 16
    bits, then a search for the ~0.01% of values whose top bits straddle a threshold."""
    u = rng.integers(0, 1 << 32, size=shape, dtype=np.uint32)
    top = u.view(np.uint16)[..., 1::2] if sys.byteorder == "little" else (u >> 16)
    w = _LUT[top]
    fix = np.flatnonzero(w < 0)
    if len(fix):
        w.flat[fix] = np.searchsorted(_THRESHOLDS, u.flat[fix].astype(np.int64), side="right")
    return w


def bootstrap(decomps: dict[str, Decomposition], n_boot: int, seed: int = 0, chunk: int = 1 << 14,
              max_block: int = 256, units: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Replicate values (n_boot,) of every decomposition under the same Poisson weights, one per independent unit
    (`units`: (R,) dense codes of the requests' units, e.g. their users; None: one per request); a unit's weight
    applies to all its requests."""
    if not decomps or n_boot <= 0:
        return {n: np.empty(0) for n in decomps}
    names = list(decomps)
    cols, spans = [], {}
    for name in names:
        c = decomps[name].columns()
        spans[name] = (len(cols), len(cols) + len(c))
        cols.extend(c)
    counts = None
    if units is not None:      # the bootstrap's rows become the units: their column sums and request counts
        cols = [np.bincount(units, weights=c) for c in cols]
        counts = np.bincount(units).astype(np.float64)
    # centred float32 blocks: the products are exact enough (errors ~1e-7 of the spread, not of the level)
    centre = np.array([c.mean() for c in cols])
    rng = np.random.default_rng(seed)
    sums, weight, drawn = np.zeros((n_boot, len(cols))), np.zeros(n_boot), np.zeros(n_boot)
    with _one_blas_thread():  # small products; BLAS threads would only spin on a busy machine
        _accumulate(cols, centre, rng, sums, drawn, chunk, max_block, counts, weight)
    sums += drawn[:, None] * centre[None, :]
    if counts is None:
        weight = drawn
    out = {}
    for n in names:
        lo, hi = spans[n]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[n] = Decomposition.value_from_sums(sums[:, lo:hi], np.where(weight > 0, weight, np.nan))
    return out


def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _accumulate(cols: list[np.ndarray], centre: np.ndarray, rng: np.random.Generator, sums: np.ndarray,
                drawn: np.ndarray, chunk: int, max_block: int, counts: np.ndarray | None = None,
                requests: np.ndarray | None = None) -> None:
    """sums[b] += sum_r w[b, r] (cols[:, r] - centre) and drawn[b] += sum_r w[b, r], chunk by chunk (rows r are
    requests or units); with `counts` (requests per unit) also requests[b] += sum_r w[b, r] counts[r]."""
    n_boot, R, J = len(sums), len(cols[0]), len(cols)
    for b0 in range(0, n_boot, max_block):
        b1 = min(b0 + max_block, n_boot)
        for lo in range(0, R, chunk):
            hi = min(lo + chunk, R)
            block = np.empty((hi - lo, J), dtype=np.float32)
            for j, c in enumerate(cols):
                block[:, j] = c[lo:hi] - centre[j]
            w = poisson_weights(rng, (b1 - b0, hi - lo))
            sums[b0:b1] += w @ block
            drawn[b0:b1] += w.sum(axis=1, dtype=np.float64)
            if counts is not None and requests is not None:
                requests[b0:b1] += w.astype(np.float64) @ counts[lo:hi]
