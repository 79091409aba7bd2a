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
    num_threads: int = 1  # trains on distinct feature rows: one thread is enough and never spins
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
_DENSE = 1 << 24  # distinct-key tables up to this size are dense (bincount); beyond, sorted (np.unique)


def _keys(position, surface, anonymous, item_code, buckets: int) -> np.ndarray:
    """One int64 per distinct feature row (every feature is discrete), so the model trains and predicts on
    distinct rows only: exact for weighted L2 and cross-entropy, and fast on 10M impressions. Item -1: unknown."""
    item = np.where(item_code >= 0, item_code % buckets + 1, 0)
    pos = np.minimum(position, _MAX_POS - 1).astype(np.int64)
    return ((pos * 3 + (surface.astype(np.int64) + 1)) * 2 + anonymous.astype(np.int64)) * (buckets + 1) + item


def _decode(keys: np.ndarray, buckets: int) -> np.ndarray:
    item, rest = keys % (buckets + 1), keys // (buckets + 1)
    anon, rest = rest % 2, rest // 2
    surface, pos = rest % 3 - 1, rest // 3
    item_f = np.where(item > 0, item - 1, np.nan)
    surf_f = np.where(surface >= 0, surface, np.nan)
    return np.column_stack([pos, surf_f, anon, item_f]).astype(np.float64)


class _KeySet:
    """Distinct int64 keys seen chunk by chunk, then dense codes: a bitmap while keys are small, else sorted."""

    def __init__(self) -> None:
        self.bits = np.zeros(0, dtype=bool)
        self.sorted: np.ndarray | None = None
        self.slot: np.ndarray | None = None

    def add(self, keys: np.ndarray) -> None:
        top = int(keys.max(initial=-1)) + 1
        if self.sorted is None and top <= _DENSE:
            if top > len(self.bits):
                self.bits = np.concatenate([self.bits, np.zeros(top - len(self.bits), dtype=bool)])
            self.bits[keys] = True
            return
        if self.sorted is None:
            self.sorted = np.flatnonzero(self.bits)
        self.sorted = np.union1d(self.sorted, keys)

    def freeze(self) -> np.ndarray:
        """The distinct keys, sorted; afterwards `codes` maps keys to their index in it."""
        if self.sorted is None:
            self.sorted = np.flatnonzero(self.bits)
            self.slot = np.zeros(len(self.bits), dtype=np.int64)
            self.slot[self.sorted] = np.arange(len(self.sorted))
            self.bits = np.zeros(0, dtype=bool)
        return self.sorted

    def codes(self, keys: np.ndarray) -> np.ndarray:
        return self.slot[keys] if self.slot is not None else np.searchsorted(self.sorted, keys)


_CHUNK = 1 << 20


