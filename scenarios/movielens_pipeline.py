"""MovieLens-100K under RecBole's protocol: retrievers + a LightGBM lambdarank ranker against BPR alone.

Protocol (as `models.embedding.movielens`): RS 8:1:1 random split per user (seed 2020), every rating a positive,
full ranking over all items, the user's earlier parts masked (train for valid; train + valid for test).
Stages:
1. BPR in RecBole's published setting, trained on train, early-stopped on valid MRR@10 (RecBole's protocol).
2. Candidates per user: BPR top-N + popular + item co-occurrence neighbours of the train items, de-duplicated,
   history excluded; features from the train part only (`movielens_features`).
3. Ranker: LightGBM lambdarank, labels = the user's VALID items among the candidates. Valid is therefore training
   data for the ranker, as it is for BPR's early stopping. Tuning uses valid only: the trees are early-stopped on
   the valid labels of a held-out share of users (whose full-ranking valid metrics are reported against BPR's),
   then the ranker is refit on all users' valid labels with that many trees. Test is touched once.
4. Test: the ranker orders each user's test candidates (mask train + valid, as for BPR); ties keep BPR's order.
   BPR alone and the pipeline are both scored by `full_ranking.evaluate_scores` on the same users and masks, and
   compared per user (paired bootstrap of the NDCG@10 difference).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import lightgbm as lgb
import numpy as np
import polars as pl

from recs.models.embedding.full_ranking import FullRankingSplit, evaluate_scores
from recs.scenarios.movielens_features import MovieLensFeatures, PhaseRows

METRICS = ("recall", "ndcg", "mrr", "hit", "precision")
Scorer = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class PipelineConfig:
    """Candidate quotas, ranker settings (LightGBM lambdarank) and the evaluation's k and bootstrap."""

    n_bpr: int = 200
    n_popular: int = 50
    n_cooc: int = 100
    num_leaves: int = 15
    learning_rate: float = 0.05
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    max_trees: int = 1000
    early_stopping_rounds: int = 50
    holdout_share: float = 0.2  # share of valid users whose valid labels early-stop the trees
    # 1: same trees as 2 (deterministic), and on the shared 2-core machine the fit took 7.9 s with 1 thread against
    # 63.9 s with 2 (OpenMP threads spinning against other processes; docs/RETRIEVAL.md)
    num_threads: int = 1
    seed: int = 0
    k: int = 10
    n_boot: int = 10_000

    def __post_init__(self) -> None:
        for name in ("n_bpr", "max_trees", "early_stopping_rounds", "num_threads", "k", "n_boot", "num_leaves"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.num_threads > (os.cpu_count() or 1):
            raise ValueError(f"num_threads: at most the machine's {os.cpu_count()} cores, got {self.num_threads}")
        if self.n_popular < 0 or self.n_cooc < 0:
            raise ValueError("n_popular, n_cooc: must be >= 0")
        if not 0.0 < self.holdout_share < 1.0:
            raise ValueError(f"holdout_share: must be in (0, 1), got {self.holdout_share}")
        if not 0.0 < self.learning_rate <= 1.0 or not 0.0 < self.feature_fraction <= 1.0:
            raise ValueError("learning_rate, feature_fraction: must be in (0, 1]")


@dataclass(frozen=True)
class PairedDiff:
    """Mean per-user difference (pipeline - baseline) of one metric with a bootstrap and a t interval (95%)."""

    metric: str
    mean: float
    boot_low: float
    boot_high: float
    t_low: float
    t_high: float
    p_not_better: float  # share of bootstrap means <= 0 (one-sided)
    n_users: int
    better: int  # users whose metric is higher with the pipeline
    worse: int


@dataclass
class PipelineResult:
    """Figures of one run; `*_test` come from `evaluate_scores` on the test phase (same users, same masks)."""

    bpr_test: dict[str, float]
    pipeline_test: dict[str, float]
    bpr_valid_holdout: dict[str, float]
    pipeline_valid_holdout: dict[str, float]
    diffs: dict[str, PairedDiff]
    candidate_recall: dict[str, float]  # share of the phase's positives inside the candidates
    candidates_per_user: dict[str, float]
    trees: int
    importance: dict[str, float]  # gain, final ranker
    seconds: dict[str, float]
    check_max_abs: float  # max |per-user mean - evaluate_scores| over metrics and both scorers
    per_user: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)
    lists: dict[str, list[str]] = field(repr=False, default_factory=dict)  # the pipeline's test top-k per user


