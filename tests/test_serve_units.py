"""Unit tests of the server's cache, metrics, settings and bundle version (no trained model needed)."""
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
                                {"journal_poll_s": 0}, {"max_sessions": 0}, {"max_users": 0},
                                {"session_idle_s": -1}, {"bundle_copy_max_bytes": -1}])
def test_serve_config_validates(kw):
    with pytest.raises(ValueError):
        ServeConfig(**kw)


def test_a_counter_read_at_scrape_time_renders_as_a_counter():
    from recs.serving.metrics import Gauge

    g = Gauge("x_evictions_total", "x", ("reason",), lambda: {("idle",): 3}, kind="counter")
    assert list(g.render())[1:] == ["# TYPE x_evictions_total counter", 'x_evictions_total{reason="idle"} 3']


def test_bundle_version_is_the_digest_of_the_manifest_bytes_that_verified(tmp_path):
    """manifest.json replaced on disk after verification does not change the version the server reports."""
    import hashlib

    from recs.bundle import export_bundle, generate_keypair, load_verified
    from recs.serving.served import bundle_version
    from _bundle_fixtures import make_model

    keys = generate_keypair(tmp_path / "keys")
    export_bundle(make_model(tmp_path), tmp_path / "b", keys.private_key)
    verified = (tmp_path / "b" / "manifest.json").read_bytes()
    vb = load_verified(tmp_path / "b", keys.public_key)                 # in place
    (tmp_path / "b" / "manifest.json").write_bytes(verified.replace(b'"files"', b'"files" '))
    assert bundle_version(vb) == "model@" + hashlib.sha256(verified).hexdigest()[:12]
