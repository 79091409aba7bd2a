"""Search-bar suggestions: query completions for a typed prefix, and product suggestions for it (`retrieve`).

Completions (`complete`): every logged search (strictly before `as_of`) adds its time-decayed weight
(half-life `query_half_life_days`) to its normalised final query under each prefix of that query (up to
`max_prefix_len` characters) and under the prefix the user actually typed; catalog subcategory and brand names
enter with a small prior so a prefix never seen in the log can still complete. Each prefix keeps its top
`completions_per_prefix` queries. A request's affinity to subcategories, categories and brands (from its session
items and the user's history) multiplies a completion's score by
`1 + subcategory_boost * a_sub + category_boost * a_cat + brand_boost * a_brand` for the completion's own
subcategory / category / brand. An unknown prefix backs off to shorter ones (score * `backoff_penalty` per dropped
character), then to the globally most searched queries.

Product suggestions (`retrieve`): items having a word (subcategory, brand, title) that starts with the last typed
word, and every earlier typed word exactly, ranked by item popularity (decayed interactions plus clicked
suggestions, + `pop_smoothing`) plus the log's direct prefix -> chosen item association, times the same personal
affinity boost; topped up from shorter prefixes, then popular items, when fewer than k eligible items match.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import polars as pl

from recs.datasets.io import atomic_dir
from recs.models.base import Candidates, RetrievalQuery, Retriever, TrainingData
from recs.models.retrievers._common import (KIND_WEIGHTS, US_PER_DAY, affinity, check_kind_weights, check_positive,
                                            check_unit, read_meta, read_parquet, recency_weights, StateRows,
                                            take_eligible,
                                            to_us, weighted_events, write_meta)
from recs.models.retrievers._text import WORD, explode_prefixes, normalize_expr, normalize_query, words

ITEM_COLUMNS = ("item_id", "category", "subcategory", "brand", "title", "pop")
QUERY_COLUMNS = ("query", "subcategory", "category", "brand")


@dataclass
class SuggestConfig:
    """Weights and sizes of query completions and product suggestions."""

    max_prefix_len: int = 20                 # prefixes longer than this are matched by filtering
    completions_per_prefix: int = 30
    items_per_prefix: int = 500
    query_half_life_days: float = 7.0
    item_half_life_days: float = 7.0
    kind_weights: dict[str, float] = field(default_factory=lambda: dict(KIND_WEIGHTS))
    suggestion_click_weight: float = 2.0     # a clicked product suggestion vs a click weight of 1
    association_weight: float = 1.0          # direct prefix -> item association vs normalised popularity
    pop_smoothing: float = 0.01              # added to normalised popularity so unclicked items can be boosted
    catalog_prior: float = 0.3               # weight of a catalog subcategory / brand name as a completion
    subcategory_boost: float = 2.0
    category_boost: float = 0.5
    brand_boost: float = 1.0
    backoff_penalty: float = 0.5
    session_weight: float = 2.0
    history_weight: float = 1.0
    recency_decay: float = 0.85
    max_seed_items: int = 30

    def __post_init__(self) -> None:
        check_kind_weights(self.kind_weights)
        check_positive(self, "max_prefix_len", "completions_per_prefix", "items_per_prefix", "query_half_life_days",
                       "item_half_life_days", "max_seed_items", "recency_decay", "backoff_penalty")
        check_unit(self, "backoff_penalty", "recency_decay")
        for name in ("suggestion_click_weight", "association_weight", "pop_smoothing", "catalog_prior",
                     "subcategory_boost", "category_boost", "brand_boost", "session_weight", "history_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")


class SuggestRetriever(Retriever):
    """Query completions (`complete`) and product suggestions (`retrieve`) for a typed prefix."""

    kind: ClassVar[str] = "suggest"

    def __init__(self, config: SuggestConfig | None = None) -> None:
        self.config = config or SuggestConfig()
        self._rows = StateRows()
        self.as_of: datetime | None = None
        self.items: pl.DataFrame | None = None

    # ---- fitting ---------------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> "SuggestRetriever":
        cfg = self.config
        as_of = to_us(data.as_of)
        qlog = data.queries if data.queries is not None else pl.DataFrame(
            schema={"ts": pl.Datetime("us", "UTC"), "prefix": pl.Utf8, "final_query": pl.Utf8,
                    "chosen_suggestion": pl.Utf8})
        missing = {"ts", "prefix", "final_query", "chosen_suggestion"} - set(qlog.columns)
        if missing:
            raise ValueError(f"queries: missing column(s) {', '.join(sorted(missing))}")

        def decay(days: float) -> pl.Expr:
            return 0.5 ** ((as_of - pl.col("ts").dt.epoch("us")).cast(pl.Float64) / (days * US_PER_DAY))

        qlog = (qlog.filter(pl.col("ts").dt.epoch("us") < as_of)
                .select(normalize_expr("prefix").alias("typed"), normalize_expr("final_query").alias("query"),
                        "chosen_suggestion", decay(cfg.query_half_life_days).alias("w"),
                        decay(cfg.item_half_life_days).alias("wi"))
                .filter(pl.col("query") != ""))
        ev = weighted_events(data, cfg.kind_weights)
        pop = (ev.with_columns(pl.col("w") * decay(cfg.item_half_life_days)).group_by("item_id").agg(pl.col("w").sum())
               .join(qlog.drop_nulls("chosen_suggestion").group_by(pl.col("chosen_suggestion").alias("item_id"))
                     .agg((pl.col("wi").sum() * cfg.suggestion_click_weight).alias("s")), on="item_id", how="full",
                     coalesce=True)
               .select("item_id", (pl.col("w").fill_null(0.0) + pl.col("s").fill_null(0.0)).alias("pop")))
        items = (data.catalog.select(ITEM_COLUMNS[:-1]).unique("item_id", keep="last", maintain_order=True)
                 .join(pop, on="item_id", how="left").with_columns(pl.col("pop").fill_null(0.0)))
        # completions: each logged search under every prefix of its final query and under the typed prefix
        rows = qlog.with_row_index("row")
        keyed = pl.concat([explode_prefixes(rows.select("row", "query", "w"), "query", cfg.max_prefix_len),
                           rows.select("row", "query", "w", pl.col("typed").alias("key"))]).unique(["row", "key"])
        keyed = pl.concat([keyed.select("key", "query", "w"),
                           keyed.unique("row").select(pl.lit("").alias("key"), "query", "w")])
        prior = self._catalog_queries(items)
        keyed = pl.concat([keyed, explode_prefixes(prior, "query", cfg.max_prefix_len).select("key", "query", "w"),
                           prior.select(pl.lit("").alias("key"), "query", "w")])
        comps = (keyed.group_by("key", "query").agg(pl.col("w").sum().alias("score"))
                 .sort(["key", "score", "query"], descending=[False, True, False])
                 .group_by("key", maintain_order=True).head(cfg.completions_per_prefix))
        assoc = (qlog.drop_nulls("chosen_suggestion").filter(pl.col("typed") != "")
                 .group_by(pl.col("typed").alias("prefix"), pl.col("chosen_suggestion").alias("item_id"))
                 .agg(pl.col("wi").sum().alias("score")))
        self._set(items, comps.rename({"key": "prefix"}), self._query_attrs(comps["query"].unique(), items), assoc)
        self.as_of = data.as_of
        return self

    def _catalog_queries(self, items: pl.DataFrame) -> pl.DataFrame:
        """Subcategory and brand names as completions, weighted by their share of the catalog."""
        names = pl.concat([items.select(normalize_expr("subcategory").alias("query")),
                           items.select(normalize_expr("brand").alias("query"))]).filter(pl.col("query") != "")
        counts = names.group_by("query").len()
        return counts.select("query", (self.config.catalog_prior * pl.col("len") / pl.col("len").max()).alias("w"))

    @staticmethod
    def _query_attrs(queries: pl.Series, items: pl.DataFrame) -> pl.DataFrame:
        """Each query's subcategory, category and brand, from its words matching catalog names (a name's category is
        its most frequent one; among equally frequent ones the smallest, as `mode` returns them in no set order)."""
        sub = items.group_by(normalize_expr("subcategory").alias("w")).agg(
            pl.col("subcategory").first(), pl.col("category").mode().min().alias("cat_s"))
        brand = items.group_by(normalize_expr("brand").alias("w")).agg(
            pl.col("brand").first(), pl.col("category").mode().min().alias("cat_b"))
        w = (pl.DataFrame({"query": queries}).with_columns(pl.col("query").str.extract_all(WORD).alias("w"))
             .with_row_index("pos").explode("w").with_row_index("order")
             .join(sub, on="w", how="left").join(brand, on="w", how="left"))
        return (w.sort("order").group_by("query", maintain_order=True)
                .agg(pl.col("subcategory").drop_nulls().first(), pl.col("brand").drop_nulls().first(),
                     pl.col("cat_s").drop_nulls().first(), pl.col("cat_b").drop_nulls().first())
                .select("query", "subcategory", pl.coalesce("cat_s", "cat_b").alias("category"), "brand"))

    def _set(self, items: pl.DataFrame, comps: pl.DataFrame, qattrs: pl.DataFrame, assoc: pl.DataFrame) -> None:
        """In-memory lookups: prefix -> completions, prefix -> items by popularity, exact word -> items."""
        cfg = self.config
        self.items, self.completions, self.query_attrs, self.assoc = items, comps, qattrs, assoc
        self.item_ids = np.array(items["item_id"].to_list(), dtype=object)
        self._pos = {iid: j for j, iid in enumerate(self.item_ids.tolist())}
        pop = items["pop"].to_numpy().astype(np.float64)
        self._pop = pop / (pop.max() if len(pop) and pop.max() > 0 else 1.0)
        self._codes: dict[str, tuple[dict[str, int], np.ndarray]] = {}   # serving: per column, name -> code, codes
        for col in ("category", "subcategory", "brand"):
            vals = np.array(items[col].to_list(), dtype=object)
            setattr(self, f"_{col}", vals)
            names: dict[str, int] = {}
            codes = np.array([-1 if v is None else names.setdefault(str(v), len(names)) for v in vals.tolist()],
                             dtype=np.int64)
            self._codes[col] = (names, codes)
        self._pop_order = np.lexsort((np.arange(len(pop)), -pop))
        self._rank = np.empty(len(pop), dtype=np.int64)
        self._rank[self._pop_order] = np.arange(len(pop))
        # completions
        qa = {q: (s, c, b) for q, s, c, b in qattrs.iter_rows()}
        self._comps: dict[str, tuple[list[str], np.ndarray, list[tuple]]] = {}
        for (key,), g in comps.group_by("prefix", maintain_order=True):
            qs = g["query"].to_list()
            self._comps[key] = (qs, g["score"].to_numpy().astype(np.float64), [qa.get(q, (None,) * 3) for q in qs])
        # product index: word -> items, prefix of a word -> items by popularity
        iw = (items.select(pl.int_range(pl.len()).alias("i"),
                           pl.concat_list(normalize_expr("subcategory").str.extract_all(WORD),
                                          normalize_expr("brand").str.extract_all(WORD),
                                          normalize_expr("title").str.extract_all(WORD)).alias("w"))
              .explode("w").drop_nulls("w").filter(~pl.col("w").str.contains(r"^\d+$")).unique(["i", "w"]))
        self._word_items = {w: np.sort(g["i"].to_numpy()) for (w,), g in iw.group_by("w")}
        rank = pl.DataFrame({"i": self._pop_order.astype(np.int64)}).with_row_index("rank")
        vocab = explode_prefixes(iw.select("w").unique(), "w", cfg.max_prefix_len)      # word -> its prefixes
        pref = (vocab.lazy().join(iw.lazy().join(rank.lazy(), on="i"), on="w")
                .group_by("key").agg(pl.col("rank").unique().sort().head(cfg.items_per_prefix))
                .collect())
        by_rank = self._pop_order.astype(np.int64)
        self._prefix_items = {k: by_rank[np.asarray(r, dtype=np.int64)] for k, r in pref.iter_rows()}
        self._assoc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for (key,), g in assoc.group_by("prefix"):
            idx = np.array([self._pos.get(i, -1) for i in g["item_id"].to_list()], dtype=np.int64)
            sc = g["score"].to_numpy().astype(np.float64)
            ok = idx >= 0
            if ok.any():
                self._assoc[key] = (idx[ok], sc[ok] / sc[ok].max())

    def _ready(self) -> None:
        if self.items is None:
            raise RuntimeError("SuggestRetriever: call fit() or load() first")

    # ---- personal affinity -----------------------------------------------------------------------------------
    def affinities(self, user_history: Sequence[str] = (), session_items: Sequence[str] = ()) -> dict[str, dict]:
        """Normalised subcategory / category / brand affinities of the seed items (session weighs more)."""
        cfg = self.config
        sess = list(session_items)[-cfg.max_seed_items:]
        hist = list(user_history)[-cfg.max_seed_items:]
        w = np.concatenate([cfg.history_weight * recency_weights(len(hist), cfg.recency_decay),
                            cfg.session_weight * recency_weights(len(sess), cfg.recency_decay)])
        idx = np.array([self._pos.get(i, -1) for i in hist + sess], dtype=np.int64)
        ok = idx >= 0
        return {col: affinity(getattr(self, f"_{col}")[idx[ok]], w[ok]) for col in ("subcategory", "category",
                                                                                  "brand")}

    def _boost(self, aff: dict[str, dict], sub, cat, brand) -> np.ndarray:
        cfg = self.config
        b = np.ones(len(sub))
        for vals, col, k in ((sub, "subcategory", cfg.subcategory_boost), (cat, "category", cfg.category_boost),
                             (brand, "brand", cfg.brand_boost)):
            a = aff.get(col) or {}
            if a and k > 0:
                b += k * np.array([a.get(v, 0.0) if v is not None else 0.0 for v in vals])
        return b

    def _boost_rows(self, aff: dict[str, dict], rows: np.ndarray) -> np.ndarray:
        """`_boost` of item rows through their precomputed codes (the same values, no per-row look-ups)."""
        cfg = self.config
        b = np.ones(len(rows))
        for col, k in (("subcategory", cfg.subcategory_boost), ("category", cfg.category_boost),
                       ("brand", cfg.brand_boost)):
            a = aff.get(col) or {}
            if a and k > 0:
                names, codes = self._codes[col]
                w = np.zeros(len(names) + 1)          # the last slot (code -1): no name, no boost
                for name, v in a.items():
                    c = names.get(name)
                    if c is not None:
                        w[c] = v
                b += k * w[codes[rows]]
        return b

    # ---- query completions -----------------------------------------------------------------------------------
    def _lookup(self, p: str) -> tuple[list[str], np.ndarray, list[tuple], int]:
        """Completions of `p`, backing off to shorter prefixes; returns them and the characters dropped."""
        L = self.config.max_prefix_len
        for n in range(len(p), -1, -1):
            got = self._comps.get(p[:min(n, L)])
            if got is None:
                continue
            qs, sc, at = got
            if n > L:      # the key was truncated: keep the completions that really extend `p[:n]`
                keep = [j for j, q in enumerate(qs) if q.startswith(p[:n])]
                if not keep:
                    continue
                qs, sc, at = [qs[j] for j in keep], sc[keep], [at[j] for j in keep]
            return qs, sc, at, len(p) - n
        return [], np.zeros(0), [], 0

    def complete(self, prefix: str | None, k: int, user_history: Sequence[str] = (),
                 session_items: Sequence[str] = ()) -> list[tuple[str, float]]:
        """Top-`k` query completions of `prefix` as (query, score), best first, personalised by the seed items."""
        self._ready()
        qs, sc, at, dropped = self._lookup(normalize_query(prefix))
        if not qs or k <= 0:
            return []
        s = sc / sc.max() * self.config.backoff_penalty ** dropped
        s = s * self._boost(self.affinities(user_history, session_items), *zip(*at))
        order = np.lexsort((np.arange(len(s)), -s))[:k]
        return [(qs[j], float(s[j])) for j in order]

    def complete_for(self, query: RetrievalQuery, k: int) -> list[tuple[str, float]]:
        """`complete` for a request: its typed query, the user's history and its session items."""
        return self.complete(query.request.query, k, query.history, query.session_items)

    # ---- product suggestions ---------------------------------------------------------------------------------
    def _items_for(self, p: str) -> tuple[np.ndarray, int]:
        """Item rows matching prefix `p` (earlier words exact, the last one as a prefix) and characters dropped."""
        if not p.strip():
            return self._pop_order[: self.config.items_per_prefix], 0
        toks = words(p)
        exact, partial = (toks, "") if p.endswith(" ") else (toks[:-1], toks[-1] if toks else "")
        keep: np.ndarray | None = None
        dropped = 0
        for w in exact:             # an unknown or contradicting complete word is ignored (and penalised)
            rows = self._word_items.get(w)
            both = rows if rows is None or keep is None else np.intersect1d(keep, rows, assume_unique=True)
            if both is None or len(both) == 0:
                dropped += len(w)
            else:
                keep = both
        for n in range(len(partial), 0, -1):
            rows = self._prefix_items.get(partial[:min(n, self.config.max_prefix_len)])
            if rows is not None and keep is not None:
                rows = rows[np.isin(rows, keep)]
            if rows is not None and len(rows):
                return rows, dropped + len(partial) - n
        dropped += len(partial)
        if keep is not None:
            return keep[np.argsort(self._rank[keep], kind="stable")][: self.config.items_per_prefix], dropped
        return self._pop_order[: self.config.items_per_prefix], max(dropped, 1)

    def _score_rows(self, rows: np.ndarray, key: str, dropped: int, aff: dict) -> tuple[np.ndarray, np.ndarray]:
        """Popularity (+ direct prefix association) x personal boost x back-off penalty, best first."""
        cfg = self.config
        score = self._pop[rows] + cfg.pop_smoothing
        if key in self._assoc and dropped == 0:
            a_idx, a_sc = self._assoc[key]
            extra = np.setdiff1d(a_idx, rows)
            rows = np.concatenate([rows, extra])
            score = np.concatenate([score, self._pop[extra] + cfg.pop_smoothing])
            pos = {r: j for j, r in enumerate(rows.tolist())}
            score[[pos[r] for r in a_idx.tolist()]] += cfg.association_weight * a_sc
        score = score * self._boost_rows(aff, rows)
        score *= cfg.backoff_penalty ** dropped
        order = np.lexsort((self._rank[rows], -score))
        return rows[order], score[order]

    def retrieve(self, query: RetrievalQuery, k: int) -> Candidates:
        """Product suggestions for the request's typed prefix, topped up from ever shorter prefixes (then the
        most popular items) when fewer than `k` eligible items match; scores never increase down the list."""
        self._ready()
        p = normalize_query(query.request.query)
        aff = self.affinities(query.history, query.session_items)
        ids: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        seen: set[str] = set()
        n, ceiling = len(p), np.inf
        while k > len(seen):
            rows, dropped = self._items_for(p[:n])
            rows, sc = self._score_rows(rows, p[:n].strip(), dropped + len(p) - n, aff)
            if len(sc) and sc[0] > ceiling:
                sc = sc * (ceiling / sc[0])
            srows = self._rows.get(query.state, self.item_ids)[rows] if query.state is not None else None
            got = take_eligible(self.item_ids[rows], sc, query, k - len(seen), self.kind, exclude=seen,
                                presorted=True, rows=srows)
            ids.append(got.item_ids)
            scores.append(got.scores)
            seen.update(got.item_ids.tolist())
            if len(got):
                ceiling = float(got.scores[-1])
            if n == 0:
                break
            n = max(0, n - dropped - 1)
        return Candidates(np.concatenate(ids).astype(object), np.concatenate(scores), self.kind)

    # ---- persistence -----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        self._ready()
        with atomic_dir(path, overwrite=True) as tmp:
            self.items.write_parquet(tmp / "items.parquet")
            self.completions.write_parquet(tmp / "completions.parquet")
            self.query_attrs.write_parquet(tmp / "query_attrs.parquet")
            self.assoc.write_parquet(tmp / "prefix_items.parquet")
            write_meta(tmp, self.kind, asdict(self.config), {"as_of": self.as_of.isoformat()})

    @classmethod
    def load(cls, path: Path) -> "SuggestRetriever":
        meta = read_meta(path, cls.kind)
        try:
            r = cls(SuggestConfig(**meta["config"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{Path(path) / 'meta.json'}: field 'config': {e}") from None
        r.as_of = datetime.fromisoformat(meta["as_of"])
        r._set(read_parquet(path, "items.parquet", ITEM_COLUMNS),
               read_parquet(path, "completions.parquet", ("prefix", "query", "score")),
               read_parquet(path, "query_attrs.parquet", QUERY_COLUMNS),
               read_parquet(path, "prefix_items.parquet", ("prefix", "item_id", "score")))
        return r
