"""Score logged requests with a simulator policy as the world was when they arrived (not as at the log's end).

`PointInTimePolicy` wraps any policy of a `World` loaded from a dataset: before each request it rewinds or
advances the world's live inventory to the start of the request's hour by replaying the dataset's
inventory events onto the catalog, which is exactly the state the logging policy saw when it logged the request.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.io import read_table
from recs.datasets.online_state import to_us
from recs.datasets.policy import Ranking, Request, SlotProbabilities

HOUR_US = 3_600 * 10**6


class InventoryReplayer:
    """Moves `world.state` to any time by replaying inventory events from the initial catalog values."""

    KINDS = {"stock": 0, "price": 1, "restricted": 2, "new_item": 3}

    def __init__(self, world, events: pl.DataFrame) -> None:
        self.w = world
        ev = events.sort("ts")
        self.ts = ev["ts"].dt.epoch("us").to_numpy()
        self.rows = world.state.indices(ev["item_id"].to_list())
        self.kind = np.array([self.KINDS[k] for k in ev["kind"].to_list()], dtype=np.int8)
        self.value = ev["value"].to_numpy()
        self.cursor = 0
        self._reset()

    def _reset(self) -> None:
        c, st = self.w.catalog, self.w.state
        st.price[:] = c.price
        st.stock[:] = c.stock
        st.restricted[:] = c.restricted
        self.cursor = 0
        st.version += 1

    def advance_to(self, t_us: int) -> None:
        """State after every event strictly before `t_us`."""
        if self.cursor and self.ts[self.cursor - 1] >= t_us:
            self._reset()
        end = int(np.searchsorted(self.ts, t_us, side="left"))
        if end <= self.cursor:
            return
        sl = slice(self.cursor, end)
        st, rows, kind, val = self.w.state, self.rows[sl], self.kind[sl], self.value[sl]
        ok = rows >= 0
        for code, apply in ((0, lambda r, v: st.stock.__setitem__(r, np.maximum(v, 0).astype(np.int64))),
                            (1, lambda r, v: st.price.__setitem__(r, v)),
                            (2, lambda r, v: st.restricted.__setitem__(r, v != 0)),
                            (3, lambda r, v: st.stock.__setitem__(r, np.maximum(v, 0).astype(np.int64)))):
            m = ok & (kind == code)
            if m.any():  # events are in time order and later ones win: assignment in order keeps the last
                apply(rows[m], val[m])
        self.cursor = end
        st.version += 1


class PointInTimePolicy:
    """A simulator policy evaluated on the world as at each request's hour (see module docstring)."""

    def __init__(self, policy, replayer: InventoryReplayer) -> None:
        self.policy, self.replayer = policy, replayer
        self.policy_id = policy.policy_id

    def _at(self, request: Request) -> None:
        t = to_us(request.ts) // HOUR_US * HOUR_US
        self.replayer.advance_to(t)

    def rank(self, request: Request, k: int) -> Ranking:
        self._at(request)
        return self.policy.rank(request, k)

    def slot_probabilities(self, request: Request, k: int, include=()) -> SlotProbabilities:
        self._at(request)
        return self.policy.slot_probabilities(request, k, include=include)


def point_in_time(world, policy, dataset: str | Path) -> PointInTimePolicy:
    return PointInTimePolicy(policy, InventoryReplayer(world, read_table(dataset, "inventory_events")))
