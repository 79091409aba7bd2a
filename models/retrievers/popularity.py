"""Popularity retriever: global, per-category and trending (time-decayed) lists of weighted interactions.

Per item, fit counts interactions strictly before `as_of`, weighted by kind (click 1, add-to-cart 3, purchase 5
by default), over the last day (`w_1d`), the last 7 days (`w_7d`), all time (`w_all`), and as a time-decayed sum
(`trend`, half-life `trend_half_life_hours`). Lists are ranked by `rank_by`. A request's preferred categories come
from its session items and the user's history (recency weighted); without any, the global list is served.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from recs.datasets.io import atomic_dir
from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Request
from recs.models.base import Candidates, RetrievalQuery, Retriever, TrainingData
from recs.models.retrievers._common import (KIND_WEIGHTS, US_PER_DAY, US_PER_HOUR, affinity, check_kind_weights,
                                            check_positive, check_unit, read_meta, read_parquet, seed_items,
                                            StateRows, take_eligible, to_us, weighted_events, write_meta)

GLOBAL = "__global__"
RANK_BY = ("trend", "w_1d", "w_7d", "w_all")
COLUMNS = ("item_id", "category", "w_1d", "w_7d", "w_all", "trend")


@dataclass
class PopularityConfig:
    """How popularity is counted and how a request's category preferences reshape it."""

    kind_weights: dict[str, float] = field(default_factory=lambda: dict(KIND_WEIGHTS))
    trend_half_life_hours: float = 24.0   # `trend`: an event this much older counts half
    rank_by: str = "trend"                # which count orders the lists: trend | w_1d | w_7d | w_all
    personal_weight: float = 0.8          # 0: pure global order; 1: only preferred categories score
    max_categories: int = 5               # preferred categories considered per request
    session_weight: float = 2.0           # a session item weighs this much vs a history item
    history_weight: float = 1.0
    recency_decay: float = 0.9            # each older seed item weighs this factor less
    max_seed_items: int = 50

    def __post_init__(self) -> None:
        check_kind_weights(self.kind_weights)
        check_positive(self, "trend_half_life_hours", "max_categories", "max_seed_items", "recency_decay")
        check_unit(self, "personal_weight", "recency_decay")
        if self.session_weight < 0 or self.history_weight < 0:
            raise ValueError("session_weight and history_weight must be >= 0")
        if self.rank_by not in RANK_BY:
            raise ValueError(f"rank_by: must be one of {', '.join(RANK_BY)}, got {self.rank_by!r}")


