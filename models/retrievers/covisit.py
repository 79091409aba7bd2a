"""Co-visitation retriever: items clicked or carted together in a session, summed over the request's seed items.

Fit: within each session (its newest `max_session_events` events before `as_of`), every ordered pair of
different items (a, b) whose events lie within `window_minutes` scores
    kind_weight(b) * direction_weight * 1 / log(1 + distinct items in the session),
direction_weight being `forward_weight` when b came after a and `backward_weight` otherwise. A pair counts once
per session (its best event pair); sessions are summed; the sum is damped by the neighbour's session count
** `popularity_damping`; each item keeps its top `neighbours` (rows scaled so the best neighbour scores 1) in
`neighbours.parquet`. Retrieve: the recency-weighted sum of the seed items' neighbour rows, seeds being the
session's clicked items (anonymous users included) and the user's history.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from recs.datasets.io import atomic_dir
from recs.models.base import Candidates, RetrievalQuery, Retriever, TrainingData
from recs.models.retrievers._common import (check_kind_weights, check_positive, check_unit, read_meta, read_parquet,
                                            seed_items, StateRows, take_eligible, weighted_events,
                                            write_meta)

COLUMNS = ("item_id", "neighbor_id", "score")


@dataclass
class CovisitConfig:
    """How co-visitation pairs are formed and weighted, and how seeds combine at request time."""

    kind_weights: dict[str, float] = field(
        default_factory=lambda: {"click": 1.0, "add_to_cart": 2.0, "purchase": 3.0})
    window_minutes: float = 60.0          # pairs further apart in time are ignored
    max_session_events: int = 30          # newest events kept per session (bounds the quadratic pair count)
    neighbours: int = 50                  # top neighbours stored per item
    forward_weight: float = 1.0           # b clicked after a
    backward_weight: float = 0.5          # b clicked before a
    popularity_damping: float = 0.3       # divide by (sessions containing b) ** damping; 0 keeps raw counts
    session_weight: float = 2.0           # seed weights: a session item vs a history item
    history_weight: float = 1.0
    recency_decay: float = 0.8            # each older seed weighs this factor less
    max_seed_items: int = 20
    exclude_seen: bool = True             # never return the seed items themselves

    def __post_init__(self) -> None:
        check_kind_weights(self.kind_weights)
        check_positive(self, "window_minutes", "max_session_events", "neighbours", "max_seed_items",
                       "recency_decay")
        check_unit(self, "popularity_damping", "recency_decay")
        for name in ("forward_weight", "backward_weight", "session_weight", "history_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.max_session_events < 2:
            raise ValueError(f"max_session_events: must be >= 2, got {self.max_session_events}")


def covisit_pairs(events: pl.DataFrame, cfg: CovisitConfig) -> pl.DataFrame:
    """Top-`cfg.neighbours` co-visitation neighbours per item from weighted events (session_id, item_id, ts, w)."""
    window_us = int(cfg.window_minutes * 60 * 10**6)
    ev = (events.lazy()
          .select(pl.col("session_id").rank("dense").cast(pl.UInt32).alias("s"), "item_id",
                  pl.col("ts").dt.epoch("us").alias("t"), "w")
          .filter(pl.col("t").rank("ordinal", descending=True).over("s") <= cfg.max_session_events)
          .with_columns((1.0 / (1.0 + pl.col("item_id").n_unique().over("s").cast(pl.Float64)).log())
                        .alias("sf"))
          .collect())
    vocab = ev.select(pl.col("item_id").unique().sort()).with_row_index("i")
    ev = ev.join(vocab, on="item_id").drop("item_id")
    left = ev.lazy().select("s", pl.col("i").alias("a"), pl.col("t").alias("ta"), "sf")
    right = ev.lazy().select("s", pl.col("i").alias("b"), pl.col("t").alias("tb"), pl.col("w").alias("wb"))
    pairs = (left.join(right, on="s")
             .filter((pl.col("a") != pl.col("b")) & ((pl.col("tb") - pl.col("ta")).abs() <= window_us))
             .with_columns((pl.col("wb") * pl.col("sf")
                            * pl.when(pl.col("tb") >= pl.col("ta")).then(pl.lit(cfg.forward_weight))
                            .otherwise(pl.lit(cfg.backward_weight))).alias("x"))
             .group_by("s", "a", "b").agg(pl.col("x").max())
             .group_by("a", "b").agg(pl.col("x").sum().alias("score")))
    n_sess = ev.lazy().group_by("i").agg(pl.col("s").n_unique().alias("nb")).rename({"i": "b"})
    ranked = (pairs.join(n_sess, on="b")
              .with_columns((pl.col("score") / pl.col("nb").cast(pl.Float64) ** cfg.popularity_damping)
                            .alias("score"))
              .filter(pl.col("score") > 0)
              .sort(["a", "score", "b"], descending=[False, True, False])
              .group_by("a", maintain_order=True).head(cfg.neighbours)
              .with_columns((pl.col("score") / pl.col("score").max().over("a")).cast(pl.Float32).alias("score"))
              .collect())
    names = vocab["item_id"]
    return pl.DataFrame({"item_id": names.gather(ranked["a"]), "neighbor_id": names.gather(ranked["b"]),
                         "score": ranked["score"]})


class CovisitRetriever(Retriever):
    """Items co-visited with the session's clicks and the user's recent history."""

    kind: ClassVar[str] = "covisit"

    def __init__(self, config: CovisitConfig | None = None) -> None:
        self.config = config or CovisitConfig()
        self._rows = StateRows()
        self.as_of: datetime | None = None
        self.table: pl.DataFrame | None = None

    def fit(self, data: TrainingData) -> "CovisitRetriever":
        ev = weighted_events(data, self.config.kind_weights)
        self._index(covisit_pairs(ev, self.config))
        self.as_of = data.as_of
        return self

    def _index(self, table: pl.DataFrame) -> None:
        """CSR over items: neighbours of item j are `nbr[off[j]:off[j+1]]`, best first."""
        self.table = table
        vocab = pl.concat([table["item_id"], table["neighbor_id"]]).unique().sort()
        self.item_ids = np.array(vocab.to_list(), dtype=object)
        self._pos = {iid: j for j, iid in enumerate(self.item_ids.tolist())}
        codes = pl.DataFrame({"name": vocab}).with_row_index("code")
        t = (table.join(codes.rename({"name": "item_id", "code": "a"}), on="item_id")
             .join(codes.rename({"name": "neighbor_id", "code": "b"}), on="neighbor_id")
             .sort(["a", "score", "b"], descending=[False, True, False]))
        a = t["a"].to_numpy().astype(np.int64)
        self._nbr = t["b"].to_numpy().astype(np.int64)
        self._score = t["score"].to_numpy().astype(np.float64)
        self._off = np.searchsorted(a, np.arange(len(self.item_ids) + 1))

    def _ready(self) -> None:
        if self.table is None:
            raise RuntimeError("CovisitRetriever: call fit() or load() first")

    def neighbours(self, item_id: str, n: int = 20) -> list[tuple[str, float]]:
        """The stored top-`n` neighbours of one item with their scores."""
        self._ready()
        j = self._pos.get(item_id)
        if j is None:
            return []
        s, e = self._off[j], min(self._off[j + 1], self._off[j] + n)
        return list(zip(self.item_ids[self._nbr[s:e]].tolist(), self._score[s:e].tolist()))

    def retrieve(self, query: RetrievalQuery, k: int) -> Candidates:
        self._ready()
        cfg = self.config
        ids, w = seed_items(query, cfg.session_weight, cfg.history_weight, cfg.recency_decay, cfg.max_seed_items)
        nbr, sc = [], []
        for iid, wi in zip(ids, w):
            j = self._pos.get(iid)
            if j is not None and wi > 0:
                s, e = self._off[j], self._off[j + 1]
                nbr.append(self._nbr[s:e])
                sc.append(self._score[s:e] * wi)
        if not nbr:
            return Candidates.empty(self.kind)
        uniq, inv = np.unique(np.concatenate(nbr), return_inverse=True)
        total = np.bincount(inv, weights=np.concatenate(sc))
        top = uniq[np.lexsort((uniq, -total))]
        rows = self._rows.get(query.state, self.item_ids)[top] if query.state is not None else None
        return take_eligible(self.item_ids[top], total[np.searchsorted(uniq, top)], query, k, self.kind,
                             exclude=ids if cfg.exclude_seen else (), presorted=True, rows=rows)

    def save(self, path: Path) -> None:
        self._ready()
        with atomic_dir(path, overwrite=True) as tmp:
            self.table.write_parquet(tmp / "neighbours.parquet")
            write_meta(tmp, self.kind, asdict(self.config),
                       {"as_of": self.as_of.isoformat(), "pairs": self.table.height})

    @classmethod
    def load(cls, path: Path) -> "CovisitRetriever":
        meta = read_meta(path, cls.kind)
        try:
            r = cls(CovisitConfig(**meta["config"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{Path(path) / 'meta.json'}: field 'config': {e}") from None
        r.as_of = datetime.fromisoformat(meta["as_of"])
        r._index(read_parquet(path, "neighbours.parquet", COLUMNS))
        return r