def per_user_metrics(
    split: FullRankingSplit, lists: Mapping[str, Sequence[str]], phase: str, k: int = 10
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(users, metric -> per-user values) of top-k lists, users sorted as `full_ranking` sorts them."""
    target = split.part(phase)
    users = np.sort(target["user_id"].unique().to_numpy().astype(str))
    agg = target.group_by("user_id").agg(pl.col("item_id").unique())
    pos = {u: set(v) for u, v in zip(agg["user_id"].to_list(), agg["item_id"].to_list())}
    hits = np.zeros((users.size, k))
    for r, u in enumerate(users):
        top = list(dict.fromkeys(lists.get(u, ())))[:k]
        hits[r, :len(top)] = [t in pos[u] for t in top]
    n_pos = np.array([len(pos[u]) for u in users], dtype=np.float64)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    first = np.where(hits.any(1), hits.argmax(1) + 1.0, np.inf)
    idcg = np.cumsum(disc)[np.minimum(n_pos, k).astype(int) - 1]
    return users, {
        "recall": hits.sum(1) / n_pos, "ndcg": (hits * disc).sum(1) / idcg, "mrr": 1.0 / first,
        "hit": hits.any(1).astype(float), "precision": hits.sum(1) / k,
    }


def paired_difference(a: np.ndarray, b: np.ndarray, metric: str, n_boot: int = 10_000, seed: int = 0) -> PairedDiff:
    """Per-user paired difference a - b: mean, 95% percentile-bootstrap and t intervals, one-sided p."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        raise ValueError(f"paired_difference: need >= 2 users, got {d.size}")
    rng = np.random.default_rng(seed)
    boot = np.array([d[rng.integers(0, d.size, d.size)].mean() for _ in range(n_boot)])
    se = d.std(ddof=1) / np.sqrt(d.size)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return PairedDiff(metric, float(d.mean()), float(lo), float(hi), float(d.mean() - 1.96 * se),
                      float(d.mean() + 1.96 * se), float((boot <= 0).mean()), int(d.size), int((d > 0).sum()),
                      int((d < 0).sum()))


def _order(rows: PhaseRows, score: np.ndarray) -> np.ndarray:
    """Row indices sorted by user, then ranker score (desc), then BPR score (desc)."""
    bpr = np.nan_to_num(rows.X[:, 0].astype(np.float64), nan=-np.inf)
    return np.lexsort((-bpr, -score, rows.user_pos))


def _lists(feats: MovieLensFeatures, rows: PhaseRows, score: np.ndarray, k: int) -> dict[str, list[str]]:
    """Top-k item ids per user from the ranker's scores."""
    out: dict[str, list[str]] = {}
    for r in _order(rows, score):
        lst = out.setdefault(str(feats.users[rows.user_pos[r]]), [])
        if len(lst) < k:
            lst.append(str(feats.items[rows.item_pos[r]]))
    return out


def _list_scorer(feats: MovieLensFeatures, lists: Mapping[str, Sequence[str]]) -> Scorer:
    """A full-ranking scorer giving each user's list descending scores and every other item -inf."""
    ipos = {it: i for i, it in enumerate(feats.items)}

    def score(users: Sequence[str]) -> np.ndarray:
        out = np.full((len(users), feats.items.size), -np.inf)
        for r, u in enumerate(users):
            lst = lists.get(u, [])
            out[r, [ipos[i] for i in lst]] = np.arange(len(lst), 0, -1, dtype=np.float64)
        return out
    return score


def _bpr_lists(feats: MovieLensFeatures, phase: str, users: np.ndarray, k: int) -> dict[str, list[str]]:
    """BPR's top-k per user with the phase's history masked (ties by item order)."""
    rows = feats.phase_rows(phase, users, k, 0, 0)
    return _lists(feats, rows, rows.X[:, 0].astype(np.float64), k)


def _lgb_params(cfg: PipelineConfig) -> dict:
    return {"objective": "lambdarank", "metric": "ndcg", "eval_at": [cfg.k], "num_leaves": cfg.num_leaves,
            "learning_rate": cfg.learning_rate, "min_data_in_leaf": cfg.min_data_in_leaf,
            "feature_fraction": cfg.feature_fraction, "num_threads": cfg.num_threads, "seed": cfg.seed,
            "deterministic": True, "verbosity": -1}


def _dataset(rows: PhaseRows, sel: np.ndarray, names: Sequence[str], ref: lgb.Dataset | None = None) -> lgb.Dataset:
    return lgb.Dataset(rows.X[sel], rows.y[sel], group=rows.groups(sel), feature_name=list(names), reference=ref,
                       free_raw_data=False)


def fit_ranker(rows: PhaseRows, names: Sequence[str], cfg: PipelineConfig
               ) -> tuple[lgb.Booster, lgb.Booster, np.ndarray]:
    """(holdout model, final model, holdout user positions): trees early-stopped on held-out users' valid labels,
    then refit on every user with a positive among its candidates."""
    users = np.unique(rows.user_pos)
    rng = np.random.default_rng(cfg.seed)
    held = rng.choice(users, max(1, int(round(cfg.holdout_share * users.size))), replace=False)
    has_pos = np.zeros(rows.user_pos.max() + 1, dtype=bool)
    has_pos[rows.user_pos[rows.y > 0]] = True
    useful = has_pos[rows.user_pos]  # groups without a positive carry no lambdarank gradient
    in_held = np.isin(rows.user_pos, held)
    fit_rows, held_rows = useful & ~in_held, useful & in_held
    if not fit_rows.any() or not held_rows.any():
        raise ValueError("fit_ranker: no user with a valid positive among its candidates on one side of the holdout")
    train = _dataset(rows, fit_rows, names)
    valid = _dataset(rows, held_rows, names, ref=train)
    first = lgb.train(_lgb_params(cfg), train, num_boost_round=cfg.max_trees, valid_sets=[valid],
                      callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    trees = first.best_iteration or first.current_iteration()
    final = lgb.train(_lgb_params(cfg), _dataset(rows, useful, names), num_boost_round=trees)
    return first, final, held


def run_pipeline(split: FullRankingSplit, bpr_scorer: Scorer, config: PipelineConfig = PipelineConfig(),
                 data_dir: str | Path | None = None, seconds: dict[str, float] | None = None) -> PipelineResult:
    """Candidates + features + ranker on `split`, with `bpr_scorer(user_ids)` -> (n, n_items) scores aligned with
    `split.item_ids`; returns test figures of BPR alone and of the pipeline, and the valid-holdout check."""
    cfg, k = config, config.k
    secs = dict(seconds or {})
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        secs[name] = time.perf_counter() - t
        t = time.perf_counter()

    users_all = np.sort(pl.concat([p.select("user_id") for p in (split.train, split.valid, split.test)])
                        ["user_id"].unique().to_numpy().astype(str))
    feats = MovieLensFeatures(split, np.asarray(bpr_scorer(users_all.tolist()), dtype=np.float64),
                              Path(data_dir) if data_dir is not None else None)
    lap("train statistics (co-occurrence, side data)")
    valid_users = np.sort(split.valid["user_id"].unique().to_numpy().astype(str))
    vrows = feats.phase_rows("valid", valid_users, cfg.n_bpr, cfg.n_popular, cfg.n_cooc)
    lap("valid candidates + features")
    holdout_model, final, held = fit_ranker(vrows, feats.names, cfg)
    lap("ranker fit (early stop + refit)")
    hsel = np.isin(vrows.user_pos, held)
    hrows = PhaseRows(vrows.user_pos[hsel], vrows.item_pos[hsel], vrows.X[hsel], vrows.y[hsel], vrows.n_positives)
    held_ids = set(feats.users[held].tolist())
    hv_pipe = _lists(feats, hrows, holdout_model.predict(hrows.X, num_threads=cfg.num_threads), k)
    hv_bpr = _bpr_lists(feats, "valid", np.array(sorted(held_ids)), k)
    vu, pv = per_user_metrics(split, hv_pipe, "valid", k)
    _, bv = per_user_metrics(split, hv_bpr, "valid", k)
    on = np.isin(vu, list(held_ids))
    valid_pipe = {f"{m}@{k}": float(pv[m][on].mean()) for m in METRICS}
    valid_bpr = {f"{m}@{k}": float(bv[m][on].mean()) for m in METRICS}
    lap("valid holdout check")
    test_users = np.sort(split.test["user_id"].unique().to_numpy().astype(str))
    trows = feats.phase_rows("test", test_users, cfg.n_bpr, cfg.n_popular, cfg.n_cooc)
    pipe_lists = _lists(feats, trows, final.predict(trows.X, num_threads=cfg.num_threads), k)
    lap("test candidates + features + ranking")
    bpr_test = evaluate_scores(split, bpr_scorer, "test", k)
    pipe_test = evaluate_scores(split, _list_scorer(feats, pipe_lists), "test", k)
    _, pu = per_user_metrics(split, pipe_lists, "test", k)
    _, bu = per_user_metrics(split, _bpr_lists(feats, "test", test_users, k), "test", k)
    check = max(abs(float(arr[m].mean()) - ref[f"{m}@{k}"]) for arr, ref in ((pu, pipe_test), (bu, bpr_test))
                for m in METRICS)
    diffs = {m: paired_difference(pu[m], bu[m], f"{m}@{k}", cfg.n_boot, cfg.seed) for m in METRICS}
    lap("test evaluation + bootstrap")
    gain = final.feature_importance("gain")
    return PipelineResult(
        bpr_test=bpr_test, pipeline_test=pipe_test, bpr_valid_holdout=valid_bpr, pipeline_valid_holdout=valid_pipe,
        diffs=diffs,
        candidate_recall={"valid": float(vrows.y.sum() / max(vrows.n_positives.sum(), 1)),
                          "test": float(trows.y.sum() / max(trows.n_positives.sum(), 1))},
        candidates_per_user={"valid": vrows.y.size / valid_users.size, "test": trows.y.size / test_users.size},
        trees=final.current_iteration(),
        importance={n: float(g) for n, g in zip(feats.names, gain / max(gain.sum(), 1e-12))},
        seconds=secs, check_max_abs=check, per_user={"pipeline": pu, "bpr": bu}, lists=pipe_lists,
    )


def subsample_users(split: FullRankingSplit, n_users: int, seed: int = 0) -> FullRankingSplit:
    """The same split restricted to `n_users` random users (for fast tests)."""
    users = np.sort(split.train["user_id"].unique().to_numpy().astype(str))
    keep = np.random.default_rng(seed).choice(users, min(n_users, users.size), replace=False).tolist()
    return FullRankingSplit(*(p.filter(pl.col("user_id").is_in(keep)) for p in (split.train, split.valid, split.test)))


def run_movielens_pipeline(data_dir: str | Path, config: PipelineConfig = PipelineConfig(),
                           split_dir: str | Path | None = None, retriever: object | None = None,
                           seed: int = 2020) -> PipelineResult:
    """Split ml-100k (seed 2020), train BPR in RecBole's published setting unless `retriever` (fitted on this
    split's train) is given, and run the pipeline."""
    from recs.models.embedding.ann_index import AnnConfig
    from recs.models.embedding.movielens import prepare_split, published_bpr_config
    from recs.models.embedding.retriever import EmbeddingRetriever, RetrieverConfig

    data = Path(data_dir)
    inter = data / "ml-100k.inter"
    if not inter.is_file():
        raise ValueError(f"{inter}: missing")
    t0 = time.perf_counter()
    split = prepare_split(inter, split_dir, seed=seed, overwrite=True)
    secs = {"split": time.perf_counter() - t0}
    if retriever is None:
        t0 = time.perf_counter()
        retriever = EmbeddingRetriever(RetrieverConfig(embedding=published_bpr_config(), ann=AnnConfig(kind="hnsw")))
        retriever.fit(split.train, valid=split.valid)
        secs["BPR fit (RecBole, early stop on valid)"] = time.perf_counter() - t0
    items = split.item_ids.tolist()
    return run_pipeline(split, lambda users: retriever.score_items(users, items), config, data, secs)
