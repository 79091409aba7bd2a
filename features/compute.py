"""`compute_features`: the only code that turns raw inputs into model features (offline and online alike)."""
from __future__ import annotations

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

    ROW_FIELDS = ("item_ids", "ts_us", "created_us", "price", "stock", "category", "subcategory", "brand", "title",
                  "user_ids", "is_search", "prefix", "request_of_row")

    def take(self, mask: np.ndarray) -> "RowInputs":
        """The rows selected by a boolean mask (or index array); `session_items` stays indexed by request."""
        from dataclasses import replace

        return replace(self, **{n: getattr(self, n)[mask] for n in self.ROW_FIELDS},
                       retrieval={k: v[mask] for k, v in self.retrieval.items()},
                       position=self.position[mask] if self.position is not None else None)


def _prefix_features(prefix: np.ndarray, subcat: np.ndarray, title: np.ndarray) -> tuple[np.ndarray, ...]:
    n = len(prefix)
    plen = np.zeros(n, dtype=np.float32)
    m_sub = np.zeros(n, dtype=np.float32)
    m_title = np.zeros(n, dtype=np.float32)
    for j in range(n):
        p = prefix[j]
        if not p:
            continue
        p = p.lower()
        plen[j] = len(p)
        m_sub[j] = float(str(subcat[j]).lower().startswith(p))
        m_title[j] = float(any(t.startswith(p) for t in str(title[j]).lower().split()))
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


def compute_features(inp: RowInputs, snap: Snapshot, attrs: ItemAttrs) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) float32 matrix in spec order; missing inputs take the spec's default."""
    n = len(inp.item_ids)
    f: dict[str, np.ndarray] = {}
    age = (inp.ts_us - inp.created_us) / DAY_US
    f["item_age_days"] = age
    f["is_new_item"] = (age < 3).astype(np.float32)
    logp = np.log(np.maximum(inp.price.astype(np.float64), 1e-6))
    f["log_price"] = logp
    sub = snap.vocab.encode("subcategory", inp.subcategory)
    cat = snap.vocab.encode("category", inp.category)
    brand = snap.vocab.encode("brand", inp.brand)
    rel = np.where(sub >= 0, logp - snap.subcat_log_price[np.maximum(sub, 0)], 0.0)
    f["price_rel_subcat"] = rel
    f["log_stock"] = np.log1p(np.maximum(inp.stock.astype(np.float64), 0))
    irow = snap.item_rows(inp.item_ids)
    known = irow >= 0
    ir = np.maximum(irow, 0)
    for name, key in (("item_clicks_1d", "clicks_1d"), ("item_clicks_7d", "clicks_7d"),
                      ("item_purchases_7d", "purchases_7d"), ("item_impressions_7d", "impressions_7d"),
                      ("item_coec", "coec")):
        f[name] = np.where(known, snap.item[key][ir], DEFAULTS[name])
    snap_price = np.where(known, snap.item["price"][ir], np.nan)
    f["price_change"] = np.where(known & (snap_price > 0), logp - np.log(np.where(snap_price > 0, snap_price, 1)), 0)
    urow = snap.user_rows(inp.user_ids)
    uk = urow >= 0
    ur = np.maximum(urow, 0)
    f["user_n_events"] = np.where(uk, snap.user_n[ur], 0.0)
    f["user_cat_affinity"] = np.where(uk & (cat >= 0), snap.user_cat[ur, np.maximum(cat, 0)], 0.0)
    f["user_subcat_affinity"] = np.where(uk & (sub >= 0), snap.user_subcat[ur, np.maximum(sub, 0)], 0.0)
    f["user_brand_affinity"] = np.where(uk & (brand >= 0), snap.user_brand[ur, np.maximum(brand, 0)], 0.0)
    f["user_price_gap"] = np.where(uk, rel - snap.user_price[ur], 0.0)
    (f["session_n_items"], f["session_cat_share"], f["session_subcat_share"],
     f["session_seen"]) = _session_features(inp, attrs)
    f["is_search"] = inp.is_search.astype(np.float32)
    f["prefix_len"], f["prefix_match_subcat"], f["prefix_match_title"] = _prefix_features(
        inp.prefix, inp.subcategory, inp.title)
    f["is_anonymous"] = np.array([u is None for u in inp.user_ids], dtype=np.float32)
    f["position"] = inp.position if inp.position is not None else np.zeros(n, dtype=np.float32)
    emb = inp.retrieval.get("emb_score")
    f["emb_known"] = (~np.isnan(emb)).astype(np.float32) if emb is not None else np.zeros(n, np.float32)
    f["emb_score"] = np.nan_to_num(emb, nan=DEFAULTS["emb_score"]) if emb is not None else np.zeros(n)
    for name in ("emb_subcat_score", "cm_score", "covisit_score", "content_score", "n_sources", "best_source_rank"):
        v = inp.retrieval.get(name)
        f[name] = np.nan_to_num(v, nan=DEFAULTS[name]) if v is not None else np.full(n, DEFAULTS[name])
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    for j, name in enumerate(FEATURE_NAMES):
        out[:, j] = f[name]
    return out
