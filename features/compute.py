"""`compute_features`: the only code that turns raw inputs into model features (offline and online alike)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from recs.features.snapshot import Snapshot
from recs.features.spec import DEFAULTS, FEATURE_NAMES

DAY_US = 86_400 * 10**6


@dataclass
class ItemAttrs:
    """Static item attributes by id (category, subcategory), for the session items of a request."""

    index: dict[str, int]
    category: np.ndarray
    subcategory: np.ndarray

    @classmethod
    def from_arrays(cls, item_ids, category, subcategory) -> "ItemAttrs":
        return cls({i: j for j, i in enumerate(item_ids)}, np.asarray(category, dtype=object),
                   np.asarray(subcategory, dtype=object))


@dataclass
class RowInputs:
    """Inputs of n (request, candidate item) rows. Per-request values are repeated per row.

    All arrays have shape (n,); `request_of_row` indexes `session_items` (one tuple per request).
    """

    item_ids: np.ndarray
    ts_us: np.ndarray
    created_us: np.ndarray
    price: np.ndarray
    stock: np.ndarray
    category: np.ndarray
    subcategory: np.ndarray
    brand: np.ndarray
    title: np.ndarray
    user_ids: np.ndarray
    is_search: np.ndarray
    prefix: np.ndarray
    request_of_row: np.ndarray
    session_items: list[tuple[str, ...]]
    retrieval: dict[str, np.ndarray] = field(default_factory=dict)   # emb_score (NaN unknown), covisit_score, ...
    position: np.ndarray | None = None     # logged position (training rows only); None when scoring -> 0
    codes: np.ndarray | None = None        # (n, 4) `item_codes` of the rows when the caller has them (else computed)

    ROW_FIELDS = ("item_ids", "ts_us", "created_us", "price", "stock", "category", "subcategory", "brand", "title",
                  "user_ids", "is_search", "prefix", "request_of_row")

    def take(self, mask: np.ndarray) -> "RowInputs":
        """The rows selected by a boolean mask (or index array); `session_items` stays indexed by request."""
        from dataclasses import replace

        return replace(self, **{n: getattr(self, n)[mask] for n in self.ROW_FIELDS},
                       retrieval={k: v[mask] for k, v in self.retrieval.items()},
                       position=self.position[mask] if self.position is not None else None,
                       codes=self.codes[mask] if self.codes is not None else None)


CODE_COLUMNS = ("subcategory", "category", "brand", "snapshot_row")


def item_codes(snap: Snapshot, item_ids, category, subcategory, brand) -> np.ndarray:
    """(n, 4) int64: the items' vocabulary codes (subcategory, category, brand) and snapshot rows (-1: unknown).

    They depend only on static item attributes, so the online path computes them once per item (features/online.py)
    and passes them in `RowInputs.codes`; `compute_features` computes them itself when they are not given."""
    out = np.empty((len(item_ids), len(CODE_COLUMNS)), dtype=np.int64)
    out[:, 0] = snap.vocab.encode("subcategory", subcategory)
    out[:, 1] = snap.vocab.encode("category", category)
    out[:, 2] = snap.vocab.encode("brand", brand)
    out[:, 3] = snap.item_rows(item_ids)
    return out


def word_prefix_matcher(p: str):
    """A test `f(text) -> bool`: does a word of `text.lower().split()` start with `p` (already lower-cased)?

    The same answer as splitting, with one regex search: a word starts at the text's start or after whitespace
    (`\\s` and `str.split` agree on every code point), and a `p` holding whitespace starts no word."""
    if any(c.isspace() for c in p):
        return lambda text: False
    if not p:
        return lambda text: bool(text.split())
    search = re.compile(r"(?:^|(?<=\s))" + re.escape(p)).search
    return lambda text: search(text.lower()) is not None


def _prefix_features(prefix: np.ndarray, subcat: np.ndarray, title: np.ndarray) -> tuple[np.ndarray, ...]:
    n = len(prefix)
    plen = np.zeros(n, dtype=np.float32)
    m_sub = np.zeros(n, dtype=np.float32)
    m_title = np.zeros(n, dtype=np.float32)
    memo: dict[tuple[str, str], float] = {}            # (prefix, subcategory) -> match
    matchers: dict[str, object] = {}                   # prefix -> title matcher
    for j in range(n):
        p = prefix[j]
        if not p:
            continue
        p = p.lower()
        plen[j] = len(p)
        key = (p, subcat[j])
        m = memo.get(key)
        if m is None:
            m = memo[key] = float(str(subcat[j]).lower().startswith(p))
        m_sub[j] = m
        match = matchers.get(p)
        if match is None:
            match = matchers[p] = word_prefix_matcher(p)
        m_title[j] = float(match(str(title[j])))
    return plen, m_sub, m_title


def _session_features(inp: RowInputs, attrs: ItemAttrs) -> tuple[np.ndarray, ...]:
    n = len(inp.item_ids)
    n_items = np.zeros(n, dtype=np.float32)
    cat_share = np.zeros(n, dtype=np.float32)
    sub_share = np.zeros(n, dtype=np.float32)
    seen = np.zeros(n, dtype=np.float32)
    order = np.argsort(inp.request_of_row, kind="stable")
    bounds = np.flatnonzero(np.diff(inp.request_of_row[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows) == 0:
            continue
        items = inp.session_items[inp.request_of_row[rows[0]]]
        if not items:
            continue
        idx = [attrs.index[i] for i in items if i in attrs.index]
        cats = attrs.category[idx]
        subs = attrs.subcategory[idx]
        k = max(len(items), 1)
        n_items[rows] = len(items)
        cat_share[rows] = (inp.category[rows][:, None] == cats[None, :]).sum(axis=1) / k
        sub_share[rows] = (inp.subcategory[rows][:, None] == subs[None, :]).sum(axis=1) / k
        seen[rows] = np.isin(inp.item_ids[rows], np.asarray(items, dtype=object))
    return n_items, cat_share, sub_share, seen


def _nan_to(v: np.ndarray, default: float) -> np.ndarray:
    """`np.nan_to_num(v, nan=default)`, cheaper for the usual float array without infinities."""
    v = np.asarray(v)
    if v.dtype.kind != "f":
        return np.nan_to_num(v, nan=default)
    out = v.copy()
    out[np.isnan(out)] = default
    return out if np.isfinite(out).all() else np.nan_to_num(out, nan=default)


def _user_rows(snap: Snapshot, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Snapshot rows of the rows' users and whether each is anonymous; one look-up when all rows share a user."""
    n = len(user_ids)
    if n and isinstance(user_ids, np.ndarray):
        first = user_ids[0]
        if first is None or isinstance(first, str):
            same = np.equal(user_ids, None) if first is None else (user_ids == first)
            if same.all():
                return (np.full(n, snap.user_rows([first])[0], dtype=np.int64),
                        np.full(n, float(first is None), dtype=np.float32))
    return snap.user_rows(user_ids), np.array([u is None for u in user_ids], dtype=np.float32)


