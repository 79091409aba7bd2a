"""Re-ranking: de-duplication, diversity caps, and the hard policy filters that are applied last and always.

The filters are a guarantee, not a preference: whatever the ranker, the cache or a fallback proposes, an item
that is out of stock, restricted, from a blocked seller or not yet live at request time never comes out.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

import numpy as np

from recs.datasets.online_state import OnlineState, to_us


SURFACES = ("home", "search")


@dataclass(frozen=True)
class RerankConfig:
    """`max_per_category`: at most this many items of one category in a slate (0: no cap), on the surfaces in
    `cap_surfaces` (the home page by default: a discovery feed; search suggestions follow the typed prefix);
    `price_weight`: how much the ranking leans towards pricier items (`Pipeline.score`); `new_item_share`: the share
    of requests whose last slot goes to the best-scored new candidate (`with_new_item_slot`)."""

    max_per_category: int = 4
    exclude_purchased: bool = True
    cap_surfaces: tuple[str, ...] = ("home",)
    # added to the ranker's score: price_weight x log(live price). 0 ranks for clicks; on the demo world 0.25 kept
    # 98.5-99% of the true CTR and raised expected revenue per request by about 23% (docs/PIPELINE.md, "Re-ranking")
    price_weight: float = 0.0
    # new items (created within `new_item_max_age_hours` of the request) in the last slot of this share of requests,
    # chosen by a hash of the request id (the policy stays deterministic); 0: off. Without it the demo's pipeline
    # gave new items 0.1% of its slots (the logging policy 2.5%); with 1.0, 1.5-1.6% for 0.04-0.12% of true CTR and
    # 1.5-1.6% of expected revenue on the development requests (docs/PIPELINE.md, "Re-ranking")
    new_item_share: float = 1.0
    new_item_max_age_hours: float = 48.0
    # "already purchased" applies where that makes sense: not in a category whose purchases, in the training logs,
    # were repeats of an item the buyer had bought before more often than this (consumables); a category with fewer
    # than `repurchase_min_purchases` purchases counts as one where it does (`Pipeline.purchased`)
    repurchase_share_max: float = 0.05
    repurchase_min_purchases: int = 50

    def __post_init__(self) -> None:
        if self.max_per_category < 0:
            raise ValueError("max_per_category must be >= 0")
        if not 0.0 <= self.price_weight <= 5.0:
            raise ValueError(f"price_weight must be in [0, 5], got {self.price_weight}")
        if not 0.0 <= self.new_item_share <= 1.0:
            raise ValueError(f"new_item_share must be in [0, 1], got {self.new_item_share}")
        if not 0.0 <= self.repurchase_share_max <= 1.0:
            raise ValueError(f"repurchase_share_max must be in [0, 1], got {self.repurchase_share_max}")
        if self.repurchase_min_purchases < 1:
            raise ValueError(f"repurchase_min_purchases must be >= 1, got {self.repurchase_min_purchases}")
        if not self.new_item_max_age_hours > 0:
            raise ValueError(f"new_item_max_age_hours must be > 0, got {self.new_item_max_age_hours}")
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


def gets_new_item_slot(request_id: str, share: float) -> bool:
    """Whether a request is among the `share` of requests with a new-item slot (a stable hash of its id)."""
    return share > 0 and zlib.crc32(request_id.encode()) % 10_000 < round(share * 10_000)


def with_new_item_slot(out_ids: list[str], out_sc: list[float], item_ids, scores, state: OnlineState, ts: datetime,
                       cfg: RerankConfig, purchased: frozenset[str] = frozenset(), rows: np.ndarray | None = None
                       ) -> tuple[list[str], list[float]]:
    """The slate `out_ids` with its last slot given to the best-scored new candidate, if it shows no new item.

    New: created within `cfg.new_item_max_age_hours` before `ts` (a naive `ts` is UTC, as for the filters). The
    candidate must pass the policy filters and not be in the slate already; the category cap does not bind it (one
    exploration slot: held to the cap, the demo world's slot went to less liked categories and cost more clicks for
    half the exposure, docs/PIPELINE.md). Slates of fewer than 2 items are left alone (the slot would replace the
    only answer), and so is the slate when nothing qualifies. The slot's score is at most the one before it."""
    ids = np.asarray(list(item_ids), dtype=object)
    sc = np.asarray(list(scores), dtype=float)
    if len(out_ids) < 2 or len(ids) == 0:
        return out_ids, out_sc
    rows = state.indices(list(ids)) if rows is None else rows
    young_from = to_us(ts) - int(cfg.new_item_max_age_hours * 3_600_000_000)
    shown = state.indices(list(out_ids))
    if np.any(state.created_us[shown[shown >= 0]] >= young_from):
        return out_ids, out_sc
    young = (rows >= 0) & (state.created_us[np.maximum(rows, 0)] >= young_from)
    in_slate = set(out_ids)
    for j in np.flatnonzero(young):
        young[j] = ids[j] not in in_slate
    if young.any():
        young[young] = policy_filter(ids[young], state, ts, purchased if cfg.exclude_purchased else frozenset(),
                                     rows[young])
    if not young.any():
        return out_ids, out_sc
    cand = np.flatnonzero(young)
    j = cand[np.argmax(np.where(np.isnan(sc[cand]), -np.inf, sc[cand]))]
    return out_ids[:-1] + [ids[j]], out_sc[:-1] + [float(min(sc[j], out_sc[-2]))]
