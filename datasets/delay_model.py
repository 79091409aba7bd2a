"""Empirical conversion-delay model for delayed purchase labels.

Fitted on impressions whose attribution window has closed (matured), per stratum (clicked or not):
`rate[s]` = P(a purchase within the window | s) and F = the empirical CDF of the delay (impression -> first
purchase) among those purchases. For an impression still in its window, `elapsed` seconds old and with no purchase
yet, the probability that one is still to come is

    p_pending = rate * (1 - F(elapsed)) / (1 - rate * F(elapsed))

which is 0 once the window has closed (F(window) = 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DelayModel:
    """`delays_s`: sorted delays (seconds) of matured purchases; `rates`: purchase rate by stratum."""

    window_s: float
    delays_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rates: dict[bool, float] = field(default_factory=dict)
    n_matured: int = 0

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.delays_s = np.sort(np.asarray(self.delays_s, dtype=np.float64))
        if np.any(self.delays_s < 0) or np.any(self.delays_s > self.window_s):
            raise ValueError("delays must lie within [0, window_s]")
        for s, r in self.rates.items():
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"rate of stratum {s} must be in [0, 1], got {r}")

    @classmethod
    def fit(cls, window_s: float, delays_s: np.ndarray, strata: np.ndarray, converted: np.ndarray) -> "DelayModel":
        """Fit on matured impressions: `strata` (bool, n), `converted` (bool, n), `delays_s` (float, n; NaN if none)."""
        strata = np.asarray(strata, dtype=bool)
        converted = np.asarray(converted, dtype=bool)
        rates = {bool(s): float(converted[strata == s].mean()) for s in (False, True) if np.any(strata == s)}
        d = np.asarray(delays_s, dtype=np.float64)[converted]
        return cls(window_s, np.clip(d[np.isfinite(d)], 0, window_s), rates, int(len(strata)))

    def cdf(self, elapsed_s: np.ndarray) -> np.ndarray:
        """F(elapsed): share of conversions that happen within `elapsed` seconds (1 past the window)."""
        e = np.asarray(elapsed_s, dtype=np.float64)
        if len(self.delays_s) == 0:
            return np.clip(e / self.window_s, 0.0, 1.0)  # no evidence: uniform over the window
        f = np.searchsorted(self.delays_s, e, side="right") / len(self.delays_s)
        return np.where(e >= self.window_s, 1.0, f)

    def p_pending(self, elapsed_s: np.ndarray, strata: np.ndarray) -> np.ndarray:
        """P(a purchase is still to come | none by `elapsed_s`), per row; shapes (n,) -> (n,)."""
        strata = np.asarray(strata, dtype=bool)
        overall = float(np.mean(list(self.rates.values()))) if self.rates else 0.0
        rate = np.where(strata, self.rates.get(True, overall), self.rates.get(False, overall))
        f = self.cdf(elapsed_s)
        denom = 1.0 - rate * f
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(denom > 0, rate * (1.0 - f) / denom, 0.0)
        return np.clip(p, 0.0, 1.0)

    def quantiles(self, qs=(0.5, 0.9, 0.99)) -> dict[str, float]:
        if len(self.delays_s) == 0:
            return {}
        return {f"p{int(q * 100)}": float(np.quantile(self.delays_s, q)) for q in qs}
