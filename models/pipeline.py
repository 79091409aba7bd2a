"""The trained pipeline as one `Policy`: retrievers -> blend -> features -> ranker -> re-rank + policy filters.

This object is what `recs evaluate`, `recs replay --model`, `sim.run_policy`, the bundle and the server all use.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Ranking, Request, SlotProbabilities, deterministic_slot_probabilities
from recs.features.compute import compute_features, word_prefix_matcher
from recs.features.online import StateCodes, attrs_from_state, online_inputs
from recs.features.snapshot import Snapshot
from recs.features.spec import check_spec
from recs.models.base import Candidates, RetrievalQuery, Retriever
from recs.models.candidates import BlendConfig, merge_candidates
from recs.models.ranker import BaseScore, Ranker
from recs.models.rerank import SURFACES, RerankConfig, gets_new_item_slot, rerank, with_new_item_slot
from recs.models.retrievers._text import normalize_query

HISTORY_LEN = 50


@dataclass
class StageTimes:
    """Seconds spent per named stage of one request."""

    stages: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - t0
        return now


class Pipeline:
    """Retrieval, ranking and re-ranking over a live `OnlineState`."""

    def __init__(self, retrievers: dict[str, Retriever], ranker: Ranker | None, snapshot: Snapshot,
                 state: OnlineState, histories: dict[str, tuple[str, ...]], blend: BlendConfig = BlendConfig(),
                 rerank_cfg: RerankConfig = RerankConfig(), policy_id: str = "pipeline",
                 fallback: dict[str, list[str]] | None = None, cold_ranker: Ranker | None = None,
                 tree_surfaces: tuple[str, ...] = SURFACES, purchases: dict[str, frozenset[str]] | None = None,
                 repurchase: dict[str, tuple[int, float]] | None = None) -> None:
        self.retrievers, self.ranker, self.snapshot, self.state = retrievers, ranker, snapshot, state
        self.purchases = purchases or {}   # items each user bought before the cut-off (`purchased`)
        self.repurchase = repurchase or {}  # category -> (purchases, repeat share) in the training logs
        self.cold_ranker = cold_ranker   # for context-free visitors (see `is_context_free`); None: `ranker` for all
        # surfaces where the personal ranker's trees are used; elsewhere its base score alone (`BaseScore`)
        self.tree_surfaces = tuple(tree_surfaces)
        self._base_only = BaseScore(ranker) if ranker is not None and ranker.base_feature else None
        self.histories, self.blend, self.rerank_cfg, self.policy_id = histories, blend, rerank_cfg, policy_id
        self.fallback = fallback or {}
        self.attrs = attrs_from_state(state)
        self.last_times = StageTimes()
        self.codes = StateCodes(snapshot)     # per state row vocabulary codes for the features (computed once)
        self._last_rows: tuple[np.ndarray, np.ndarray] | None = None   # (ids, their state rows) of `candidates`

    # ---- request path ------------------------------------------------------------------------------------
    def history(self, user_id: str | None) -> tuple[str, ...]:
        """The user's past positive items (training data, then live events), newest last."""
        if user_id is None:
            return ()
        past = self.histories.get(user_id, ())
        live = tuple(i for i, _ in self.state.user_history.get(user_id, ()))
        return (past + live)[-HISTORY_LEN:]

    def purchased(self, user_id: str | None) -> frozenset[str]:
        """Items the user bought: before the model's cut-off (saved with it) and since (the state's live purchases,
        kept apart from the 50-event history so later clicks cannot push them out): the "already purchased" filter."""
        if user_id is None:
            return frozenset()
        live = self.state.user_purchases.get(user_id)
        past = self.purchases.get(user_id, frozenset())
        items = past | frozenset(i for i, _ in live) if live else past
        return frozenset(i for i in items if not self.bought_again(i)) if items and self.repurchase else items

    def bought_again(self, item_id: str) -> bool:
        """Whether the item's category is one people buy again (repeat share above `repurchase_share_max` over at
        least `repurchase_min_purchases` training purchases): there "already purchased" does not make sense."""
        row = self.state.index.get(item_id)
        if row is None:
            return False
        n, share = self.repurchase.get(self.state.category[row], (0, 0.0))
        cfg = self.rerank_cfg
        return n >= cfg.repurchase_min_purchases and share > cfg.repurchase_share_max

    def retrieve(self, request: Request, sources: Sequence[str] | None = None, live: bool = True
                 ) -> list[Candidates]:
        q = RetrievalQuery(request, self.history(request.user_id), self.state if live else None)
        out = []
        for kind, r in self.retrievers.items():
            if sources is not None and kind not in sources:
                continue
            quota = self.blend.quota(kind, request.surface)
            if quota > 0:
                out.append(r.retrieve(q, quota))
        return out

    def candidates(self, request: Request, live: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Blended candidate ids and their retrieval features; `live`: only items eligible in the live state."""
        lists = self.retrieve(request, live=live)
        ids, feats = merge_candidates(lists, self.blend, request.surface)
        rows = self.state.indices(ids)          # looked up once; `rows_of(ids)` hands them to the later stages
        if len(ids) and request.surface == "search" and request.query:
            keep = self.prefix_matches(ids, request.query, rows)
            ids, rows, feats = ids[keep], rows[keep], {k: v[keep] for k, v in feats.items()}
        if len(ids) and live:
            ok = rows >= 0                      # = state.is_eligible(ids, ts), without a second look-up
            if ok.any():
                ok[ok] = self.state.eligible_mask(request.ts, rows[ok])
            ids, rows = ids[ok], rows[ok]
            feats = {k: v[ok] for k, v in feats.items()}
        feats.update(self.model_scores(request, ids, rows))
        self._last_rows = (ids, rows)
        return ids, feats

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """State rows of `ids` (-1: unknown): remembered when `ids` is what `candidates` just returned."""
        last = self._last_rows
        if last is not None and last[0] is ids:
            return last[1]
        return self.state.indices(list(ids))

    def model_scores(self, request: Request, item_ids: np.ndarray, rows: np.ndarray | None = None
                     ) -> dict[str, np.ndarray]:
        """Scores of the learnt models for any items (retrieved or not): emb_score, emb_subcat_score, cm_score,
        cm_pop_score.

        `rows`: the items' state rows when the caller has them."""
        if rows is None and len(item_ids) and ("clickmodel" in self.retrievers or "embedding" in self.retrievers):
            rows = self.state.indices(list(item_ids))
        out = dict(zip(("emb_score", "emb_subcat_score"), self.embedding_scores(request, item_ids, rows)))
        cm = self.retrievers.get("clickmodel")
        if cm is not None and len(item_ids):
            out["cm_score"] = cm.score_rows(request, self.history(request.user_id), self.state, rows)
            out["cm_pop_score"] = cm.population_scores(request, self.state, rows)
        else:
            out["cm_score"] = np.full(len(item_ids), np.nan)
            out["cm_pop_score"] = np.full(len(item_ids), np.nan)
        return out

    def prefix_matches(self, ids: np.ndarray, prefix: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Search-bar rule: suggestions complete the typed prefix (subcategory name first, else a title word), read
        with the suggest retriever's `normalize_query` (so " sho" is "sho"; a trailing space is kept)."""
        p = normalize_query(prefix)
        rows = self.state.indices(list(ids)) if rows is None else rows
        memo: dict = {}

        def sub_match(r: int) -> bool:   # ~50 subcategories: each name lower-cased and compared once
            s = self.state.subcategory[r]
            m = memo.get(s)
            if m is None:
                m = memo[s] = str(s).lower().startswith(p)
            return m

        sub = np.fromiter((r >= 0 and sub_match(r) for r in rows.tolist()), dtype=bool, count=len(rows))
        if sub.any():
            return sub
        match, titles = word_prefix_matcher(p), self.state.title
        title = np.fromiter((r >= 0 and match(str(titles[r])) for r in rows.tolist()), dtype=bool, count=len(rows))
        return title if title.any() else np.ones(len(ids), dtype=bool)

    def embedding_scores(self, request: Request, item_ids: np.ndarray, rows: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """(user or session vector . item vector, . its subcategory's mean item vector); NaN where unknown."""
        emb = self.retrievers.get("embedding")
        out = np.full(len(item_ids), np.nan)
        sub_out = np.full(len(item_ids), np.nan)
        if emb is None or not len(item_ids):
            return out, sub_out
        hist = self.history(request.user_id)
        q, _ = emb.query(request.user_id, request.recent_items, list(hist) if hist else None)
        if q is None:
            return out, sub_out
        trained = emb._ready()
        ids = np.asarray(item_ids, dtype=str)
        pos = np.searchsorted(trained.item_ids, ids).clip(0, max(trained.item_ids.size - 1, 0))
        known = trained.item_ids[pos] == ids
        out[known] = trained.item_vectors[pos[known]] @ q
        names, centroids = self._subcat_centroids(trained)
        rows = self.state.indices(list(item_ids)) if rows is None else rows
        sub = np.array([names.get(self.state.subcategory[r], -1) if r >= 0 else -1 for r in rows])
        sub_out[sub >= 0] = centroids[sub[sub >= 0]] @ q
        return out, sub_out

    def _subcat_centroids(self, trained) -> tuple[dict[str, int], np.ndarray]:
        """Mean embedding per subcategory (cached): a denoised item vector, also for items with no interactions."""
        if getattr(self, "_centroids", None) is None:
            rows = self.state.indices(list(trained.item_ids))
            subs = np.array([self.state.subcategory[r] if r >= 0 else None for r in rows], dtype=object)
            names = {s: j for j, s in enumerate(sorted({s for s in subs if s is not None}))}
            cent = np.zeros((len(names), trained.item_vectors.shape[1]), dtype=np.float32)
            for s, j in names.items():
                cent[j] = trained.item_vectors[subs == s].mean(axis=0)
            self._centroids = (names, cent)
        return self._centroids

    def is_context_free(self, request: Request) -> bool:
        """No visitor signal at all: anonymous (or unknown) with no history and no clicks in the session."""
        return not request.recent_items and not self.history(request.user_id)

    def ranker_for(self, request: Request) -> Ranker | BaseScore | None:
        if self.cold_ranker is not None and self.is_context_free(request):
            return self.cold_ranker
        if self._base_only is not None and request.surface not in self.tree_surfaces:
            return self._base_only
        return self.ranker

    def score(self, request: Request, ids: np.ndarray, feats: dict[str, np.ndarray],
              use_ranker: bool = True) -> np.ndarray:
        ranker = self.ranker_for(request)
        if ranker is None or not use_ranker:
            return -feats["best_source_rank"].astype(float)
        rows = self.rows_of(ids)
        X = compute_features(online_inputs(request, ids, self.state, feats, rows, self.codes), self.snapshot,
                             self.attrs)
        scores = ranker.predict(X)
        w = self.rerank_cfg.price_weight
        if w:       # trade clicks for revenue: + w x log(live price), items unknown to the state get no boost
            price = np.where(rows >= 0, self.state.price[np.maximum(rows, 0)], 1.0)
            scores = scores + w * np.log(np.maximum(price, 1e-6))
        return scores

    def score_candidates(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        """All eligible candidates with their ranker scores (for Plackett-Luce target policies)."""
        ids, feats = self.candidates(request)
        return ids, (self.score(request, ids, feats) if len(ids) else np.zeros(0))

    def rank(self, request: Request, k: int, use_ranker: bool = True, deadline_s: float | None = None) -> Ranking:
        """Top-k for the request; policy filters are applied on every path, fallbacks included."""
        times = StageTimes()
        t0 = time.perf_counter()
        start = t0
        ids, feats = self.candidates(request)
        t0 = times.add("retrieve", t0)
        stages = ["retrieve"]
        fallback = False
        if len(ids) == 0:
            ids, feats, fallback = self.fallback_candidates(request), {}, True
            scores = -np.arange(len(ids), dtype=float)
            stages.append("fallback")
        else:
            over = deadline_s is not None and (t0 - start) > deadline_s
            scores = self.score(request, ids, feats, use_ranker and not over)
            t0 = times.add("rank", t0)
            stages.append("rank" if (self.ranker is not None and use_ranker and not over) else "retrieval_order")
        purchased = self.purchased(request.user_id)
        cfg = self.rerank_cfg.for_surface(request.surface)
        out_ids, out_sc = rerank(ids, scores, self.state, request.ts, k, cfg, purchased,
                                 self.rows_of(ids) if not fallback else None)
        if len(out_ids) < k and not fallback:
            extra = [i for i in self.fallback_candidates(request) if i not in set(out_ids)]
            more, more_sc = rerank(extra, -np.arange(len(extra), dtype=float), self.state, request.ts,
                                   k - len(out_ids), cfg, purchased)
            out_ids += more
            out_sc += [min(out_sc, default=0.0) - 1.0 - j for j in range(len(more))]
        stages.append("rerank")
        if not fallback:
            out_ids, out_sc, slot = self.new_item_slot(request, ids, scores, out_ids, out_sc, cfg, purchased)
            if slot:
                stages.append("new_item_slot")
        times.add("rerank", t0)
        self.last_times = times
        return Ranking(tuple(out_ids), tuple(out_sc), tuple(stages), fallback, {"times": times.stages})

    def new_item_slot(self, request: Request, ids: np.ndarray, scores: np.ndarray, out_ids: list[str],
                      out_sc: list[float], cfg: RerankConfig, purchased: frozenset[str]
                      ) -> tuple[list[str], list[float], bool]:
        """The slate with its last slot given to the best-scored new candidate on `cfg.new_item_share` of requests
        (`rerank.with_new_item_slot`); the flag says whether it changed. `ids`: what `candidates` returned."""
        if not gets_new_item_slot(request.request_id, cfg.new_item_share):
            return out_ids, out_sc, False
        new_ids, new_sc = with_new_item_slot(out_ids, out_sc, ids, scores, self.state, request.ts, cfg, purchased,
                                             self.rows_of(ids))
        return new_ids, new_sc, new_ids is not out_ids

    def index_new_items(self, item_ids: Sequence[str] | None = None) -> int:
        """Let retrievers that index items without refit (content) see items the state knows but they do not
        (all of them, or only `item_ids`: the server passes the one item a `new_item` update added)."""
        content = self.retrievers.get("content")
        if content is None or not hasattr(content, "add_items"):
            return 0
        st = self.state
        rows = np.arange(len(st)) if item_ids is None else st.indices(list(item_ids))
        rows = rows[rows >= 0]
        cat = pl.DataFrame({"item_id": st.item_ids[rows].tolist(), "category": st.category[rows].tolist(),
                            "subcategory": st.subcategory[rows].tolist(), "seller_id": st.seller_id[rows].tolist(),
                            "brand": st.brand[rows].tolist(), "title": st.title[rows].tolist(),
                            "price": st.price[rows], "stock": st.stock[rows], "restricted": st.restricted[rows],
                            "created_at": pl.Series(st.created_us[rows]).cast(pl.Datetime("us", "UTC"))})
        return content.add_items(cat)

    def fallback_candidates(self, request: Request) -> list[str]:
        """Popular items of the request's likely categories, then globally popular (filtered later)."""
        cats: list[str] = []
        for iid in reversed(request.recent_items + self.history(request.user_id)):
            row = self.state.index.get(iid)
            if row is not None and self.state.category[row] not in cats:
                cats.append(self.state.category[row])
        out: list[str] = []
        for c in cats + ["__global__"]:
            out += self.fallback.get(c, [])
        return list(dict.fromkeys(out))

    def slot_probabilities(self, request: Request, k: int, include: Sequence[str] = ()) -> SlotProbabilities:
        return deterministic_slot_probabilities(self.rank(request, k), k)

    # ---- persistence -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: str | Path, state: OnlineState | None = None) -> "Pipeline":
        """Load a model folder written by `recs train` (plain files only: JSON, Parquet, .npy, faiss, LightGBM)."""
        from recs.models.registry import load_retriever
        from recs.models.state_files import load_histories, load_purchases, load_repurchase, load_state

        d = Path(model_dir)
        meta_file = d / "model.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{d}: not a trained model (no model.json)")
        meta = json.loads(meta_file.read_text())
        check_spec(d / "feature_spec.json")
        retrievers = {kind: load_retriever(kind, d / "retrievers" / kind) for kind in meta["retrievers"]}
        ranker = Ranker.load(d / "ranker") if (d / "ranker" / "model.txt").is_file() else None
        cold = Ranker.load(d / "ranker_cold") if (d / "ranker_cold" / "model.txt").is_file() else None
        snap = Snapshot.load(d / "snapshot")
        state = state or load_state(d / "state")
        blend = BlendConfig.from_json(meta.get("blend", {}))
        try:
            # models written before the new-item slot existed keep serving as they were evaluated: without it
            rr = RerankConfig(**{"new_item_share": 0.0, **meta.get("rerank", {})})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{meta_file}: field 'rerank': {e}") from None
        fallback = json.loads((d / "fallback.json").read_text()) if (d / "fallback.json").is_file() else {}
        trees = tuple(meta.get("ranker", {}).get("tree_surfaces", SURFACES))   # older models: trees everywhere
        return cls(retrievers, ranker, snap, state, load_histories(d / "state"), blend, rr,
                   meta.get("policy_id", "pipeline"), fallback, cold, trees, load_purchases(d / "state"),
                   load_repurchase(d / "state"))


