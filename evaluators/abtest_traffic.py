"""Experiment traffic: how many units enter per day, and how long a sample takes to collect."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_DAYS = 3650


@dataclass
class Traffic:
    """Eligible units per day; `cumulative` (from logs) gives distinct units reached after 1, 2, ... days."""

    daily_units: float
    traffic_share: float = 1.0
    cumulative: tuple[float, ...] = ()
    source: str = "--daily-units"

    def __post_init__(self) -> None:
        if not self.daily_units > 0:
            raise ValueError(f"daily units must be > 0, got {self.daily_units}")
        if not 0 < self.traffic_share <= 1:
            raise ValueError(f"traffic share must be in (0, 1], got {self.traffic_share}")
        if self.cumulative and any(b < a for a, b in zip(self.cumulative, self.cumulative[1:])):
            raise ValueError("cumulative units must be non-decreasing")

    def units_in(self, days: float) -> float:
        """Distinct units entering the experiment (all arms) after `days` days."""
        if not self.cumulative:
            return self.daily_units * days * self.traffic_share
        cum = np.asarray(self.cumulative, dtype=float)
        k = len(cum)
        if days <= k:
            reached = float(np.interp(days, np.arange(0, k + 1), np.concatenate([[0.0], cum])))
        else:
            half = max(1, k // 2)
            new_per_day = (cum[-1] - cum[-1 - half]) / half if k > half else cum[-1] / k
            reached = cum[-1] + (days - k) * new_per_day
        return reached * self.traffic_share

    def days_for(self, n_per_arm: float, arms: int) -> int | None:
        """Whole days until each arm holds `n_per_arm` units (None: not within MAX_DAYS)."""
        need = n_per_arm * arms
        if self.units_in(MAX_DAYS) < need:
            return None
        lo, hi = 0, MAX_DAYS
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.units_in(mid) >= need:
                hi = mid
            else:
                lo = mid
        return hi


def whole_weeks(days: int) -> int:
    """Round a duration up to whole weeks, at least one week (weekly seasonality)."""
    return max(7, 7 * math.ceil(days / 7))
