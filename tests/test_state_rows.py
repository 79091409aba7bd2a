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
    cache.items_appended(np.array(["b"], dtype=object))    # shorter than the cached array: not an append
    assert cache._cache is None
    assert cache.get(s2, ids).tolist() == s2.indices(ids).tolist()


def test_items_appended_in_the_middle_of_a_get_leaves_both_callers_right():
    """A call on the old item array is looking up the rows a grown state added when, between two of its steps, the
    retriever appends items (another thread): it must neither fail nor give wrong rows, and the cache must keep
    the newer entry."""
    state = _state(["a", "b"])
    ids = np.array(["b", "a"], dtype=object)
    cache = StateRows()
    cache.get(state, ids)
    more = np.concatenate([ids, np.array(["n"], dtype=object)])
    state.apply_inventory("new_item", "n", 3, attrs=ATTRS)   # the state grows by an item only `more` holds
    positions = cache._positions

    def interleaved(item_ids):
        out = positions(item_ids)
        cache.items_appended(more)                          # extends the map `out` while the old call uses it
        return out

    cache._positions = interleaved
    assert cache.get(state, ids).tolist() == state.indices(ids).tolist()
    cache._positions = positions
    assert cache._cache[1] is more                          # the append's entry was not overwritten
    assert cache.get(state, more).tolist() == state.indices(more).tolist()


def test_a_row_not_yet_indexed_is_looked_up_once_it_is():
    """The state appends a new item's row before indexing its id; a call in between must not cache the row as
    covered (it would stay unknown for good)."""
    state = _state(["a", "b"])
    ids = np.array(["a", "b", "z"], dtype=object)
    cache = StateRows()
    cache.get(state, ids)
    state.apply_inventory("new_item", "z", 3, attrs=ATTRS)
    row = state.index.pop("z")                              # as between the two steps of the state's append
    assert cache.get(state, ids).tolist() == [0, 1, -1]
    state.index["z"] = row
    assert cache.get(state, ids).tolist() == [0, 1, row]
