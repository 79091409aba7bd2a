"""Unit tests of the server's cache and metrics (no model needed)."""
from __future__ import annotations

import pytest

from recs.serving.cache import ItemTTLCache
from recs.serving.metrics import Histogram, ServerMetrics
from recs.serving.served import ServeConfig


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_cache_ttl_lru_and_item_invalidation():
    clock = Clock()
    c: ItemTTLCache[str] = ItemTTLCache(ttl_s=10, max_entries=2, clock=clock)
    c.put("a", "A", ["i1", "i2"])
    assert c.get("a") == "A"
    clock.t = 10.0
    assert c.get("a") is None               # expired
    c.put("a", "A", ["i1", "i2"])
    c.put("b", "B", ["i2", "i3"])
    assert c.invalidate_items(["i9"]) == 0 and c.get("a") == "A"   # an update of another item keeps both
    assert c.invalidate_items(["i1"]) == 1                           # drops only the answer holding i1
    assert c.get("a") is None and c.get("b") == "B"
    assert c.invalidate_items(["i2", "i3"]) == 1 and len(c) == 0 and not c._by_item
    c.put("x", "X", ["i1"]), c.put("y", "Y", ["i2"])
    c.get("x")
    c.put("z", "Z", ["i3"])                 # evicts the least recently used: y (and forgets its items)
    assert c.get("y") is None and c.get("x") == "X" and c.get("z") == "Z" and "i2" not in c._by_item
    c.put("x", "X2", ["i4"])                # re-put replaces the item index too
    assert c.invalidate_items(["i1"]) == 0 and c.get("x") == "X2"
    c.clear()
    assert len(c) == 0 and not c._by_item
    assert c.stats.evictions == 1 and 0 < c.stats.hit_ratio < 1
    with pytest.raises(ValueError):
        ItemTTLCache(ttl_s=0, max_entries=1)


def test_histogram_buckets_are_cumulative():
    h = Histogram("x_seconds", "x", ("stage",), buckets=(0.01, 0.1))
    for v in (0.005, 0.01, 0.05, 2.0):
        h.observe(v, "rank")
    text = "\n".join(h.render())
    assert 'x_seconds_bucket{stage="rank",le="0.01"} 2' in text
    assert 'x_seconds_bucket{stage="rank",le="0.1"} 3' in text
    assert 'x_seconds_bucket{stage="rank",le="+Inf"} 4' in text
    assert 'x_seconds_count{stage="rank"} 4' in text


def test_metrics_render_escapes_labels():
    m = ServerMetrics()
    m.fallbacks.inc("home", 'we"ird')
    assert 'recs_fallbacks_total{endpoint="home",reason="we\\"ird"} 1' in m.render()


@pytest.mark.parametrize("kw", [{"deadline_ms": 0}, {"retrieve_share": 0}, {"shed_in_flight": 0},
                                {"home_ttl_s": -1}, {"max_k": 0}, {"rank_skip_ms": -1},
                                {"journal_poll_s": 0}])
def test_serve_config_validates(kw):
    with pytest.raises(ValueError):
        ServeConfig(**kw)
