"""Re-ranking: de-duplication, diversity caps, and the hard policy filters that are applied last and always.

The filters are a guarantee, not a preference: whatever the ranker, the cache or a fallback proposes, an item
that is out of stock, restricted, from a blocked seller or not yet live at request time never comes out.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

import numpy as np

from recs.datasets.online_state import OnlineState


SURFACES = ("home", "search")


@dataclass(frozen=True)
class RerankConfig:
    """`max_per_category`: at most this many items of one category in a slate (0: no cap), on the surfaces in
    `cap_surfaces` (the home page by default: a discovery feed; search suggestions follow the typed prefix);
    `price_weight`: how much the ranking leans towards pricier items (`Pipeline.score`)."""

    max_per_category: int = 4
    exclude_purchased: bool = True
    cap_surfaces: tuple[str, ...] = ("home",)
    # added to the ranker's score: price_weight x log(live price). 0 ranks for clicks; on the demo world 0.25 kept
    # 98.5-99% of the true CTR and raised expected revenue per request by about 23% (docs/PIPELINE.md, "Re-ranking")
    price_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.max_per_category < 0:
            raise ValueError("max_per_category must be >= 0")
        if not 0.0 <= self.price_weight <= 5.0:
            raise ValueError(f"price_weight must be in [0, 5], got {self.price_weight}")
        object.__setattr__(self, "cap_surfaces", tuple(self.cap_surfaces))     # a list when read from JSON
        unknown = set(self.cap_surfaces) - set(SURFACES)
        if unknown:
            raise ValueError(f"cap_surfaces: unknown surface(s) {sorted(unknown)}; known: {', '.join(SURFACES)}")

    def for_surface(self, surface: str) -> "RerankConfig":
        """This configuration as it applies to a request on `surface` (the cap off where it does not apply)."""
        if surface in self.cap_surfaces or not self.max_per_category:
            return self
        return _uncapped(self)


@lru_cache(maxsize=16)
def _uncapped(cfg: RerankConfig) -> RerankConfig:
    """`cfg` without its category cap, built once per configuration (not on every request)."""
    return replace(cfg, max_per_category=0)


def policy_filter(item_ids, state: OnlineState, ts: datetime | None,
                  purchased: frozenset[str] = frozenset(), rows: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the items that may be shown now (eligible in the live state and not already bought).

    `rows`: the items' rows in `state` (-1: unknown) when the caller has them (saves the id look-ups)."""
    ids = list(item_ids)
    if rows is None:
        ok = state.is_eligible(ids, ts)
    else:
        ok = rows >= 0                  # what `is_eligible` computes from the ids
        if ok.any():
            ok[ok] = state.eligible_mask(ts, rows[ok])
    if purchased:
        ok &= np.array([i not in purchased for i in ids], dtype=bool)
    return ok


def rerank(item_ids, scores, state: OnlineState, ts: datetime | None, k: int, cfg: RerankConfig = RerankConfig(),
           purchased: frozenset[str] = frozenset(), rows: np.ndarray | None = None) -> tuple[list[str], list[float]]:
    """Top-k after de-duplication, the per-category cap and the policy filters (filters win over everything).

    `rows`: the items' rows in `state` (-1: unknown), aligned with `item_ids`, when the caller has them."""
    ids = item_ids if isinstance(item_ids, np.ndarray) and item_ids.dtype == object \
        else np.asarray(list(item_ids), dtype=object)
    sc = scores if isinstance(scores, np.ndarray) and scores.dtype == float else np.asarray(list(scores), dtype=float)
    if len(ids) == 0 or k <= 0:
        return [], []
    if rows is not None and len(rows) != len(ids):
        raise ValueError(f"rows: {len(rows)} given for {len(ids)} items")
    ok = policy_filter(ids, state, ts, purchased if cfg.exclude_purchased else frozenset(), rows)
    order = np.argsort(-np.where(np.isnan(sc), -np.inf, sc), kind="stable")
    out_ids: list[str] = []
    out_sc: list[float] = []
    seen: set[str] = set()
    per_cat: dict[str, int] = {}
    deferred: list[int] = []
    for j in order:
        iid = ids[j]
        if not ok[j] or iid in seen:
            continue
        seen.add(iid)
        if rows is None:
            row = state.index.get(iid)
        else:
            row = int(rows[j]) if rows[j] >= 0 else None
        cat = state.category[row] if row is not None else None
        if cfg.max_per_category and per_cat.get(cat, 0) >= cfg.max_per_category:
            deferred.append(j)
            continue
        per_cat[cat] = per_cat.get(cat, 0) + 1
        out_ids.append(iid)
        out_sc.append(float(sc[j]))
        if len(out_ids) == k:
            return out_ids, out_sc
    for j in deferred:  # the cap yields when there is nothing else to show
        out_ids.append(ids[j])
        out_sc.append(float(sc[j]))
        if len(out_ids) == k:
            break
    return out_ids, out_sc
