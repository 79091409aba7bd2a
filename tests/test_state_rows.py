"""`StateRows`: the cached state row of each of a retriever's items, kept right as the state and the items grow."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl

from recs.datasets.online_state import OnlineState
from recs.models.retrievers._common import StateRows

ATTRS = {"category": "c", "subcategory": "s", "seller_id": "x", "brand": "b", "title": "t", "price": 1.0}


def _state(ids: list[str]) -> OnlineState:
    return OnlineState(pl.DataFrame({"item_id": ids, **{k: [v] * len(ids) for k, v in ATTRS.items()},
                                     "stock": [5] * len(ids), "restricted": [False] * len(ids),
                                     "created_at": [datetime(2026, 1, 1, tzinfo=timezone.utc)] * len(ids)}))


def test_rows_follow_a_growing_state_and_growing_items_without_touching_earlier_arrays():
    state = _state(["a", "b", "c"])
    ids = np.array(["c", "z", "a"], dtype=object)          # "z" is not in the state yet
    cache = StateRows()
    first = cache.get(state, ids)
    assert first.tolist() == state.indices(ids).tolist() == [2, -1, 0]
    assert cache.get(state, ids) is first                  # nothing changed: the same array
    state.apply_inventory("new_item", "z", 3, attrs=ATTRS)
    grown = cache.get(state, ids)
    assert grown.tolist() == state.indices(ids).tolist() and grown[1] >= 0
    assert first.tolist() == [2, -1, 0]                    # a reader holding the old array keeps a consistent one
    more = np.concatenate([ids, np.array(["b", "y"], dtype=object)])
    cache.items_appended(more)
    assert cache.get(state, more).tolist() == state.indices(more).tolist()
    # a caller still holding the previous item array (another thread, mid-request) gets its rows, not an error
    state.apply_inventory("new_item", "y", 3, attrs=ATTRS)
    assert cache.get(state, ids).tolist() == state.indices(ids).tolist()
    assert cache.get(state, more).tolist() == state.indices(more).tolist()


def test_another_state_or_item_array_rebuilds():
    cache = StateRows()
    ids = np.array(["a", "b"], dtype=object)
    s1, s2 = _state(["a", "b"]), _state(["b", "q", "a"])
    assert cache.get(s1, ids).tolist() == [0, 1]
    assert cache.get(s2, ids).tolist() == s2.indices(ids).tolist()
    other = np.array(["b"], dtype=object)
    assert cache.get(s2, other).tolist() == s2.indices(other).tolist()
    cache.items_appended(np.array(["b"], dtype=object))    # shorter than before: not an append, the cache resets
    assert cache.get(s2, ids).tolist() == s2.indices(ids).tolist()
