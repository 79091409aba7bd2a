"""Blending retrievers' candidates with per-source quotas and de-duplication, into retrieval features."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from recs.models.base import Candidates
from recs.models.blend import BlendConfig as Blend
from recs.models.blend import blend

DEFAULT_QUOTAS = {"embedding": 120, "clickmodel": 60, "covisit": 80, "content": 60, "popularity": 60,
                  "suggest": 60}
SEARCH_QUOTAS = {"suggest": 150, "embedding": 60, "clickmodel": 30, "covisit": 30, "content": 30,
                 "popularity": 30}


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

    The blending itself is `models.blend.blend` (no fill phase here: a source's unused quota is not passed on).
    Returns ids (n,) and retrieval features: `n_sources`, `best_source_rank`, `covisit_score`, `content_score`
    (NaN where a source did not propose the item).
    """
    trimmed, quotas = [], {}
    for c in lists:
        q = cfg.quota(c.source.split(":")[0], surface)
        if q > 0 and len(c):
            trimmed.append(Candidates(c.item_ids[:q], c.scores[:q], c.source, np.arange(min(q, len(c)))))
            quotas[c.source] = q
    if not trimmed:
        return np.asarray([], dtype=object), {k: np.zeros(0) for k in ("n_sources", "best_source_rank",
                                                                         "covisit_score", "content_score")}
    b = blend(trimmed, quotas=quotas, config=Blend(quotas=quotas, total=cfg.total, fill=False))
    n = len(b)
    ranks = np.vstack([b.features[f"rank_{c.source}"] for c in trimmed])
    feats = {"n_sources": b.features["n_sources"].astype(float),
             "best_source_rank": np.nanmin(np.where(np.isnan(ranks), np.inf, ranks), axis=0)}
    for kind in ("covisit", "content"):
        cols = [b.features[f"score_{c.source}"] for c in trimmed if c.source.split(":")[0] == kind]
        feats[f"{kind}_score"] = cols[0] if cols else np.full(n, np.nan)
    return b.item_ids, feats
