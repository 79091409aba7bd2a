"""The direct method: a cross-fitted LightGBM reward model q_hat(x, item, position), averaged under the target.

  DM  V = (1/R) sum_r sum_{p, a} pi(a at p | x_r) q_hat(x_r, a, p)

The model sees only what the logs carry: position, surface, anonymous flag and the item (categorical, bucketed).
It is cross-fitted by request: predictions for the impressions and target rows of the requests in fold k come from
a model trained on the other folds, so DR's correction term is not fitted on its own residuals.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recs.evaluators.ope.base import Decomposition, per_request_sum
from recs.evaluators.ope.inputs import OPEInputs


@dataclass(frozen=True)
class RewardModelConfig:
    """LightGBM reward model settings."""

    n_folds: int = 2
    num_boost_round: int = 60
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    item_buckets: int = 50_000
    num_threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2 (cross-fitting), got {self.n_folds}")
        if not 1 <= self.num_threads <= 2:
            raise ValueError(f"num_threads must be 1 or 2 on this machine, got {self.num_threads}")
        for name in ("num_boost_round", "num_leaves", "min_data_in_leaf", "item_buckets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")


@dataclass(frozen=True)
class RewardPredictions:
    """Cross-fitted predictions: `logged` (N,) on impressions, `target` (M,) on the target's rows."""

    logged: np.ndarray
    target: np.ndarray


_MAX_POS = 1 << 20


def _keys(position, surface, anonymous, item_code, buckets: int) -> np.ndarray:
    """One int64 per distinct feature row (every feature is discrete), so the model trains and predicts on
    distinct rows only: exact for weighted L2 and cross-entropy, and fast on 10M impressions."""
    item = np.where(item_code >= 0, item_code % buckets + 1, 0)
    pos = np.minimum(position, _MAX_POS - 1)
    return ((pos * 3 + (surface.astype(np.int64) + 1)) * 2 + anonymous.astype(np.int64)) * (buckets + 1) + item


def _decode(keys: np.ndarray, buckets: int) -> np.ndarray:
    item, rest = keys % (buckets + 1), keys // (buckets + 1)
    anon, rest = rest % 2, rest // 2
    surface, pos = rest % 3 - 1, rest // 3
    item_f = np.where(item > 0, item - 1, np.nan)
    surf_f = np.where(surface >= 0, surface, np.nan)
    return np.column_stack([pos, surf_f, anon, item_f]).astype(np.float64)


def fit_reward_model(inp: OPEInputs, config: RewardModelConfig = RewardModelConfig()) -> RewardPredictions:
    """Cross-fit the reward model by request and predict on every impression and target row."""
    import lightgbm as lgb

    b = config.item_buckets
    s_log, a_log = inp.req_surface[inp.req_idx], inp.req_anonymous[inp.req_idx]
    s_tgt, a_tgt = inp.req_surface[inp.t_req_idx], inp.req_anonymous[inp.t_req_idx]
    y = inp.reward
    bounded = bool(np.all((y >= 0) & (y <= 1)))
    params = {
        "objective": "cross_entropy" if bounded else "regression",
        "learning_rate": config.learning_rate, "num_leaves": config.num_leaves,
        "min_data_in_leaf": 1, "num_threads": config.num_threads,
        "max_cat_threshold": 64, "cat_smooth": 10.0, "verbose": -1, "seed": config.seed, "deterministic": True,
    }
    rng = np.random.default_rng(config.seed)
    fold_of_req = rng.permutation(inp.n_requests) % config.n_folds
    fold_log, fold_tgt = fold_of_req[inp.req_idx], fold_of_req[inp.t_req_idx]
    q_log, q_tgt = np.zeros(len(y)), np.zeros(len(inp.t_prob))
    n_codes = max(inp.n_items, int(inp.item_code.max(initial=-1)) + 1, int(inp.t_item_code.max(initial=-1)) + 1)
    for k in range(config.n_folds):
        train = fold_log != k
        # items this fold's model never trained on are "missing" for it, in logged and target rows alike, so
        # q_hat_k is a fixed function of (features) independent of fold k's data and DR stays unbiased
        seen = np.zeros(n_codes + 1, dtype=bool)
        seen[inp.item_code[train]] = True
        seen[-1] = False

        def keys(pos, surf, anon, code):
            return _keys(pos, surf, anon, np.where(seen[code], code, -1), b)

        uk, inv = np.unique(keys(inp.position[train], s_log[train], a_log[train], inp.item_code[train]),
                            return_inverse=True)
        count = np.bincount(inv, minlength=len(uk)).astype(np.float64)
        mean_y = np.bincount(inv, weights=y[train], minlength=len(uk)) / np.maximum(count, 1)
        # min_data_in_leaf counts impressions, not distinct rows: enforce it as a floor on the leaf's hessian
        ybar = float(y[train].mean()) if train.any() else 0.5
        h = max(ybar * (1 - ybar), 1e-3) if bounded else 1.0
        params["min_sum_hessian_in_leaf"] = config.min_data_in_leaf * h
        if len(uk) == 0 or np.all(mean_y == mean_y[0]):
            const = float(mean_y[0]) if len(uk) else float(y.mean())
            q_log[fold_log == k], q_tgt[fold_tgt == k] = const, const
            continue
        ds = lgb.Dataset(_decode(uk, b), label=mean_y, weight=count, categorical_feature=[1, 3],
                         params={"min_data_in_bin": 1, "verbose": -1})
        booster = lgb.train(params, ds, num_boost_round=config.num_boost_round)
        for sel, cols, out in (
            (fold_log == k, (inp.position, s_log, a_log, inp.item_code), q_log),
            (fold_tgt == k, (inp.t_position, s_tgt, a_tgt, inp.t_item_code), q_tgt),
        ):
            if sel.any():
                pk, pinv = np.unique(keys(*(c[sel] for c in cols)), return_inverse=True)
                out[sel] = booster.predict(_decode(pk, b), num_threads=config.num_threads)[pinv]
    return RewardPredictions(q_log, q_tgt)


def dm_per_request(inp: OPEInputs, q: RewardPredictions) -> np.ndarray:
    """sum_{p, a} pi(a at p | x_r) q_hat(x_r, a, p) for every request (R,)."""
    return per_request_sum(inp.t_req_idx, inp.t_prob * q.target, inp.n_requests)


@dataclass(frozen=True)
class DM:
    """Direct method: low variance, biased as far as the reward model is wrong (it extrapolates off-support)."""

    name: str = "dm"
    needs_model = True

    def decompose(self, inp: OPEInputs, q: RewardPredictions) -> Decomposition:
        return Decomposition(dm_per_request(inp, q))
