"""A small TTL + LRU cache whose entries are only valid for the `OnlineState.version` they were computed at.

Every inventory update bumps the state's version, so an entry computed before the update is never returned after
it (invalidation by key, not by scanning). Callers still re-apply the policy filters to whatever a hit returns.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale: int = 0        # found but computed at an older state version or past its TTL
    evictions: int = 0

    @property
    def hit_ratio(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


class VersionedTTLCache(Generic[V]):
    """`get(key, version)` returns a value stored for exactly that version within `ttl_s`, else None."""

    def __init__(self, ttl_s: float, max_entries: int, clock=time.monotonic) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError(f"cache needs ttl_s > 0 and max_entries >= 1, got {ttl_s}, {max_entries}")
        self.ttl_s, self.max_entries, self._clock = ttl_s, max_entries, clock
        self._data: OrderedDict[Hashable, tuple[int, float, V]] = OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable, version: int) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        ver, expires, value = entry
        if ver != version or self._clock() >= expires:
            del self._data[key]
            self.stats.stale += 1
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return value

    def put(self, key: Hashable, version: int, value: V) -> None:
        self._data[key] = (version, self._clock() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self.stats.evictions += 1

    def clear(self) -> None:
        self._data.clear()
