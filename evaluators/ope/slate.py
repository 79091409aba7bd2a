"""Whole-slate estimators, which use only the slate's total reward Y_r = sum of its slots' rewards.

Pseudo-inverse (PI, Swaminathan et al. 2017), for rewards additive over (item, position) pairs:
  V = (1/R) sum_r (sum_{i in r} w_i - (l_r - 1)) Y_r,   l_r = number of logged slots of request r.
This closed form of q_pi' Gamma^+ 1_s is exact when the logger draws slots independently or uniformly without
replacement; for other loggers it is an approximation (see docs/OPE.md). It needs the per-slot marginals only;
the issue gates it on a logged whole-slate propensity, which says the logs come from a slate logger.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recs.evaluators.ope.base import Decomposition, per_request_sum
from recs.evaluators.ope.inputs import OPEInputs


@dataclass(frozen=True)
class PseudoInverse:
    """The slate pseudo-inverse estimator; unbiased for additive slate rewards without a per-slot click model."""

    name: str = "pi"
    needs_model = False

    def decompose(self, inp: OPEInputs, q=None) -> Decomposition:
        R, r = inp.n_requests, inp.req_idx
        slots = np.bincount(r, minlength=R).astype(np.float64)
        gamma = per_request_sum(r, inp.weights, R) - (slots - 1.0)
        y = per_request_sum(r, inp.reward, R)
        return Decomposition(gamma * y)
