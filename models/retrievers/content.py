"""Content retriever: item attribute vectors and a profile of the request's seed items; reaches brand-new items.

An item's vector is the L2-normalised sum of weighted blocks, each hashed (CRC32) into `n_features` columns:
category, subcategory, brand, price band (quantile band of log price within the category, edges fixed at fit) and
title tokens (TF-IDF, idf fixed at fit; a token unseen at fit gets the largest idf). A request's profile is the
recency-weighted sum of its session items' and the user's history items' vectors; an item scores its cosine with
the profile, times a freshness boost for recently created items. Items added with `add_items` (e.g. from a
`new_item` inventory event) are retrievable at once, without a refit.
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.datasets.io import atomic_dir
from recs.models.base import Candidates, RetrievalQuery, Retriever, TrainingData
from recs.models.retrievers._common import (US_PER_DAY, check_positive, read_meta, read_parquet, seed_items,
                                            StateRows, take_eligible, to_us, top_indices, weighted_events,
                                            write_meta)
from recs.models.retrievers._growing_csr import GrowingCSR

ATTRS = ("item_id", "category", "subcategory", "brand", "title", "price", "created_at")
CSC_SLACK = 256     # items added after the column-major copy was built that are scored from a small copy of their own
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass
class ContentConfig:
    """Block weights of the item vector, and how the request profile and freshness boost are formed."""

    n_features: int = 2**18               # hashed feature columns
    w_category: float = 0.5
    w_subcategory: float = 1.0
    w_brand: float = 0.7
    w_price: float = 0.4
    w_title: float = 0.5
    n_price_bands: int = 5                # quantile bands of log price per category
    drop_numeric_tokens: bool = True      # title tokens made only of digits carry no meaning here
    session_weight: float = 2.0
    history_weight: float = 1.0
    recency_decay: float = 0.85
    max_seed_items: int = 30
    new_item_boost: float = 0.2           # score * (1 + boost * 0.5 ** (age / half-life)) for new items
    new_item_half_life_days: float = 7.0  # (applied to items younger than 10 half-lives)
    popularity_weight: float = 0.1        # score * (1 + weight * log1p(w) / log1p(max w)), w: weighted interactions
    exclude_seen: bool = True

    def __post_init__(self) -> None:
        check_positive(self, "n_features", "n_price_bands", "max_seed_items", "new_item_half_life_days",
                       "recency_decay")
        for name in ("w_category", "w_subcategory", "w_brand", "w_price", "w_title", "session_weight",
                     "history_weight", "new_item_boost", "popularity_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.recency_decay > 1:
            raise ValueError(f"recency_decay: must be in (0, 1], got {self.recency_decay}")
        if self.n_features > 2**31 - 1:
            raise ValueError(f"n_features: must be < 2**31, got {self.n_features}")


def _hash(tokens: list[str], n: int) -> np.ndarray:
    return np.array([zlib.crc32(t.encode("utf-8")) % n for t in tokens], dtype=np.int64)


class ContentRetriever(Retriever):
    """Items whose attributes resemble the request's session and history items."""

    kind: ClassVar[str] = "content"

    def __init__(self, config: ContentConfig | None = None) -> None:
        self.config = config or ContentConfig()
        self._rows = StateRows()
        self.as_of: datetime | None = None
        self.attrs: pl.DataFrame | None = None
        self.idf: dict[str, float] = {}
        self.price_edges: dict[str, list[float]] = {}

    # ---- vectors ---------------------------------------------------------------------------------------------
    def _fit_vocab(self, catalog: pl.DataFrame) -> None:
        cfg = self.config
        n = catalog.height
        words = (catalog.select(pl.col("title").str.to_lowercase().str.extract_all(_TOKEN.pattern).alias("t"))
                 .with_row_index("r").explode("t").drop_nulls("t").unique(["r", "t"]))
        if cfg.drop_numeric_tokens:
            words = words.filter(~pl.col("t").str.contains(r"^\d+$"))
        df = words.group_by("t").len().sort("t")
        self.idf = {t: float(np.log((1 + n) / (1 + c)) + 1.0) for t, c in df.iter_rows()}
        self.default_idf = float(np.log(1 + n) + 1.0)
        qs = np.linspace(0, 1, cfg.n_price_bands + 1)[1:-1]
        logp = catalog.select("category", pl.col("price").log().alias("lp"))
        self.price_edges = {c: np.quantile(g["lp"].to_numpy(), qs).tolist()
                            for (c,), g in logp.group_by("category")}
        self.price_edges[""] = np.quantile(logp["lp"].to_numpy(), qs).tolist() if n else [0.0] * len(qs)

    def _price_bands(self, attrs: pl.DataFrame) -> np.ndarray:
        cats = np.array(attrs["category"].to_list(), dtype=object)
        logp = np.log(np.maximum(attrs["price"].to_numpy().astype(np.float64), 1e-9))
        band = np.zeros(len(cats), dtype=np.int64)
        for c in np.unique(cats.astype(str)):
            m = cats == c
            band[m] = np.searchsorted(self.price_edges.get(c, self.price_edges.get("", [])), logp[m])
        return band

    def _vectors(self, attrs: pl.DataFrame) -> sp.csr_matrix:
        """Hashed, weighted, row-normalised attribute vectors of catalog rows (vectorised with polars)."""
        cfg = self.config
        base = attrs.select("category", "subcategory", "brand", "title").with_row_index("r").with_columns(
            pl.Series("band", self._price_bands(attrs)))
        blocks = [base.select("r", pl.concat_str([pl.lit(p), pl.col(c)]).alias("tok"), pl.lit(w).alias("v"))
                  for p, c, w in (("c:", "category", cfg.w_category), ("s:", "subcategory", cfg.w_subcategory),
                                  ("b:", "brand", cfg.w_brand))]
        blocks.append(base.select("r", pl.concat_str([pl.lit("p:"), pl.col("category"), pl.lit(":"),
                                                      pl.col("band").cast(pl.Utf8)]).alias("tok"),
                                  pl.lit(cfg.w_price).alias("v")))
        if cfg.w_title > 0:
            words = (base.select("r", pl.col("title").str.to_lowercase().str.extract_all(_TOKEN.pattern).alias("t"))
                     .explode("t").drop_nulls("t").unique(["r", "t"]).sort(["r", "t"]))
            if cfg.drop_numeric_tokens:
                words = words.filter(~pl.col("t").str.contains(r"^\d+$"))
            idf = pl.DataFrame({"t": list(self.idf), "idf": list(self.idf.values())},
                               schema={"t": pl.Utf8, "idf": pl.Float64})
            words = (words.join(idf, on="t", how="left").with_columns(pl.col("idf").fill_null(self.default_idf))
                     .with_columns((cfg.w_title * pl.col("idf") / (pl.col("idf") ** 2).sum().over("r").sqrt())
                                   .alias("v")))
            blocks.append(words.select("r", pl.concat_str([pl.lit("t:"), pl.col("t")]).alias("tok"), "v"))
        entries = pl.concat([b.with_columns(pl.col("r").cast(pl.Int64), pl.col("v").cast(pl.Float64))
                             for b in blocks]).filter(pl.col("v") > 0)
        vocab = entries.select(pl.col("tok").unique())
        vocab = vocab.with_columns(pl.Series("col", _hash(vocab["tok"].to_list(), cfg.n_features)))
        # a fixed order (polars' unique / join orders vary between runs): the float sums, hence the scores and
        # their ties, are then the same on every load of the same model
        entries = entries.join(vocab, on="tok").sort(["r", "col", "tok"])
        m = sp.csr_matrix((entries["v"].to_numpy(), (entries["r"].to_numpy(), entries["col"].to_numpy())),
                          shape=(attrs.height, cfg.n_features))
        m.sum_duplicates()
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        return (sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m).tocsr()

    def _set_items(self, attrs: pl.DataFrame, X: sp.csr_matrix) -> None:
        self.attrs = attrs
        self.X = X.tocsr()
        self._grow: GrowingCSR | None = None     # made on the first `add_items`
        self._Xc: sp.csc_matrix | None = None    # column-major copy of the first `_n_csc` rows, for scoring
        self._n_csc = 0
        self._Xc_tail: sp.csc_matrix | None = None   # and of the rows added since
        self.item_ids = np.array(attrs["item_id"].to_list(), dtype=object)
        self._pos = {iid: j for j, iid in enumerate(self.item_ids.tolist())}
        self.created_us = attrs["created_at"].dt.epoch("us").to_numpy().astype(np.int64)
        pop = np.log1p(attrs["pop"].to_numpy().astype(np.float64))
        self._pop_mult = 1.0 + self.config.popularity_weight * pop / (pop.max() if len(pop) and pop.max() > 0 else 1)
        self._by_created = np.argsort(self.created_us, kind="stable")     # serving: the young items by one search
        self._created_sorted = self.created_us[self._by_created]
        self._rows = StateRows()      # a new item array (fit or load on this object): nothing cached applies

    def _append_items(self, rows: pl.DataFrame, X: sp.csr_matrix) -> None:
        """What `_set_items(attrs + rows, vstack(X, rows' vectors))` gives, in time that grows with the new rows,
        not the catalog (amortised): the CSR grows in place, the column-major copy is rebuilt only after many
        additions (`_dense_scores`), the creation order takes the new items by binary search. New items have
        no events (`pop` 0), so the popularity multipliers of the others do not change and theirs is 1."""
        if self._grow is None:
            self._grow = GrowingCSR(self.X)
        self._grow.append(X)
        self.X = self._grow.matrix()
        self._Xc_tail = None
        n0 = len(self.item_ids)
        ids = rows["item_id"].to_list()
        self.attrs = pl.concat([self.attrs, rows], rechunk=False)
        self.item_ids = np.concatenate([self.item_ids, np.array(ids, dtype=object)])
        self._pos.update((iid, n0 + j) for j, iid in enumerate(ids))
        created = rows["created_at"].dt.epoch("us").to_numpy().astype(np.int64)
        self.created_us = np.concatenate([self.created_us, created])
        self._pop_mult = np.concatenate([self._pop_mult, np.ones(len(ids))])
        order = np.argsort(created, kind="stable")           # ties: after the older rows, as a stable argsort
        at = np.searchsorted(self._created_sorted, created[order], side="right")
        self._by_created = np.insert(self._by_created, at, n0 + order)
        self._created_sorted = np.insert(self._created_sorted, at, created[order])
        self._rows.items_appended(self.item_ids)

    @staticmethod
    def _clean(catalog: pl.DataFrame, where: str) -> pl.DataFrame:
        missing = [c for c in ATTRS if c not in catalog.columns]
        if missing:
            raise ValueError(f"{where}: missing column(s) {', '.join(missing)}")
        df = catalog.select(ATTRS).unique("item_id", keep="last", maintain_order=True)
        bad = df.filter(pl.any_horizontal(pl.col(c).is_null() for c in ATTRS) | (pl.col("price") <= 0))
        if bad.height:
            row = bad.row(0, named=True)
            field = next((c for c in ATTRS if row[c] is None), "price")
            raise ValueError(f"{where}: item {row['item_id']!r}: field {field!r} is null or invalid")
        return df

    # ---- fitting ---------------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> "ContentRetriever":
        """Vectors for every catalog item (also items created after `as_of`: they need no interactions)."""
        attrs = self._clean(data.catalog, "catalog")
        self._fit_vocab(attrs)
        counts = weighted_events(data, {"click": 1.0, "add_to_cart": 1.0, "purchase": 1.0}).group_by("item_id").agg(
            pl.col("w").sum().alias("pop"))
        attrs = attrs.join(counts, on="item_id", how="left").with_columns(pl.col("pop").fill_null(0.0))
        self._set_items(attrs, self._vectors(attrs))
        self.as_of = data.as_of
        return self

    def add_items(self, catalog_rows: pl.DataFrame) -> int:
        """Add new catalog rows (ids already known are ignored); returns how many were added."""
        self._ready()
        rows = self._clean(catalog_rows, "add_items")
        rows = rows.filter(pl.Series([i not in self._pos for i in rows["item_id"].to_list()], dtype=pl.Boolean))
        if rows.height == 0:
            return 0
        rows = rows.with_columns(pl.col("created_at").cast(self.attrs["created_at"].dtype), pl.lit(0.0).alias("pop"))
        self._append_items(rows, self._vectors(rows))
        return rows.height

    def _ready(self) -> None:
        if self.attrs is None:
            raise RuntimeError("ContentRetriever: call fit() or load() first")

    # ---- serving ---------------------------------------------------------------------------------------------
    @staticmethod
    def _gather(m: sp.csr_matrix | sp.csc_matrix, major: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
        """Dense `weights @ m[major]` (rows of a CSR / columns of a CSC), summed with one bincount."""
        ptr = m.indptr
        idx = [m.indices[ptr[j]:ptr[j + 1]] for j in major]
        val = [m.data[ptr[j]:ptr[j + 1]] * w for j, w in zip(major, weights)]
        if not idx:
            return np.zeros(n)
        return np.bincount(np.concatenate(idx), weights=np.concatenate(val), minlength=n)

    def profile(self, query: RetrievalQuery) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The request profile as (feature columns, weights) plus the seed item ids it was built from."""
        cfg = self.config
        ids, w = seed_items(query, cfg.session_weight, cfg.history_weight, cfg.recency_decay, cfg.max_seed_items)
        idx = np.array([self._pos.get(i, -1) for i in ids], dtype=np.int64)
        known = idx >= 0
        if not known.any():
            return np.zeros(0, np.int64), np.zeros(0), ids
        ptr = self.X.indptr
        cols = np.concatenate([self.X.indices[ptr[j]:ptr[j + 1]] for j in idx[known]])
        vals = np.concatenate([self.X.data[ptr[j]:ptr[j + 1]] * wj for j, wj in zip(idx[known], w[known])])
        cols, inv = np.unique(cols, return_inverse=True)
        vals = np.bincount(inv, weights=vals)
        norm = np.linalg.norm(vals)
        return cols.astype(np.int64), vals / (norm if norm > 0 else 1.0), ids

    def _dense_scores(self, cols: np.ndarray, vals: np.ndarray, ts: datetime) -> np.ndarray:
        """Score of every item, boosts applied (0 for items sharing no feature with the profile).

        Elementwise the same operations as scoring only the items sharing a feature, on whole arrays: the boost
        touches only the items created in the last 10 half-lives, found by one binary search over creation times."""
        n = len(self.item_ids)
        if self._Xc is None or n - self._n_csc > max(CSC_SLACK, self._n_csc // 64):
            self._Xc, self._n_csc, self._Xc_tail = self.X.tocsc(), n, None
        s = self._gather(self._Xc, cols, vals, self._n_csc)
        if n > self._n_csc:     # items added since: the same sums, in the same order, from a small copy
            if self._Xc_tail is None:
                self._Xc_tail = self.X[self._n_csc:n].tocsc()
            s = np.concatenate([s, self._gather(self._Xc_tail, cols, vals, n - self._n_csc)])
        s *= self._pop_mult
        cfg = self.config
        if cfg.new_item_boost > 0:      # only items younger than 10 half-lives: older ones gain < boost / 1000
            t = to_us(ts)
            horizon = 10 * cfg.new_item_half_life_days
            # a superset (one day of margin) by creation time, then the exact rule on it
            first = np.searchsorted(self._created_sorted, t - int((horizon + 1) * US_PER_DAY))
            rows = self._by_created[first:]
            rows = rows[s[rows] > 0]    # the others score 0 whatever the boost
            age_days = np.maximum(t - self.created_us[rows], 0) / US_PER_DAY
            young = age_days < horizon
            rows = rows[young]
            s[rows] *= 1.0 + cfg.new_item_boost * 0.5 ** (age_days[young] / cfg.new_item_half_life_days)
        return s

    def _scores(self, cols: np.ndarray, vals: np.ndarray, ts: datetime) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the items sharing a feature with the profile, boosts applied."""
        s = self._dense_scores(cols, vals, ts)
        rows = np.flatnonzero(s > 0)
        return rows, s[rows]

    def similarity(self, query: RetrievalQuery, item_ids) -> np.ndarray:
        """Cosine of given items with the request profile (no boosts; NaN for unknown items), a ranker feature."""
        self._ready()
        cols, vals, _ = self.profile(query)
        idx = np.array([self._pos.get(i, -1) for i in item_ids], dtype=np.int64)
        out = np.full(len(idx), np.nan)
        known = idx >= 0
        if known.any():
            out[known] = np.asarray(self.X[idx[known]][:, cols] @ vals).ravel() if len(cols) else 0.0
        return out

    def retrieve(self, query: RetrievalQuery, k: int) -> Candidates:
        self._ready()
        cols, vals, seeds = self.profile(query)
        if len(cols) == 0 or k <= 0:
            return Candidates.empty(self.kind)
        s = self._dense_scores(cols, vals, query.request.ts)
        exclude = seeds if self.config.exclude_seen else ()
        n = 4 * k + len(exclude) + 100
        while True:
            top = top_indices(s, n)
            rows = self._rows.get(query.state, self.item_ids)[top] if query.state is not None else None
            out = take_eligible(self.item_ids[top], s[top], query, k, self.kind, exclude=exclude, presorted=True,
                                rows=rows)
            if len(out) >= k:
                return out
            n_pos = int(np.count_nonzero(s > 0))   # the head was not enough: every item with a positive score
            if n >= n_pos:
                return out
            n = n_pos

    # ---- persistence -----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        self._ready()
        with atomic_dir(path, overwrite=True) as tmp:
            self.attrs.write_parquet(tmp / "items.parquet")
            pl.DataFrame({"token": list(self.idf), "idf": list(self.idf.values())},
                         schema={"token": pl.Utf8, "idf": pl.Float64}).write_parquet(tmp / "idf.parquet")
            write_meta(tmp, self.kind, asdict(self.config),
                       {"as_of": self.as_of.isoformat(), "default_idf": self.default_idf,
                        "price_edges": json.loads(json.dumps(self.price_edges))})

    @classmethod
    def load(cls, path: Path) -> "ContentRetriever":
        meta = read_meta(path, cls.kind)
        try:
            r = cls(ContentConfig(**meta["config"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{Path(path) / 'meta.json'}: field 'config': {e}") from None
        r.as_of = datetime.fromisoformat(meta["as_of"])
        r.default_idf = float(meta["default_idf"])
        r.price_edges = {str(c): [float(x) for x in e] for c, e in meta["price_edges"].items()}
        idf = read_parquet(path, "idf.parquet", ("token", "idf"))
        r.idf = dict(zip(idf["token"].to_list(), idf["idf"].to_list()))
        attrs = read_parquet(path, "items.parquet", (*ATTRS, "pop"))
        r._set_items(attrs, r._vectors(attrs))
        return r
