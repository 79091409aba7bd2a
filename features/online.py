"""Online path: feature inputs for one request's candidates, read from the live `OnlineState`."""
from __future__ import annotations

import numpy as np

from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Request
from recs.features.compute import ItemAttrs, RowInputs


def attrs_from_state(state: OnlineState) -> ItemAttrs:
    """Static attributes of every item known to the state (shares the state's own arrays)."""
    return ItemAttrs(state.index, state.category, state.subcategory)


def online_inputs(request: Request, item_ids, state: OnlineState,
                  retrieval: dict[str, np.ndarray] | None = None) -> RowInputs:
    """Inputs for the rows (request, item) of `item_ids`, all known to `state`, at the request's time."""
    ids = np.asarray(list(item_ids), dtype=object)
    idx = state.indices(ids)
    if np.any(idx < 0):
        raise KeyError(f"items unknown to the online state: {list(ids[idx < 0][:3])}")
    n = len(ids)
    ts_us = int(request.ts.timestamp() * 1_000_000)
    return RowInputs(
        item_ids=ids,
        ts_us=np.full(n, ts_us, dtype=np.int64),
        created_us=state.created_us[idx],
        price=state.price[idx],
        stock=state.stock[idx].astype(np.float64),
        category=state.category[idx],
        subcategory=state.subcategory[idx],
        brand=state.brand[idx],
        title=state.title[idx],
        user_ids=np.full(n, request.user_id, dtype=object),
        is_search=np.full(n, request.surface == "search"),
        prefix=np.full(n, request.query if request.surface == "search" else None, dtype=object),
        request_of_row=np.zeros(n, dtype=np.int64),
        session_items=[tuple(request.recent_items)],
        retrieval=retrieval or {},
    )