def fit_reward_model(inp: OPEInputs, config: RewardModelConfig = RewardModelConfig()) -> RewardPredictions:
    """Cross-fit the reward model by request and predict on every impression and target row.

    Works in chunks of rows on integer keys: (1) the distinct feature rows, (2) per-fold counts and reward sums
    of the logged ones, (3) one model per fold trained on the other folds' sums, predicting every distinct row,
    (4) each row's prediction by lookup. Memory is O(distinct rows + chunk) beyond the output arrays."""
    import lightgbm as lgb

    b, F = config.item_buckets, config.n_folds
    y = inp.reward
    bounded = bool(np.all((y >= 0) & (y <= 1)))
    params = {
        "objective": "cross_entropy" if bounded else "regression",
        "learning_rate": config.learning_rate, "num_leaves": config.num_leaves,
        "min_data_in_leaf": 1, "num_threads": config.num_threads,
        "max_cat_threshold": 64, "cat_smooth": 10.0, "verbose": -1, "seed": config.seed, "deterministic": True,
    }
    fold_of_req = (np.random.default_rng(config.seed).permutation(inp.n_requests) % F).astype(np.int64)
    N, M = inp.n_impressions, len(inp.t_prob)
    # items each fold's model trains on; the others are "missing" for it, in logged and target rows alike, so
    # q_hat_k is a fixed function of the features, independent of fold k's data, and DR stays unbiased
    n_codes = max(inp.n_items, int(inp.item_code.max(initial=-1)) + 1, int(inp.t_item_code.max(initial=-1)) + 1)
    item_f = np.zeros(F * n_codes)
    for lo in range(0, N, _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        item_f += np.bincount(fold_of_req[inp.req_idx[sl]] * n_codes + inp.item_code[sl], minlength=F * n_codes)
    item_f = item_f.reshape(F, n_codes)
    seen = np.zeros((F, n_codes + 1), dtype=bool)  # column -1: unknown items
    seen[:, :n_codes] = (item_f.sum(axis=0) - item_f) > 0

    def rows(logged: bool):
        """(slice, fold, key as trained, key as predicted) per chunk of logged or target rows."""
        req, pos, item = ((inp.req_idx, inp.position, inp.item_code) if logged
                          else (inp.t_req_idx, inp.t_position, inp.t_item_code))
        for lo in range(0, N if logged else M, _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            r, it = req[sl], item[sl]
            fold, s, a = fold_of_req[r], inp.req_surface[r], inp.req_anonymous[r]
            ku = _keys(pos[sl], s, a, it, b) if logged else None
            yield sl, fold, ku, _keys(pos[sl], s, a, np.where(seen[fold, it], it, -1), b)

    keyset = _KeySet()
    for logged in (True, False):
        for _, _, ku, km in rows(logged):
            keyset.add(km)
            if ku is not None:
                keyset.add(ku)
    uniq = keyset.freeze()
    U = len(uniq)
    count, total = np.zeros(F * U), np.zeros(F * U)
    for sl, fold, ku, _ in rows(True):
        c = fold * U + keyset.codes(ku)
        count += np.bincount(c, minlength=F * U)
        total += np.bincount(c, weights=y[sl], minlength=F * U)
    count, total = count.reshape(F, U), total.reshape(F, U)
    X = _decode(uniq, b)
    pred = np.zeros((F, U), dtype=np.float32)
    for k in range(F):
        cnt, tot = count.sum(axis=0) - count[k], total.sum(axis=0) - total[k]
        has = np.flatnonzero(cnt > 0)
        mean_y = tot[has] / cnt[has]
        ybar = float(tot.sum() / cnt.sum()) if cnt.sum() > 0 else float(y.mean())
        if len(has) == 0 or np.all(mean_y == mean_y[0]):
            pred[k] = mean_y[0] if len(has) else ybar
            continue
        # min_data_in_leaf counts impressions, not distinct rows: enforce it as a floor on the leaf's hessian
        h = max(ybar * (1 - ybar), 1e-3) if bounded else 1.0
        params["min_sum_hessian_in_leaf"] = config.min_data_in_leaf * h
        ds = lgb.Dataset(X[has], label=mean_y, weight=cnt[has], categorical_feature=[1, 3],
                         params={"min_data_in_bin": 1, "verbose": -1})
        booster = lgb.train(params, ds, num_boost_round=config.num_boost_round)
        pred[k] = booster.predict(X, num_threads=config.num_threads)
    q_log, q_tgt = np.empty(N, np.float32), np.empty(M, np.float32)
    for logged, out in ((True, q_log), (False, q_tgt)):
        for sl, fold, _, km in rows(logged):
            out[sl] = pred[fold, keyset.codes(km)]
    return RewardPredictions(q_log, q_tgt)


def dm_per_request(inp: OPEInputs, q: RewardPredictions) -> np.ndarray:
    """sum_{p, a} pi(a at p | x_r) q_hat(x_r, a, p) for every request (R,), chunk by chunk of target rows."""
    out = np.zeros(inp.n_requests)
    for lo in range(0, len(inp.t_prob), _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        out += per_request_sum(inp.t_req_idx[sl], inp.t_prob[sl] * q.target[sl], inp.n_requests)
    return out


@dataclass(frozen=True)
class DM:
    """Direct method: low variance, biased as far as the reward model is wrong (it extrapolates off-support)."""

    name: str = "dm"
    needs_model = True

    def decompose(self, inp: OPEInputs, q: RewardPredictions) -> Decomposition:
        return Decomposition(dm_per_request(inp, q))
