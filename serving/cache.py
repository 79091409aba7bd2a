"""A TTL + LRU cache of answers that knows which items each answer holds, so updates invalidate only what they touch.

An inventory update of one item drops exactly the cached answers that contain that item (`invalidate_items`);
updates that can change any answer (a blocked seller, a new item) clear the cache. Flushing everything on every
update instead would empty the cache as often as the live inventory stream ticks, i.e. all the time in
production. Callers still re-apply the policy filters to whatever a hit returns (eligibility also depends on the
request's time).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Hashable, Iterable, TypeVar

V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    expired: int = 0          # found past its TTL
    invalidated: int = 0      # dropped because an item it holds was updated (or the cache was cleared)
    evictions: int = 0

    @property
    def hit_ratio(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


class ItemTTLCache(Generic[V]):
    """`get(key)` returns a value stored within `ttl_s` and not invalidated since, else None."""

    def __init__(self, ttl_s: float, max_entries: int, clock=time.monotonic) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError(f"cache needs ttl_s > 0 and max_entries >= 1, got {ttl_s}, {max_entries}")
        self.ttl_s, self.max_entries, self._clock = ttl_s, max_entries, clock
        self._data: OrderedDict[Hashable, tuple[float, V, tuple[str, ...]]] = OrderedDict()
        self._by_item: dict[str, set[Hashable]] = {}
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        if self._clock() >= entry[0]:
            self._drop(key)
            self.stats.expired += 1
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return entry[1]

    def put(self, key: Hashable, value: V, items: Iterable[str]) -> None:
        """Store `value`, which holds `items` (an update of any of them drops it)."""
        if key in self._data:
            self._drop(key)
        held = tuple(dict.fromkeys(items))
        self._data[key] = (self._clock() + self.ttl_s, value, held)
        for i in held:
            self._by_item.setdefault(i, set()).add(key)
        while len(self._data) > self.max_entries:
            self._drop(next(iter(self._data)))
            self.stats.evictions += 1

    def delete(self, key: Hashable) -> None:
        if key in self._data:
            self._drop(key)
            self.stats.invalidated += 1

    def invalidate_items(self, items: Iterable[str]) -> int:
        """Drop every entry holding one of `items`; returns how many were dropped."""
        n = 0
        for i in items:
            for key in list(self._by_item.get(i, ())):
                self._drop(key)
                n += 1
        self.stats.invalidated += n
        return n

    def clear(self) -> None:
        self.stats.invalidated += len(self._data)
        self._data.clear()
        self._by_item.clear()

    def _drop(self, key: Hashable) -> None:
        _, _, held = self._data.pop(key)
        for i in held:
            keys = self._by_item.get(i)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_item[i]
