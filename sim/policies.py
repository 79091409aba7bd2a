"""Reference policies of the simulator: the oracle (knows the truth), the informed ceiling and uniform random."""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from recs.datasets.policy import Ranking, Request, SlotProbabilities, deterministic_slot_probabilities
from recs.sim import choice
from recs.sim.catalog import intent_probs


def top_k_ranking(world, rows: np.ndarray, score: np.ndarray, k: int, stage: str) -> Ranking:
    """The `k` best of `rows` by `score`, best first (ties by row order)."""
    k = min(k, len(rows))
    top = np.argpartition(-score, k - 1)[:k] if k else np.array([], dtype=np.int64)
    top = top[np.argsort(-score[top], kind="stable")]
    return Ranking(tuple(world.item_ids[rows[top]]), tuple(float(x) for x in score[top]), (stage,))


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
        return top_k_ranking(self.w, *self.scores(request), k, "oracle")

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


class InformedPolicy:
    """The best a learner could hope for: knows every item's true parameters and registered users' true tastes,
    but not an anonymous visitor's, whose attraction it averages over the population prior (Monte Carlo), nor the
    search intent, of which it knows only the typed prefix (exact posterior over the subcategories the prefix
    matches, given the taste or the prior). A ceiling for learnt policies, below the oracle, which also knows the
    anonymous visitor and the intent."""

    policy_id = "sim-informed"

    def __init__(self, world, n_prior: int = 256, seed: int = 0) -> None:
        from recs.sim.catalog import sample_price_sens, sample_user_vectors

        self.w = world
        rng = np.random.default_rng([world.cfg.seed, 23, seed])
        self.prior_vec = sample_user_vectors(world.catalog, n_prior, world.cfg.dim, rng)
        self.prior_beta = sample_price_sens(rng, n_prior)

    def scores(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        """(rows, expected attraction) of all eligible items for `request`."""
        w, c = self.w, self.w.catalog
        ctx = w.contexts.get(request.request_id)
        if ctx is None:
            raise KeyError(f"the informed policy only ranks requests drawn by its world, not {request.request_id!r}")
        rows = np.flatnonzero(w.eligible(request.ts))
        vecs, betas = self.visitor(ctx)
        base = (choice.attraction_logit(vecs, np.broadcast_to(c.vec[rows], (len(vecs),) + c.vec[rows].shape),
                                        np.broadcast_to(c.quality[rows], (len(vecs), len(rows))),
                                        np.broadcast_to(w.rel_price(rows), (len(vecs), len(rows))), betas, None,
                                        w.cfg))
        if request.surface != "search" or not request.query:
            return rows, choice.sigmoid(base).mean(axis=0)
        names = c.subcat_names
        match = [s for s in range(len(names)) if names[s].startswith(request.query)]
        if not match:
            return rows, choice.sigmoid(base).mean(axis=0)
        weights = intent_probs(c, vecs)[:, match]  # (n_vecs, n_match): joint posterior, unnormalised
        weights = weights / weights.sum()
        b = w.cfg.search_intent_boost
        out = np.zeros(len(rows))
        for j, s in enumerate(match):
            boost = np.where(c.subcat[rows] == s, b, -b)
            out += (weights[:, j][:, None] * choice.sigmoid(base + boost[None, :])).sum(axis=0)
        return rows, out

    def visitor(self, ctx) -> tuple[np.ndarray, np.ndarray]:
        """(taste vectors, price sensitivities) the policy averages over: a registered user's true ones, else the
        population prior's sample."""
        if ctx.user_row >= 0:
            return ctx.vec[None, :], np.array([ctx.price_sens])
        return self.prior_vec, self.prior_beta

    def rank(self, request: Request, k: int) -> Ranking:
        return top_k_ranking(self.w, *self.scores(request), k, "informed")

    def slot_probabilities(self, request: Request, k: int, include: Sequence[str] = ()) -> SlotProbabilities:
        return deterministic_slot_probabilities(self.rank(request, k), k)
