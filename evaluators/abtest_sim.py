"""Synthetic, seeded user-level experiment tables (one row per unit) for calibration tests and demos.

The generative model is deliberately marketplace-shaped: a per-user activity level drives impressions,
conversion and basket value, so metrics are skewed, correlated and predictable from a pre-period copy of the
same user (what CUPED exploits). Treatment effects act on mechanisms, as relative lifts:
`conversion` (purchase probability), `ctr` (per-impression click probability), `order_value` (revenue per
purchasing user), `latency` (p99 latency) and `errors` (error probability per request).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

EFFECT_KEYS = ("conversion", "ctr", "order_value", "latency", "errors")


@dataclass
class ExperimentSim:
    """Parameters of a simulated experiment population."""

    n_units: int = 10_000
    n_experiments: int = 1
    days: int = 14
    variants: tuple[str, ...] = ("control", "treatment")
    split: tuple[float, ...] | None = None  # assignment probabilities (default equal)
    effects: dict[str, float] = field(default_factory=dict)  # relative lifts applied to every non-control arm
    base_conversion: float = 0.08
    base_ctr: float = 0.05
    mean_order_value: float = 40.0
    lost_share: float = 0.0  # share of non-control units lost from the log (creates a sample-ratio mismatch)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_units < 2 or self.n_experiments < 1 or self.days < 1:
            raise ValueError("n_units >= 2, n_experiments >= 1 and days >= 1 are required")
        if len(self.variants) < 2 or len(set(self.variants)) != len(self.variants):
            raise ValueError("at least two distinct variants are required")
        if self.split is not None:
            if len(self.split) != len(self.variants) or min(self.split) <= 0:
                raise ValueError("split needs one positive share per variant")
        bad = set(self.effects) - set(EFFECT_KEYS)
        if bad:
            raise ValueError(f"unknown effect(s) {sorted(bad)}; choose from {', '.join(EFFECT_KEYS)}")
        if not 0 < self.base_conversion < 1 or not 0 < self.base_ctr < 1:
            raise ValueError("base rates must be in (0, 1)")
        if not 0 <= self.lost_share < 1:
            raise ValueError("lost_share must be in [0, 1)")


def simulate_experiment_frame(sim: ExperimentSim | None = None, **kwargs) -> pl.DataFrame:
    """One row per (experiment, unit): assignment, first-exposure day, metrics and pre-period covariates.

    Columns: experiment, user_id, variant, day (1..days, units arrive evenly), conversion (bool), revenue, clicks,
    impressions, pre_conversion, pre_revenue, pre_clicks, pre_impressions, requests, errors, error_rate,
    p99_latency_ms.
    """
    sim = sim or ExperimentSim(**kwargs)
    rng = np.random.default_rng(sim.seed)
    size = sim.n_units * sim.n_experiments
    k = len(sim.variants)
    split = np.asarray(sim.split if sim.split is not None else [1.0] * k, dtype=float)
    arm = rng.choice(k, size=size, p=split / split.sum())
    treated = arm > 0
    eff = {key: sim.effects.get(key, 0.0) for key in EFFECT_KEYS}

    def lift(key: str) -> np.ndarray:
        return np.where(treated, 1.0 + eff[key], 1.0)

    activity = rng.gamma(2.0, 0.5, size)  # mean 1
    ctr_u = rng.beta(2.0, 2.0 / sim.base_ctr - 2.0, size)
    conv_logit = np.log(sim.base_conversion / (1 - sim.base_conversion)) + 1.2 * np.log(activity) \
        + rng.normal(0.0, 1.2, size)
    conv_u = 1.0 / (1.0 + np.exp(-conv_logit))
    basket_u = sim.mean_order_value * rng.lognormal(-0.5, 1.0, size)  # mean ~ mean_order_value

    def period(conv_mult: np.ndarray, ctr_mult: np.ndarray, value_mult: np.ndarray):
        impressions = rng.poisson(2.0 + 18.0 * activity)
        clicks = rng.binomial(impressions, np.clip(ctr_u * ctr_mult, 0.0, 1.0))
        conversion = rng.random(size) < np.clip(conv_u * conv_mult, 0.0, 1.0)
        revenue = np.where(conversion, basket_u * value_mult * rng.lognormal(-0.125, 0.5, size), 0.0)
        return conversion, revenue, clicks, impressions

    ones = np.ones(size)
    pre_conv, pre_rev, pre_clicks, pre_impr = period(ones, ones, ones)
    conv, rev, clicks, impr = period(lift("conversion"), lift("ctr"), lift("order_value"))
    requests = rng.poisson(5.0 + 20.0 * activity) + 1
    errors = rng.binomial(requests, np.clip(0.002 * lift("errors"), 0.0, 1.0))
    latency = (180.0 + rng.gamma(4.0, 10.0, size)) * lift("latency")

    unit = np.tile(np.arange(sim.n_units), sim.n_experiments)
    exp_id = np.repeat(np.arange(sim.n_experiments), sim.n_units)
    day = 1 + (unit * sim.days) // sim.n_units
    df = pl.DataFrame({
        "experiment": exp_id,
        "user_id": unit,
        "variant": np.asarray(sim.variants, dtype=object)[arm].tolist(),
        "day": day,
        "conversion": conv,
        "revenue": rev,
        "clicks": clicks,
        "impressions": impr,
        "pre_conversion": pre_conv,
        "pre_revenue": pre_rev,
        "pre_clicks": pre_clicks,
        "pre_impressions": pre_impr,
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests,
        "p99_latency_ms": latency,
    })
    df = df.with_columns(pl.concat_str([pl.lit("u"), pl.col("user_id").cast(pl.Utf8).str.pad_start(8, "0")])
                         .alias("user_id"))
    if sim.lost_share > 0:
        keep = ~treated | (rng.random(size) >= sim.lost_share)
        df = df.filter(pl.Series(keep))
    return df
