"""A write the shared journal does not take (disk full, short write) changes nothing, on any worker.

Writes are checked, appended to the journal, and only then applied (serving/writes.py); the client gets a clear
error, never a 500 with a traceback.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

import recs.serving.journal as journal_mod
from recs.bundle import export_bundle
from recs.datasets.online_state import OnlineState
from recs.serving.app import create_app
from recs.serving.journal import JOURNAL_NAME, Journal, JournalWriteError
from recs.serving.runtime import Runtime
from recs.serving.served import ServeConfig, load_served
from _serve_fixtures import build_tiny_bundle

TOKEN = "tok"
CFG = dict(deadline_ms=10_000, shed_queue_ms=10_000, rank_skip_ms=0, journal_poll_s=600, reload_wait_s=5)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("writefail"))


def _runtime(built, journal: Journal, run_dir: Path, name: str) -> Runtime:
    cfg = ServeConfig(**CFG)
    rt = Runtime(load_served(built["bundle"], built["pub"], cfg), cfg)
    rt.attach_journal(journal, run_dir, worker_name=name)
    return rt


def _snapshot(rt: Runtime) -> tuple:
    st = rt.current.state
    return (rt.current, st.version, st.stock.tolist(), st.price.tolist(), len(st), dict(st.blocked_from_us),
            len(st.session_history), len(rt.inventory_log), dict(rt.metrics.inventory.values),
            dict(rt.metrics.events.values))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (every write fails: disk full)")
def test_a_full_disk_refuses_every_write_and_changes_nothing(built, tmp_path):
    rt = _runtime(built, Journal("/dev/full"), tmp_path, "a")
    st = rt.current.state
    item = str(st.item_ids[0])
    attrs = {"category": st.category[0], "subcategory": st.subcategory[0], "seller_id": "s-new", "brand": "b",
             "title": "never added", "price": 3.0, "stock": 2}
    other = tmp_path / "other"
    export_bundle(built["model"], other, built["priv"], created_at=datetime(2020, 1, 1, tzinfo=timezone.utc))
    with TestClient(create_app(rt, built["pub"], TOKEN, workers=1), raise_server_exceptions=False) as c:
        before = _snapshot(rt)
        for body in ({"kind": "stock", "item_id": item, "value": 0},
                     {"kind": "price", "item_id": item, "value": 99.0},
                     {"kind": "blocked_seller", "seller_id": str(st.seller_id[0])},
                     {"kind": "new_item", "item_id": "fresh", "value": 2, "attrs": attrs}):
            r = c.post("/v1/inventory", json=body)
            assert r.status_code == 503 and "not applied" in r.json()["error"], (body, r.text)
        r = c.post("/v1/events", json={"session_id": "s-full", "item_id": item, "user_id": "u-full"})
        assert r.status_code == 503 and "not applied" in r.json()["error"]
        # bad input is still a 422: the check runs before the append
        assert c.post("/v1/inventory", json={"kind": "stock", "item_id": "nope", "value": 0}).status_code == 422
        assert c.post("/v1/events", json={"session_id": "s", "item_id": "nope"}).status_code == 422
        old_version = c.get("/readyz").json()["bundle_version"]
        r = c.post("/admin/reload", json={"bundle": str(other)}, headers={"X-Admin-Token": TOKEN})
        assert r.status_code == 503 and "still serving" in r.json()["error"]
        assert c.get("/readyz").json()["bundle_version"] == old_version
        assert _snapshot(rt) == before
        assert "fresh" not in rt.current.state.index and "s-full" not in rt.current.state.session_history
        assert "u-full" not in rt.current.state.user_history
        assert rt.metrics.errors.get("journal_write") == 6 and rt.metrics.errors.get("unhandled") == 0
        assert rt.metrics.reloads.get("failed") == 1


class _ShortWrites:
    """Stands in for the `os` module inside serving/journal.py: every write stores only half its bytes."""

    def __getattr__(self, name: str):
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: bytes) -> int:
        return os.write(fd, data[:len(data) // 2])


def test_a_short_write_is_applied_by_no_worker(built, tmp_path, monkeypatch):
    a = _runtime(built, Journal(tmp_path / JOURNAL_NAME), tmp_path, "a")
    b = _runtime(built, Journal(tmp_path / JOURNAL_NAME), tmp_path, "b")
    item, item2 = (str(i) for i in a.current.state.item_ids[:2])
    before_a, before_b = _snapshot(a), _snapshot(b)
    other = tmp_path / "other"
    export_bundle(built["model"], other, built["priv"], created_at=datetime(2020, 1, 1, tzinfo=timezone.utc))
    new = load_served(other, built["pub"], a.cfg)
    with monkeypatch.context() as m:
        m.setattr(journal_mod, "os", _ShortWrites())
        with pytest.raises(JournalWriteError, match="short write"):
            a.apply_inventory("stock", item, 0, None, None)
        with pytest.raises(JournalWriteError):
            a.record_event(None, "s-short", item, "click")
        with pytest.raises(JournalWriteError):
            a.publish_reload(new, str(other))
    new.bundle.close()
    assert _snapshot(a) == before_a and a.current.version != new.version
    b.sync()
    assert _snapshot(b) == before_b and b.reload_target is None     # the torn line is applied by nobody
    assert a.apply_inventory("price", item2, 7.0, None, None) > before_a[1]   # the next write ends the torn line
    b.sync()
    for w in (a, b):
        st = w.current.state
        assert st.price[st.index[item2]] == 7.0 and st.stock[st.index[item]] == before_a[2][st.index[item]]
        assert "s-short" not in st.session_history
    assert b.journal.corrupt == 1


def _catalog() -> pl.DataFrame:
    return pl.DataFrame({"item_id": ["a", "b"], "category": ["x"] * 2, "subcategory": ["x1"] * 2,
                         "seller_id": ["s1", "s2"], "brand": ["k"] * 2, "title": ["t"] * 2, "price": [1.0, 2.0],
                         "stock": [5, 5], "restricted": [False, False],
                         "created_at": [datetime(2020, 1, 1, tzinfo=timezone.utc)] * 2})


GOOD = {"category": "x", "subcategory": "x1", "seller_id": "s1", "brand": "k", "title": "t", "price": 4.0}


@pytest.mark.parametrize("kind,key,value,attrs", [
    ("stock", "a", 0, None), ("stock", "zz", 0, None), ("price", "a", 0.0, None), ("price", "a", -1.0, None),
    ("price", "a", 3.0, None), ("restricted", "a", 1, None), ("new_item", "a", 4, None),
    ("new_item", "zz", 4, None), ("new_item", "zz", 4, {"category": "x"}), ("new_item", "zz", 4, {**GOOD, "price": 0}),
    ("new_item", "zz", 4, GOOD), ("new_item", "zz", 4, {**GOOD, "stock": "many"}),
    ("new_item", "zz", 4, {**GOOD, "created_at": datetime(2021, 1, 1)}), ("bogus", "a", 1, None),
    ("bogus", "zz", 1, None), ("blocked_seller", "s1", 0, None),
])
def test_the_pre_append_check_agrees_with_the_state(kind, key, value, attrs):
    """`OnlineState.check_inventory` refuses exactly what `apply_inventory` refuses, with the same error."""
    def outcome(f) -> tuple:
        try:
            f()
        except (KeyError, ValueError, TypeError) as e:
            return type(e), str(e)
        return None, ""

    st = OnlineState(_catalog())
    checked = outcome(lambda: st.check_inventory(kind, key, value, None, attrs))
    assert st.version == 0 and len(st) == 2                       # the check changes nothing
    assert checked == outcome(lambda: st.apply_inventory(kind, key, value, None, attrs))
