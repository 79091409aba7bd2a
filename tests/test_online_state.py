"""OnlineState: seller blocks, appended items and the blocked-seller cache."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recs.datasets.online_state import OnlineState

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _state() -> OnlineState:
    cat = pl.DataFrame({
        "item_id": ["a", "b", "c"], "category": ["x"] * 3, "subcategory": ["x1"] * 3, "seller_id": ["s1", "s2", "s1"],
        "brand": ["k"] * 3, "title": ["t"] * 3, "price": [1.0, 2.0, 3.0], "stock": [5, 5, 0],
        "restricted": [False, False, False], "created_at": [T0 - timedelta(days=1)] * 3,
    })
    return OnlineState(cat)


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
