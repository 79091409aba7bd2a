"""Reference policies of the simulator: the oracle (knows the truth) and the uniform random policy."""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from recs.datasets.policy import Ranking, Request, SlotProbabilities, deterministic_slot_probabilities
from recs.sim import choice


class OraclePolicy:
    """Ranks eligible items by true attraction (optimal for the position-based model); needs the hidden context."""

    policy_id = "sim-oracle"

    def __init__(self, world) -> None:
        self.w = world

    def scores(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        """(rows, true attraction logits) of all eligible items for `request`."""
        w = self.w
        ctx = w.contexts.get(request.request_id)
        if ctx is None:
            raise KeyError(f"the oracle only ranks requests drawn by its world, not {request.request_id!r}")
        rows = np.flatnonzero(w.eligible(request.ts))
        c = w.catalog
        intent = (c.subcat[rows] == ctx.intent)[None, :] if ctx.intent >= 0 else None
        logit = choice.attraction_logit(ctx.vec[None, :], c.vec[rows][None], c.quality[rows][None],
                                        w.rel_price(rows)[None], np.array([ctx.price_sens]), intent, w.cfg)[0]
        return rows, logit

    def rank(self, request: Request, k: int) -> Ranking:
        rows, logit = self.scores(request)
        k = min(k, len(rows))
        top = np.argpartition(-logit, k - 1)[:k] if k else np.array([], dtype=np.int64)
        top = top[np.argsort(-logit[top], kind="stable")]
        return Ranking(tuple(self.w.item_ids[rows[top]]), tuple(float(x) for x in logit[top]), ("oracle",))

    def slot_probabilities(self, request: Request, k: int, include: Sequence[str] = ()) -> SlotProbabilities:
        return deterministic_slot_probabilities(self.rank(request, k), k)


class UniformPolicy:
    """A uniformly random ordered k-subset of the eligible items: P(i at p) = 1 / n_eligible."""

    policy_id = "sim-uniform"

    def __init__(self, world, seed: int = 0) -> None:
        self.w, self.seed = world, seed

    def rank(self, request: Request, k: int) -> Ranking:
        rows = np.flatnonzero(self.w.eligible(request.ts))
        rng = np.random.default_rng([self.seed, zlib.crc32(request.request_id.encode())])
        pick = rng.choice(rows, size=min(k, len(rows)), replace=False)
        return Ranking(tuple(self.w.item_ids[pick]), tuple(0.0 for _ in pick), ("uniform",))

    def slot_probabilities(self, request: Request, k: int, include: Sequence[str] = ()) -> SlotProbabilities:
        """Probabilities of the `include`d items only (every eligible item has 1/n at each position)."""
        elig = self.w.eligible(request.ts)
        n = int(elig.sum())
        ids = tuple(dict.fromkeys(include))
        ok = self.w.state.is_eligible(list(ids), request.ts) if ids else np.zeros(0, bool)
        ok &= elig[np.maximum(self.w.state.indices(ids), 0)] if ids else ok
        probs = np.tile(np.where(ok, 1.0 / max(n, 1), 0.0), (min(k, n), 1))
        return SlotProbabilities(ids, probs if len(ids) else np.zeros((min(k, n), 0)))
