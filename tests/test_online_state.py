"""OnlineState: seller blocks, appended items, the blocked-seller cache and bounded histories."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recs.datasets.online_state import OnlineState

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _state_catalog() -> pl.DataFrame:
    return pl.DataFrame({
        "item_id": ["a", "b", "c"], "category": ["x"] * 3, "subcategory": ["x1"] * 3, "seller_id": ["s1", "s2", "s1"],
        "brand": ["k"] * 3, "title": ["t"] * 3, "price": [1.0, 2.0, 3.0], "stock": [5, 5, 0],
        "restricted": [False, False, False], "created_at": [T0 - timedelta(days=1)] * 3,
    })


def _state() -> OnlineState:
    return OnlineState(_state_catalog())


def test_block_and_append_follow_the_seller():
    st = _state()
    assert st.is_eligible(["a", "b", "c"], T0).tolist() == [True, True, False]
    st.apply_inventory("blocked_seller", "s1", 0, ts=T0 + timedelta(hours=1))
    assert st.is_eligible(["a", "b"], T0).tolist() == [True, True]          # not yet blocked
    assert st.is_eligible(["a", "b"], T0 + timedelta(hours=2)).tolist() == [False, True]
    st.apply_inventory("new_item", "d", 3, attrs={"category": "x", "subcategory": "x1", "seller_id": "s1",
                                                  "brand": "k", "title": "t", "price": 4.0, "stock": 3})
    st.apply_inventory("new_item", "e", 3, attrs={"category": "x", "subcategory": "x1", "seller_id": "s2",
                                                  "brand": "k", "title": "t", "price": 4.0, "stock": 3})
    assert st.is_eligible(["d", "e"], T0 + timedelta(hours=2)).tolist() == [False, True]
    st.apply_inventory("blocked_seller", "s2", 0, ts=T0)
    assert not st.is_eligible(["b", "e"], T0 + timedelta(hours=2)).any()


def test_stock_and_price_updates_keep_the_blocked_cache():
    st = _state()
    st.apply_inventory("blocked_seller", "s2", 0, ts=T0)
    first = st._item_blocked_from()
    st.apply_inventory("stock", "a", 0)
    st.apply_inventory("price", "b", 9.0)
    assert st._item_blocked_from() is first
    st.apply_inventory("blocked_seller", "s1", 0, ts=T0)
    assert st._item_blocked_from() is not first
    assert (st._item_blocked_from() < np.iinfo(np.int64).max).all()


@pytest.mark.parametrize("attrs", [{"category": "x"}, {"category": "x", "subcategory": "x1", "seller_id": "s1",
                                                       "brand": "k", "title": "t", "price": -1.0}])
def test_a_bad_new_item_changes_nothing(attrs):
    st = _state()
    before = (len(st), st.version, dict(st.index))
    with pytest.raises((KeyError, ValueError)):
        st.apply_inventory("new_item", "z", 1, attrs=attrs)
    assert (len(st), st.version, dict(st.index)) == before
    assert all(len(getattr(st, c)) == 3 for c in ("category", "seller_id", "price", "stock", "created_us"))


def test_appends_use_spare_capacity_and_leave_earlier_columns_valid():
    st = _state()
    held = st.price                                        # what a lock-free reader took before the appends
    copies = 0
    for j in range(40):
        before = st.price
        st.apply_inventory("new_item", f"n{j}", j, attrs={"category": "y", "subcategory": "y1", "seller_id": "s3",
                                                          "brand": "k", "title": f"t{j}", "price": 10.0 + j,
                                                          "stock": j})
        copies += not np.shares_memory(before, st.price)
    assert copies <= 4, f"the price column was copied on {copies} of 40 appends"
    assert held.tolist() == [1.0, 2.0, 3.0]
    assert len(st) == 43 and all(len(getattr(st, c)) == 43 for c in (
        "item_ids", "category", "subcategory", "seller_id", "brand", "title", "price", "stock", "restricted",
        "created_us"))
    i = st.index["n7"]
    assert (st.item_ids[i], st.title[i], st.price[i], st.stock[i], st.category[i]) == ("n7", "t7", 17.0, 7, "y")
    st.apply_inventory("stock", "n7", 0)                   # in-place updates reach the live column
    assert st.stock[st.index["n7"]] == 0 and st.is_eligible(["n7", "n8"], T0).tolist() == [False, True]


def test_session_and_user_histories_are_bounded_least_recently_written_first():
    """Any client can send new session ids: the number of histories kept is bounded (each history's length too)."""
    from recs.datasets.online_state import HISTORY_LEN

    st = OnlineState(_state_catalog(), max_sessions=3, max_users=2)
    for s in ("s1", "s2", "s3"):
        st.record_event(None, s, "a")
    st.record_event(None, "s1", "b")          # written again: s2 is now the least recently written
    st.record_event("u1", "s4", "a")
    assert sorted(st.session_history) == ["s1", "s3", "s4"] and "s2" not in st.session_history
    assert st.recent_items(None, "s2") == [] and st.recent_items(None, "s1") == ["a", "b"]
    assert st.session_history.evicted == {"capacity": 1, "idle": 0}
    for j in range(1000):
        st.record_event(f"u{j}", f"x{j}", "a")
    assert len(st.session_history) == 3 and len(st.user_history) == 2
    assert st.session_history.evicted["capacity"] == 1001 and st.user_history.evicted["capacity"] == 998
    for _ in range(HISTORY_LEN + 10):
        st.record_event(None, "x999", "b")
    assert len(st.session_history["x999"]) == HISTORY_LEN
    with pytest.raises(KeyError):
        st.session_history["s2"]


def test_idle_sessions_are_forgotten():
    from recs.datasets.online_state import RecentHistories

    now = [0.0]
    h = RecentHistories(10, idle_s=60, clock=lambda: now[0])
    h.append("old", ("a", "click"))
    now[0] = 30.0
    h.append("new", ("b", "click"))
    now[0] = 61.0
    assert h.get("old") is None and "old" not in h and h.get("new") is not None   # hidden at once ...
    assert len(h) == 2
    h.append("newer", ("c", "click"))                                               # ... dropped at the next write
    assert len(h) == 2 and h.evicted == {"capacity": 0, "idle": 1}
    h.configure(1)                                                                   # a smaller bound applies at once
    assert list(h) == ["newer"] and h.evicted["capacity"] == 1
    for bad in ({"max_keys": 0}, {"max_keys": 5, "idle_s": 0}):
        with pytest.raises(ValueError):
            h.configure(**bad)
