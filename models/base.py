"""The tiny base every retriever honours (`fit`, `retrieve`, `save`, `load`), and the data it trains on.

Models save only plain formats (JSON, Parquet, .npy, faiss index files, LightGBM text): nothing is pickled, so a
bundle can be loaded without executing code from it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Request


@dataclass
class TrainingData:
    """What retrievers and the ranker learn from; everything strictly before `as_of`."""

    interactions: pl.DataFrame                 # canonical interactions
    catalog: pl.DataFrame                      # canonical catalog (attributes as at creation)
    as_of: datetime
    impressions: pl.DataFrame | None = None    # canonical impressions
    queries: pl.DataFrame | None = None        # canonical search-bar log
    inventory_events: pl.DataFrame | None = None


@dataclass(frozen=True)
class RetrievalQuery:
    """One request as a retriever sees it: the request, the user's history and the live state."""

    request: Request
    history: tuple[str, ...] = ()              # the user's past positive items, newest last ((): anonymous/new)
    state: OnlineState | None = None           # live inventory; retrievers skip items it marks ineligible

    @property
    def session_items(self) -> tuple[str, ...]:
        return self.request.recent_items


@dataclass
class Candidates:
    """Retrieved item ids with scores, best first; `source` names the retriever."""

    item_ids: np.ndarray                       # (n,) object array of item ids
    scores: np.ndarray                         # (n,) float
    source: str = ""
    ranks: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.scores):
            raise ValueError("item_ids and scores differ in length")
        if len(self.ranks) != len(self.item_ids):
            self.ranks = np.arange(len(self.item_ids))

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def empty(cls, source: str = "") -> "Candidates":
        return cls(np.array([], dtype=object), np.array([], dtype=float), source)


class Retriever(ABC):
    """A candidate generator. Subclasses set `kind` and implement the four methods."""

    kind: ClassVar[str]

    @abstractmethod
    def fit(self, data: TrainingData) -> "Retriever": ...

    @abstractmethod
    def retrieve(self, query: RetrievalQuery, k: int) -> Candidates: ...

    @abstractmethod
    def save(self, path: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> "Retriever": ...
