"""The simulator's logging policy ("the current production ranker"), with exact propensities.

For a request the ranker builds a pool of the `logging_pool` best candidates by its own noisy score and its
greedy list L (pool in score order). A slate of k is then drawn from a three-way mixture:
  with prob e0 = 1 - e_pool - e_uni: the top-k of L;
  with prob e_pool: a uniformly random ordered k-subset of the pool;
  with prob e_uni:  a uniformly random ordered k-subset of all eligible items of the request (its population).
The marginal probability of item i at position p is therefore exactly
  P(i at p) = e0 * [L_p = i] + e_pool * [i in pool] / n_pool + e_uni * [i in population] / n_pop
(each term only for positions the mode can fill), and every item of the request's population has non-zero
probability at every slot. The population is every eligible item on the home page, and the eligible items of
the (at most four) subcategories matching the typed prefix on the search bar.
"""
from __future__ import annotations

import weakref
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

import numpy as np
from scipy.special import gammaln

from recs.datasets.online_state import to_us
from recs.datasets.policy import Ranking, Request, SlotProbabilities

SUBCATS_PER_REQUEST = 4
HOUR_US = 3_600 * 10**6


@dataclass
class Pools:
    """Batch result: pools (R, P) of item rows in score order (-1 padded), their sizes, populations' sizes."""

    pool: np.ndarray
    pool_n: np.ndarray
    subcats: np.ndarray      # (R, S) subcategories of each request (-1 padded)
    is_search: np.ndarray    # (R,)
    pop_n: np.ndarray        # (R,) size of the exploration population


