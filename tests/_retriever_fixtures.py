"""Helpers for the retriever tests: one small simulated dataset per test session, and tiny synthetic tables."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.io import read_table
from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Request
from recs.models.base import RetrievalQuery, TrainingData

UTC = pl.Datetime("us", "UTC")
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
_CACHE: dict[str, "SimData"] = {}


@dataclass
class SimData:
    path: Path
    catalog: pl.DataFrame
    sellers: pl.DataFrame
    interactions: pl.DataFrame
    queries: pl.DataFrame
    as_of: datetime

    @property
    def train(self) -> TrainingData:
        return TrainingData(self.interactions, self.catalog, self.as_of, queries=self.queries)

    def state(self) -> OnlineState:
        """A fresh live state (the catalog's initial inventory); tests mutate it freely."""
        return OnlineState(self.catalog, self.sellers)

    def session_items(self, n: int = 3) -> tuple[str, ...]:
        """Items clicked in one of the longest training sessions."""
        ev = self.interactions.filter((pl.col("kind") == "click") & (pl.col("ts") < self.as_of))
        sid = ev.group_by("session_id").len().sort(["len", "session_id"], descending=[True, False])["session_id"][0]
        return tuple(ev.filter(pl.col("session_id") == sid).sort("ts")["item_id"].unique(maintain_order=True)
                     .to_list()[:n])


def sim_data(tmp_path_factory) -> SimData:
    """The small simulated dataset of the brief (generated once per test session); training cut at day 2."""
    if "sim" not in _CACHE:
        from recs.sim import SimConfig, generate_dataset

        path = tmp_path_factory.mktemp("retr") / "ds"
        generate_dataset(SimConfig(n_users=300, n_items=1500, days=3, requests_per_day=3000, seed=1), path)
        _CACHE["sim"] = SimData(path, read_table(path, "catalog"), read_table(path, "sellers"),
                                read_table(path, "interactions"), read_table(path, "queries"),
                                T0 + timedelta(days=2))
    return _CACHE["sim"]


def request(ts: datetime, recent: tuple[str, ...] = (), user: str | None = None, surface: str = "home",
            q: str | None = None) -> Request:
    return Request("req-1", ts, surface, user, "sess-1", q, recent)


def rq(ts: datetime, recent: tuple[str, ...] = (), history: tuple[str, ...] = (), state: OnlineState | None = None,
       user: str | None = None, surface: str = "home", q: str | None = None) -> RetrievalQuery:
    return RetrievalQuery(request(ts, recent, user, surface, q), history, state)


def make_ineligible(state: OnlineState, item_ids: list[str], ts: datetime) -> dict[str, str]:
    """Make items ineligible in three ways (out of stock, restricted, seller blocked); returns item -> reason."""
    reasons = {}
    for j, iid in enumerate(item_ids):
        if j % 3 == 0:
            state.apply_inventory("stock", iid, 0, ts)
            reasons[iid] = "out_of_stock"
        elif j % 3 == 1:
            state.apply_inventory("restricted", iid, 1, ts)
            reasons[iid] = "restricted"
        else:
            seller = state.seller_id[state.index[iid]]
            state.apply_inventory("blocked_seller", seller, 0, ts - timedelta(hours=1))
            reasons[iid] = "blocked_seller"
    return reasons


def catalog(rows: list[tuple], created: datetime | None = None) -> pl.DataFrame:
    """Synthetic catalog from (item_id, category, subcategory, brand, price) tuples."""
    created = created or T0 - timedelta(days=30)
    return pl.DataFrame({
        "item_id": [r[0] for r in rows], "category": [r[1] for r in rows], "subcategory": [r[2] for r in rows],
        "seller_id": ["s0"] * len(rows), "brand": [r[3] for r in rows],
        "title": [f"{r[3]} {r[2]} classic {j}" for j, r in enumerate(rows)],
        "price": [float(r[4]) for r in rows], "stock": [10] * len(rows), "restricted": [False] * len(rows),
        "created_at": pl.Series([created] * len(rows)).cast(UTC),
    })


def interactions(rows: list[tuple]) -> pl.DataFrame:
    """Synthetic interactions from (session_id, item_id, ts, kind[, user_id]) tuples."""
    return pl.DataFrame({
        "event_id": pl.Series([f"e{j}" for j in range(len(rows))], dtype=pl.Utf8),
        "ts": pl.Series([r[2] for r in rows], dtype=UTC),
        "user_id": pl.Series([r[4] if len(r) > 4 else None for r in rows], dtype=pl.Utf8),
        "session_id": pl.Series([r[0] for r in rows], dtype=pl.Utf8),
        "kind": pl.Series([r[3] for r in rows], dtype=pl.Utf8),
        "item_id": pl.Series([r[1] for r in rows], dtype=pl.Utf8),
        "request_id": pl.Series([None] * len(rows), dtype=pl.Utf8),
        "value": pl.Series([None] * len(rows), dtype=pl.Float64),
    })


def queries(rows: list[tuple]) -> pl.DataFrame:
    """Synthetic search log from (prefix, final_query, ts[, chosen_item[, user_id]]) tuples."""
    return pl.DataFrame({
        "request_id": [f"r{j}" for j in range(len(rows))], "ts": pl.Series([r[2] for r in rows]).cast(UTC),
        "user_id": pl.Series([r[4] if len(r) > 4 else None for r in rows], dtype=pl.Utf8),
        "session_id": [f"s{j}" for j in range(len(rows))], "prefix": [r[0] for r in rows],
        "chosen_suggestion": pl.Series([r[3] if len(r) > 3 else None for r in rows], dtype=pl.Utf8),
        "final_query": [r[1] for r in rows],
    })


def assert_valid(cands, k: int, state: OnlineState | None = None, ts: datetime | None = None,
                 exact: bool = True) -> None:
    """k (or at most k) unique items, scores non-increasing, all eligible under `state`."""
    ids = cands.item_ids.tolist()
    assert len(ids) == k if exact else len(ids) <= k, (len(ids), k)
    assert len(set(ids)) == len(ids)
    assert np.all(np.diff(cands.scores) <= 1e-12)
    if state is not None:
        assert state.is_eligible(ids, ts).all()
