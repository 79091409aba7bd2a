"""Inventory dynamics: purchases deplete stock, restocks, price changes, restrictions, new items going live."""
from __future__ import annotations

import numpy as np

HOUR_US = 3_600 * 10**6


class InventoryEvents:
    """Accumulates inventory events as arrays (ts_us, item_row, kind, value)."""

    KINDS = ("stock", "price", "restricted", "new_item")

    def __init__(self) -> None:
        self.ts: list[np.ndarray] = []
        self.item: list[np.ndarray] = []
        self.kind: list[np.ndarray] = []
        self.value: list[np.ndarray] = []

    def add(self, ts_us: np.ndarray | int, rows: np.ndarray, kind: str, values: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self.ts.append(np.broadcast_to(np.asarray(ts_us, dtype=np.int64), rows.shape).copy())
        self.item.append(rows.astype(np.int64))
        self.kind.append(np.full(len(rows), self.KINDS.index(kind), dtype=np.int8))
        self.value.append(values.astype(np.float64))

    def take(self) -> tuple[np.ndarray, ...] | None:
        """Return and clear what has accumulated: (ts_us, item_row, kind_code, value)."""
        if not self.ts:
            return None
        out = tuple(np.concatenate(x) for x in (self.ts, self.item, self.kind, self.value))
        self.ts, self.item, self.kind, self.value = [], [], [], []
        return out


def step_inventory(world, t0_us: int, sold: np.ndarray, rng: np.random.Generator, events: InventoryEvents) -> None:
    """Advance live inventory by one hour ending at `t0_us`: apply sales, restocks, prices, restrictions, new items."""
    cfg, st, cat = world.cfg, world.state, world.catalog
    ts = t0_us - 1
    live = cat.created_us <= ts  # items not yet created keep their catalog values until they go live
    before = st.stock.copy()
    st.stock[:] = np.maximum(0, st.stock - sold)
    empty = np.flatnonzero(live & (st.stock == 0) & (rng.random(len(st.stock)) < cfg.restock_rate_per_hour))
    st.stock[empty] = rng.poisson(30, len(empty)) + 1
    changed = np.flatnonzero(st.stock != before)
    events.add(ts, changed, "stock", st.stock[changed])
    reprice = np.flatnonzero(live & (rng.random(len(st.price)) < cfg.price_change_rate / 24))
    st.price[reprice] = np.round(st.price[reprice] * np.exp(rng.normal(0, 0.15, len(reprice))), 2).clip(0.5, None)
    events.add(ts, reprice, "price", st.price[reprice])
    restrict = np.flatnonzero(live & ~st.restricted & (rng.random(len(st.price)) < cfg.restricted_rate / 24))
    st.restricted[restrict] = True
    events.add(ts, restrict, "restricted", np.ones(len(restrict)))
    new = np.flatnonzero((cat.created_us >= t0_us - HOUR_US) & (cat.created_us < t0_us))
    events.add(cat.created_us[new], new, "new_item", st.stock[new].astype(np.float64))
    st.version += 1
