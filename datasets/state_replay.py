"""The live state as it was: an `OnlineState` moved forward through a dataset's inventory events."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from recs.datasets.online_state import OnlineState, to_us


class StateReplay:
    """An `OnlineState` whose stock, prices and flags move forward in time as logged: the catalog's (initial) values,
    then every inventory event at or before the time asked for (`at(ts)`; the rule of
    `datasets.point_in_time.attributes_as_of`), applied in time order with `OnlineState.apply_inventory`, as the
    server applies live updates (`recs evaluate`, the cold-start scenario and the skew check use it). Events of
    items the catalog lacks are left out.

    Not `sim.point_in_time.InventoryReplayer`: it applies a batch of events kind by kind, so a `new_item` event (it
    sets stock) overrides later `stock` events of the same batch (on the demo, items created without stock and
    stocked later stayed at 0)."""

    def __init__(self, catalog: pl.DataFrame, sellers: pl.DataFrame | None, events: pl.DataFrame | None) -> None:
        self.state = OnlineState(catalog, sellers)
        ev = (events.sort("ts", maintain_order=True) if events is not None else
              pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "item_id": pl.Utf8, "kind": pl.Utf8,
                                   "value": pl.Float64}))
        self._ts = ev["ts"].dt.epoch("us").to_numpy()
        self._events = ev.select("ts", "item_id", "kind", "value").rows()
        self._cursor = 0
        self._now: datetime | None = None

    def at(self, ts: datetime) -> OnlineState:
        """The state as at `ts` (every event at or before it applied, none after); `ts` never earlier than before."""
        if self._now is not None and ts < self._now:
            raise ValueError(f"{ts.isoformat()}: the state moves forward only (already at {self._now.isoformat()})")
        stop = int(np.searchsorted(self._ts, to_us(ts), side="right"))
        st = self.state
        for t, item, kind, value in self._events[self._cursor:stop]:
            if kind == "blocked_seller" or item in st.index:    # a seller's key is not an item
                st.apply_inventory(kind, item, value, t)
        self._cursor, self._now = max(self._cursor, stop), ts
        return st
