"""Shared pieces of the simulated scenarios: stepping a World through time, inventory snapshots, truth scoring."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np

from recs.datasets.online_state import OnlineState, to_us
from recs.sim import SimConfig, World
from recs.sim import choice
from recs.sim.inventory import HOUR_US, InventoryEvents, step_inventory
from recs.sim.logging_policy import LoggingCore
from recs.sim.traffic import DIURNAL, simulate_hour


def us(ts: datetime) -> int:
    """Epoch microseconds, a naive time read as UTC (`datasets.online_state.to_us`, the rule of every check)."""
    return to_us(ts)


def from_us(t: int) -> datetime:
    return datetime.fromtimestamp(t / 1e6, tz=timezone.utc)


@dataclass(frozen=True)
class InventorySnapshot:
    """A frozen copy of the live item attributes at `ts_us` (what a cache or feature snapshot would hold)."""

    ts_us: int
    stock: np.ndarray
    price: np.ndarray
    restricted: np.ndarray

    @classmethod
    def take(cls, world: World, ts_us: int) -> "InventorySnapshot":
        s = world.state
        return cls(ts_us, s.stock.copy(), s.price.copy(), s.restricted.copy())

    def state(self, world: World) -> OnlineState:
        """A detached `OnlineState` holding the snapshot's values (for a pipeline serving from the snapshot)."""
        st = OnlineState(world.catalog_frame(), world.sellers_frame())
        st.stock[:], st.price[:], st.restricted[:] = self.stock, self.price, self.restricted
        st.version += 1
        return st

    def eligible(self, world: World) -> np.ndarray:
        """Items eligible at the snapshot time according to the snapshot (and the seller blocks known then)."""
        t = self.ts_us
        return ((self.stock > 0) & ~self.restricted & (world.catalog.created_us <= t)
                & (world.seller_blocked_us[world.catalog.seller] > t))


class Clock:
    """Steps a World's traffic (logging policy: sales deplete stock) and inventory in sub-hour steps.

    `step_s` must divide an hour; the inventory rates of `SimConfig` are per hour / per day, so a step of
    `step_s` seconds scales them by step_s / 3600 (restocks, price changes, restrictions) and serves the
    matching share of the hour's traffic.
    """

    def __init__(self, world: World, step_s: int = 900, seed: int = 0, demand: float = 1.0) -> None:
        if step_s <= 0 or 3600 % step_s:
            raise ValueError(f"step_s must divide 3600, got {step_s}")
        self.world, self.step_s, self.demand = world, step_s, demand
        self.core = LoggingCore(world)
        self.rng = np.random.default_rng([world.cfg.seed, 31, seed])
        self.counters = {"request": 0, "session": 0}
        self.events = InventoryEvents()
        self.t_us = us(world.now)   # a built world starts at cfg.start; a loaded one at the end of its log
        self.base_cfg = world.cfg

    def step(self):
        """Advance by one step: serve that step's traffic, then apply its sales, restocks and price changes.

        Returns the step's `HourLog` (requests and impressions under the logging policy)."""
        w, f = self.world, self.step_s / 3600.0
        hour = int((self.t_us // HOUR_US) % 24)
        n_req = max(1, int(round(self.base_cfg.requests_per_day * DIURNAL[hour] * f * self.demand)))
        log = simulate_hour(w, self.core, self.t_us, n_req, self.counters, self.rng)
        c = self.base_cfg
        w.cfg = replace(c, restock_rate_per_hour=c.restock_rate_per_hour * f,
                        price_change_rate=c.price_change_rate * f, restricted_rate=c.restricted_rate * f)
        try:
            step_inventory(w, self.t_us + self.step_s * 1_000_000, log.sold, self.rng, self.events)
        finally:
            w.cfg = c
        self.events.take()  # scenarios read the state directly; drop the event log
        self.t_us += self.step_s * 1_000_000
        w.now = from_us(self.t_us)
        return log

    def advance_to(self, t_us: int, on_step=None) -> None:
        while self.t_us < t_us:
            self.step()
            if on_step is not None:
                on_step(self.t_us)


def attraction_logits(world: World, request_id: str, rows: np.ndarray, price: np.ndarray) -> np.ndarray:
    """True attraction logits of item `rows` for a drawn request, with item prices taken from `price`."""
    ctx = world.contexts[request_id]
    c = world.catalog
    rel = np.log(price[rows]) - world.log_ref_price[c.subcat[rows]]
    intent = (c.subcat[rows] == ctx.intent)[None, :] if ctx.intent >= 0 else None
    return choice.attraction_logit(ctx.vec[None, :], c.vec[rows][None], c.quality[rows][None], rel[None],
                                   np.array([ctx.price_sens]), intent, world.cfg)[0]


def top_n(rows: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The `n` best rows by score, best first."""
    n = min(n, len(rows))
    if n == 0:
        return rows[:0], scores[:0]
    top = np.argpartition(-scores, n - 1)[:n]
    top = top[np.argsort(-scores[top], kind="stable")]
    return rows[top], scores[top]


def small_sim(seed: int = 0, **overrides) -> SimConfig:
    """A small world for the scenarios' default runs."""
    base = dict(n_users=1_000, n_items=3_000, days=2, requests_per_day=8_000, seed=seed)
    base.update(overrides)
    return SimConfig(**base)


def fmt_age(seconds: int) -> str:
    if seconds == 0:
        return "0"
    if seconds % 86_400 == 0:
        return f"{seconds // 86_400}d"
    if seconds % 3_600 == 0:
        return f"{seconds // 3_600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"

