"""Candidate blending: per-source quotas, de-duplication and per-source score/rank features for the ranker.

Quota phase: sources take turns in rank order (round robin: every source's best item, then every source's second
best, ...); a source keeps taking its next items until it has contributed `quotas[source]` new items, skipping
items another source already contributed. Fill phase: if fewer than `total` items were taken (a source returned
fewer than its quota), the remaining places go round robin to the sources' not-yet-taken items in rank order, so
unused quota flows to the other sources. Every blended item keeps, for every source, its score and rank in that
source's full list (`score_<source>`, `rank_<source>`, NaN where the source did not return it), plus `n_sources`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import polars as pl

from recs.models.base import Candidates


@dataclass
class BlendConfig:
    """Per-source quotas and the total number of candidates handed to the ranker."""

    quotas: dict[str, int] = field(default_factory=lambda: {
        "covisit": 100, "embedding": 100, "content": 60, "popularity": 60, "suggest": 60})
    total: int = 300
    fill: bool = True             # give unused quota to the other sources

    def __post_init__(self) -> None:
        if self.total <= 0:
            raise ValueError(f"total: must be > 0, got {self.total}")
        for src, q in self.quotas.items():
            if not src:
                raise ValueError("quotas: a source name is empty")
            if int(q) != q or q < 0:
                raise ValueError(f"quotas[{src}]: must be a whole number >= 0, got {q}")


@dataclass
class BlendedCandidates:
    """The blended candidate set: ids in blend order, the source that contributed each, and per-source features."""

    item_ids: np.ndarray                     # (n,) object
    origin: np.ndarray                       # (n,) object: the source whose quota (or fill) took the item
    features: dict[str, np.ndarray]          # score_<source>, rank_<source> (float, NaN: absent), n_sources
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.item_ids)

    def counts(self) -> dict[str, int]:
        """Items contributed by each source."""
        src, n = np.unique(self.origin.astype(str), return_counts=True) if len(self) else ([], [])
        out = {s: 0 for s in self.sources}
        out.update({str(s): int(c) for s, c in zip(src, n)})
        return out

    def to_frame(self) -> pl.DataFrame:
        """One row per candidate: item_id, origin and the feature columns."""
        return pl.DataFrame({"item_id": self.item_ids.tolist(), "origin": self.origin.tolist(),
                             **{k: v for k, v in self.features.items()}})


def blend(candidate_lists: Sequence[Candidates], quotas: dict[str, int] | None = None, total: int | None = None,
          config: BlendConfig | None = None) -> BlendedCandidates:
    """Blend retrievers' candidate lists into at most `total` unique items (see the module docstring).

    `quotas` and `total` override `config`'s; a source without a quota gets 0 (it still adds features and
    takes part in the fill phase).
    """
    cfg = config or BlendConfig()
    quotas = dict(cfg.quotas if quotas is None else quotas)
    cfg = BlendConfig(quotas=quotas, total=cfg.total if total is None else total, fill=cfg.fill)
    names = [c.source for c in candidate_lists]
    if len(set(names)) != len(names) or any(not n for n in names):
        raise ValueError(f"blend: every candidate list needs a distinct, non-empty source, got {names}")
    lists = [np.asarray(c.item_ids, dtype=object).tolist() for c in candidate_lists]   # plain lists: fast loops
    taken: dict[str, int] = {}               # item -> blend position
    order: list[str] = []
    origin: list[str] = []
    ptr = [0] * len(lists)
    total = cfg.total

    def run(limits: list[float]) -> None:
        """Rounds over the sources still active (below their limit with items left); the same takes, in the same
        order, as visiting every source in every round."""
        got = [0] * len(lists)
        active = [s for s in range(len(lists)) if got[s] < limits[s] and ptr[s] < len(lists[s])]
        n_taken = len(order)
        while active and n_taken < total:
            still = []
            for s in active:
                ids, p = lists[s], ptr[s]
                n_ids = len(ids)
                while p < n_ids:
                    iid = ids[p]
                    p += 1
                    if iid not in taken:
                        taken[iid] = n_taken
                        order.append(iid)
                        origin.append(names[s])
                        n_taken += 1
                        got[s] += 1
                        break
                ptr[s] = p
                if got[s] < limits[s] and p < n_ids:
                    still.append(s)
                if n_taken >= total:
                    return
            active = still

    run([float(quotas.get(n, 0)) for n in names])
    if cfg.fill and len(order) < total:
        run([np.inf] * len(lists))
    n = len(order)
    feats: dict[str, np.ndarray] = {}
    present = np.zeros(n, dtype=np.int64)
    get = taken.get
    for s, c in enumerate(candidate_lists):
        sc = np.full(n, np.nan)
        rk = np.full(n, np.nan)
        ids = lists[s]
        pos = np.fromiter((get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        j = np.flatnonzero(pos >= 0)
        if len(set(ids)) < len(ids):         # a source listing an item twice: keep its best (first) entry
            _, first = np.unique(pos[j], return_index=True)
            j = j[first]
        sc[pos[j]] = np.asarray(c.scores, dtype=np.float64)[j]
        rk[pos[j]] = np.asarray(c.ranks, dtype=np.float64)[j]
        feats[f"score_{names[s]}"] = sc
        feats[f"rank_{names[s]}"] = rk
        present += ~np.isnan(rk)
    feats["n_sources"] = present
    return BlendedCandidates(np.array(order, dtype=object), np.array(origin, dtype=object), feats, tuple(names))
