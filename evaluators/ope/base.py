"""The common shape of every estimate: a value that is a mean over requests plus an optional ratio term.

Every estimator in this package reduces the logged data to per-request vectors (shape (R,), one entry per logged
request) such that

    value = mean(u) + mean(m) * sum(a) / sum(b)

(`a`, `b`, `m` absent for the linear estimators IPS, clipped IPS, DM, DR, Switch-DR, PI). Standard errors come
from the per-request influence function summed over the independent units (a registered user's requests are not
independent of each other, nor are the slots of one request; `OPEInputs.req_unit`), and the bootstrap re-weights
the same vectors unit by unit, so it never re-runs the pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Decomposition:
    """Per-request pieces of an estimate; every array has shape (R,)."""

    u: np.ndarray
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    m: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.u)
        parts = (self.a, self.b, self.m)
        if any(p is None for p in parts) and any(p is not None for p in parts):
            raise ValueError("a, b and m come together (the ratio term) or not at all")
        for p in parts:
            if p is not None and len(p) != n:
                raise ValueError("all per-request arrays must have the same length")

    @property
    def has_ratio(self) -> bool:
        return self.a is not None

    @property
    def n(self) -> int:
        return len(self.u)

    def columns(self) -> list[np.ndarray]:
        """The per-request vectors the bootstrap needs sums of: [u] or [u, a, b, m]."""
        return [self.u] if not self.has_ratio else [self.u, self.a, self.b, self.m]

    @staticmethod
    def value_from_sums(sums: np.ndarray, n: np.ndarray | float) -> np.ndarray:
        """Value from column sums (shape (..., 1) or (..., 4)) over `n` (resampled) requests."""
        sums = np.asarray(sums, dtype=np.float64)
        v = sums[..., 0] / n
        if sums.shape[-1] == 4:
            with np.errstate(invalid="ignore", divide="ignore"):
                v = v + (sums[..., 3] / n) * sums[..., 1] / sums[..., 2]
        return v

    def value(self) -> float:
        sums = np.array([c.sum() for c in self.columns()])
        return float(self.value_from_sums(sums, self.n))

    def influence(self) -> np.ndarray:
        """Per-request influence function (R,): value - truth ~ mean(influence)."""
        psi = self.u - self.u.mean()
        if self.has_ratio:
            b_bar = self.b.mean()
            if b_bar == 0:
                return np.full(self.n, np.nan)
            theta = self.a.sum() / self.b.sum()
            m_bar = self.m.mean()
            psi = psi + theta * (self.m - m_bar) + m_bar * (self.a - theta * self.b) / b_bar
        return psi


def stderr_of(psi: np.ndarray, units: np.ndarray | None = None) -> float:
    """Standard error of a mean over requests from their influence values (R,), the requests clustered in `units`
    (R,) dense codes 0..G-1 (None: every request its own unit): sqrt(G / (G - 1) * sum_g (sum of psi in g)^2) / R."""
    n = len(psi)
    if n < 2 or not np.all(np.isfinite(psi)):
        return float("nan")
    if units is None:
        return float(np.sqrt(np.sum(psi * psi) / (n * (n - 1))))
    s = np.bincount(units, weights=psi)
    g = len(s)
    if g < 2:
        return float("nan")
    return float(np.sqrt(g / (g - 1) * np.sum(s * s)) / n)


def per_request_sum(req_idx: np.ndarray, values: np.ndarray, n_requests: int) -> np.ndarray:
    """Sum of impression-level `values` (N,) per request -> (R,)."""
    return np.bincount(req_idx, weights=values, minlength=n_requests)
