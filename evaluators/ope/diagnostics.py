"""Diagnostics that protect the user: effective sample size, weight tails and support deficiency, with warnings.

Support deficiency is measured three ways: exactly, on what the logs can show (target mass on (request,
position) cells the logger never filled, on (item, position) pairs and items never logged), exactly against the
logger's full probabilities when they are given, and statistically: under full support E[w | request, position]
equals the target's mass m there, so `support_coverage` = sum w / sum m estimates the share of the target's
mass inside the logger's support (1 when supported; clearly below 1 when the target goes where the logger cannot).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recs.evaluators.ope.base import Decomposition, per_request_sum, stderr_of
from recs.evaluators.ope.inputs import OPEInputs


@dataclass(frozen=True)
class DiagnosticThresholds:
    """When to warn."""

    min_ess: float = 100.0            # effective sample size (impressions)
    min_ess_ratio: float = 0.01       # ESS / N
    max_unsupported_share: float = 0.01  # share of target mass the logger cannot see
    max_unseen_pair_share: float = 0.5   # share on (item, position) pairs absent from the logs (sampling gaps
                                         # are normal for stochastic targets on small logs; only a lot is alarming)
    max_top_weight_share: float = 0.05   # share of the total weight carried by the largest weight

    def __post_init__(self) -> None:
        if self.min_ess < 0 or not 0 <= self.min_ess_ratio <= 1:
            raise ValueError("min_ess must be >= 0 and min_ess_ratio in [0, 1]")
        if not 0 <= self.max_unsupported_share <= 1 or not 0 <= self.max_unseen_pair_share <= 1 \
                or not 0 < self.max_top_weight_share <= 1:
            raise ValueError("shares must be in [0, 1]")


def kish_ess(w: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 (0 when every weight is 0)."""
    s2 = float(np.dot(w, w))
    return 0.0 if s2 == 0 else float(w.sum()) ** 2 / s2


def diagnose(inp: OPEInputs, th: DiagnosticThresholds = DiagnosticThresholds()) -> tuple[dict, list[str]]:
    """Diagnostics dictionary and the list of warnings they raise."""
    w, N, R = inp.weights, inp.n_impressions, inp.n_requests
    w_req = per_request_sum(inp.req_idx, w, R)
    ess = kish_ess(w)
    total = inp.target_mass_total
    share = (lambda x: x / total if total > 0 else 0.0)
    cov = Decomposition(np.zeros(R), w_req, per_request_sum(inp.req_idx, inp.target_mass, R), np.ones(R))
    cov_val, cov_se = cov.value(), stderr_of(cov.influence(), inp.req_unit)
    req_mass = np.bincount(inp.t_req_idx, weights=inp.t_prob, minlength=R)
    d = {
        "n_impressions": N,
        "n_requests": R,
        "ess": ess,
        "ess_ratio": ess / N,
        "ess_requests": kish_ess(w_req),
        "max_weight": float(w.max()),
        "mean_weight": float(w.mean()),
        "p99_weight": float(np.quantile(w, 0.99)),
        "top_weight_share": float(w.max() / w.sum()) if w.sum() > 0 else None,
        "share_zero_weight": float(np.mean(w == 0)),
        "target_mass_per_request": total / R,
        "share_requests_without_target": float(np.mean(req_mass == 0)),
        "unlogged_position_mass_share": share(inp.unlogged_position_mass),
        "unseen_item_position_mass_share": share(inp.unseen_pair_mass),
        "unseen_item_mass_share": share(inp.unseen_item_mass),
        "zero_propensity_mass_share": None if inp.zero_propensity_mass is None else share(inp.zero_propensity_mass),
        "support_coverage": cov_val if np.isfinite(cov_val) else None,
        "support_coverage_stderr": cov_se if np.isfinite(cov_se) else None,
        "dropped_target_rows": inp.dropped_target_rows,
        "slate_propensity": inp.slate_pscore is not None,
    }
    warn: list[str] = []
    if w.sum() == 0:
        warn.append("no logged impression has positive target probability: the target disagrees completely with "
                    "the logger, IPS-type estimates are 0 by construction, SNIPS/SNDR are undefined and DM/DR "
                    "rest entirely on the reward model's extrapolation")
    elif ess < th.min_ess or ess / N < th.min_ess_ratio:
        warn.append(f"effective sample size is {ess:,.0f} ({100 * ess / N:.2g}% of {N:,} impressions): weighted "
                    "estimates rest on few impressions and their intervals may under-cover")
    top = d["top_weight_share"]
    if top is not None and top > th.max_top_weight_share:
        warn.append(f"one impression carries {100 * top:.1f}% of the total weight (max weight {d['max_weight']:.4g}):"
                    " IPS/DR are dominated by it; prefer SNIPS, clipped IPS or Switch-DR and read the intervals "
                    "with care")
    checks = [
        ("unlogged_position_mass_share", "on (request, position) cells the logger never filled",
         th.max_unsupported_share),
        ("unseen_item_mass_share", "on items the logger never showed", th.max_unsupported_share),
        ("unseen_item_position_mass_share", "on (item, position) pairs the logger never showed",
         th.max_unseen_pair_share),
        ("zero_propensity_mass_share", "where the logger's probability is 0", th.max_unsupported_share),
    ]
    for key, what, limit in checks:
        v = d[key]
        if v is not None and v > limit:
            warn.append(f"support deficiency: {100 * v:.1f}% of the target's probability is {what}; IPS-type "
                        "estimators cannot see that mass (biased towards 0) and DM/DR extrapolate the reward model")
    if cov_se is not None and np.isfinite(cov_val) and np.isfinite(cov_se) and w.sum() > 0:
        if cov_val + 2 * cov_se < 1 - th.max_unsupported_share:
            warn.append(f"support coverage is {cov_val:.3f} +/- {2 * cov_se:.3f} (1 under full support): the target "
                        "puts mass where the logger's probability is 0 or the propensities are wrong")
    cell = float(inp.target_mass.mean())
    d["target_mass_per_logged_slot"] = cell
    if cell < 1 - th.max_unsupported_share and w.sum() > 0:
        warn.append(f"the target's probabilities at logged slots sum to {cell:.3f} on average (< 1): DM, DR, "
                    "SNDR and Switch-DR count the missing mass as showing nothing; give complete target "
                    "probabilities (or sampled slates) if the target fills every slot")
    if d["share_requests_without_target"] > 0:
        warn.append(f"{100 * d['share_requests_without_target']:.1f}% of logged requests have no target "
                    "probabilities (absent rows mean 0: the target shows nothing there)")
    return d, warn