class PopularityRetriever(Retriever):
    """Most popular eligible items, globally or within the request's preferred categories."""

    kind: ClassVar[str] = "popularity"

    def __init__(self, config: PopularityConfig | None = None) -> None:
        self.config = config or PopularityConfig()
        self._rows = StateRows()
        self.as_of: datetime | None = None
        self.table: pl.DataFrame | None = None

    # ---- fitting ---------------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> "PopularityRetriever":
        cfg = self.config
        ev = weighted_events(data, cfg.kind_weights)
        as_of = to_us(data.as_of)
        age = (pl.lit(as_of) - pl.col("ts").dt.epoch("us")).cast(pl.Float64)
        counts = ev.group_by("item_id").agg(
            (pl.col("w") * (age <= US_PER_DAY)).sum().alias("w_1d"),
            (pl.col("w") * (age <= 7 * US_PER_DAY)).sum().alias("w_7d"),
            pl.col("w").sum().alias("w_all"),
            (pl.col("w") * (0.5 ** (age / (cfg.trend_half_life_hours * US_PER_HOUR)))).sum().alias("trend"),
        )
        table = (data.catalog.select("item_id", "category").unique("item_id")
                 .join(counts, on="item_id", how="left").fill_null(0.0))
        self._index(table.with_columns(pl.col(c).cast(pl.Float64) for c in COLUMNS[2:]))
        self.as_of = data.as_of
        return self

    def _index(self, table: pl.DataFrame) -> None:
        t = table.sort([self.config.rank_by, "item_id"], descending=[True, False])
        self.table = t
        self.item_ids = np.array(t["item_id"].to_list(), dtype=object)
        self.scores = t[self.config.rank_by].to_numpy().astype(np.float64)
        self.category = np.array(t["category"].to_list(), dtype=object)
        self._cat_of = dict(zip(self.item_ids.tolist(), self.category.tolist()))
        self._pos = {i: j for j, i in enumerate(self.item_ids.tolist())}
        top = float(self.scores[0]) if len(self.scores) and self.scores[0] > 0 else 1.0
        self._norm = self.scores / top
        uniq, inv = np.unique(self.category.astype(str), return_inverse=True)
        order = np.argsort(inv, kind="stable")      # keeps the popularity order within each category
        bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
        self._by_cat = {str(c): order[bounds[j]:bounds[j + 1]] for j, c in enumerate(uniq)}

    def _ready(self) -> None:
        if self.table is None:
            raise RuntimeError("PopularityRetriever: call fit() or load() first")

    # ---- serving ---------------------------------------------------------------------------------------------
    def category_affinity(self, query: RetrievalQuery) -> dict[str, float]:
        """The request's category preferences (sum 1) from its session items and the user's history."""
        cfg = self.config
        ids, w = seed_items(query, cfg.session_weight, cfg.history_weight, cfg.recency_decay, cfg.max_seed_items)
        cats = [self._cat_of.get(i) for i in ids]
        known = np.array([c is not None for c in cats], dtype=bool)
        return affinity(np.array([c for c in cats if c is not None], dtype=object), w[known])

    def _state_rows(self, state: OnlineState | None) -> np.ndarray | None:
        return self._rows.get(state, self.item_ids) if state is not None else None

    def retrieve(self, query: RetrievalQuery, k: int) -> Candidates:
        self._ready()
        rows = self._state_rows(query.state)
        aff = self.category_affinity(query)
        if not aff or self.config.personal_weight == 0:
            return take_eligible(self.item_ids, self.scores, query, k, self.kind, presorted=True, rows=rows)
        pw = self.config.personal_weight
        top = sorted(aff.items(), key=lambda kv: -kv[1])[: self.config.max_categories]
        best = top[0][1]
        fetch = 4 * k + 100
        in_pool = np.zeros(len(self.item_ids), dtype=bool)
        in_pool[:fetch] = True
        for c, _ in top:
            if c in self._by_cat:
                in_pool[self._by_cat[c][:fetch]] = True
        pool = np.flatnonzero(in_pool)
        boost = np.full(len(pool), 1.0 - pw)
        for c, a in top:
            boost[self.category[pool] == c] += pw * a / best
        mixed = self._norm[pool] * boost
        out = take_eligible(self.item_ids[pool], mixed, query, k, self.kind,
                            rows=rows[pool] if rows is not None else None)
        if len(out) < k:   # the pool ran dry of eligible items: continue down the global list
            more = take_eligible(self.item_ids, self._norm * (1.0 - pw), query, k - len(out), self.kind,
                                 exclude=set(out.item_ids.tolist()), presorted=True, rows=rows)
            cap = out.scores[-1] if len(out) else np.inf
            out = Candidates(np.concatenate([out.item_ids, more.item_ids]),
                             np.concatenate([out.scores, np.minimum(more.scores, cap)]), self.kind)
        return out

    def popular_by_category(self, category: str | None, k: int, state: OnlineState | None = None,
                            ts: datetime | None = None) -> list[str]:
        """The `k` most popular items of `category` eligible at `ts` (None or an unknown category: global)."""
        self._ready()
        rows = self._by_cat.get(category) if category is not None else None
        ids = self.item_ids if rows is None else self.item_ids[rows]
        if state is None:
            return ids[:k].tolist()
        all_rows = self._state_rows(state)
        got = take_eligible(ids, np.zeros(len(ids)), RetrievalQuery(Request("", ts, "home", None, ""), (), state),
                            k, self.kind, presorted=True, rows=all_rows if rows is None else all_rows[rows])
        return got.item_ids.tolist()

    def fallback_lists(self, k: int) -> dict[str, list[str]]:
        """Top-`k` per category plus the global list under `GLOBAL` (not filtered: the server filters live)."""
        self._ready()
        out = {c: self.item_ids[rows[:k]].tolist() for c, rows in sorted(self._by_cat.items())}
        out[GLOBAL] = self.item_ids[:k].tolist()
        return out

    def item_features(self, item_ids) -> dict[str, np.ndarray]:
        """Popularity counts of `item_ids` (0 for unknown items) for use as ranker features."""
        self._ready()
        idx = np.array([self._pos.get(i, -1) for i in item_ids], dtype=np.int64)
        out = {}
        for col in COLUMNS[2:]:
            v = self.table[col].to_numpy()
            out[f"pop_{col}"] = np.where(idx >= 0, v[np.maximum(idx, 0)], 0.0)
        return out

    # ---- persistence -----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        self._ready()
        with atomic_dir(path, overwrite=True) as tmp:
            self.table.write_parquet(tmp / "items.parquet")
            write_meta(tmp, self.kind, asdict(self.config), {"as_of": self.as_of.isoformat()})

    @classmethod
    def load(cls, path: Path) -> "PopularityRetriever":
        meta = read_meta(path, cls.kind)
        try:
            r = cls(PopularityConfig(**meta["config"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{Path(path) / 'meta.json'}: field 'config': {e}") from None
        r.as_of = datetime.fromisoformat(meta["as_of"])
        r._index(read_parquet(path, "items.parquet", COLUMNS))
        return r