class LoggingCore:
    """Vectorised core shared by the generator (batches) and the `LoggingPolicy` object (one request)."""

    def __init__(self, world) -> None:
        self.w = world
        cfg = world.cfg
        self.e_pool, self.e_uni = cfg.epsilon_pool, cfg.epsilon_uniform
        self.e0 = 1.0 - self.e_pool - self.e_uni
        self.pop_order = np.argsort(-world.subcat_popularity, kind="stable")
        self.lv32 = world.logger_item_vec.astype(np.float32)  # the ranker's item vectors (float32: half the traffic)
        rank_of = np.empty_like(self.pop_order)
        rank_of[self.pop_order] = np.arange(len(self.pop_order))
        # per typed prefix: the matching subcategories, most popular first, at most SUBCATS_PER_REQUEST
        self.prefix_top = {p: subs[np.argsort(rank_of[subs], kind="stable")][:SUBCATS_PER_REQUEST]
                           for p, subs in world.prefix_subcats.items()}

    def candidate_lists(self, elig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-T eligible items per subcategory by prior (n_sub, T), -1 padded; and eligible counts per subcat."""
        c, T = self.w.catalog, self.w.cfg.logging_candidates_per_subcat
        n_sub = len(c.subcat_names)
        rows = np.flatnonzero(elig)
        order = rows[np.lexsort((-c.prior[rows], c.subcat[rows]))]
        subs = c.subcat[order]
        starts = np.searchsorted(subs, np.arange(n_sub))
        rank = np.arange(len(order)) - starts[subs]
        keep = rank < T
        out = np.full((n_sub, T), -1, dtype=np.int64)
        out[subs[keep], rank[keep]] = order[keep]
        return out, np.bincount(subs, minlength=n_sub)

    def user_estimate(self, user_rows: np.ndarray, recent_rows: list[np.ndarray]) -> np.ndarray:
        """The ranker's belief about each request's user: its stored vector, or 0.6 x mean of recent items."""
        w = self.w
        est = np.zeros((len(user_rows), w.cfg.dim))
        known = user_rows >= 0
        est[known] = w.users.logger_vec[user_rows[known]]
        for r in np.flatnonzero(~known):
            if len(recent_rows[r]):
                est[r] = 0.6 * w.logger_item_vec[recent_rows[r]].mean(axis=0)
        return est

    def subcats_for(self, est: np.ndarray, prefixes: Sequence[str | None]) -> np.ndarray:
        """(R, S) subcategories: search -> those matching the prefix (most popular first); home -> best by belief."""
        S = SUBCATS_PER_REQUEST
        out = np.full((len(est), S), -1, dtype=np.int64)
        home = np.array([p is None for p in prefixes])
        if home.any():
            aff = est[home] @ self.w.logger_centroids.T
            cold = ~np.any(est[home] != 0, axis=1)
            top = np.argsort(-aff, axis=1, kind="stable")[:, :S]
            top[cold] = self.pop_order[:S]
            out[home] = top
        empty = np.array([], dtype=np.int64)
        for r in np.flatnonzero(~home):
            subs = self.prefix_top.get(prefixes[r], empty)
            out[r, : len(subs)] = subs
        return out

    def pools(self, est: np.ndarray, prefixes: Sequence[str | None], elig: np.ndarray,
              lists: tuple[np.ndarray, np.ndarray]) -> Pools:
        cand_lists, elig_per_sub = lists
        P = self.w.cfg.logging_pool
        subcats = self.subcats_for(est, prefixes)
        cand = np.where(subcats[:, :, None] >= 0, cand_lists[np.maximum(subcats, 0)], -1).reshape(len(est), -1)
        safe = np.maximum(cand, 0)
        score = (np.einsum("rd,rkd->rk", est.astype(np.float32), self.lv32[safe]).astype(np.float64)
                 + self.w.catalog.prior[safe])
        score = np.where(cand >= 0, score, -np.inf)
        P = min(P, cand.shape[1])
        top = np.argpartition(-score, P - 1, axis=1)[:, :P]
        top_scores = np.take_along_axis(score, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        pool = np.take_along_axis(cand, top, axis=1)
        pool = np.where(np.isfinite(np.take_along_axis(score, top, axis=1)), pool, -1)
        pool_n = (pool >= 0).sum(axis=1)
        is_search = np.array([p is not None for p in prefixes])
        pop_n = np.where(is_search, np.where(subcats >= 0, elig_per_sub[np.maximum(subcats, 0)], 0).sum(axis=1),
                         int(elig.sum()))
        return Pools(pool, pool_n, subcats, is_search, pop_n)

    def sample(self, pools: Pools, k: np.ndarray, elig: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw slates (R, max k) of item rows (-1 padded) from the mixture."""
        R, P = pools.pool.shape
        kmax = int(k.max())
        mode = rng.choice(3, size=R, p=[self.e0, self.e_pool, self.e_uni])
        slates = np.full((R, kmax), -1, dtype=np.int64)
        width = min(kmax, P)
        slates[:, :width] = pools.pool[:, :width]
        m1 = np.flatnonzero(mode == 1)
        if len(m1):
            keys = rng.random((len(m1), P))
            keys[pools.pool[m1] < 0] = np.inf
            perm = np.argsort(keys, axis=1)[:, :width]
            slates[m1, :width] = np.take_along_axis(pools.pool[m1], perm, axis=1)
        m2 = np.flatnonzero(mode == 2)
        if len(m2):
            slates[m2] = self._uniform_slates(pools, m2, k[m2], kmax, elig, rng)
        pos = np.arange(kmax)[None, :]
        return np.where(pos < k[:, None], slates, -1)

    def _population_index(self, elig: np.ndarray) -> tuple[np.ndarray, ...]:
        """Eligible rows, those rows grouped by subcategory, and group counts/starts (cached per `elig` array)."""
        cached = getattr(self, "_pop_cache", None)
        if cached is not None and cached[0]() is elig:
            return cached[1]
        c = self.w.catalog
        elig_rows = np.flatnonzero(elig)
        by_sub = elig_rows[np.argsort(c.subcat[elig_rows], kind="stable")]
        counts = np.bincount(c.subcat[elig_rows], minlength=len(c.subcat_names))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._pop_cache = (weakref.ref(elig), (elig_rows, by_sub, counts, starts))
        return self._pop_cache[1]

    def _uniform_slates(self, pools: Pools, rows: np.ndarray, k: np.ndarray, kmax: int, elig: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
        """Uniform ordered k-subsets of each request's population, by rejection of draws with repeats."""
        elig_rows, by_sub, counts, starts = self._population_index(elig)
        subs = pools.subcats[rows]
        seg_n = np.where(subs >= 0, counts[np.maximum(subs, 0)], 0)
        seg_cum = np.cumsum(seg_n, axis=1)
        n_pop = pools.pop_n[rows]
        out = np.full((len(rows), kmax), -1, dtype=np.int64)
        todo = np.arange(len(rows))
        while len(todo):
            m = np.minimum(k[todo], n_pop[todo])
            u = np.floor(rng.random((len(todo), kmax)) * np.maximum(n_pop[todo], 1)[:, None]).astype(np.int64)
            search = pools.is_search[rows[todo]]
            pick = elig_rows[np.minimum(u, len(elig_rows) - 1)] if len(elig_rows) else u
            if search.any():
                st = todo[search]
                seg = (u[search][:, :, None] >= seg_cum[st][:, None, :]).sum(axis=2)
                seg = np.minimum(seg, subs.shape[1] - 1)
                before = np.where(seg > 0, np.take_along_axis(seg_cum[st], np.maximum(seg - 1, 0), axis=1), 0)
                sub_of = np.take_along_axis(subs[st], seg, axis=1)
                pick[search] = by_sub[np.minimum(starts[np.maximum(sub_of, 0)] + u[search] - before,
                                                 len(by_sub) - 1)]
            pick = np.where(np.arange(kmax)[None, :] < m[:, None], pick, -1)
            srt = np.sort(pick, axis=1)
            dup = ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any(axis=1)
            out[todo[~dup]] = pick[~dup]
            todo = todo[dup]
        return out

    def propensity(self, pools: Pools, slates: np.ndarray, k: np.ndarray, elig: np.ndarray) -> np.ndarray:
        """Exact marginal P(item at position) for every cell of `slates` (R, K); NaN for padding."""
        R, K = slates.shape
        pos = np.arange(K)[None, :]
        P = pools.pool.shape[1]
        greedy = np.full((R, K), -2, dtype=np.int64)
        w = min(K, P)
        greedy[:, :w] = pools.pool[:, :w]
        in_pool = (slates[:, :, None] == pools.pool[:, None, :]).any(axis=2) & (slates >= 0)
        sub = self.w.catalog.subcat[np.maximum(slates, 0)]
        in_pop = elig[np.maximum(slates, 0)] & (slates >= 0)
        in_pop &= ~pools.is_search[:, None] | (sub[:, :, None] == pools.subcats[:, None, :]).any(axis=2)
        pool_fill = pos < np.minimum(k, pools.pool_n)[:, None]
        pop_fill = pos < np.minimum(k, pools.pop_n)[:, None]
        p = (self.e0 * ((greedy == slates) & (slates >= 0))
             + self.e_pool * in_pool * pool_fill / np.maximum(pools.pool_n, 1)[:, None]
             + self.e_uni * in_pop * pop_fill / np.maximum(pools.pop_n, 1)[:, None])
        return np.where(slates >= 0, p, np.nan)

    def slate_propensity(self, pools: Pools, slates: np.ndarray, k: np.ndarray, elig: np.ndarray) -> np.ndarray:
        """Exact probability of each whole slate (R,): the three modes' probabilities of that ordered slate."""
        R, K = slates.shape
        shown = slates >= 0
        m = shown.sum(axis=1)
        P = pools.pool.shape[1]
        greedy = np.full((R, K), -1, dtype=np.int64)
        greedy[:, : min(K, P)] = pools.pool[:, : min(K, P)]
        is_greedy = np.all(np.where(shown, slates == greedy, True), axis=1) & (m == np.minimum(k, pools.pool_n))
        in_pool = (slates[:, :, None] == pools.pool[:, None, :]).any(axis=2)
        all_pool = np.all(in_pool | ~shown, axis=1) & (m == np.minimum(k, pools.pool_n))
        all_pop = m == np.minimum(k, pools.pop_n)
        n_pool, n_pop = pools.pool_n.astype(float), pools.pop_n.astype(float)
        log_ff_pool = gammaln(n_pool - m + 1) - gammaln(n_pool + 1)
        log_ff_pop = gammaln(np.maximum(n_pop - m, 0) + 1) - gammaln(n_pop + 1)
        return (self.e0 * is_greedy + self.e_pool * all_pool * np.exp(np.where(all_pool, log_ff_pool, 0))
                + self.e_uni * all_pop * np.exp(log_ff_pop))


class LoggingPolicy:
    """The logging policy as a `Policy`: samples slates (seeded per request) with exact slot probabilities."""

    policy_id = "sim-logging-v1"

    def __init__(self, world, seed: int = 0) -> None:
        self.w, self.core, self.seed = world, LoggingCore(world), seed
        self._cache: tuple | None = None

    def _lists(self, ts: datetime):
        t = to_us(ts) // HOUR_US * HOUR_US
        key = (self.w.state.version, t)
        if self._cache is None or self._cache[0] != key:
            elig = self.w.eligible(t)
            self._cache = (key, elig, self.core.candidate_lists(elig))
        return self._cache[1], self._cache[2]

    def pools_for(self, request: Request) -> tuple[Pools, np.ndarray]:
        elig, lists = self._lists(request.ts)
        urow = np.array([self._user_row(request)])
        recent = [self.w.state.indices(request.recent_items[-10:])]  # as the generator: the last 10 clicks
        recent = [r[r >= 0] for r in recent]
        est = self.core.user_estimate(urow, recent)
        prefix = request.query if request.surface == "search" else None
        return self.core.pools(est, [prefix], elig, lists), elig

    def _user_row(self, request: Request) -> int:
        if request.user_id is None:
            return -1
        uid = request.user_id
        return int(uid[1:]) if uid.startswith("u") and uid[1:].isdigit() and int(uid[1:]) < self.w.users.n else -1

    def sample_slate(self, request: Request, k: int, rng: np.random.Generator) -> np.ndarray:
        pools, elig = self.pools_for(request)
        return self.core.sample(pools, np.array([k]), elig, rng)[0]

    def rank(self, request: Request, k: int) -> Ranking:
        rng = np.random.default_rng([self.seed, zlib.crc32(request.request_id.encode())])
        s = self.sample_slate(request, k, rng)
        s = s[s >= 0]
        return Ranking(tuple(self.w.item_ids[s]), tuple(float(k - i) for i in range(len(s))), ("logging",))

    def slot_probabilities(self, request: Request, k: int, include: Sequence[str] = ()) -> SlotProbabilities:
        """Exact P(item at position) for the pool items and any `include`d items (mass on others is omitted)."""
        pools, elig = self.pools_for(request)
        rows = pools.pool[0][pools.pool[0] >= 0]
        extra = self.w.state.indices(include)
        rows = np.concatenate([rows, extra[(extra >= 0) & ~np.isin(extra, rows)]])
        grid = np.tile(rows, (k, 1)).T  # (n, k): each item at every position
        n = len(rows)
        pools_rep = Pools(np.repeat(pools.pool, n, 0), np.repeat(pools.pool_n, n), np.repeat(pools.subcats, n, 0),
                          np.repeat(pools.is_search, n), np.repeat(pools.pop_n, n))
        probs = self.core.propensity(pools_rep, grid, np.full(n, k), elig)
        return SlotProbabilities(tuple(self.w.item_ids[rows]), np.nan_to_num(probs.T))
