"""MovieLens-100K under RecBole's standard protocol, as a library: split, train the embedding retriever, evaluate.

Published reference (RecBole quick start, BPR on ml-100k: embedding_size 64, learning_rate 1e-3, train batch
4096, one uniform negative, up to 500 epochs with early stopping on valid MRR@10 after 10 stale epochs,
eval_args split RS [0.8, 0.1, 0.1], order RO, group_by user, mode full; every rating is a positive, no threshold):
test Recall@10 0.2523, MRR@10 0.4855, NDCG@10 0.2920, Hit@10 0.7953, Precision@10 0.1962.

`prepare_split` writes the split (train/valid/test Parquet) so any other scorer - e.g. the full retrieval +
ranking pipeline - is evaluated on the same rows with `full_ranking.evaluate_scores` / `evaluate_topk`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recs.datasets.adapters.recbole_atomic import read_recbole
from recs.models.embedding.ann_index import AnnConfig
from recs.models.embedding.full_ranking import FullRankingSplit, evaluate_scores, evaluate_topk, split_by_user
from recs.models.embedding.recbole_train import EmbeddingConfig
from recs.models.embedding.retriever import EmbeddingRetriever, RetrieverConfig

PUBLISHED_BPR_TEST = {"recall@10": 0.2523, "mrr@10": 0.4855, "ndcg@10": 0.2920, "hit@10": 0.7953,
                      "precision@10": 0.1962}
PUBLISHED_SOURCE = "https://recbole.io/docs/get_started/started/general.html (RecBole 1.x quick start, BPR, ml-100k)"


def published_bpr_config(**overrides: Any) -> EmbeddingConfig:
    """RecBole's published ml-100k BPR setting as an `EmbeddingConfig`."""
    base = dict(model="BPR", embedding_size=64, epochs=500, learning_rate=1e-3, train_batch_size=4096,
                eval_batch_size=4096, neg_samples=1, weight_decay=0.0, seed=2020, stopping_step=10,
                valid_metric="MRR@10")
    base.update(overrides)
    return EmbeddingConfig(**base)


def load_movielens(inter_path: str | Path) -> pl.DataFrame:
    """ml-100k `.inter` (RecBole atomic file) as canonical interactions; every rating is a positive."""
    return read_recbole(inter_path, kind="click")


def prepare_split(
    inter_path: str | Path, out_dir: str | Path | None = None, seed: int = 2020, overwrite: bool = False
) -> FullRankingSplit:
    """RecBole's RS 8:1:1 per-user random split of ml-100k; saved as Parquet under `out_dir` when given."""
    split = split_by_user(load_movielens(inter_path), (0.8, 0.1, 0.1), seed=seed)
    if out_dir is not None:
        split.save(out_dir, overwrite=overwrite)
    return split


@dataclass
class BenchmarkResult:
    """Test (and valid) metrics of one retriever on a split, exact full ranking and through the ANN index."""

    model: str
    test_exact: dict[str, float]
    test_ann: dict[str, float]
    valid_exact: dict[str, float]
    ann_recall: float
    train_seconds: float
    best_epoch: int | None
    retriever: EmbeddingRetriever = field(repr=False)

    def vs_published(self) -> dict[str, float]:
        """Our exact test metric / the published one (1.0 = equal), for the metrics RecBole publishes."""
        return {m: self.test_exact[m] / v for m, v in PUBLISHED_BPR_TEST.items()}


def evaluate_retriever(
    split: FullRankingSplit, config: RetrieverConfig, k: int = 10
) -> BenchmarkResult:
    """Fit the embedding retriever on `split.train` (early stopping on `split.valid` for BPR) and evaluate on test.

    `test_exact` ranks all items by exact inner product (RecBole's full ranking); `test_ann` takes the top-k
    from the faiss index via `retrieve_items` with the user's train + valid items excluded.
    """
    t0 = time.perf_counter()
    retriever = EmbeddingRetriever(config)
    if config.embedding.sequential:
        retriever.fit(split.train)
    else:
        retriever.fit(split.train, valid=split.valid)
    train_seconds = time.perf_counter() - t0
    items = split.item_ids.tolist()
    score = lambda users: retriever.score_items(users, items)  # noqa: E731
    test_exact = evaluate_scores(split, score, "test", k)
    valid_exact = evaluate_scores(split, score, "valid", k)
    history = split.history("test").group_by("user_id").agg(pl.col("item_id"))
    seen = dict(zip(history["user_id"].to_list(), history["item_id"].to_list()))
    lists = {}
    for u in np.sort(split.test["user_id"].unique().to_numpy().astype(str)):
        ids, _ = retriever.retrieve_items(u, (), k, exclude=seen.get(u, []))
        lists[u] = ids
    test_ann = evaluate_topk(split, lists, "test", k)
    return BenchmarkResult(
        model=config.embedding.model, test_exact=test_exact, test_ann=test_ann, valid_exact=valid_exact,
        ann_recall=retriever.ann_recall, train_seconds=train_seconds, best_epoch=retriever.emb.best_epoch,
        retriever=retriever,
    )


def run_bpr_benchmark(
    inter_path: str | Path, split_dir: str | Path | None = None, seed: int = 2020, ann: AnnConfig | None = None,
    **embedding_overrides: Any,
) -> BenchmarkResult:
    """Split ml-100k (saved under `split_dir` if given), train BPR in the published setting and evaluate it."""
    split = prepare_split(inter_path, split_dir, seed=seed, overwrite=True)
    cfg = RetrieverConfig(embedding=published_bpr_config(**embedding_overrides), ann=ann or AnnConfig())
    return evaluate_retriever(split, cfg)
