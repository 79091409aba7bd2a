"""Safe peeking: group-sequential alpha spending and the always-valid mixture SPRT.

Group-sequential (Lan & DeMets 1983): before the test you fix the planned sample size; at each look the
information fraction t = n_now / n_planned says how much of alpha may have been spent, via an O'Brien-Fleming-type
spending function (each side spends 2 - 2 Phi(z_{1-alpha/4} / sqrt(t)), as in R's ldbounds and gsDesign's sfLDOF
at one-sided alpha/2) or a Pocock-type alpha(t) = alpha ln(1 + (e-1) t).
The two-sided z boundaries are computed by recursive numerical integration of the Brownian-motion density over the
continuation region (Armitage, McPherson & Rowe 1969), so any number of unequally spaced looks is handled; the
look that reaches t = 1 (or is declared final) spends what is left. The repeated confidence interval at look k is
estimate +- c_k * se (Jennison & Turnbull 2000, ch. 9).

Always valid (Johari, Pekelis & Walsh 2017; Howard et al. 2021): the normal-mixture SPRT with mixing variance tau^2
gives, for an estimate D with variance V, the likelihood ratio
    Lambda = sqrt(V / (V + tau^2)) exp(D^2 tau^2 / (2 V (V + tau^2)))
and the always-valid p-value min over looks of 1 / Lambda; the matching confidence sequence is
    D +- sqrt(V (V + tau^2) / tau^2 * (ln((V + tau^2) / V) + 2 ln(1 / alpha))).
It needs no plan and may be checked after every unit, at the price of wider intervals.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

SPENDING = ("obf", "pocock")
SEQUENTIAL_METHODS = ("obf", "pocock", "msprt")
SEQUENTIAL_NAMES = {
    "obf": "group-sequential, Lan-DeMets O'Brien-Fleming-type alpha spending",
    "pocock": "group-sequential, Lan-DeMets Pocock-type alpha spending",
    "msprt": "always-valid mixture SPRT (normal mixture) with confidence sequences",
}
_GRID = 801


def spent(t: np.ndarray | float, alpha: float, kind: str = "obf") -> np.ndarray:
    """Cumulative two-sided alpha spent by information fraction t in [0, 1]."""
    t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    if kind == "obf":
        with np.errstate(divide="ignore"):
            z = stats.norm.isf(alpha / 4) / np.sqrt(np.maximum(t, 1e-300))
            return np.where(t > 0, 4 * stats.norm.sf(z), 0.0)
    if kind == "pocock":
        return alpha * np.log1p((math.e - 1) * t)
    raise ValueError(f"unknown spending function {kind!r}; choose one of {', '.join(SPENDING)}")


def boundaries(fractions: list[float] | np.ndarray, alpha: float = 0.05, kind: str = "obf",
               final: bool = False) -> np.ndarray:
    """Two-sided z boundaries c_k for looks at increasing information fractions (inf: nothing spent there).

    Alpha is spent at min(fraction, 1) (with `final`, the last look spends all that remains), while the joint law
    of the looks' statistics follows the actual information fractions, above 1 when the sample overran the plan or
    below it at an early final look.
    """
    info = np.asarray(fractions, dtype=float)
    if info.ndim != 1 or info.size == 0:
        raise ValueError("fractions must be a non-empty 1-d sequence")
    if np.any(info <= 0) or np.any(np.diff(info) < 0):
        raise ValueError("information fractions must be positive and non-decreasing")
    spend = np.minimum(info, 1.0)
    if final:
        spend[-1] = 1.0
    return np.array(_boundaries(tuple(np.round(info, 6)), tuple(np.round(spend, 6)), float(alpha), kind))


@lru_cache(maxsize=256)
def _boundaries(info: tuple[float, ...], spend: tuple[float, ...], alpha: float, kind: str) -> tuple[float, ...]:
    cum = spent(np.array(spend), alpha, kind)
    out: list[float] = []
    prev_t, prev_spent = 0.0, 0.0
    grid = weights = dens = None  # density of S = Z sqrt(t) on the continuation region
    for t, a_cum in zip(info, cum):
        inc = a_cum - prev_spent
        if t <= prev_t or inc <= 1e-12:
            out.append(math.inf)
            continue
        if grid is None:
            c = float(stats.norm.isf(inc / 2))
            b = c * math.sqrt(t)
            grid, weights = _grid(b)
            dens = stats.norm.pdf(grid, scale=math.sqrt(t))
        else:
            sd = math.sqrt(t - prev_t)
            mass = weights * dens

            def cross(c: float) -> float:
                b = c * math.sqrt(t)
                return float(np.sum(mass * (special.ndtr((-b - grid) / sd) + special.ndtr((grid - b) / sd))))

            if cross(0.0) <= inc:
                c = 0.0
            else:
                c = float(optimize.brentq(lambda c: cross(c) - inc, 0.0, 40.0, xtol=1e-10))
            b = c * math.sqrt(t)
            new_grid, new_weights = _grid(b)
            u = (new_grid[:, None] - grid[None, :]) / sd
            kern = np.exp(-0.5 * u * u) / (sd * math.sqrt(2 * math.pi))
            dens = kern @ mass
            grid, weights = new_grid, new_weights
        out.append(c)
        prev_t, prev_spent = t, a_cum
    return tuple(out)


def _grid(b: float) -> tuple[np.ndarray, np.ndarray]:
    """Simpson nodes and weights on [-b, b]."""
    g = np.linspace(-b, b, _GRID)
    h = g[1] - g[0]
    w = np.ones(_GRID)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return g, w * h / 3


def msprt(diff: np.ndarray, se: np.ndarray, tau: np.ndarray | float, alpha: float,
          axis: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Always-valid p-values and confidence-sequence bounds (lo, hi) of the normal-mixture SPRT.

    With `axis` (the looks), p-values are running minima and intervals running intersections along it.
    """
    v = np.asarray(se, dtype=float) ** 2
    tau2 = np.asarray(tau, dtype=float) ** 2
    d = np.asarray(diff, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lr = 0.5 * np.log(v / (v + tau2)) + d * d * tau2 / (2 * v * (v + tau2))
        p = np.minimum(1.0, np.exp(-log_lr))
        half = np.sqrt(v * (v + tau2) / tau2 * (np.log((v + tau2) / v) + 2 * math.log(1 / alpha)))
    p = np.where(np.isfinite(p), p, 1.0)
    lo, hi = d - half, d + half
    lo, hi = np.where(np.isfinite(lo), lo, -np.inf), np.where(np.isfinite(hi), hi, np.inf)
    if axis is not None:
        p = np.minimum.accumulate(p, axis=axis)
        lo = np.maximum.accumulate(lo, axis=axis)
        hi = np.minimum.accumulate(hi, axis=axis)
    return p, lo, hi
