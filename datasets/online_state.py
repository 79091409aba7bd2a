"""Online state shared by the simulator and the server: live item attributes and user/session histories.

Inventory updates change it in place; policy filters read it on every request, so a change takes effect on the
next one. `version` increases with every change (caches key on it). Session and user histories are bounded
(`RecentHistories`): ids come from clients, so without a bound any client could grow the process's memory.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict, deque
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl

HISTORY_LEN = 50
MAX_SESSIONS = 100_000       # session histories kept (least recently written dropped first)
MAX_USERS = 100_000          # live user histories kept (same rule)


def to_us(ts: datetime) -> int:
    """Epoch microseconds of a datetime, a naive one read as UTC (the rule every eligibility check uses)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return int(ts.timestamp() * 1_000_000)


class RecentHistories:
    """Recent events per key (a session or a user id), bounded in keys and per key.

    Each key keeps its last `HISTORY_LEN` events. At most `max_keys` keys are kept: a write to a new key beyond
    that drops the key written least recently. With `idle_s`, a key not written for longer than that is no longer
    returned and is dropped at the next write. Reads do not refresh a key. Drops are counted in `evicted`
    (`capacity`, `idle`). Writes hold the owning state's lock; reads take none.
    """

    def __init__(self, max_keys: int, idle_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._d: OrderedDict[str, deque] = OrderedDict()     # oldest write first
        self._written: dict[str, float] = {}
        self._clock = clock
        self.evicted = {"capacity": 0, "idle": 0}
        self.max_keys, self.idle_s = 1, None
        self.configure(max_keys, idle_s)

    def configure(self, max_keys: int, idle_s: float | None = None) -> None:
        """Change the bounds (applied at once)."""
        if int(max_keys) < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        if idle_s is not None and not idle_s > 0:
            raise ValueError(f"idle_s must be > 0 (or None: no expiry), got {idle_s}")
        self.max_keys, self.idle_s = int(max_keys), idle_s
        self._trim(self._clock())

    def append(self, key: str, event: tuple[str, str]) -> None:
        now = self._clock()
        h = self._d.get(key)
        if h is None:
            h = self._d[key] = deque(maxlen=HISTORY_LEN)
        else:
            self._d.move_to_end(key)
        self._written[key] = now
        h.append(event)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while len(self._d) > self.max_keys:
            self._drop(next(iter(self._d)), "capacity")
        if self.idle_s is not None:
            cutoff = now - self.idle_s
            while self._d:
                oldest = next(iter(self._d))
                if self._written[oldest] >= cutoff:
                    break
                self._drop(oldest, "idle")

    def _drop(self, key: str, why: str) -> None:
        del self._d[key]
        del self._written[key]
        self.evicted[why] += 1

    def get(self, key: str | None, default: Any = None) -> Any:
        h = self._d.get(key)
        if h is None:
            return default
        if self.idle_s is not None and self._clock() - self._written.get(key, 0.0) > self.idle_s:
            return default
        return h

    def __getitem__(self, key: str) -> deque:
        h = self.get(key)
        if h is None:
            raise KeyError(key)
        return h

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._d))


