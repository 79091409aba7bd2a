"""Helpers shared by the classic retrievers: time, eligibility filtering, affinities, save/load metadata."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from recs.datasets.online_state import OnlineState, to_us
from recs.models.base import Candidates, RetrievalQuery, TrainingData

FORMAT_VERSION = 1
KIND_WEIGHTS = {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
US_PER_HOUR = 3_600 * 10**6
US_PER_DAY = 24 * US_PER_HOUR


def check_kind_weights(weights: dict[str, float], field: str = "kind_weights") -> None:
    """Raise if `weights` names an unknown interaction kind or holds a negative weight."""
    for kind, w in weights.items():
        if kind not in KIND_WEIGHTS:
            raise ValueError(f"{field}: unknown interaction kind {kind!r} (known: {', '.join(KIND_WEIGHTS)})")
        if w < 0:
            raise ValueError(f"{field}[{kind}]: must be >= 0, got {w}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"{field}: at least one weight must be > 0")


def check_positive(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not v > 0:
            raise ValueError(f"{name}: must be > 0, got {v}")


def check_unit(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}: must be in [0, 1], got {v}")


def weighted_events(data: TrainingData, weights: dict[str, float]) -> pl.DataFrame:
    """Interactions strictly before `as_of` with a `w` column from their kind; events of weight 0 are dropped."""
    need = {"ts", "session_id", "kind", "item_id"}
    missing = need - set(data.interactions.columns)
    if missing:
        raise ValueError(f"interactions: missing column(s) {', '.join(sorted(missing))}")
    as_of = to_us(data.as_of)
    return (data.interactions.lazy()
            .filter(pl.col("ts").dt.epoch("us") < as_of)
            .with_columns(pl.col("kind").replace_strict(weights, default=0.0, return_dtype=pl.Float64).alias("w"))
            .filter(pl.col("w") > 0)
            .collect())


def recency_weights(n: int, decay: float) -> np.ndarray:
    """Weights of `n` items ordered oldest first: the newest weighs 1, each older one `decay` times less."""
    return decay ** np.arange(n - 1, -1, -1, dtype=np.float64)


def seed_items(query: RetrievalQuery, session_weight: float, history_weight: float, decay: float,
               max_items: int) -> tuple[list[str], np.ndarray]:
    """The request's session items and the user's history (newest last) with recency weights; session first."""
    sess = list(query.session_items)[-max_items:]
    in_sess = set(sess)
    hist = [i for i in query.history if i not in in_sess][-max_items:]
    ids = hist + sess
    w = np.concatenate([history_weight * recency_weights(len(hist), decay),
                        session_weight * recency_weights(len(sess), decay)])
    return ids, w


def affinity(keys: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Normalised (sum 1) weight per key (category, subcategory, brand) from weighted seed items."""
    if len(keys) == 0 or weights.sum() <= 0:
        return {}
    uniq, inv = np.unique(keys.astype(str), return_inverse=True)
    tot = np.bincount(inv, weights=weights)
    tot = tot / tot.sum()
    return {str(k): float(v) for k, v in zip(uniq, tot)}


class StateRows:
    """Row of each of a retriever's items in a live `OnlineState` (-1: unknown to it), cached per state.

    A state only ever appends items, so when the same state has grown only its new rows are looked up, and a
    retriever that appends items (`items_appended`) has only those looked up: a new item costs O(1), not
    O(catalog). Another state or another item array rebuilds the cache. Eligibility itself is always read live.
    The cache is one tuple (state, item ids, state size, rows) replaced whole, never mutated, so two overlapping
    calls (threads) each see a consistent one; the id -> position map only grows and is bounds-checked.
    """

    def __init__(self) -> None:
        self._cache: tuple | None = None        # (state, item_ids, indexed state rows covered, rows)
        self._pos: tuple | None = None          # (item_ids, retriever item id -> its position in them)

    def get(self, state: OnlineState, item_ids: np.ndarray) -> np.ndarray:
        c = self._cache                         # read once: another call may replace it meanwhile
        n_state = len(state.index)              # rows already indexed (a new row's id is indexed after it is added)
        if c is None or state is not c[0] or item_ids is not c[1] or n_state < c[2]:
            rows = state.indices(item_ids)
        elif n_state > c[2]:
            pos = self._positions(item_ids)
            rows = c[3].copy()                  # readers holding the old array keep a consistent one
            for r in range(c[2], n_state):
                j = pos.get(state.item_ids[r])
                if j is not None and j < len(rows) and rows[j] < 0:
                    rows[j] = r
        else:
            return c[3]
        if self._cache is c:                    # nobody stored a newer entry while this one was computed
            self._cache = (state, item_ids, n_state, rows)
        return rows

    def _positions(self, item_ids: np.ndarray) -> dict[str, int]:
        """Item id -> position in `item_ids`, built once per item array (extended by `items_appended`)."""
        p = self._pos
        if p is None or p[0] is not item_ids:
            p = (item_ids, {i: j for j, i in enumerate(item_ids.tolist())})
            self._pos = p
        return p[1]

    def items_appended(self, item_ids: np.ndarray) -> None:
        """The retriever's item array is now `item_ids`: the previous one plus items at its end."""
        c = self._cache
        if c is None or len(item_ids) < len(c[1]):
            self._cache = None
            return
        state, old_ids, n_state, rows = c
        old = len(old_ids)
        self._cache = (state, item_ids, n_state, np.concatenate([rows, state.indices(item_ids[old:])]))
        p = self._pos
        if p is not None and p[0] is old_ids:
            p[1].update((i, old + j) for j, i in enumerate(item_ids[old:].tolist()))
            self._pos = (item_ids, p[1])


