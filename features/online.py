"""Online path: feature inputs for one request's candidates, read from the live `OnlineState`."""
from __future__ import annotations

import numpy as np

from recs.datasets.online_state import OnlineState, to_us
from recs.datasets.policy import Request
from recs.features.compute import ItemAttrs, RowInputs, item_codes
from recs.features.snapshot import Snapshot


def attrs_from_state(state: OnlineState) -> ItemAttrs:
    """Static attributes of every item known to the state (shares the state's own arrays)."""
    return ItemAttrs(state.index, state.category, state.subcategory)


class StateCodes:
    """`item_codes` of every row of a live state against one snapshot, computed once (items are only appended;
    their category, subcategory and brand never change), extended when the state grows."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._state: OnlineState | None = None
        self._codes = np.zeros((0, 4), dtype=np.int64)

    def get(self, state: OnlineState) -> np.ndarray:
        """(len(state), 4) codes of the state's rows."""
        codes, n = self._codes, len(state)
        if state is not self._state:
            codes, self._state = codes[:0], state
        if len(codes) < n:
            sl = slice(len(codes), n)
            new = item_codes(self.snapshot, state.item_ids[sl], state.category[sl], state.subcategory[sl],
                             state.brand[sl])
            codes = np.concatenate([codes, new]) if len(codes) else new
            self._codes = codes
        return codes


def online_inputs(request: Request, item_ids, state: OnlineState,
                  retrieval: dict[str, np.ndarray] | None = None, rows: np.ndarray | None = None,
                  codes: StateCodes | None = None) -> RowInputs:
    """Inputs for the rows (request, item) of `item_ids`, all known to `state`, at the request's time.

    `rows`: the items' state rows when the caller already looked them up; `codes`: the per-row `item_codes` cache
    (the same values `compute_features` would compute, without the per-request look-ups)."""
    ids = np.asarray(list(item_ids), dtype=object)
    idx = state.indices(ids) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(idx) != len(ids):
        raise ValueError(f"rows: {len(idx)} given for {len(ids)} items")
    if np.any(idx < 0):
        raise KeyError(f"items unknown to the online state: {list(ids[idx < 0][:3])}")
    n = len(ids)
    ts_us = to_us(request.ts)
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
        codes=codes.get(state)[idx] if codes is not None else None,
    )