def compute_features(inp: RowInputs, snap: Snapshot, attrs: ItemAttrs) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) float32 matrix in spec order; missing inputs take the spec's default."""
    n = len(inp.item_ids)
    f: dict[str, np.ndarray] = {}
    age = (inp.ts_us - inp.created_us) / DAY_US
    f["item_age_days"] = age
    f["is_new_item"] = (age < 3).astype(np.float32)
    logp = np.log(np.maximum(inp.price.astype(np.float64), 1e-6))
    f["log_price"] = logp
    codes = inp.codes if inp.codes is not None else item_codes(snap, inp.item_ids, inp.category, inp.subcategory,
                                                                  inp.brand)
    sub, cat, brand, irow = codes[:, 0], codes[:, 1], codes[:, 2], codes[:, 3]
    rel = np.where(sub >= 0, logp - snap.subcat_log_price[np.maximum(sub, 0)], 0.0)
    f["price_rel_subcat"] = rel
    f["log_stock"] = np.log1p(np.maximum(inp.stock.astype(np.float64), 0))
    known = irow >= 0
    ir = np.maximum(irow, 0)
    for name, key in (("item_clicks_1d", "clicks_1d"), ("item_clicks_7d", "clicks_7d"),
                      ("item_purchases_7d", "purchases_7d"), ("item_impressions_7d", "impressions_7d"),
                      ("item_coec", "coec")):
        f[name] = np.where(known, snap.item[key][ir], DEFAULTS[name])
    snap_price = np.where(known, snap.item["price"][ir], np.nan)
    f["price_change"] = np.where(known & (snap_price > 0), logp - np.log(np.where(snap_price > 0, snap_price, 1)), 0)
    urow, anonymous = _user_rows(snap, inp.user_ids)
    ur = np.maximum(urow, 0)
    seen = urow >= 0                           # the user has impressions or positive events before the snapshot
    uk = seen & (snap.user_n[ur] > 0)          # ... positive events: the affinity features exist
    f["user_n_events"] = np.where(uk, snap.user_n[ur], 0.0)
    f["user_cat_affinity"] = np.where(uk & (cat >= 0), snap.user_cat[ur, np.maximum(cat, 0)], 0.0)
    f["user_subcat_affinity"] = np.where(uk & (sub >= 0), snap.user_subcat[ur, np.maximum(sub, 0)], 0.0)
    f["user_cat_exposure"] = np.where(seen & (cat >= 0), snap.user_cat_expo[ur, np.maximum(cat, 0)], 0.0)
    f["user_subcat_exposure"] = np.where(seen & (sub >= 0), snap.user_subcat_expo[ur, np.maximum(sub, 0)], 0.0)
    shown, clicked = snap.user_item_counts(urow, irow)
    f["user_item_shown"], f["user_item_clicked"] = np.log1p(shown), np.log1p(clicked)
    f["user_brand_affinity"] = np.where(uk & (brand >= 0), snap.user_brand[ur, np.maximum(brand, 0)], 0.0)
    f["user_price_gap"] = np.where(uk, rel - snap.user_price[ur], 0.0)
    (f["session_n_items"], f["session_cat_share"], f["session_subcat_share"],
     f["session_seen"]) = _session_features(inp, attrs)
    f["is_search"] = inp.is_search.astype(np.float32)
    f["prefix_len"], f["prefix_match_subcat"], f["prefix_match_title"] = _prefix_features(
        inp.prefix, inp.subcategory, inp.title)
    f["is_anonymous"] = anonymous
    f["position"] = inp.position if inp.position is not None else np.zeros(n, dtype=np.float32)
    emb = inp.retrieval.get("emb_score")
    f["emb_known"] = (~np.isnan(emb)).astype(np.float32) if emb is not None else np.zeros(n, np.float32)
    f["emb_score"] = _nan_to(emb, DEFAULTS["emb_score"]) if emb is not None else np.zeros(n)
    for name in ("emb_subcat_score", "cm_score", "cm_pop_score", "covisit_score", "content_score", "n_sources",
                 "best_source_rank"):
        v = inp.retrieval.get(name)
        f[name] = _nan_to(v, DEFAULTS[name]) if v is not None else np.full(n, DEFAULTS[name])
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    for j, name in enumerate(FEATURE_NAMES):
        out[:, j] = f[name]
    return out
