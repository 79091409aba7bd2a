"""Unit tests of the server's cache and metrics (no model needed)."""
from __future__ import annotations

import pytest

from recs.serving.cache import VersionedTTLCache
from recs.serving.metrics import Histogram, ServerMetrics
from recs.serving.runtime import ServeConfig


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_cache_version_ttl_and_lru():
    clock = Clock()
    c: VersionedTTLCache[str] = VersionedTTLCache(ttl_s=10, max_entries=2, clock=clock)
    c.put("a", 1, "A")
    assert c.get("a", 1) == "A"
    assert c.get("a", 2) is None            # the state changed: never served again
    assert c.get("a", 1) is None            # and the stale entry is gone
    c.put("a", 1, "A")
    clock.t = 10.0
    assert c.get("a", 1) is None            # expired
    c.put("x", 1, "X"), c.put("y", 1, "Y")
    c.get("x", 1)
    c.put("z", 1, "Z")                      # evicts the least recently used: y
    assert c.get("y", 1) is None and c.get("x", 1) == "X" and c.get("z", 1) == "Z"
    assert c.stats.evictions == 1 and 0 < c.stats.hit_ratio < 1
    with pytest.raises(ValueError):
        VersionedTTLCache(ttl_s=0, max_entries=1)


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
                                {"home_ttl_s": -1}, {"max_k": 0}])
def test_serve_config_validates(kw):
    with pytest.raises(ValueError):
        ServeConfig(**kw)
