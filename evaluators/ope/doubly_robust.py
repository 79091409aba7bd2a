"""Doubly robust estimators: the direct method plus an importance-weighted correction of its residuals.

With q_hat the cross-fitted reward model, DM_r = sum_{p, a} pi(a at p | x_r) q_hat(x_r, a, p) and
e_i = y_i - q_hat_i on logged impressions:
  DR         V = (1/R) sum_r DM_r + (1/R) sum_i w_i e_i
  SNDR       V = (1/R) sum_r DM_r + (sum_i w_i e_i / sum_i w_i) * N / R
  Switch-DR  V = (1/R) sum_r DM_r + (1/R) sum_i 1[w_i <= tau] w_i e_i   (large weights: trust the model)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recs.evaluators.ope.base import Decomposition, per_request_sum
from recs.evaluators.ope.direct import RewardPredictions, dm_per_request
from recs.evaluators.ope.inputs import OPEInputs


@dataclass(frozen=True)
class DR:
    """Doubly robust: unbiased when either the propensities or the reward model are right."""

    name: str = "dr"
    needs_model = True

    def decompose(self, inp: OPEInputs, q: RewardPredictions) -> Decomposition:
        corr = per_request_sum(inp.req_idx, inp.weights * (inp.reward - q.logged), inp.n_requests)
        return Decomposition(dm_per_request(inp, q) + corr)


@dataclass(frozen=True)
class SNDR:
    """Self-normalised DR: the correction term normalised by the weights (SNIPS applied to residuals)."""

    name: str = "sndr"
    needs_model = True

    def decompose(self, inp: OPEInputs, q: RewardPredictions) -> Decomposition:
        w, r, R = inp.weights, inp.req_idx, inp.n_requests
        return Decomposition(dm_per_request(inp, q), per_request_sum(r, w * (inp.reward - q.logged), R),
                             per_request_sum(r, w, R), np.bincount(r, minlength=R).astype(np.float64))


@dataclass(frozen=True)
class SwitchDR:
    """Switch-DR: the DR correction only on impressions with weight <= tau (tau = inf gives DR)."""

    tau: float = 20.0
    name: str = "switch-dr"
    needs_model = True

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be positive, got {self.tau}")

    def decompose(self, inp: OPEInputs, q: RewardPredictions) -> Decomposition:
        w = inp.weights
        corr = np.where(w <= self.tau, w * (inp.reward - q.logged), 0.0)
        return Decomposition(dm_per_request(inp, q) + per_request_sum(inp.req_idx, corr, inp.n_requests))
