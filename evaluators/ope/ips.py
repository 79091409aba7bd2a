"""Importance-weighting estimators, position-wise (each slot an independent bandit round).

With w_i = pi(a_i at p_i | x) / pi0(a_i at p_i | x) over logged impressions i of R requests:
  IPS         V = (1/R) sum_i w_i y_i
  clipped IPS V = (1/R) sum_i min(w_i, W) y_i
  SNIPS       V = (sum_i w_i y_i / sum_i w_i) * N / R: the textbook self-normalisation (E[w_i] = 1 for a target
              that fills every logged slot within the logger's support), per request.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recs.evaluators.ope.base import Decomposition, per_request_sum
from recs.evaluators.ope.inputs import OPEInputs


@dataclass(frozen=True)
class IPS:
    """Inverse propensity scoring: unbiased under full support; variance grows with the weights."""

    name: str = "ips"
    needs_model = False

    def decompose(self, inp: OPEInputs, q=None) -> Decomposition:
        return Decomposition(per_request_sum(inp.req_idx, inp.weights * inp.reward, inp.n_requests))


@dataclass(frozen=True)
class ClippedIPS:
    """IPS with weights capped at `clip`: lower variance, biased (downwards for non-negative rewards)."""

    clip: float = 20.0
    name: str = "clipped-ips"
    needs_model = False

    def __post_init__(self) -> None:
        if not (self.clip > 0 and np.isfinite(self.clip)):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")

    def decompose(self, inp: OPEInputs, q=None) -> Decomposition:
        w = np.minimum(inp.weights, self.clip)
        return Decomposition(per_request_sum(inp.req_idx, w * inp.reward, inp.n_requests))


@dataclass(frozen=True)
class SNIPS:
    """Self-normalised IPS: ratio of weighted rewards to weights, times logged slots per request."""

    name: str = "snips"
    needs_model = False

    def decompose(self, inp: OPEInputs, q=None) -> Decomposition:
        w, r, R = inp.weights, inp.req_idx, inp.n_requests
        return Decomposition(np.zeros(R), per_request_sum(r, w * inp.reward, R), per_request_sum(r, w, R),
                             np.bincount(r, minlength=R).astype(np.float64))
