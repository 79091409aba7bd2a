"""Ranking metrics for top-K lists against sets of relevant items (binary relevance)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def dcg_discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def list_metrics(recommended, relevant: set[str], k: int) -> dict[str, float]:
    """Recall@k, NDCG@k, MRR@k (reciprocal rank of the first hit) and hit@k of one list.

    A relevant item counts once, where it first appears; a repeat keeps its slot but earns nothing (so recall and
    NDCG stay in [0, 1] for any list)."""
    top = list(recommended)[:k]
    seen: set = set()
    hits = np.zeros(len(top))
    for j, item in enumerate(top):
        if item in relevant and item not in seen:
            hits[j] = 1.0
        seen.add(item)
    disc = dcg_discounts(k)
    ideal = disc[: min(len(relevant), k)].sum()
    first = np.flatnonzero(hits)
    return {
        "recall": float(hits.sum() / len(relevant)) if relevant else 0.0,
        "ndcg": float((hits * disc[: len(hits)]).sum() / ideal) if ideal > 0 else 0.0,
        "mrr": float(1.0 / (first[0] + 1)) if len(first) else 0.0,
        "hit_rate": float(hits.any()),
    }


@dataclass
class MetricAccumulator:
    """Averages list metrics over requests, per named segment."""

    k: int
    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, segments, recommended, relevant: set[str]) -> None:
        if not relevant:
            return
        m = list_metrics(recommended, relevant, self.k)
        for seg in segments:
            s = self.sums.setdefault(seg, {key: 0.0 for key in m})
            for key, v in m.items():
                s[key] += v
            self.counts[seg] = self.counts.get(seg, 0) + 1

    def result(self) -> dict[str, dict[str, float]]:
        return {seg: {**{key: v / self.counts[seg] for key, v in s.items()}, "n": self.counts[seg]}
                for seg, s in self.sums.items()}
