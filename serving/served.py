"""A verified bundle loaded for serving (`Served`), the request-path settings, and loading it.

`load_served` is the only way the server opens a bundle: `bundle.load_verified` (signature and every file's hash)
first, then `Pipeline.load`, then a few warm-up requests so lazily built indexes do not land on the first users.
`Pipeline.load` opens files by path, so it reads a private checked copy (an archive's extraction, or a folder
bundle of at most `bundle_copy_max_bytes` copied); a larger folder bundle is re-hashed (`recheck`) and then read
in place, and a writer of that folder can still change a file between the two (docs/BUNDLE.md, "Limits").
"""
from __future__ import annotations

import gc
import itertools
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recs.bundle.load import VerifiedBundle, load_verified
from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Request
from recs.models.pipeline import Pipeline
from recs.serving.cache import ItemTTLCache

SEARCH, HOME = "search", "home"


@dataclass
class ServeConfig:
    """Request-path settings. Times in milliseconds unless named otherwise."""

    deadline_ms: float = 50.0
    retrieve_share: float = 0.6        # ranker skipped when retrieval took more than this share of the deadline
    shed_in_flight: int = 64           # more requests in flight than this: serve the popular lists
    shed_queue_ms: float = 30.0        # a request that waited longer than this before starting: popular lists
    rank_skip_ms: float = 20.0         # queue pressure above this (ms): skip the ranker (0: never for load)
    home_ttl_s: float = 30.0
    search_ttl_s: float = 60.0
    cache_entries: int = 20_000
    max_k: int = 100
    max_query_chars: int = 100
    max_id_chars: int = 128
    inventory_log: int = 200_000       # live inventory updates kept to re-apply onto a reloaded bundle's state
    journal_poll_s: float = 0.05       # --workers N: an idle worker applies other workers' writes this often
    reload_wait_s: float = 120.0       # --workers N: /admin/reload waits this long for every worker to swap
    max_sessions: int = 100_000        # session histories kept; the least recently written is dropped beyond
    session_idle_s: float = 4 * 3600.0  # a session without an event for this long is forgotten (0: never)
    max_users: int = 100_000           # live user histories kept (same rule; training histories are not affected)
    bundle_copy_max_bytes: int = 1 << 30  # a folder bundle up to this size is loaded from a private checked copy

    def __post_init__(self) -> None:
        if not self.deadline_ms > 0:
            raise ValueError(f"deadline_ms must be > 0, got {self.deadline_ms}")
        if not 0 < self.retrieve_share <= 1:
            raise ValueError(f"retrieve_share must be in (0, 1], got {self.retrieve_share}")
        if self.shed_in_flight < 1 or self.shed_queue_ms <= 0 or self.rank_skip_ms < 0:
            raise ValueError("shed_in_flight must be >= 1, shed_queue_ms > 0 and rank_skip_ms >= 0")
        if self.home_ttl_s <= 0 or self.search_ttl_s <= 0 or self.cache_entries < 1:
            raise ValueError("cache TTLs must be > 0 and cache_entries >= 1")
        if not 1 <= self.max_k <= 1000 or self.max_query_chars < 1 or self.max_id_chars < 1:
            raise ValueError("max_k must be in [1, 1000]; max_query_chars and max_id_chars >= 1")
        if self.journal_poll_s <= 0 or self.reload_wait_s < 0:
            raise ValueError("journal_poll_s must be > 0 and reload_wait_s >= 0")
        if self.max_sessions < 1 or self.max_users < 1 or self.session_idle_s < 0:
            raise ValueError("max_sessions and max_users must be >= 1 and session_idle_s >= 0")
        if self.bundle_copy_max_bytes < 0:
            raise ValueError(f"bundle_copy_max_bytes must be >= 0, got {self.bundle_copy_max_bytes}")


@dataclass
class Served:
    """A loaded bundle: what one model version needs to answer requests."""

    bundle: VerifiedBundle
    pipeline: Pipeline
    version: str
    caches: dict[str, ItemTTLCache]
    loaded_at: float

    @property
    def state(self) -> OnlineState:
        return self.pipeline.state


