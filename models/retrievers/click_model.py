"""Position-debiased click model: a factorisation model fitted on logged impressions (clicks and non-clicks).

BPR learns from clicks against random negatives, so it mostly learns what the logging policy chose to show. This
model learns from every impression the logger showed, clicked or not, with the position-based model of
examination::

    P(click | request r, item i, position p, surface s) = sigma(theta[s, p]) * sigma(z(r, i))
    z(r, i) = g + b_i + b_sub(i) + u_r . (e_i + e_sub(i)) - (beta_0 + beta_u) * rel_i + w_q * match(r, i)

where rel_i is the item's log price minus the log median price of its subcategory, match is 1 on the search bar
when the item's subcategory name starts with the typed prefix, and the visitor vector u_r is the registered user's
learnt vector, plus gamma * the mean vector of every item the user was shown (what the logging policy chose to show
them reveals its belief about their taste, SVD++-style), plus alpha * the mean item vector of the session's earlier
clicks (anonymous visitors: that term alone). Items unseen in training fall back to their subcategory's vector and
bias. The serving score is z without the examination term, so ranking by it is ranking by estimated attraction,
free of position bias.

Fitting is full-batch L-BFGS with a Gaussian prior per parameter, early-stopped on the held-out NLL of the latest
impressions: on the demo-scale simulator that doubles the correlation of z with the true attraction logit against
mini-batch Adam with a per-observation penalty (docs/RETRIEVAL_CLASSIC.md).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from recs.datasets.io import atomic_dir
from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Request
from recs.models.base import Candidates, RetrievalQuery, Retriever, TrainingData
from recs.models.retrievers._common import to_us, top_indices
from recs.models.retrievers.click_model_fit import (RECENT, _exposure_matrix, _fit_lbfgs, _row_mean_matrix,
                                                     _session_recent, position_based_nll)

POPULATION = 256     # learnt users sampled for the population appeal of an item
MAX_POSITION = 20    # examination parameters per surface for positions 0..MAX_POSITION-1 (later ones share the last)


@dataclass
class ClickModelConfig:
    """Size, prior and stopping rule of the click model; defaults measured on the demo-scale simulator
    (docs/RETRIEVAL_CLASSIC.md)."""

    dim: int = 16
    max_iter: int = 200          # L-BFGS iterations at most (early stopping usually ends sooner)
    l2: float = 3.0              # Gaussian prior on vectors and biases (per parameter, not per observation)
    validation_share: float = 0.1  # latest share of impressions held out for early stopping (0: none)
    seed: int = 0
    threads: int = 1             # 1: bit-reproducible fits (with 2, sparse gradients are summed in a varying order)

    def __post_init__(self) -> None:
        for name in ("dim", "max_iter", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.l2 < 0:
            raise ValueError("l2 must be >= 0")
        if not 0 <= self.validation_share < 0.5:
            raise ValueError("validation_share must be in [0, 0.5)")


@dataclass
class ClickModelParams:
    """The fitted parameters, in plain arrays (saved as .npy)."""

    item_ids: np.ndarray        # (n_items,) sorted str
    item_sub: np.ndarray        # (n_items,) subcategory index
    item_vec: np.ndarray        # (n_items, d) item part e_i
    item_bias: np.ndarray       # (n_items,)
    subcats: np.ndarray         # (n_sub,) subcategory names
    sub_vec: np.ndarray         # (n_sub, d)
    sub_bias: np.ndarray        # (n_sub,)
    sub_ref_logprice: np.ndarray  # (n_sub,) log median price
    user_ids: np.ndarray        # (n_users,) sorted str
    user_vec: np.ndarray        # (n_users, d)
    user_beta: np.ndarray       # (n_users,)
    scalars: dict               # beta0, alpha, w_match, g
    examination: np.ndarray     # (2, MAX_POSITION) sigma(theta): home, search


def _subcat_table(catalog: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    ref = catalog.group_by("subcategory").agg(pl.col("price").log().median().alias("ref")).sort("subcategory")
    return ref["subcategory"].to_numpy().astype(str), ref["ref"].to_numpy().astype(np.float32)


class ClickModelRetriever(Retriever):
    """Top items by the click model's attraction score among the eligible ones; also scores given items."""

    kind: ClassVar[str] = "clickmodel"

    def __init__(self, config: ClickModelConfig | None = None) -> None:
        self.config = config or ClickModelConfig()
        self.p: ClickModelParams | None = None
        self._state_n = -1                   # state rows the cached per-row arrays cover
        self._state_cache: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._cached_state: OnlineState | None = None
        self._sub_index: dict[str, int] = {}
        self._user_index: dict[str, int] = {}
        self._item_index: dict[str, int] = {}
        self.as_of: datetime | None = None   # where the training data ended (None: loaded from an older save)

    # ---- training ----------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> "ClickModelRetriever":
        """Fit on the impressions, interactions and catalog items strictly before `data.as_of` (filtered here)."""
        import torch

        as_of = to_us(data.as_of)

        def before(df: pl.DataFrame, col: str) -> pl.DataFrame:
            return df.filter(pl.col(col).dt.epoch("us") < as_of) if col in df.columns else df

        impressions = before(data.impressions, "ts") if data.impressions is not None else None
        if impressions is None or impressions.is_empty():
            raise ValueError("the click model needs logged impressions (clicked and not) before as_of to learn from")
        interactions = before(data.interactions, "ts")
        cfg = self.config
        torch.manual_seed(cfg.seed)
        torch.set_num_threads(cfg.threads)
        cat = before(data.catalog, "created_at").sort("item_id")
        subcats, ref = _subcat_table(cat)
        sub_index = {s: j for j, s in enumerate(subcats)}
        item_ids = cat["item_id"].to_numpy().astype(str)
        item_sub = np.array([sub_index[s] for s in cat["subcategory"].to_list()], dtype=np.int64)
        item_rel = (np.log(cat["price"].to_numpy()) - ref[item_sub]).astype(np.float32)
        item_index = {i: j for j, i in enumerate(item_ids)}
        imp = impressions.filter(pl.col("item_id").is_in(pl.Series(item_ids).implode()))
        user_ids = np.array(sorted(imp["user_id"].drop_nulls().unique().to_list()), dtype=str)
        user_index = {u: j + 1 for j, u in enumerate(user_ids)}  # 0: anonymous / unknown
        recent = _session_recent(imp, interactions, item_index)
        it = np.array([item_index[i] for i in imp["item_id"].to_list()], dtype=np.int64)
        us = np.array([user_index.get(u, 0) if u is not None else 0 for u in imp["user_id"].to_list()],
                      dtype=np.int64)
        surf = (imp["surface"] == "search").to_numpy().astype(np.int64)
        pos = imp["position"].to_numpy().clip(0, MAX_POSITION - 1).astype(np.int64)
        queries = imp["query"].to_list()
        match = np.array([q is not None and s and subcats[s_].startswith(q.lower()) for q, s, s_ in
                          zip(queries, surf, item_sub[it])], dtype=np.float32)
        sess_rows: list[int] = []
        sess_items: list[int] = []
        for j, r in enumerate(imp["request_id"].to_list()):
            items = recent.get(r, ())
            sess_rows.extend([j] * len(items))
            sess_items.extend(items)
        y = imp["clicked"].to_numpy().astype(np.float32)
        ts = imp["ts"].dt.epoch("us").to_numpy()
        n_u, n_i, n_s, d = len(user_ids) + 1, len(item_ids), len(subcats), cfg.dim
        g = torch.Generator().manual_seed(cfg.seed)
        P = {"U": torch.randn(n_u, d, generator=g) * 0.01, "E": torch.randn(n_i, d, generator=g) * 0.01,
             "S": torch.randn(n_s, d, generator=g) * 0.01, "bi": torch.zeros(n_i), "bs": torch.zeros(n_s),
             "beta_u": torch.zeros(n_u), "beta0": torch.zeros(1), "alpha": torch.full((1,), 0.5),
             "w_match": torch.zeros(1), "g": torch.full((1,), -1.0), "theta": torch.zeros(2, MAX_POSITION),
             "gamma": torch.full((1,), 0.5)}
        for v in P.values():
            v.requires_grad_(True)
        T = {k: torch.from_numpy(v) for k, v in dict(it=it, us=us, surf=surf, pos=pos, match=match, y=y,
                                                      sub=item_sub, rel=item_rel).items()}
        expo = _exposure_matrix(us, it, n_u, n_i)
        session = _row_mean_matrix(np.array(sess_rows, dtype=np.int64), np.array(sess_items, dtype=np.int64),
                                   len(y), n_i)
        n = len(y)

        def nll_of(b) -> "torch.Tensor":
            """Mean negative log-likelihood of impressions `b` (a slice or index tensor)."""
            i, u = T["it"][b], T["us"][b]
            s = T["sub"][i]
            V = P["E"] + P["S"][T["sub"]]
            vi = V[i]
            sess = torch.sparse.mm(session, V)[b]   # mean vector of each impression's earlier session clicks
            X = torch.sparse.mm(expo, V)            # every user's exposure centroid
            uvec = (P["U"][u] + P["gamma"] * X[u]) * (u > 0).float()[:, None] + P["alpha"] * sess
            z = (P["g"] + P["bi"][i] + P["bs"][s] + (uvec * vi).sum(1)
                 - (P["beta0"] + P["beta_u"][u]) * T["rel"][i] + P["w_match"] * T["match"][b])
            return position_based_nll(P["theta"][T["surf"][b], T["pos"][b]], z, T["y"][b]).mean()

        _fit_lbfgs(P, nll_of, n, np.argsort(ts, kind="stable"), cfg)
        with torch.no_grad():
            exam = torch.sigmoid(P["theta"]).numpy()
            # the exposure term is fixed at fit time: fold it into each user's vector
            U_eff = P["U"] + P["gamma"] * torch.sparse.mm(expo, P["E"] + P["S"][T["sub"]])
            self.p = ClickModelParams(
                item_ids, item_sub, P["E"].numpy().astype(np.float32), P["bi"].numpy().astype(np.float32),
                subcats, P["S"].numpy().astype(np.float32), P["bs"].numpy().astype(np.float32), ref, user_ids,
                U_eff.numpy()[1:].astype(np.float32), P["beta_u"].numpy()[1:].astype(np.float32),
                {k: float(P[k].item()) for k in ("beta0", "alpha", "w_match", "g", "gamma")}, exam.astype(np.float32))
        self.as_of = data.as_of
        self._index()
        return self

    def _index(self) -> None:
        assert self.p is not None
        self._user_index = {u: j for j, u in enumerate(self.p.user_ids)}
        self._item_index = {i: j for j, i in enumerate(self.p.item_ids)}
        self._sub_index = {str(s): j for j, s in enumerate(self.p.subcats)}
        self._state_n, self._state_cache, self._cached_state = -1, None, None
        self._price_key: tuple | None = None          # (state, size, version) of the cached relative log prices
        self._rel_price = np.zeros(0)
        n_users = len(self.p.user_ids)
        pick = np.sort(np.random.default_rng(0).choice(n_users, min(POPULATION, n_users), replace=False))
        self._pop_vec, self._pop_beta = self.p.user_vec[pick], self.p.user_beta[pick]

    # ---- scoring -----------------------------------------------------------------------------------------
    def _state_arrays(self, state: OnlineState) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per state row: item vector, bias, reference log price and subcategory index (-1: unknown subcategory).

        Built once per state; when the same state has grown (a state only appends items) only the new rows are
        computed (O(1) look-ups per new item, not O(catalog); the arrays themselves are copied once, vectorised)."""
        n = len(state)
        same = state is self._cached_state and self._state_cache is not None
        if same and n == self._state_n:
            return self._state_cache
        if same and n > self._state_n:
            new = self._rows_arrays(state, self._state_n, n)
            self._state_cache = tuple(np.concatenate([a, b]) for a, b in zip(self._state_cache, new))
        else:
            self._state_cache = self._rows_arrays(state, 0, n)
        self._cached_state, self._state_n = state, n
        return self._state_cache

    def _rows_arrays(self, state: OnlineState, lo: int, hi: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`_state_arrays` of state rows lo..hi-1: subcategory part, plus the item's own part if the model knows it."""
        p = self.p
        assert p is not None
        sub = np.array([self._sub_index.get(str(s), -1) for s in state.subcategory[lo:hi]], dtype=np.int64)
        known_sub = sub >= 0
        vec = np.zeros((hi - lo, p.item_vec.shape[1]), dtype=np.float32)
        bias = np.full(hi - lo, -np.inf, dtype=np.float32)
        ref = np.zeros(hi - lo, dtype=np.float32)
        vec[known_sub] = p.sub_vec[sub[known_sub]]
        bias[known_sub] = p.sub_bias[sub[known_sub]]
        ref[known_sub] = p.sub_ref_logprice[sub[known_sub]]
        j = np.fromiter((self._item_index.get(i, -1) for i in state.item_ids[lo:hi]), dtype=np.int64, count=hi - lo)
        ok = j >= 0
        vec[ok] += p.item_vec[j[ok]]
        bias[ok] += p.item_bias[j[ok]]
        return vec, bias, ref, sub

    def visitor_vector(self, request: Request, history: tuple[str, ...], state: OnlineState) -> tuple[np.ndarray,
                                                                                                     float]:
        """(u_r, beta_0 + beta_u) for the request: learnt user vector plus alpha x mean vector of recent items."""
        p = self.p
        assert p is not None
        vec, _, _, _ = self._state_arrays(state)
        u = np.zeros(p.item_vec.shape[1], dtype=np.float32)
        beta = p.scalars["beta0"]
        j = self._user_index.get(request.user_id) if request.user_id is not None else None
        seeds = list(request.recent_items[-RECENT:])
        if j is not None:
            u += p.user_vec[j]
            beta += float(p.user_beta[j])
        elif history:
            seeds = list(history[-RECENT:]) + seeds  # a user the model never saw: their history stands in
        rows = state.indices(seeds[-RECENT:]) if seeds else np.zeros(0, dtype=np.int64)
        rows = rows[rows >= 0]
        if len(rows):
            u += p.scalars["alpha"] * vec[rows].mean(axis=0)
        return u, beta

    def _state_rel_price(self, state: OnlineState, ref: np.ndarray) -> np.ndarray:
        """log(max(price, 1e-6)) - reference log price of every state row, recomputed only when the state changed
        (any update: prices change in place)."""
        key = (id(state), len(state), state.version)
        if key != self._price_key or len(self._rel_price) != len(state):
            self._rel_price = np.log(np.maximum(state.price, 1e-6)) - ref
            self._price_key = key
        return self._rel_price

    def _subcat_match(self, request: Request) -> np.ndarray | None:
        """Per subcategory (plus a last slot for 'unknown': no match), whether its name starts with the typed
        prefix; None off the search bar or without a prefix."""
        p = self.p
        assert p is not None
        if not (request.surface == "search" and request.query):
            return None
        q = request.query.lower()
        return np.array([str(s).startswith(q) for s in p.subcats] + [False], dtype=np.float32)

    def score_rows(self, request: Request, history: tuple[str, ...], state: OnlineState, rows: np.ndarray | None
                   ) -> np.ndarray:
        """Attraction logit z (without examination) of the items at state `rows` (NaN for rows < 0; None: every
        row of the state, computed on whole arrays)."""
        p = self.p
        assert p is not None
        vec, bias, ref, sub = self._state_arrays(state)
        u, beta = self.visitor_vector(request, history, state)
        rel = self._state_rel_price(state, ref)
        match = self._subcat_match(request)
        if rows is None:
            z = bias + vec @ u - beta * rel
            if match is not None:
                z = z + p.scalars["w_match"] * match[sub]       # sub -1 -> the last slot: no match
            return np.asarray(z, dtype=np.float64)
        out = np.full(len(rows), np.nan, dtype=np.float64)
        ok = rows >= 0
        r = rows[ok]
        z = bias[r] + vec[r] @ u - beta * rel[r]
        if match is not None:
            z = z + p.scalars["w_match"] * match[sub[r]]
        out[ok] = np.where(np.isfinite(z), z, np.nan)   # a subcategory it never saw: unknown, not -inf
        return out

    def population_scores(self, request: Request, state: OnlineState, rows: np.ndarray) -> np.ndarray:
        """Logit of the mean attraction of the items at state `rows` over a fixed sample of the learnt users (NaN
        for rows < 0 or an unknown subcategory): what a visitor the system knows nothing about is expected to do,
        E_u[sigma(z)], which is not sigma(z) at the mean visitor."""
        p = self.p
        assert p is not None
        out = np.full(len(rows), np.nan, dtype=np.float64)
        ok = rows >= 0
        r = rows[ok]
        if not len(r) or not len(self._pop_vec):
            return out
        vec, bias, ref, sub = self._state_arrays(state)
        rel = self._state_rel_price(state, ref)
        z = (p.scalars["g"] + bias[r][None, :] + self._pop_vec @ vec[r].T
             - (p.scalars["beta0"] + self._pop_beta)[:, None] * rel[r][None, :])
        match = self._subcat_match(request)
        if match is not None:
            z = z + p.scalars["w_match"] * match[sub[r]][None, :]
        with np.errstate(divide="ignore", over="ignore"):
            m = (1.0 / (1.0 + np.exp(-z))).mean(axis=0)
            logit = np.log(m) - np.log1p(-m)
        out[ok] = np.where(np.isfinite(logit), logit, np.nan)
        return out

    def retrieve(self, query: RetrievalQuery, k: int) -> Candidates:
        if self.p is None:
            raise RuntimeError("clickmodel retriever is not fitted")
        state = query.state
        if state is None or k <= 0:
            return Candidates.empty(self.kind)
        z = self.score_rows(query.request, query.history, state, None)      # every row, whole-array arithmetic
        scores = np.where(state.eligible_mask(query.request.ts) & np.isfinite(z), z, -np.inf)
        top = top_indices(scores, k, floor=-np.inf)    # best first, ties by row (= by eligible position)
        return Candidates(state.item_ids[top].astype(object), scores[top], self.kind)

    # ---- persistence -------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        if self.p is None:
            raise RuntimeError("clickmodel retriever is not fitted")
        p = self.p
        with atomic_dir(Path(path), overwrite=True) as tmp:
            for name in ("item_ids", "subcats", "user_ids"):
                np.save(tmp / f"{name}.npy", getattr(p, name).astype(str))
            for name in ("item_sub", "item_vec", "item_bias", "sub_vec", "sub_bias", "sub_ref_logprice", "user_vec",
                         "user_beta", "examination"):
                np.save(tmp / f"{name}.npy", getattr(p, name))
            meta = {"kind": self.kind, "config": asdict(self.config), "scalars": p.scalars,
                    "as_of": self.as_of.isoformat() if self.as_of is not None else None}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path) -> "ClickModelRetriever":
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file}: no saved clickmodel retriever")
        meta = json.loads(meta_file.read_text())
        if meta.get("kind") != cls.kind:
            raise ValueError(f"{meta_file}: kind is {meta.get('kind')!r}, expected {cls.kind!r}")
        arr = {f.stem: np.load(f, allow_pickle=False) for f in path.glob("*.npy")}
        need = set(ClickModelParams.__dataclass_fields__) - {"scalars"}
        missing = need - set(arr)
        if missing:
            raise FileNotFoundError(f"{path}: missing {', '.join(sorted(m + '.npy' for m in missing))}")
        known = set(ClickModelConfig.__dataclass_fields__)
        if set(meta["config"]) - known:
            raise ValueError(f"{meta_file}: saved by another version of the click model (settings "
                             f"{sorted(set(meta['config']) - known)} are unknown here); retrain it")
        out = cls(ClickModelConfig(**meta["config"]))
        out.p = ClickModelParams(**{k: arr[k] for k in need}, scalars=meta["scalars"])
        try:
            out.as_of = datetime.fromisoformat(meta["as_of"]) if meta.get("as_of") else None
        except (TypeError, ValueError):
            raise ValueError(f"{meta_file}: field 'as_of' is {meta['as_of']!r}, not an ISO time") from None
        out._index()
        return out
