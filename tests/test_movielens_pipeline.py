"""MovieLens pipeline (retrievers + LightGBM ranker vs a base scorer) on a 150-user subsample of ml-100k.

The base scorer here is a truncated SVD (or random scores), not RecBole's BPR, so the test runs in seconds; the
full-size BPR comparison is `make bench BENCH=movielens`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recs.models.embedding.full_ranking import FullRankingSplit, evaluate_topk
from recs.models.embedding.movielens import PUBLISHED_BPR_TEST, prepare_split
from recs.scenarios.movielens_features import FEATURES, MovieLensFeatures, _matrix
from recs.scenarios.movielens_pipeline import (PipelineConfig, paired_difference, per_user_metrics,
                                               run_movielens_pipeline, run_pipeline, subsample_users)

FAST = PipelineConfig(n_bpr=50, n_popular=20, n_cooc=30, max_trees=60, early_stopping_rounds=10, n_boot=300,
                      min_data_in_leaf=20)


@pytest.fixture(scope="module")
def ml_dir(shared_data) -> Path:
    d = shared_data / "ml-100k"
    if not (d / "ml-100k.inter").is_file():
        pytest.skip(f"{d / 'ml-100k.inter'} is absent")
    return d


@pytest.fixture(scope="module")
def split(ml_dir) -> FullRankingSplit:
    return subsample_users(prepare_split(ml_dir / "ml-100k.inter", seed=2020), 150, seed=0)


def _svd_scorer(split: FullRankingSplit, rank: int = 16):
    """Low-rank reconstruction of the train matrix: a cheap stand-in for BPR with real signal."""
    items = split.item_ids
    users = np.sort(split.train["user_id"].unique().to_numpy().astype(str))
    X = _matrix(split.train, users, items).toarray()
    u, s, vt = np.linalg.svd(X, full_matrices=False)
    recon = (u[:, :rank] * s[:rank]) @ vt[:rank]
    return lambda ids: recon[np.searchsorted(users, np.asarray(ids, dtype=str))]


def _random_scorer(split: FullRankingSplit):
    n = split.item_ids.size
    return lambda ids: np.stack([np.random.default_rng(int(u)).random(n) for u in ids])


def test_candidates_exclude_history_and_carry_labels(split, ml_dir) -> None:
    users = np.sort(split.train["user_id"].unique().to_numpy().astype(str))
    base = _svd_scorer(split)(users)
    feats = MovieLensFeatures(split, base, ml_dir)
    for phase in ("valid", "test"):
        rows = feats.phase_rows(phase, users, 50, 20, 30)
        assert rows.X.shape == (rows.y.size, len(FEATURES))
        pairs = set(zip(rows.user_pos.tolist(), rows.item_pos.tolist()))
        assert len(pairs) == rows.y.size  # de-duplicated
        hist = split.history(phase)
        item_pos = {it: i for i, it in enumerate(feats.items)}
        user_pos = {u: i for i, u in enumerate(feats.users)}
        seen = {(user_pos[u], item_pos[i]) for u, i in zip(hist["user_id"].to_list(), hist["item_id"].to_list())}
        assert not pairs & seen
        target = split.part(phase)
        pos = {(user_pos[u], item_pos[i]) for u, i in zip(target["user_id"].to_list(), target["item_id"].to_list())}
        assert {p for p, y in zip(zip(rows.user_pos.tolist(), rows.item_pos.tolist()), rows.y) if y} == pairs & pos
        # every user's 50 best unmasked base-scorer items are candidates
        for r in range(0, users.size, 37):
            s = np.where(np.isin(np.arange(feats.items.size), [i for (uu, i) in seen if uu == r]), -np.inf, base[r])
            assert set(np.argsort(-s)[:50].tolist()) <= {i for (uu, i) in pairs if uu == r}
    assert np.isfinite(feats.genres).all() and feats.genres.sum(1).max() >= 1  # genres read from ml-100k.item


def test_pipeline_beats_random_base_and_agrees_with_evaluator(split, ml_dir) -> None:
    res = run_pipeline(split, _random_scorer(split), FAST, ml_dir)
    assert res.bpr_test["n_users"] == res.pipeline_test["n_users"] == split.test["user_id"].n_unique()
    assert res.check_max_abs < 1e-6  # our per-user metrics average to evaluate_scores' figures
    # popularity + co-occurrence features carry the ranker far above the random base it was given
    assert res.pipeline_test["ndcg@10"] > res.bpr_test["ndcg@10"] + 0.1
    assert res.diffs["ndcg"].boot_low > 0
    assert all(len(v) == 10 for v in res.lists.values())


def test_test_labels_never_reach_the_pipeline(split, ml_dir) -> None:
    scorer = _svd_scorer(split)
    base = run_pipeline(split, scorer, FAST, ml_dir)
    shuffled = split.test.with_columns(pl.Series("item_id", np.random.default_rng(1).permutation(
        split.test["item_id"].to_numpy())))
    other = run_pipeline(FullRankingSplit(split.train, split.valid, shuffled), scorer, FAST, ml_dir)
    assert other.lists == base.lists
    assert other.pipeline_test["ndcg@10"] != base.pipeline_test["ndcg@10"]


def test_per_user_metrics_match_evaluate_topk(split) -> None:
    rng = np.random.default_rng(3)
    items = split.item_ids
    users = split.test["user_id"].unique().to_list()
    lists = {u: rng.choice(items, 10, replace=False).tolist() for u in users}
    for u in users[:20]:  # plant hits so the metrics are not all zero
        lists[u][3] = split.test.filter(pl.col("user_id") == u)["item_id"][0]
    _, per_user = per_user_metrics(split, lists, "test")
    ref = evaluate_topk(split, lists, "test")
    for m, v in per_user.items():
        assert v.mean() == pytest.approx(ref[f"{m}@10"], abs=1e-12), m


def test_paired_difference_interval() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(2000)
    d = paired_difference(b + 0.05 + rng.normal(0, 0.1, 2000), b, "x", n_boot=2000)
    assert d.boot_low < 0.05 < d.boot_high and d.boot_low > 0 and d.p_not_better < 0.01
    same = paired_difference(b + rng.normal(0, 0.1, 2000), b, "x", n_boot=2000)
    assert same.boot_low < 0 < same.boot_high
    with pytest.raises(ValueError):
        paired_difference(np.ones(1), np.ones(1), "x")


@pytest.mark.slow
def test_pipeline_beats_bpr_on_full_ml100k(ml_dir, tmp_path) -> None:
    """Full size (BPR in RecBole's published setting, minutes): the pipeline's test NDCG@10 gain over BPR alone has
    a paired-bootstrap 95% interval above zero."""
    res = run_movielens_pipeline(ml_dir, split_dir=tmp_path / "split")
    assert res.bpr_test["ndcg@10"] == pytest.approx(PUBLISHED_BPR_TEST["ndcg@10"], rel=0.10)
    assert res.pipeline_test["n_users"] == res.bpr_test["n_users"] == 943
    assert res.diffs["ndcg"].boot_low > 0, res.diffs["ndcg"]