class OnlineState:
    """Columnar item table with live stock, price and policy flags, plus recent user and session histories."""

    def __init__(self, catalog: pl.DataFrame, sellers: pl.DataFrame | None = None, max_sessions: int = MAX_SESSIONS,
                 session_idle_s: float | None = None, max_users: int = MAX_USERS) -> None:
        self._lock = threading.RLock()
        self.version = 0
        cat = catalog.sort("item_id")
        self.item_ids = np.array(cat["item_id"].to_list(), dtype=object)
        self.index = {iid: i for i, iid in enumerate(self.item_ids)}
        self.category = np.array(cat["category"].to_list(), dtype=object)
        self.subcategory = np.array(cat["subcategory"].to_list(), dtype=object)
        self.seller_id = np.array(cat["seller_id"].to_list(), dtype=object)
        self.brand = np.array(cat["brand"].to_list(), dtype=object)
        self.title = np.array(cat["title"].to_list(), dtype=object)
        self.price = cat["price"].to_numpy().astype(np.float64).copy()
        self.stock = cat["stock"].to_numpy().astype(np.int64).copy()
        self.restricted = cat["restricted"].to_numpy().astype(bool).copy()
        self.created_us = cat["created_at"].dt.epoch("us").to_numpy().astype(np.int64).copy()
        self.blocked_from_us: dict[str, int] = {}
        self._blocked_version = 0
        self._capacity: dict[str, np.ndarray] = {}     # column name -> buffer its array is a prefix view of
        if sellers is not None:
            for sid, bf in sellers.filter(pl.col("blocked_from").is_not_null()).iter_rows():
                self.blocked_from_us[sid] = to_us(bf)
        self.user_history = RecentHistories(max_users)
        self.session_history = RecentHistories(max_sessions, session_idle_s)
        # live purchases apart from the 50-event history, so later clicks do not push them out of the
        # "already purchased" filter (`Pipeline.purchased`); bounded like the histories
        self.user_purchases = RecentHistories(max_users)

    # ---- reads -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.item_ids)

    def indices(self, item_ids) -> np.ndarray:
        """Row indices of known item ids (-1 for unknown)."""
        get = self.index.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def _item_blocked_from(self) -> np.ndarray:
        """Per item, the time (us) its seller is blocked from (int64 max: never).

        Rebuilt only when a seller block changes; items appended since are added at the end (stock and price
        updates do not touch it, so a busy inventory stream does not rebuild it on every request).
        """
        never = np.iinfo(np.int64).max
        get = self.blocked_from_us.get
        cache = getattr(self, "_blocked_cache", None)
        if cache is None or getattr(self, "_blocked_key", None) != self._blocked_version:
            cache = np.fromiter((get(s, never) for s in self.seller_id), dtype=np.int64, count=len(self.seller_id))
            self._blocked_key = self._blocked_version
        elif len(cache) < len(self.seller_id):
            new = self.seller_id[len(cache):]
            cache = np.concatenate([cache, np.fromiter((get(s, never) for s in new), dtype=np.int64,
                                                       count=len(new))])
        self._blocked_cache = cache
        return cache

    def eligible_mask(self, ts: datetime | None = None, idx: np.ndarray | None = None) -> np.ndarray:
        """Items that may be shown at `ts`: in stock, not restricted, seller not blocked, already created."""
        sel = slice(None) if idx is None else idx
        ok = (self.stock[sel] > 0) & ~self.restricted[sel]
        t = to_us(ts) if ts is not None else np.iinfo(np.int64).max - 1
        if ts is not None:
            ok &= self.created_us[sel] <= t
        if self.blocked_from_us:
            ok &= self._item_blocked_from()[sel] > t
        return ok

    def is_eligible(self, item_ids, ts: datetime | None = None) -> np.ndarray:
        """Eligibility of `item_ids` (unknown ids are never eligible)."""
        idx = self.indices(item_ids)
        out = np.zeros(len(idx), dtype=bool)
        known = idx >= 0
        if known.any():
            out[known] = self.eligible_mask(ts, idx[known])
        return out

    # ---- writes ------------------------------------------------------------------------------------------
    def check_inventory(self, kind: str, item_id: str, value: float, ts: datetime | None = None,
                        attrs: dict | None = None) -> None:
        """Raise what `apply_inventory` would raise for this event (same errors), changing nothing: the check a
        journaled write passes before it is written (serving/writes.py)."""
        if kind == "blocked_seller":
            if ts:
                to_us(ts)
            return
        if item_id not in self.index:
            if kind != "new_item" or attrs is None:
                raise KeyError(f"unknown item {item_id!r} for inventory event {kind!r}")
            self._new_item_values(item_id, attrs)
            return
        if kind in ("stock", "new_item"):
            int(value)
        elif kind == "price":
            if value <= 0:
                raise ValueError(f"price must be > 0, got {value}")
        elif kind != "restricted":
            raise ValueError(f"unknown inventory kind {kind!r}")

    def apply_inventory(self, kind: str, item_id: str, value: float, ts: datetime | None = None,
                        attrs: dict | None = None) -> None:
        """Apply one inventory event (`stock`, `price`, `restricted`, `new_item`, `blocked_seller`); a bad one
        raises (`check_inventory`) and changes nothing."""
        with self._lock:
            self.check_inventory(kind, item_id, value, ts, attrs)
            if kind == "blocked_seller":
                self.blocked_from_us[item_id] = to_us(ts) if ts else 0
                self._blocked_version += 1
                self.version += 1
                return
            i = self.index.get(item_id)
            if i is None:
                self._append_item(item_id, attrs)   # type: ignore[arg-type]  (checked: a new item's attributes)
                self.version += 1
                return
            if kind in ("stock", "new_item"):
                self.stock[i] = max(0, int(value))
            elif kind == "price":
                self.price[i] = float(value)
            else:
                self.restricted[i] = bool(value)
            self.version += 1

    @staticmethod
    def _new_item_values(item_id: str, a: dict) -> dict:
        """A new item's column values from its attributes (KeyError / ValueError naming what is wrong)."""
        missing = [k for k in ("category", "subcategory", "seller_id", "brand", "title", "price") if k not in a]
        if missing:
            raise KeyError(f"new item {item_id!r}: missing attribute(s) {', '.join(missing)}")
        price = float(a["price"])
        if price <= 0:
            raise ValueError(f"new item {item_id!r}: price must be > 0, got {price}")
        values = {name: a[name] for name in ("category", "subcategory", "seller_id", "brand", "title")}
        values.update(price=price, stock=int(a.get("stock", 0)), restricted=bool(a.get("restricted", False)),
                      created_us=to_us(a["created_at"]) if a.get("created_at") else 0)
        return values

    def _append_item(self, item_id: str, a: dict) -> None:
        """Append a new item; every attribute is read first and the id is indexed last, so a bad `a` changes
        nothing and a lock-free reader never finds an id whose columns are not there yet. Columns keep spare
        capacity (doubling), so an append costs O(1) amortised, not a copy of the catalog; a reader holding a
        column from before keeps a valid (shorter) array."""
        values = self._new_item_values(item_id, a)
        n = len(self.item_ids)
        grown = {name: self._grown(name, v, n) for name, v in values.items()}
        ids = self._grown("item_ids", item_id, n)
        for name, col in grown.items():
            setattr(self, name, col)
        self.item_ids = ids
        self.index[item_id] = n

    def _grown(self, name: str, value, n: int) -> np.ndarray:
        """Column `name` with `value` appended at row `n`, in its spare capacity when it has some."""
        cur = getattr(self, name)
        buf = self._capacity.get(name)
        if buf is None or cur.base is not buf or len(buf) <= n:
            buf = np.empty(max(16, 2 * (n + 1)), dtype=cur.dtype)
            buf[:n] = cur
            self._capacity[name] = buf
        buf[n] = value
        return buf[:n + 1]

    def record_event(self, user_id: str | None, session_id: str, item_id: str, kind: str = "click") -> None:
        """Append a user event to the session history (and the user's, when logged in); both are bounded."""
        row = self.index.get(item_id)
        if row is not None:
            item_id = self.item_ids[row]      # the catalog's own string: not one more copy per event
        kind = sys.intern(kind)               # a handful of kinds: one string each
        with self._lock:
            self.session_history.append(session_id, (item_id, kind))
            if user_id is not None:
                self.user_history.append(user_id, (item_id, kind))
                if kind == "purchase":
                    self.user_purchases.append(user_id, (item_id, kind))

    def recent_items(self, user_id: str | None, session_id: str | None, n: int = 20) -> list[str]:
        """Most recent items of the session, then of the user, newest last, without repeats."""
        seen: list[str] = []
        for hist in (self.user_history.get(user_id) if user_id else None,
                     self.session_history.get(session_id) if session_id else None):
            for iid, _ in hist or ():
                if iid in seen:
                    seen.remove(iid)
                seen.append(iid)
        return seen[-n:]
