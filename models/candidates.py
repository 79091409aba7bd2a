"""Blending retrievers' candidates with per-source quotas and de-duplication, into retrieval features."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_QUOTAS = {"embedding": 120, "covisit": 80, "content": 60, "popularity": 60, "suggest": 60}
SEARCH_QUOTAS = {"suggest": 150, "embedding": 60, "covisit": 30, "content": 30, "popularity": 30}


@dataclass(frozen=True)
class BlendConfig:
    """How many candidates each retriever contributes per surface, and the total the ranker sees."""

    home: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_QUOTAS))
    search: dict[str, int] = field(default_factory=lambda: dict(SEARCH_QUOTAS))
    total: int = 300

    def __post_init__(self) -> None:
        for q in (self.home, self.search):
            if any(v < 0 for v in q.values()):
                raise ValueError("quotas must be >= 0")
        if self.total < 1:
            raise ValueError("total must be >= 1")

    def quota(self, kind: str, surface: str) -> int:
        return (self.search if surface == "search" else self.home).get(kind, 0)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "BlendConfig":
        return cls(**d) if d else cls()


def merge_candidates(lists, cfg: BlendConfig, surface: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Union of the sources' candidates, each source within its quota, round-robin by rank up to `cfg.total`.

    Returns ids (n,) and retrieval features: `n_sources`, `best_source_rank`, `covisit_score`, `content_score`
    (NaN where a source did not propose the item).
    """
    order: dict[str, int] = {}
    n_src: list[int] = []
    best: list[float] = []
    per_kind: dict[str, dict[int, float]] = {"covisit": {}, "content": {}}
    trimmed = []
    for c in lists:
        kind = c.source.split(":")[0]
        q = cfg.quota(kind, surface)
        trimmed.append((kind, c.item_ids[:q], c.scores[:q]))
    depth = max((len(ids) for _, ids, _ in trimmed), default=0)
    for r in range(depth):  # round-robin so that every source is represented before the cap bites
        for kind, ids, scores in trimmed:
            if r >= len(ids):
                continue
            iid = ids[r]
            j = order.get(iid)
            if j is None:
                if len(order) >= cfg.total:
                    continue
                j = order[iid] = len(order)
                n_src.append(0)
                best.append(np.inf)
            n_src[j] += 1
            best[j] = min(best[j], r)
            if kind in per_kind:
                per_kind[kind][j] = float(scores[r])
    n = len(order)
    feats = {"n_sources": np.asarray(n_src, dtype=float), "best_source_rank": np.asarray(best, dtype=float)}
    for kind, vals in per_kind.items():
        arr = np.full(n, np.nan)
        if vals:
            arr[list(vals)] = list(vals.values())
        feats[f"{kind}_score"] = arr
    return np.asarray(list(order), dtype=object), feats
