"""The one policy interface: `Request`, `Ranking` and the `Policy` protocol.

Everything that ranks items for a request (the simulator's logging policy, a popularity baseline, the trained
pipeline, the oracle) honours this surface, so evaluate, replay, the simulator, the server and the A/B simulation
need no adapters of their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Surface = Literal["home", "search"]


@dataclass(frozen=True)
class Request:
    """What the system knows when a request arrives."""

    request_id: str
    ts: datetime
    surface: Surface
    user_id: str | None  # None: anonymous
    session_id: str
    query: str | None = None  # typed prefix on the search surface
    recent_items: tuple[str, ...] = ()  # items clicked earlier in this session, oldest first

    @property
    def anonymous(self) -> bool:
        return self.user_id is None


@dataclass(frozen=True)
class Ranking:
    """Item ids in display order with their scores; `stages` names what produced it."""

    item_ids: tuple[str, ...]
    scores: tuple[float, ...] = ()
    stages: tuple[str, ...] = ()
    fallback: bool = False
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.scores and len(self.scores) != len(self.item_ids):
            raise ValueError("scores and item_ids differ in length")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("a ranking holds an item twice")


@dataclass(frozen=True)
class SlotProbabilities:
    """Per-position distribution over items: `probs[p, j]` is P(item_ids[j] shown at position p).

    Shape (k, n_items); each row sums to at most 1 (the rest is "nothing shown" / items outside the list).
    """

    item_ids: tuple[str, ...]
    probs: np.ndarray

    def __post_init__(self) -> None:
        if self.probs.ndim != 2 or self.probs.shape[1] != len(self.item_ids):
            raise ValueError(f"probs must be (k, {len(self.item_ids)}), got {self.probs.shape}")
        if np.any(self.probs < 0) or np.any(self.probs.sum(axis=1) > 1 + 1e-9):
            raise ValueError("slot probabilities must be >= 0 and sum to at most 1 per position")


@runtime_checkable
class Policy(Protocol):
    """Anything that ranks items for a request. Policy filters are applied inside `rank`."""

    policy_id: str

    def rank(self, request: Request, k: int) -> Ranking: ...

    def slot_probabilities(self, request: Request, k: int) -> SlotProbabilities: ...


def deterministic_slot_probabilities(ranking: Ranking, k: int) -> SlotProbabilities:
    """One-hot slot probabilities of a deterministic ranking (top-k)."""
    ids = ranking.item_ids[:k]
    probs = np.zeros((k, len(ids)))
    for p in range(len(ids)):
        probs[p, p] = 1.0
    return SlotProbabilities(tuple(ids), probs)
