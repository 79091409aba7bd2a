"""The serving runtime: the current `Served` bundle (serving/served.py), live writes, and the degrading request path.

One `Served` (bundle + pipeline + caches) is current at a time; `/admin/reload` builds a new one off the event loop
and swaps the reference in one assignment, so a request sees either the old model or the new one, never a mix,
and a bundle that fails verification never replaces the one serving.

Request path (`Runtime.recommend`): cache (requests without history) -> retrieval -> ranker (skipped when queue
pressure is above `rank_skip_ms`, when retrieval used up its share of the deadline, or when it raises: retrieval
order) -> re-rank + policy filters -> top up from popular-by-category lists. Load shedding (too many requests in
flight, a request that already waited too long, or more queued work than the deadline) and any exception in
retrieval or re-ranking serve the popular-by-category lists. Every path, cache hits included, passes the policy
filters against the live state at the request's time. Writes (inventory, events, reload adoption) are in
serving/writes.py; with `--workers N` they go through the shared journal (serving/journal.py) and `sync` applies
the other workers' writes before each request.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from recs.datasets.policy import Request
from recs.models.rerank import gets_new_item_slot, policy_filter, rerank
from recs.models.retrievers._text import normalize_query
from recs.serving.journal import Journal
from recs.serving.metrics import ServerMetrics
from recs.serving.served import SEARCH, ServeConfig, Served
from recs.serving.writes import LiveWrites


@dataclass
class Result:
    """One answer: items, scores, what produced it, and completions for the search bar."""

    item_ids: list[str]
    scores: list[float]
    stages: list[str]
    fallback: bool
    completions: list[tuple[str, float]] = field(default_factory=list)
    reason: str = ""                   # why a degraded path served it ("" when none)


class Runtime(LiveWrites):
    """The current `Served`, live inventory log, counters, and the request path (writes: serving/writes.py)."""

    def __init__(self, served: Served, cfg: ServeConfig, metrics: ServerMetrics | None = None) -> None:
        self.current, self.cfg = served, cfg
        self.metrics = metrics or ServerMetrics()
        self.in_flight = 0
        self.inventory_log: deque[tuple[str, str, float, datetime | None, dict | None]] = deque(
            maxlen=cfg.inventory_log)
        self.inventory_dropped = 0
        self.service_ewma_s = 0.0   # recent full-path service time (exponentially weighted, alpha 0.05)
        self._shed_cache: dict[tuple[str, int], tuple[Served, int, float, Result]] = {}
        # --workers N: the shared journal (serving/journal.py); None for a single process
        self.journal: Journal | None = None
        self.run_dir: Path | None = None
        self.worker_name = str(os.getpid())
        self.reload_skip_until = 0                            # reload records up to this offset are reflected
        self.reload_target: tuple[int, dict] | None = None    # latest reload record another worker journaled
        self.on_reload: Callable[[int, dict], None] | None = None

    # ---- request path ------------------------------------------------------------------------------------------
    def build_request(self, served: Served, surface: str, user_id: str | None, session_id: str | None,
                      query: str | None, request_id: str) -> Request:
        """The pipeline's request; the typed query is normalised once here (`normalize_query`: lower-cased, leading
        whitespace trimmed, runs collapsed, a trailing space kept), so every stage and the cache key see one string."""
        sess = served.state.session_history.get(session_id) if session_id else None
        recent = tuple(dict.fromkeys(i for i, _ in sess)) if sess else ()
        q = normalize_query(query) if query is not None else None
        return Request(request_id, datetime.now(timezone.utc), surface, user_id, session_id or "", q, recent)

    def cache_key(self, served: Served, req: Request, k: int) -> tuple | None:
        """Requests without any history share answers: anonymous or cold users, no session items."""
        if req.recent_items:
            return None
        if req.user_id is not None:
            p = served.pipeline
            if (req.user_id in p.histories or req.user_id in served.state.user_history
                    or req.user_id in p.snapshot.user_index):
                return None
        cold = "anon" if req.user_id is None else "cold"
        # the pipeline's own normalisation: "sho " (a whole word) and "sho" (a prefix) are different queries
        q = normalize_query(req.query) if req.surface == SEARCH else ""
        # requests with and without the new-item slot (a hash of the request id) must not share answers
        slot = gets_new_item_slot(req.request_id, served.pipeline.rerank_cfg.new_item_share)
        return (req.surface, cold, q, k, slot)

    def recommend(self, req: Request, k: int, waited_s: float = 0.0) -> tuple[Result, str]:
        """The degrading request path (the caller has already shed on overload: `FastGet.serve`). Returns the result
        and the version of the bundle that served it."""
        served = self.current
        m = self.metrics
        cfg = self.cfg
        key = self.cache_key(served, req, k)
        if key is not None:
            t0 = time.perf_counter()
            cache = served.caches[req.surface]
            hit = cache.get(key)
            if hit is not None:
                res = self._from_cache(served, req, k, hit)
                m.stage_seconds.observe(time.perf_counter() - t0, "cache")
                if res is not None:
                    m.cache.inc(req.surface, "hit")
                    return res, served.version
                cache.delete(key)      # an item of it is no longer eligible at this request's time
            m.cache.inc(req.surface, "miss")
        t_full = time.perf_counter()
        res = self._full_path(served, req, k, rank=not self.pressed(waited_s))
        self.service_ewma_s += 0.05 * (time.perf_counter() - t_full - self.service_ewma_s)
        if res.reason:
            m.fallbacks.inc(req.surface, res.reason)
        elif key is not None:
            served.caches[req.surface].put(key, res, res.item_ids)
        return res, served.version

    def pressed(self, waited_s: float) -> bool:
        """Queue pressure (this request's wait plus the others in flight at the recent full-path service time)
        above `rank_skip_ms`: answer in retrieval order, so the queue drains before anyone is shed."""
        cfg = self.cfg
        return cfg.rank_skip_ms > 0 and (
            (waited_s + (self.in_flight - 1) * self.service_ewma_s) * 1000 > cfg.rank_skip_ms)

    def overloaded(self, waited_s: float) -> bool:
        """The load-shedding rule: too many requests in flight, this one already queued longer than
        `shed_queue_ms`, or the requests ahead of it would take longer than the deadline at the recent full-path
        service time."""
        cfg = self.cfg
        return (self.in_flight > cfg.shed_in_flight or waited_s * 1000 > cfg.shed_queue_ms
                or (self.in_flight - 1) * self.service_ewma_s * 1000 > cfg.deadline_ms)

    def shed(self, surface: str, k: int) -> tuple[Result, str]:
        """The cheapest answer: the global popular list through the policy filters, cached per state version for
        at most a second and re-filtered on every use (eligibility also depends on the time)."""
        served = self.current
        key = (surface, k)
        ent = self._shed_cache.get(key)
        now = time.monotonic()
        ts = datetime.now(timezone.utc)
        if (ent is not None and ent[0] is served and ent[1] == served.state.version and now < ent[2]
                and policy_filter(ent[3].item_ids, served.state, ts).all()):
            res = ent[3]
        else:
            req = Request("shed", ts, surface, None, "", None, ())
            res = self._fallback(served, req, k, "shed")
            self._shed_cache[key] = (served, served.state.version, now + 1.0, res)
        self.metrics.fallbacks.inc(surface, "shed")
        return res, served.version

    def _from_cache(self, served: Served, req: Request, k: int, hit: Result) -> Result | None:
        """A cached answer, re-filtered at the request's time (None if a filter now removes one of its items)."""
        ok = policy_filter(hit.item_ids, served.state, req.ts)
        if not ok.all():
            return None
        return Result(hit.item_ids, hit.scores, ["cache", *hit.stages], hit.fallback, hit.completions)

    def _full_path(self, served: Served, req: Request, k: int, rank: bool = True) -> Result:
        p, m, cfg = served.pipeline, self.metrics, self.cfg
        budget_s = cfg.deadline_ms / 1000
        start = t0 = time.perf_counter()
        completions: list[tuple[str, float]] = []
        if req.surface == SEARCH and "suggest" in p.retrievers:
            try:
                completions = p.retrievers["suggest"].complete(req.query, k, p.history(req.user_id),
                                                                req.recent_items)
            except Exception:
                m.errors.inc("completions")
            t0 = self._stage("completions", t0)
        try:
            ids, feats = p.candidates(req)
        except Exception:
            m.errors.inc("retrieve")
            res = self._fallback(served, req, k, "retrieve_error")
            res.completions = completions
            return res
        t0 = self._stage("retrieve", t0)
        if len(ids) == 0:
            res = self._fallback(served, req, k, "no_candidates")
            res.completions = completions
            return res
        stages, reason = ["retrieve"], ""
        use_ranker = p.ranker is not None
        if use_ranker and not rank:
            use_ranker, reason = False, "load_ranker_skipped"
        elif use_ranker and t0 - start > budget_s * cfg.retrieve_share:
            use_ranker, reason = False, "deadline_ranker_skipped"
        scores = None
        if use_ranker:
            try:
                scores = p.score(req, ids, feats, True)
                stages.append("rank")
            except Exception:
                m.errors.inc("rank")
                reason = "ranker_error"
            t0 = self._stage("rank", t0)
        if scores is None:
            scores = -feats["best_source_rank"].astype(float)
            stages.append("retrieval_order")
        try:
            purchased = self._purchased(served, req)
            cfg = p.rerank_cfg.for_surface(req.surface)
            out_ids, out_sc = rerank(ids, scores, served.state, req.ts, k, cfg, purchased, p.rows_of(ids))
            if len(out_ids) < k:
                have = set(out_ids)
                extra = [i for i in p.fallback_candidates(req) if i not in have]
                more, _ = rerank(extra, -np.arange(len(extra), dtype=float), served.state, req.ts,
                                 k - len(out_ids), cfg, purchased)
                low = min(out_sc, default=0.0)
                out_ids += more
                out_sc += [low - 1.0 - j for j in range(len(more))]
                if more:
                    stages.append("topup")
        except Exception:
            m.errors.inc("rerank")
            res = self._fallback(served, req, k, "rerank_error")
            res.completions = completions
            return res
        try:
            out_ids, out_sc, slot = p.new_item_slot(req, ids, scores, out_ids, out_sc, cfg, purchased)
        except Exception:        # the filtered slate stands without its exploration slot: degraded, so not cached
            m.errors.inc("new_item_slot")
            slot, reason = False, reason or "new_item_slot_error"
        self._stage("rerank", t0)
        stages.append("rerank")
        if slot:
            stages.append("new_item_slot")
        return Result(out_ids, out_sc, stages, bool(reason), completions, reason)

    def _fallback(self, served: Served, req: Request, k: int, reason: str) -> Result:
        """Popular items of the request's categories, then globally popular, through the policy filters."""
        t0 = time.perf_counter()
        p = served.pipeline
        try:
            cands = p.fallback_candidates(req)
            ids, sc = rerank(cands, -np.arange(len(cands), dtype=float), served.state, req.ts, k,
                             p.rerank_cfg.for_surface(req.surface), self._purchased(served, req))
            stages = ["fallback"]
        except Exception:  # nothing safe left to serve: an empty, honest answer rather than an unfiltered one
            self.metrics.errors.inc("fallback")
            ids, sc, stages = [], [], ["fallback", "error"]
        self._stage("fallback", t0)
        return Result(ids, sc, stages, True, [], reason)

    def _purchased(self, served: Served, req: Request) -> frozenset[str]:
        if req.user_id is None:
            return frozenset()
        return served.pipeline.purchased(req.user_id)

    def _stage(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.metrics.stage_seconds.observe(now - t0, name)
        return now
