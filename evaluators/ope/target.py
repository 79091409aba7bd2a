"""Target probabilities from any `Policy` on logged requests (the seam for `--policy` and `--model`).

`target_probs_from_policy` asks a policy for its exact slot probabilities; `plackett_luce_target` turns a
scoring policy's ranking into a stochastic one (Plackett-Luce over its scores at a temperature, marginals by
Gumbel-top-k sampling; temperature 0 is the deterministic top-k).
"""
from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from recs.datasets.policy import Policy, Request

TARGET_SCHEMA = {"request_id": pl.Utf8, "position": pl.Int64, "item_id": pl.Utf8, "prob": pl.Float64}


def requests_from_impressions(logs: pl.DataFrame) -> tuple[list[Request], dict[str, int]]:
    """Rebuild one `Request` per logged request and its slate size (max position + 1).

    `recent_items` are the items clicked on earlier requests of the same session, oldest first (what the
    online state held when the request arrived, as far as the logs tell).
    """
    need = ["request_id", "ts", "surface", "user_id", "session_id", "position"]
    missing = [c for c in need if c not in logs.columns]
    if missing:
        raise ValueError(f"logs lack {', '.join(missing)} needed to rebuild requests")
    q = pl.col("query").first() if "query" in logs.columns else pl.lit(None, pl.Utf8)
    reqs = (logs.group_by("request_id")
            .agg(pl.col("ts").min(), pl.col("surface").first(), pl.col("user_id").first(),
                 pl.col("session_id").first(), q.alias("query"), (pl.col("position").max() + 1).alias("k"))
            .sort("session_id", "ts", "request_id"))
    clicks: dict[str, list[tuple]] = defaultdict(list)
    if "clicked" in logs.columns:
        for sid, ts, item in (logs.filter(pl.col("clicked")).sort("ts", "position")
                              .select("session_id", "ts", "item_id").iter_rows()):
            clicks[sid].append((ts, item))
    out, ks = [], {}
    for rid, ts, surface, uid, sid, query, k in reqs.iter_rows():
        recent = tuple(i for t, i in clicks.get(sid, ()) if t < ts)
        out.append(Request(rid, ts, surface, uid, sid, query, recent))
        ks[rid] = int(k)
    return out, ks


def _accepts_include(policy: Policy) -> bool:
    try:
        return "include" in inspect.signature(policy.slot_probabilities).parameters
    except (TypeError, ValueError):
        return False


def _frame(rids: list, pos: list, items: list, probs: list) -> pl.DataFrame:
    if not rids:
        return pl.DataFrame(schema=TARGET_SCHEMA)
    return pl.DataFrame({"request_id": np.concatenate(rids), "position": np.concatenate(pos),
                         "item_id": np.concatenate(items), "prob": np.concatenate(probs)}, schema=TARGET_SCHEMA)


def target_probs_from_policy(policy: Policy, requests: Sequence[Request], k: Mapping[str, int] | int,
                             include: Mapping[str, Sequence[str]] | None = None) -> pl.DataFrame:
    """`request_id, position, item_id, prob` rows (non-zero only) of `policy`'s slot probabilities.

    `k`: slate size per request id (or one for all). `include`: item ids per request whose probabilities the
    policy must report even if it would omit them (passed to policies whose `slot_probabilities` accepts it,
    e.g. the simulator's logger, which otherwise reports only its candidate pool).
    """
    use_include = include is not None and _accepts_include(policy)
    rids, pos, items, probs = [], [], [], []
    for req in requests:
        kk = k if isinstance(k, int) else k[req.request_id]
        if use_include:
            sp = policy.slot_probabilities(req, kk, include=tuple(include.get(req.request_id, ())))
        else:
            sp = policy.slot_probabilities(req, kk)
        p, j = np.nonzero(sp.probs)
        ids = np.asarray(sp.item_ids, dtype=object)
        rids.append(np.full(len(p), req.request_id, dtype=object))
        pos.append(p.astype(np.int64))
        items.append(ids[j])
        probs.append(sp.probs[p, j].astype(np.float64))
    return _frame(rids, pos, items, probs)


def plackett_luce_marginals(scores: np.ndarray, k: int, temperature: float, n_samples: int = 2000,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """Slot marginals (k, n) of Plackett-Luce sampling without replacement from softmax(scores / temperature).

    Position 0 is exact (the softmax); later positions are Monte-Carlo estimates from `n_samples` Gumbel-top-k
    draws (unbiased, so IPS/DM/DR stay unbiased as they are linear in the target probabilities). Temperature 0:
    the deterministic top-k (ties by order).
    """
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    k = min(k, n)
    out = np.zeros((k, n))
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        top = np.argsort(-s, kind="stable")[:k]
        out[np.arange(k), top] = 1.0
        return out
    rng = rng or np.random.default_rng(0)
    z = s / temperature
    g = z[None, :] + rng.gumbel(size=(n_samples, n))
    top = np.argsort(-g, axis=1)[:, :k]  # (S, k)
    for p in range(k):
        out[p] = np.bincount(top[:, p], minlength=n) / n_samples
    soft = np.exp(z - z.max())
    out[0] = soft / soft.sum()
    return out


def plackett_luce_target(policy: Policy, requests: Sequence[Request], k: Mapping[str, int] | int,
                         temperature: float, n_candidates: int = 50, n_samples: int = 2000,
                         seed: int = 0) -> pl.DataFrame:
    """Target probabilities of a scoring policy made stochastic: Plackett-Luce over its top `n_candidates`."""
    rng = np.random.default_rng(seed)
    rids, pos, items, probs = [], [], [], []
    for req in requests:
        kk = k if isinstance(k, int) else k[req.request_id]
        ranking = policy.rank(req, max(kk, n_candidates))
        if not ranking.item_ids:
            continue
        scores = np.asarray(ranking.scores if ranking.scores else -np.arange(len(ranking.item_ids)), float)
        marg = plackett_luce_marginals(scores, kk, temperature, n_samples, rng)
        p, j = np.nonzero(marg)
        rids.append(np.full(len(p), req.request_id, dtype=object))
        pos.append(p.astype(np.int64))
        items.append(np.asarray(ranking.item_ids, dtype=object)[j])
        probs.append(marg[p, j])
    return _frame(rids, pos, items, probs)


def sampled_target_from_policy(policy: Policy, requests: Sequence[Request], k: Mapping[str, int] | int,
                               n_samples: int = 1) -> pl.DataFrame:
    """Target rows from `n_samples` slates drawn with `policy.rank` (prob 1 / n_samples per shown cell).

    An unbiased stand-in for the target's full distribution in the direct method and the support diagnostics,
    for policies that report exact probabilities only for the items asked about.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    cells: dict[tuple[str, int, str], float] = defaultdict(float)
    for req in requests:
        kk = k if isinstance(k, int) else k[req.request_id]
        for _ in range(n_samples):
            for p, item in enumerate(policy.rank(req, kk).item_ids[:kk]):
                cells[(req.request_id, p, item)] += 1.0 / n_samples
    if not cells:
        return pl.DataFrame(schema=TARGET_SCHEMA)
    rid, pos, item = zip(*cells.keys())
    return pl.DataFrame({"request_id": rid, "position": pos, "item_id": item, "prob": list(cells.values())},
                        schema=TARGET_SCHEMA)
