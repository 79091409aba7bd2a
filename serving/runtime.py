"""The serving runtime: the current `Served` bundle (serving/served.py), live writes, and the degrading request path.

One `Served` (bundle + pipeline + caches) is current at a time; `/admin/reload` builds a new one off the event loop
and swaps the reference in one assignment, so a request sees either the old model or the new one, never a mix,
and a bundle that fails verification never replaces the one serving.

Request path (`Runtime.recommend`): cache (requests without history) -> retrieval -> ranker (skipped when queue
pressure is above `rank_skip_ms`, when retrieval used up its share of the deadline, or when it raises: retrieval
order) -> re-rank + policy filters -> top up from popular-by-category lists. Load shedding (too many requests in
flight, a request that already waited too long, or more queued work than the deadline) and any exception in
retrieval or re-ranking serve the popular-by-category lists. Every path, cache hits included, passes the policy
filters against the live state at the request's time. With `--workers N`, writes go through the shared journal
(serving/journal.py) and `sync` applies the other workers' writes before each request.
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
from recs.features.online import attrs_from_state
from recs.models.rerank import gets_new_item_slot, policy_filter, rerank
from recs.models.retrievers._text import normalize_query
from recs.serving.journal import Journal, decode_inventory, event_record, inventory_record, write_status
from recs.serving.metrics import ServerMetrics
from recs.serving.served import SEARCH, ServeConfig, Served

@dataclass
class Result:
    """One answer: items, scores, what produced it, and completions for the search bar."""

    item_ids: list[str]
    scores: list[float]
    stages: list[str]
    fallback: bool
    completions: list[tuple[str, float]] = field(default_factory=list)
    reason: str = ""                   # why a degraded path served it ("" when none)


class Runtime:
    """The current `Served`, live inventory log, counters, and the request path."""

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

    def attach_journal(self, journal: Journal, run_dir: str | Path, reload_skip_until: int = 0,
                       worker_name: str | None = None) -> None:
        """Share writes with the other worker processes through `journal`; catch up on what it already holds.

        The app publishes the worker's status once it serves (lifespan start)."""
        self.journal, self.run_dir = journal, Path(run_dir)
        self.reload_skip_until = reload_skip_until
        if worker_name:
            self.worker_name = worker_name
        self.sync()

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
        hist = served.state.user_history.get(req.user_id, ())
        return frozenset(i for i, kind in hist if kind == "purchase")

    def _stage(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.metrics.stage_seconds.observe(now - t0, name)
        return now

    # ---- writes ------------------------------------------------------------------------------------------------
    def apply_inventory(self, kind: str, key: str, value: float, ts: datetime | None, attrs: dict | None) -> int:
        """Apply one update to the live state (raises KeyError / ValueError on bad input); returns the new version.

        With a journal: under its lock, catch up with the other workers, apply (a bad update raises before anything
        is written), then append; the caller answers only after the record is in the shared file."""
        j = self.journal
        if j is None:
            return self._apply_inventory(kind, key, value, ts, attrs)
        with j.locked():
            self.sync()
            version = self._apply_inventory(kind, key, value, ts, attrs)
            j.append(inventory_record(kind, key, value, ts, attrs))
        return version

    def record_event(self, user_id: str | None, session_id: str, item_id: str, kind: str) -> None:
        """Record a session event (journaled like inventory updates when workers share one)."""
        j = self.journal
        if j is None:
            self._record_event(user_id, session_id, item_id, kind)
            return
        with j.locked():
            self.sync()
            self._record_event(user_id, session_id, item_id, kind)
            j.append(event_record(user_id, session_id, item_id, kind))

    def _apply_inventory(self, kind: str, key: str, value: float, ts: datetime | None, attrs: dict | None) -> int:
        served = self.current
        appended = kind == "new_item" and key not in served.state.index
        served.state.apply_inventory(kind, key, value, ts, attrs)
        if appended:
            served.pipeline.attrs = attrs_from_state(served.state)  # the state replaced its arrays
            served.pipeline.index_new_items([key])  # the content retriever can suggest it at once (no refit)
        for cache in served.caches.values():
            if kind == "blocked_seller" or appended:
                cache.clear()                 # may change any answer
            else:
                cache.invalidate_items((key,))
        self._log_inventory(kind, key, value, ts, attrs)
        self.metrics.inventory.inc(kind)
        return served.state.version

    def _log_inventory(self, kind: str, key: str, value: float, ts: datetime | None, attrs: dict | None) -> None:
        """Keep an update for `adopt` to replay onto the next bundle (the oldest is dropped, and counted, when full)."""
        if len(self.inventory_log) == self.inventory_log.maxlen:
            self.inventory_dropped += 1
        self.inventory_log.append((kind, key, value, ts, attrs))

    def _record_event(self, user_id: str | None, session_id: str, item_id: str, kind: str) -> None:
        served = self.current
        if item_id not in served.state.index:
            raise KeyError(f"item_id: unknown item {item_id!r}")
        served.state.record_event(user_id, session_id, item_id, kind)
        self.metrics.events.inc(kind)

    # ---- other workers' writes ---------------------------------------------------------------------------------
    def sync(self) -> None:
        """Apply the writes other workers appended to the journal since the last call (one fstat when none)."""
        j = self.journal
        if j is None or not j.pending():
            return
        for end, rec in j.read_new():
            op = rec.get("op")
            try:
                if op == "inv":
                    self._sync_inventory(*decode_inventory(rec))
                elif op == "ev":
                    self._record_event(rec["user"], rec["session"], rec["item"], rec["kind"])
                elif op == "reload":
                    if end <= self.reload_skip_until:
                        continue
                    self.reload_target = (end, rec)
                    if self.on_reload is not None:
                        self.on_reload(end, rec)
                else:
                    raise ValueError(f"unknown journal op {op!r}")
                self.metrics.journal.inc(str(op))
            except Exception:   # e.g. an item this bundle's catalog does not have: count it, apply the rest
                self.metrics.errors.inc("journal")

    def _sync_inventory(self, kind: str, key: str, value: float, ts: datetime | None, attrs: dict | None) -> None:
        """Apply another worker's update. One this bundle cannot take (e.g. an item only the bundle this worker is
        still loading has) is still logged, so `adopt` replays it after the swap; the error is counted (re-raised)."""
        try:
            self._apply_inventory(kind, key, value, ts, attrs)
        except (KeyError, ValueError):
            self._log_inventory(kind, key, value, ts, attrs)
            raise

    def publish_reload(self, new: Served, bundle: str) -> None:
        """Adopt `new` (loaded by this worker) and, with a journal, tell the other workers to load it too."""
        j = self.journal
        if j is None:
            self.adopt(new)
            return
        with j.locked():
            self.sync()
            self.adopt(new)
            self.reload_skip_until = j.append({"op": "reload", "bundle": bundle, "version": new.version})
            self.reload_target = None
        self.publish_status()

    def adopt_followed(self, end: int, new: Served) -> bool:
        """Adopt a bundle another worker journaled at offset `end`, unless a later reload superseded it."""
        self.sync()
        if self.reload_target is None or self.reload_target[0] != end:
            return False
        self.adopt(new)
        self.reload_skip_until, self.reload_target = end, None
        self.publish_status()
        return True

    def publish_status(self) -> None:
        """Write this worker's bundle version to the run directory (read by /admin/reload on any worker)."""
        if self.run_dir is not None and self.journal is not None:
            write_status(self.run_dir, self.worker_name, self.current.version, self.journal.offset)

    def adopt(self, new: Served) -> None:
        """Carry live state onto a freshly loaded bundle, then make it current (one reference assignment)."""
        old = self.current
        for kind, key, value, ts, attrs in self.inventory_log:
            try:
                new.state.apply_inventory(kind, key, value, ts, attrs)
            except (KeyError, ValueError):
                continue  # an item the new catalog does not have
        new.pipeline.attrs = attrs_from_state(new.state)
        new.pipeline.index_new_items([k for kind, k, *_ in self.inventory_log if kind == "new_item"])
        new.state.session_history = old.state.session_history
        new.state.user_history = old.state.user_history
        self.current = new
        old.bundle.close()
