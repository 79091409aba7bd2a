"""The serving runtime: a verified bundle loaded into a `Pipeline`, its caches, and the degrading request path.

One `Served` (bundle + pipeline + caches) is current at a time; `/admin/reload` builds a new one off the event loop
and swaps the reference in one assignment, so a request sees either the old model or the new one, never a mix,
and a bundle that fails verification never replaces the one serving.

Request path (`Runtime.recommend`): cache (requests without history) -> retrieval -> ranker (skipped when
retrieval used up its share of the deadline or the ranker raises: retrieval order) -> re-rank + policy filters
-> top up from popular-by-category lists. Load shedding (too many requests in flight, or a request that already
waited too long in the queue) and any exception in retrieval or re-ranking serve the popular-by-category lists.
Every path, cache hits included, passes the policy filters against the live state at the request's time.
"""
from __future__ import annotations

import hashlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from recs.bundle.load import VerifiedBundle, load_verified
from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Request
from recs.features.online import attrs_from_state
from recs.models.pipeline import Pipeline
from recs.models.rerank import policy_filter, rerank
from recs.serving.cache import VersionedTTLCache
from recs.serving.metrics import ServerMetrics

SEARCH, HOME = "search", "home"


@dataclass
class ServeConfig:
    """Request-path settings. Times in milliseconds unless named otherwise."""

    deadline_ms: float = 50.0
    retrieve_share: float = 0.6        # ranker skipped when retrieval took more than this share of the deadline
    shed_in_flight: int = 64           # more requests in flight than this: serve the popular lists
    shed_queue_ms: float = 30.0        # a request that waited longer than this before starting: popular lists
    home_ttl_s: float = 30.0
    search_ttl_s: float = 60.0
    cache_entries: int = 20_000
    max_k: int = 100
    max_query_chars: int = 100
    max_id_chars: int = 128
    inventory_log: int = 200_000       # live inventory updates kept to re-apply onto a reloaded bundle's state

    def __post_init__(self) -> None:
        if not self.deadline_ms > 0:
            raise ValueError(f"deadline_ms must be > 0, got {self.deadline_ms}")
        if not 0 < self.retrieve_share <= 1:
            raise ValueError(f"retrieve_share must be in (0, 1], got {self.retrieve_share}")
        if self.shed_in_flight < 1 or self.shed_queue_ms <= 0:
            raise ValueError("shed_in_flight must be >= 1 and shed_queue_ms > 0")
        if self.home_ttl_s <= 0 or self.search_ttl_s <= 0 or self.cache_entries < 1:
            raise ValueError("cache TTLs must be > 0 and cache_entries >= 1")
        if not 1 <= self.max_k <= 1000 or self.max_query_chars < 1 or self.max_id_chars < 1:
            raise ValueError("max_k must be in [1, 1000]; max_query_chars and max_id_chars >= 1")


@dataclass
class Result:
    """One answer: items, scores, what produced it, and completions for the search bar."""

    item_ids: list[str]
    scores: list[float]
    stages: list[str]
    fallback: bool
    completions: list[tuple[str, float]] = field(default_factory=list)
    reason: str = ""                   # why a degraded path served it ("" when none)


@dataclass
class Served:
    """A loaded bundle: what one model version needs to answer requests."""

    bundle: VerifiedBundle
    pipeline: Pipeline
    version: str
    caches: dict[str, VersionedTTLCache]
    loaded_at: float

    @property
    def state(self) -> OnlineState:
        return self.pipeline.state


def bundle_version(vb: VerifiedBundle) -> str:
    """`<model id or policy id>@<first 12 hex of the manifest's SHA-256>`: unique per signed bundle."""
    digest = hashlib.sha256((vb.path / "manifest.json").read_bytes()).hexdigest()[:12]
    name = vb.model.get("model_id") or vb.manifest.doc.get("model", {}).get("model_id") or "model"
    return f"{name}@{digest}"


def load_served(bundle_path: str | Path, public_key: Any, cfg: ServeConfig) -> Served:
    """Verify, then load. Raises BundleVerificationError (refused) or another exception (unloadable model)."""
    vb = load_verified(bundle_path, public_key)
    try:
        vb.recheck()  # a folder bundle: make sure nothing changed between verification and loading
        pipe = Pipeline.load(vb.path)
        _warm(pipe)
    except BaseException:
        vb.close()
        raise
    caches = {HOME: VersionedTTLCache(cfg.home_ttl_s, cfg.cache_entries),
              SEARCH: VersionedTTLCache(cfg.search_ttl_s, cfg.cache_entries)}
    return Served(vb, pipe, bundle_version(vb), caches, time.time())