def take_eligible(ids: np.ndarray, scores: np.ndarray, query: RetrievalQuery | None, k: int, source: str,
                  exclude: Iterable[str] = (), presorted: bool = False, rows: np.ndarray | None = None) -> Candidates:
    """Top-`k` of (`ids`, `scores`) that the live state allows at the request time, skipping `exclude`.

    Sorts by score (descending, stable) unless `presorted`; checks eligibility in growing chunks so an
    over-fetch is paid only when the head of the list is ineligible. `rows` (aligned with `ids`) are the items'
    rows in `query.state` when the caller knows them (see `StateRows`), which saves the id look-ups.
    """
    if k <= 0 or len(ids) == 0:
        return Candidates.empty(source)
    if not presorted:
        order = np.argsort(-scores, kind="stable")
        ids, scores = ids[order], scores[order]
        rows = rows[order] if rows is not None else None
    excl = set(exclude)
    state = query.state if query is not None else None
    ts = query.request.ts if query is not None else None
    keep_ids: list[np.ndarray] = []
    keep_sc: list[np.ndarray] = []
    got, start, chunk = 0, 0, k + max(16, k // 4)
    while got < k and start < len(ids):
        cid, csc = ids[start:start + chunk], scores[start:start + chunk]
        ok = np.ones(len(cid), dtype=bool)
        if excl:
            ok &= np.fromiter((i not in excl for i in cid), dtype=bool, count=len(cid))
        if state is not None and ok.any():
            if rows is None:
                ok[ok] = state.is_eligible(cid[ok], ts)
            else:
                r = rows[start:start + chunk]
                known = ok & (r >= 0)
                ok &= known
                if known.any():
                    ok[known] = state.eligible_mask(ts, r[known])
        keep_ids.append(cid[ok])
        keep_sc.append(csc[ok])
        got += int(ok.sum())
        start += chunk
        chunk *= 4
    out_ids = np.concatenate(keep_ids)[:k].astype(object)
    out_sc = np.concatenate(keep_sc)[:k].astype(np.float64)
    return Candidates(out_ids, out_sc, source)


def top_indices(scores: np.ndarray, n: int, floor: float = 0.0) -> np.ndarray:
    """Indices of the `n` largest scores above `floor` (default: the positive ones), best first, ties broken by
    index.

    On a long array the n-th largest is first bounded from below by a strided sample's order statistic, so only
    the few items above that bound are sorted (exact: the bound is used only when at least `n` items reach it)."""
    m = len(scores)
    if n > 0 and m > 4096 and m > 32 * n:
        step = m // 2048
        sample = scores[::step]
        j = min(len(sample) - 1, 2 * n // step + 8)
        bound = np.partition(sample, len(sample) - 1 - j)[len(sample) - 1 - j]   # the sample's (j+1)-th largest
        if bound > floor:
            cand = np.flatnonzero(scores >= bound)
            if len(cand) >= n:
                return cand[np.lexsort((cand, -scores[cand]))[:n]]
    pos = np.flatnonzero(scores > floor)
    if len(pos) > n:
        part = np.argpartition(-scores[pos], n - 1)[:n]
        pos = pos[part]
    order = np.lexsort((pos, -scores[pos]))
    return pos[order]


def write_meta(path: Path, kind: str, config: dict, extra: dict | None = None) -> None:
    meta = {"kind": kind, "format_version": FORMAT_VERSION, "config": config, **(extra or {})}
    (path / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")


def read_meta(path: Path, kind: str) -> dict:
    """`meta.json` of a saved retriever, checked for its kind and format version."""
    f = Path(path) / "meta.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no saved retriever here (meta.json missing)")
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: invalid JSON ({e.msg}, line {e.lineno})") from None
    if meta.get("kind") != kind:
        raise ValueError(f"{f}: field 'kind' is {meta.get('kind')!r}, expected {kind!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{f}: field 'format_version' is {meta.get('format_version')!r}, "
                         f"this build reads {FORMAT_VERSION}")
    return meta


def read_parquet(path: Path, name: str, columns: Sequence[str]) -> pl.DataFrame:
    """A Parquet file of a saved retriever, checked for the columns it must hold."""
    f = Path(path) / name
    if not f.is_file():
        raise FileNotFoundError(f"{f}: missing from the saved retriever")
    df = pl.read_parquet(f)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{f}: missing column(s) {', '.join(missing)}")
    return df
