"""Batch features: item and user statistics computed as of a snapshot time from events strictly before it.

The same `build_snapshot` serves training (one snapshot per day, point-in-time) and serving (the snapshot at the
end of the training window, shipped in the bundle).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

SMOOTH = 1.0
COEC_PRIOR = 5.0
PAIR_WINDOW = timedelta(days=28)   # (user, item) shown/clicked counts look back this far: bounded state


@dataclass
class Vocab:
    """Integer codes of categories, subcategories and brands (unknown -> -1)."""

    category: dict[str, int]
    subcategory: dict[str, int]
    brand: dict[str, int]

    @classmethod
    def from_catalog(cls, catalog: pl.DataFrame) -> "Vocab":
        def codes(col: str) -> dict[str, int]:
            return {v: i for i, v in enumerate(sorted(catalog[col].unique().to_list()))}

        return cls(codes("category"), codes("subcategory"), codes("brand"))

    def encode(self, field: str, values) -> np.ndarray:
        m = getattr(self, field)
        return np.fromiter((m.get(v, -1) for v in values), dtype=np.int64, count=len(values))


@dataclass
class Snapshot:
    """Item and user statistics as of `as_of`; arrays indexed through `item_index` / `user_index`."""

    as_of: datetime
    vocab: Vocab
    item_index: dict[str, int]
    item: dict[str, np.ndarray]          # clicks_1d, clicks_7d, purchases_7d, impressions_7d, coec, price
    subcat_log_price: np.ndarray         # (n_subcats,) log median price per subcategory
    user_index: dict[str, int]
    user_n: np.ndarray                   # (U,)
    user_cat: np.ndarray                 # (U, n_cat) smoothed shares
    user_subcat: np.ndarray              # (U, n_sub)
    user_brand: np.ndarray               # (U, n_brand)
    user_price: np.ndarray               # (U,) mean relative log price of the user's items
    user_cat_expo: np.ndarray            # (U, n_cat) smoothed shares of the user's past impressions
    user_subcat_expo: np.ndarray         # (U, n_sub)
    user_item_key: np.ndarray            # (P,) sorted user row * n_items + item row of every (user, item) shown
    user_item_shown: np.ndarray          # (P,) times the item was shown to the user
    user_item_clicked: np.ndarray        # (P,) times the user clicked it there

    def user_item_counts(self, user_rows: np.ndarray, item_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(times shown, times clicked) of each (user row, item row) pair; 0 for unknown rows or pairs."""
        n = len(user_rows)
        if not len(self.user_item_key):
            return np.zeros(n), np.zeros(n)
        key = user_rows.astype(np.int64) * len(self.item_index) + item_rows
        j = np.minimum(np.searchsorted(self.user_item_key, key), len(self.user_item_key) - 1)
        hit = (user_rows >= 0) & (item_rows >= 0) & (self.user_item_key[j] == key)
        shown = np.where(hit, self.user_item_shown[j], 0.0)
        clicked = np.where(hit, self.user_item_clicked[j], 0.0)
        return shown, clicked

    def item_rows(self, item_ids) -> np.ndarray:
        g = self.item_index.get
        return np.fromiter((g(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def user_rows(self, user_ids) -> np.ndarray:
        g = self.user_index.get
        return np.fromiter((g(u, -1) if u is not None else -1 for u in user_ids), dtype=np.int64,
                           count=len(user_ids))

    # ---- persistence (plain Parquet + JSON) ----------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "meta.json").write_text(json.dumps({
            "as_of": self.as_of.isoformat(), "category": self.vocab.category,
            "subcategory": self.vocab.subcategory, "brand": self.vocab.brand,
            "subcat_log_price": self.subcat_log_price.tolist()}))
        items = pl.DataFrame({"item_id": list(self.item_index), **{k: v for k, v in self.item.items()}})
        items.write_parquet(path / "items.parquet")
        users = pl.DataFrame({"user_id": list(self.user_index), "n": self.user_n, "price": self.user_price})
        users.write_parquet(path / "users.parquet")
        np.save(path / "user_cat.npy", self.user_cat)
        np.save(path / "user_subcat.npy", self.user_subcat)
        np.save(path / "user_brand.npy", self.user_brand)
        np.save(path / "user_cat_expo.npy", self.user_cat_expo)
        np.save(path / "user_subcat_expo.npy", self.user_subcat_expo)
        pl.DataFrame({"key": self.user_item_key, "shown": self.user_item_shown,
                      "clicked": self.user_item_clicked}).write_parquet(path / "user_item.parquet")

    @classmethod
    def load(cls, path: Path) -> "Snapshot":
        meta = json.loads((path / "meta.json").read_text())
        items = pl.read_parquet(path / "items.parquet")
        users = pl.read_parquet(path / "users.parquet")
        return cls(
            datetime.fromisoformat(meta["as_of"]), Vocab(meta["category"], meta["subcategory"], meta["brand"]),
            {k: i for i, k in enumerate(items["item_id"].to_list())},
            {c: items[c].to_numpy() for c in items.columns if c != "item_id"},
            np.array(meta["subcat_log_price"]),
            {k: i for i, k in enumerate(users["user_id"].to_list())}, users["n"].to_numpy(),
            np.load(path / "user_cat.npy", allow_pickle=False), np.load(path / "user_subcat.npy", allow_pickle=False),
            np.load(path / "user_brand.npy", allow_pickle=False), users["price"].to_numpy(),
            np.load(path / "user_cat_expo.npy", allow_pickle=False),
            np.load(path / "user_subcat_expo.npy", allow_pickle=False), *_user_item_columns(path))


