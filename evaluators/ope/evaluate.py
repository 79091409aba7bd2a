"""Run a set of estimators on aligned inputs: values, clustered intervals, lift over the logger, diagnostics."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recs.evaluators.ope.base import Decomposition, per_request_sum, stderr_of
from recs.evaluators.ope.diagnostics import DiagnosticThresholds, diagnose
from recs.evaluators.ope.direct import DM, RewardModelConfig, RewardPredictions, fit_reward_model
from recs.evaluators.ope.doubly_robust import DR, SNDR, SwitchDR
from recs.evaluators.ope.inputs import OPEInputError, OPEInputs
from recs.evaluators.ope.intervals import (Interval, bootstrap, lift_influence, normal_interval,
                                           percentile_interval)
from recs.evaluators.ope.ips import IPS, SNIPS, ClippedIPS
from recs.evaluators.ope.slate import PseudoInverse

ESTIMATORS = ("ips", "snips", "clipped-ips", "dm", "dr", "sndr", "switch-dr", "pi")
DEFAULT_ESTIMATORS = ("ips", "snips", "clipped-ips", "dm", "dr", "sndr", "switch-dr")


@dataclass(frozen=True)
class OPEConfig:
    """What to estimate and how. `clip` caps weights for clipped IPS and is Switch-DR's threshold tau."""

    estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    clip: float = 20.0
    n_bootstrap: int = 0
    level: float = 0.95
    seed: int = 0
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    thresholds: DiagnosticThresholds = field(default_factory=DiagnosticThresholds)

    def __post_init__(self) -> None:
        unknown = [e for e in self.estimators if e not in ESTIMATORS]
        if unknown or not self.estimators:
            raise ValueError(f"unknown estimator(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(ESTIMATORS)}")
        if len(set(self.estimators)) != len(self.estimators):
            raise ValueError("an estimator is listed twice")
        if not (self.clip > 0 and np.isfinite(self.clip)):
            raise ValueError(f"clip must be a positive number, got {self.clip}")
        if self.n_bootstrap < 0 or 0 < self.n_bootstrap < 20:
            raise ValueError(f"bootstrap needs 0 (off) or at least 20 resamples, got {self.n_bootstrap}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")

    def build(self, name: str):
        return {"ips": IPS(), "snips": SNIPS(), "clipped-ips": ClippedIPS(self.clip), "dm": DM(), "dr": DR(),
                "sndr": SNDR(), "switch-dr": SwitchDR(self.clip), "pi": PseudoInverse()}[name]


@dataclass(frozen=True)
class Estimate:
    """One estimator's value per request with its interval(s), and its lift over the logging policy."""

    name: str
    normal: Interval
    lift: Interval
    value_per_impression: float
    boot: Interval | None = None
    lift_boot: Interval | None = None

    def to_dict(self) -> dict:
        d = self.normal.to_dict()
        d["value_per_impression"] = _num(self.value_per_impression)
        d["lift"] = self.lift.to_dict()
        if self.boot is not None:
            d["bootstrap"] = self.boot.to_dict()
            d["lift"]["bootstrap"] = self.lift_boot.to_dict()
        return d


def _num(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


@dataclass(frozen=True)
class OPEReport:
    """Everything `recs replay --counterfactual` prints."""

    n_requests: int
    n_impressions: int
    reward: str
    level: float
    estimates: dict[str, Estimate]
    logging: Interval
    logging_boot: Interval | None
    diagnostics: dict
    warnings: list[str]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "n": self.n_requests,
            "n_impressions": self.n_impressions,
            "reward": self.reward,
            "level": self.level,
            "estimates": {k: v.to_dict() for k, v in self.estimates.items()},
            "logging_value": _num(self.logging.value),
            "logging": {**self.logging.to_dict(),
                        **({"bootstrap": self.logging_boot.to_dict()} if self.logging_boot else {})},
            "diagnostics": {k: (_num(v) if isinstance(v, float) else v) for k, v in self.diagnostics.items()},
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def decompositions(inp: OPEInputs, config: OPEConfig, q: RewardPredictions | None = None,
                   timings: dict[str, float] | None = None) -> tuple[dict[str, Decomposition],
                                                                    RewardPredictions | None]:
    """Per-request decompositions of every configured estimator (fits the reward model if one needs it; stage
    wall times into `timings` when given)."""
    ests = [config.build(n) for n in config.estimators]
    if any(e.name == "pi" for e in ests) and inp.slate_pscore is None:
        raise OPEInputError("estimator pi needs a slate_propensity column in the logs")
    if q is None and any(e.needs_model for e in ests):
        t0 = time.perf_counter()
        q = fit_reward_model(inp, config.reward_model)
        if timings is not None:
            timings["reward_model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    decs = {e.name: e.decompose(inp, q) for e in ests}
    if timings is not None:
        timings["estimators"] = time.perf_counter() - t0
    return decs, q


def run_ope(inp: OPEInputs, config: OPEConfig = OPEConfig(), q: RewardPredictions | None = None) -> OPEReport:
    """Estimate the target's value per request with every configured estimator (stage wall times in `timings`)."""
    timings: dict[str, float] = {}
    decs, _ = decompositions(inp, config, q, timings)
    R = inp.n_requests
    base = Decomposition(per_request_sum(inp.req_idx, inp.reward, R))
    v0, psi0 = base.value(), base.influence()
    units = inp.req_unit
    logging = normal_interval(v0, stderr_of(psi0, units), config.level)
    t0 = time.perf_counter()
    reps = bootstrap({**decs, "__logging__": base}, config.n_bootstrap, config.seed, units=units) \
        if config.n_bootstrap else {}
    if reps:
        timings["bootstrap"] = time.perf_counter() - t0
    logging_boot = percentile_interval(v0, reps["__logging__"], config.level) if reps else None
    estimates = {}
    for name, dec in decs.items():
        v, psi = dec.value(), dec.influence()
        lift, psi_l = lift_influence(v, psi, v0, psi0)
        boot = lift_boot = None
        if reps:
            boot = percentile_interval(v, reps[name], config.level)
            with np.errstate(divide="ignore", invalid="ignore"):
                lift_boot = percentile_interval(lift, reps[name] / reps["__logging__"], config.level)
        estimates[name] = Estimate(name, normal_interval(v, stderr_of(psi, units), config.level),
                                   normal_interval(lift, stderr_of(psi_l, units), config.level),
                                   v * R / inp.n_impressions, boot, lift_boot)
    t0 = time.perf_counter()
    diag, warns = diagnose(inp, config.thresholds)
    timings["diagnostics"] = time.perf_counter() - t0
    for name in ("snips", "sndr"):
        if name in estimates and not np.isfinite(estimates[name].normal.value):
            warns.append(f"{name} is undefined: every logged impression has target probability 0")
    return OPEReport(R, inp.n_impressions, inp.reward_name, config.level, estimates, logging, logging_boot,
                     diag, warns, timings)