def bundle_version(vb: VerifiedBundle) -> str:
    """`<model id or policy id>@<first 12 hex of the manifest's SHA-256>`: unique per signed bundle. The digest is
    of the manifest bytes that verified (never re-read from disk, where the file may have changed since)."""
    name = vb.model.get("model_id") or "model"
    return f"{name}@{vb.manifest_sha256[:12]}"


def load_served(bundle_path: str | Path, public_key: Any, cfg: ServeConfig) -> Served:
    """Verify, then load. Raises BundleVerificationError (refused) or another exception (unloadable model)."""
    vb = load_verified(bundle_path, public_key, copy_max_bytes=cfg.bundle_copy_max_bytes)
    try:
        if not vb.temporary:
            vb.recheck()  # a folder bundle read in place: re-hash just before loading (a window remains, see above)
        pipe = Pipeline.load(vb.path)
        pipe.state.session_history.configure(cfg.max_sessions, cfg.session_idle_s or None)
        pipe.state.user_history.configure(cfg.max_users)
        pipe.state.user_purchases.configure(cfg.max_users)
        _warm(pipe)
    except BaseException:
        vb.close()
        raise
    caches = {HOME: ItemTTLCache(cfg.home_ttl_s, cfg.cache_entries),
              SEARCH: ItemTTLCache(cfg.search_ttl_s, cfg.cache_entries)}
    return Served(vb, pipe, bundle_version(vb), caches, time.time())


def _warm(pipe: Pipeline) -> None:
    """Run a few requests through every stage so lazy indexes load before the first real request."""
    now = datetime.now(timezone.utc)
    users = [None] + list(itertools.islice(pipe.histories, 2))
    for j, u in enumerate(users):
        for surface, q in ((HOME, None), (SEARCH, "a"), (SEARCH, "sh")):
            pipe.rank(Request(f"warm{j}", now, surface, u, f"warm{j}", q), 10)


def limit_native_threads() -> None:
    """One thread per native pool (BLAS, OpenMP) in a serving process.

    A worker computes one request at a time on one core; a multi-threaded BLAS call there (the click model's
    matrix-vector product over the catalog) spins a second thread that only competes with the other worker or the
    kernel: measured 2.3 ms of CPU for a 100,000 x 16 product with two OpenBLAS threads, 0.3 ms with one."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def settle_heap() -> None:
    """Collect garbage, then freeze what is alive (the loaded bundle) out of the cyclic collector's sight.

    A 100K-item bundle leaves ~150K long-lived tracked objects; every full collection walked them all (85 ms
    measured), a latency spike for whichever requests were queued. Called once serving starts and after a
    reload (unfreezing first, so the replaced bundle's cycles are collected: one such pause per reload)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def startup_served(journaled: dict | None, bundle_path: str | Path, public_key: Any, cfg: ServeConfig,
                   load=load_served) -> tuple[Served, str | None]:
    """The bundle a starting worker serves, and why it is not the journaled one (None when it is).

    A worker (re)started while others run loads the bundle of the journal's last reload, the one its siblings
    serve, if that path still holds the same version: a bundle overwritten in place after the reload was never
    reloaded through the admin API, so the worker refuses it and serves `bundle_path`, its start-up bundle (or,
    when that is the same path, what the path holds now, with the reason: nothing else is left to serve)."""
    if journaled is None:
        return load(bundle_path, public_key, cfg), None
    want = journaled.get("version")
    try:
        served = load(journaled["bundle"], public_key, cfg)
    except Exception as e:
        return load(bundle_path, public_key, cfg), f"journaled bundle {journaled.get('bundle')} not loaded ({e})"
    if served.version == want:
        return served, None
    why = f"journaled bundle {journaled.get('bundle')} is now version {served.version}, not the reloaded {want}"
    if Path(journaled["bundle"]).resolve() == Path(bundle_path).resolve():
        return served, why + " (the start-up bundle is that path: no copy of the reloaded version is left)"
    served.bundle.close()
    return load(bundle_path, public_key, cfg), why