def _user_item_columns(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = pl.read_parquet(path / "user_item.parquet")
    return t["key"].to_numpy(), t["shown"].to_numpy(), t["clicked"].to_numpy()


def prices_asof(catalog: pl.DataFrame, events: pl.DataFrame | None, as_of: datetime) -> pl.DataFrame:
    """(item_id, price) as of `as_of`: the catalog price, replaced by the last price event before `as_of`."""
    base = catalog.select("item_id", "price")
    if events is None or events.height == 0:
        return base
    last = (events.filter((pl.col("kind") == "price") & (pl.col("ts") < as_of)).sort("ts")
            .group_by("item_id").agg(pl.col("value").last().alias("p")))
    return base.join(last, on="item_id", how="left").select("item_id", pl.coalesce("p", "price").alias("price"))


def examination_by_position(impressions: pl.DataFrame) -> dict[tuple[str, int], float]:
    """Relative click rate by (surface, position), position 0 = 1: the position bias estimated from the log."""
    ctr = impressions.group_by("surface", "position").agg(pl.col("clicked").mean().alias("ctr"))
    top = dict(ctr.filter(pl.col("position") == 0).select("surface", "ctr").iter_rows())
    return {(s, p): (c / top[s] if top.get(s) else 1.0) for s, p, c in ctr.iter_rows()}


def build_snapshot(catalog: pl.DataFrame, interactions: pl.DataFrame, impressions: pl.DataFrame | None,
                   events: pl.DataFrame | None, as_of: datetime, vocab: Vocab | None = None) -> Snapshot:
    """Statistics from events strictly before `as_of` (7-day windows for items, all history for user shares,
    `PAIR_WINDOW` for the per-(user, item) counts)."""
    vocab = vocab or Vocab.from_catalog(catalog)
    inter = interactions.filter(pl.col("ts") < as_of)
    w7, w1 = as_of - timedelta(days=7), as_of - timedelta(days=1)
    clicks = inter.filter(pl.col("kind") == "click")
    item_ids = catalog["item_id"].to_list()
    index = {i: j for j, i in enumerate(item_ids)}

    def counts(df: pl.DataFrame) -> np.ndarray:
        c = df.group_by("item_id").len()
        out = np.zeros(len(item_ids))
        rows = np.fromiter((index.get(i, -1) for i in c["item_id"].to_list()), dtype=np.int64, count=c.height)
        ok = rows >= 0
        out[rows[ok]] = c["len"].to_numpy()[ok]
        return out

    c7 = counts(clicks.filter(pl.col("ts") >= w7))
    item = {
        "clicks_1d": np.log1p(counts(clicks.filter(pl.col("ts") >= w1))),
        "clicks_7d": np.log1p(c7),
        "purchases_7d": np.log1p(counts(inter.filter((pl.col("kind") == "purchase") & (pl.col("ts") >= w7)))),
    }
    expected = np.zeros(len(item_ids))
    n_imp = np.zeros(len(item_ids))
    if impressions is not None and impressions.height:
        imp = impressions.filter((pl.col("ts") < as_of) & (pl.col("ts") >= w7))
        exam = examination_by_position(impressions.filter(pl.col("ts") < as_of))
        ex = pl.DataFrame({"surface": [k[0] for k in exam], "position": [k[1] for k in exam],
                           "exam": list(exam.values())}, schema_overrides={"position": imp.schema["position"]})
        agg = imp.join(ex, on=["surface", "position"], how="left").group_by("item_id").agg(
            pl.len().alias("n"), pl.col("exam").sum().alias("e"))
        rows = np.fromiter((index.get(i, -1) for i in agg["item_id"].to_list()), dtype=np.int64, count=agg.height)
        ok = rows >= 0
        n_imp[rows[ok]] = agg["n"].to_numpy()[ok]
        expected[rows[ok]] = agg["e"].to_numpy()[ok]
        base_ctr = max(float(imp.filter(pl.col("position") == 0)["clicked"].mean() or 0.0), 1e-3)
        expected *= base_ctr
    item["impressions_7d"] = np.log1p(n_imp)
    item["coec"] = (c7 + COEC_PRIOR) / (expected + COEC_PRIOR)  # clicks over expected clicks, smoothed
    price = prices_asof(catalog, events, as_of)
    item["price"] = price.join(pl.DataFrame({"item_id": item_ids}), on="item_id", how="right")["price"].to_numpy()
    sub_codes = vocab.encode("subcategory", catalog["subcategory"].to_list())
    logp = np.log(catalog["price"].to_numpy())
    subcat_log_price = np.array([np.median(logp[sub_codes == s]) if np.any(sub_codes == s) else 0.0
                                 for s in range(len(vocab.subcategory))])
    shown = None
    if impressions is not None:
        shown = impressions.filter((pl.col("ts") < as_of) & pl.col("user_id").is_not_null()).select(
            "user_id", "item_id", "clicked", "ts")
    return _with_users(catalog, inter, shown, vocab, as_of, index, item, subcat_log_price)


def _with_users(catalog, inter, shown, vocab, as_of, index, item, subcat_log_price) -> Snapshot:
    """User statistics: shares of positive events (affinity) and of past impressions (exposure: what the ranker that
    logged the data believed about the user), indexed over users with either."""
    attrs = catalog.select("item_id", "category", "subcategory", "brand", "price")
    pos = inter.filter(pl.col("user_id").is_not_null()).select("user_id", "item_id").join(attrs, on="item_id",
                                                                                          how="inner")
    if shown is None:
        shown = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "clicked": pl.Boolean,
                                     "ts": pl.Datetime("us", "UTC")})
    shown = shown.join(attrs, on="item_id", how="inner")
    users = sorted(set(pos["user_id"].unique().to_list()) | set(shown["user_id"].unique().to_list()))
    uidx = {u: i for i, u in enumerate(users)}
    U = len(users)

    def shares(frame: pl.DataFrame, field: str) -> np.ndarray:
        rows = np.fromiter((uidx[u] for u in frame["user_id"].to_list()), dtype=np.int64, count=frame.height)
        codes = vocab.encode(field, frame[field].to_list())
        n = len(getattr(vocab, field))
        m = np.zeros((U, n), dtype=np.float32)
        ok = codes >= 0
        np.add.at(m, (rows[ok], codes[ok]), 1.0)
        return (m + SMOOTH / n) / (m.sum(axis=1, keepdims=True) + SMOOTH)

    urow = np.fromiter((uidx[u] for u in pos["user_id"].to_list()), dtype=np.int64, count=pos.height)

    n = np.bincount(urow, minlength=U).astype(np.float64)
    sub = vocab.encode("subcategory", pos["subcategory"].to_list())
    rel = np.log(pos["price"].to_numpy()) - subcat_log_price[np.maximum(sub, 0)]
    price = np.bincount(urow, weights=rel, minlength=U) / np.maximum(n, 1)
    pairs = shown.filter(pl.col("ts") >= as_of - PAIR_WINDOW).group_by("user_id", "item_id").agg(
        pl.len().alias("n"), pl.col("clicked").cast(pl.Int64).sum())
    key = (np.fromiter((uidx[u] for u in pairs["user_id"].to_list()), dtype=np.int64, count=pairs.height)
           * len(index) + np.fromiter((index[i] for i in pairs["item_id"].to_list()), dtype=np.int64,
                                      count=pairs.height))
    order = np.argsort(key, kind="stable")
    return Snapshot(as_of, vocab, index, item, subcat_log_price, uidx, np.log1p(n), shares(pos, "category"),
                    shares(pos, "subcategory"), shares(pos, "brand"), price, shares(shown, "category"),
                    shares(shown, "subcategory"), key[order],
                    pairs["n"].to_numpy().astype(np.float32)[order],
                    pairs["clicked"].to_numpy().astype(np.float32)[order])