def _warm(pipe: Pipeline) -> None:
    """Run a few requests through every stage so lazy indexes load before the first real request."""
    now = datetime.now(timezone.utc)
    users = [None] + list(itertools.islice(pipe.histories, 2))
    for j, u in enumerate(users):
        for surface, q in ((HOME, None), (SEARCH, "a"), (SEARCH, "sh")):
            pipe.rank(Request(f"warm{j}", now, surface, u, f"warm{j}", q), 10)


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

    # ---- request path ------------------------------------------------------------------------------------------
    def build_request(self, served: Served, surface: str, user_id: str | None, session_id: str | None,
                      query: str | None, request_id: str) -> Request:
        sess = served.state.session_history.get(session_id) if session_id else None
        recent = tuple(dict.fromkeys(i for i, _ in sess)) if sess else ()
        return Request(request_id, datetime.now(timezone.utc), surface, user_id, session_id or "", query, recent)

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
        q = (req.query or "").strip().lower() if req.surface == SEARCH else ""
        return (req.surface, cold, q, k)

    def recommend(self, req: Request, k: int, waited_s: float = 0.0) -> tuple[Result, str]:
        """The degrading request path. Returns the result and the version of the bundle that served it."""
        served = self.current
        m = self.metrics
        cfg = self.cfg
        if self.overloaded(waited_s):
            res = self._fallback(served, req, k, "shed")
            m.fallbacks.inc(req.surface, "shed")
            return res, served.version
        key = self.cache_key(served, req, k)
        if key is not None:
            t0 = time.perf_counter()
            hit = served.caches[req.surface].get(key, served.state.version)
            if hit is not None:
                res = self._from_cache(served, req, k, hit)
                m.stage_seconds.observe(time.perf_counter() - t0, "cache")
                if res is not None:
                    m.cache.inc(req.surface, "hit")
                    return res, served.version
            m.cache.inc(req.surface, "miss")
        t_full = time.perf_counter()
        res = self._full_path(served, req, k)
        self.service_ewma_s += 0.05 * (time.perf_counter() - t_full - self.service_ewma_s)
        if res.reason:
            m.fallbacks.inc(req.surface, res.reason)
        elif key is not None:
            served.caches[req.surface].put(key, served.state.version, res)
        return res, served.version

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

    def _full_path(self, served: Served, req: Request, k: int) -> Result:
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
        if use_ranker and t0 - start > budget_s * cfg.retrieve_share:
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
            out_ids, out_sc = rerank(ids, scores, served.state, req.ts, k, p.rerank_cfg, purchased)
            if len(out_ids) < k:
                have = set(out_ids)
                extra = [i for i in p.fallback_candidates(req) if i not in have]
                more, _ = rerank(extra, -np.arange(len(extra), dtype=float), served.state, req.ts,
                                 k - len(out_ids), p.rerank_cfg, purchased)
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
        self._stage("rerank", t0)
        stages.append("rerank")
        return Result(out_ids, out_sc, stages, bool(reason), completions, reason)

    def _fallback(self, served: Served, req: Request, k: int, reason: str) -> Result:
        """Popular items of the request's categories, then globally popular, through the policy filters."""
        t0 = time.perf_counter()
        p = served.pipeline
        try:
            cands = p.fallback_candidates(req)
            ids, sc = rerank(cands, -np.arange(len(cands), dtype=float), served.state, req.ts, k, p.rerank_cfg,
                             self._purchased(served, req))
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
        """Apply one update to the live state (raises KeyError / ValueError on bad input); returns the new version."""
        served = self.current
        served.state.apply_inventory(kind, key, value, ts, attrs)
        if kind == "new_item":
            served.pipeline.attrs = attrs_from_state(served.state)  # the state replaced its arrays
        if len(self.inventory_log) == self.inventory_log.maxlen:
            self.inventory_dropped += 1
        self.inventory_log.append((kind, key, value, ts, attrs))
        self.metrics.inventory.inc(kind)
        return served.state.version

    def record_event(self, user_id: str | None, session_id: str, item_id: str, kind: str) -> None:
        served = self.current
        if item_id not in served.state.index:
            raise KeyError(f"item_id: unknown item {item_id!r}")
        served.state.record_event(user_id, session_id, item_id, kind)
        self.metrics.events.inc(kind)

    def adopt(self, new: Served) -> None:
        """Carry live state onto a freshly loaded bundle, then make it current (one reference assignment)."""
        old = self.current
        for kind, key, value, ts, attrs in self.inventory_log:
            try:
                new.state.apply_inventory(kind, key, value, ts, attrs)
            except (KeyError, ValueError):
                continue  # an item the new catalog does not have
        new.pipeline.attrs = attrs_from_state(new.state)
        new.state.session_history = old.state.session_history
        new.state.user_history = old.state.user_history
        self.current = new
        old.bundle.close()
