"""MovieLens-100K under RecBole's standard protocol: our embedding retriever's BPR vs RecBole's published figures.

`python -m benchmarks.run movielens` (or `make bench BENCH=movielens`). Environment:
- `RECS_ML100K` : the `.inter` file (default `../shared/data/ml-100k/ml-100k.inter`);
- `RECS_MOVIELENS_SPLIT_DIR` : where the train/valid/test Parquet split is written (default
  `/tmp/recs-bench/movielens-split`); the split is a pure function of the seed (2020), so it is reproducible;
- `RECS_MOVIELENS_MODELS` : comma-separated models to run (default `BPR`; `SASRec`, `GRU4Rec` also work, on the
  same random split - note a random split is not a next-item protocol, so sequential figures are indicative);
- `RECS_MOVIELENS_PIPELINE` : `0` skips the full pipeline (retrievers + LightGBM ranker, run on the BPR model above,
  `scenarios.movielens_pipeline`); otherwise `key=value,...` overrides of its `PipelineConfig` (default: none).
Prints figures; asserts nothing.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from recs.models.embedding.ann_index import AnnConfig
from recs.models.embedding.movielens import (
    PUBLISHED_BPR_TEST, PUBLISHED_SOURCE, evaluate_retriever, prepare_split, published_bpr_config,
)
from recs.models.embedding.recbole_train import EmbeddingConfig
from recs.models.embedding.retriever import RetrieverConfig
from recs.scenarios.movielens_pipeline import PipelineConfig, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("recall@10", "ndcg@10", "mrr@10", "hit@10", "precision@10")


def _config(model: str) -> RetrieverConfig:
    if model == "BPR":
        emb = published_bpr_config()
    else:
        emb = EmbeddingConfig(model=model, embedding_size=64, epochs=50, learning_rate=1e-3, train_batch_size=2048,
                              stopping_step=3, valid_metric="MRR@10", max_seq_length=50)
    return RetrieverConfig(embedding=emb, ann=AnnConfig(kind="hnsw"))


def _row(name: str, m: dict[str, float]) -> str:
    return f"  {name:<28}" + "".join(f"{m[k]:>14.4f}" for k in METRICS)


def main() -> None:
    inter = Path(os.environ.get("RECS_ML100K", ROOT.parent / "shared" / "data" / "ml-100k" / "ml-100k.inter"))
    if not inter.is_file():
        print(f"skipped: {inter} is absent")
        return
    split_dir = Path(os.environ.get("RECS_MOVIELENS_SPLIT_DIR", "/tmp/recs-bench/movielens-split"))
    models = [m.strip() for m in os.environ.get("RECS_MOVIELENS_MODELS", "BPR").split(",") if m.strip()]
    t0 = time.perf_counter()
    split = prepare_split(inter, split_dir, seed=2020, overwrite=True)
    print(f"split RS 8:1:1 by user, seed 2020 -> {split_dir}: train {split.train.height}, valid {split.valid.height},"
          f" test {split.test.height} rows; {split.item_ids.size} items ({time.perf_counter() - t0:.1f} s)")
    print(f"published BPR test figures: {PUBLISHED_SOURCE}")
    print("  " + " " * 28 + "".join(f"{k:>14}" for k in METRICS))
    print(_row("RecBole published BPR (test)", PUBLISHED_BPR_TEST))
    for model in models:
        res = evaluate_retriever(split, _config(model))
        print(_row(f"ours {model} exact (test)", res.test_exact))
        print(_row(f"ours {model} via ANN (test)", res.test_ann))
        print(_row(f"ours {model} exact (valid)", res.valid_exact))
        rb = res.retriever.emb.best_valid
        if rb:
            print(_row(f"RecBole's eval {model} (valid)", {k: rb.get(k, float("nan")) for k in METRICS}))
        if model == "BPR":
            ratio = res.vs_published()
            print(f"  ours / published: recall@10 {ratio['recall@10']:.3f}, ndcg@10 {ratio['ndcg@10']:.3f}"
                  f" (target: within 0.90-1.10)")
        lat = []
        users = split.test["user_id"].unique().to_list()[:300]
        for u in users:
            t = time.perf_counter()
            res.retriever.retrieve_items(u, (), 100)
            lat.append(time.perf_counter() - t)
        print(f"  {model}: best epoch {res.best_epoch}, fit {res.train_seconds:.1f} s, ANN recall@100 vs exact "
              f"{res.ann_recall:.4f} (efSearch {res.retriever.index.search_breadth}), retrieve_items k=100 "
              f"p50 {np.percentile(lat, 50) * 1e3:.2f} ms, p99 {np.percentile(lat, 99) * 1e3:.2f} ms")

        if model == "BPR":
            _pipeline(split, res.retriever, inter.parent, res.train_seconds)


def _overrides(text: str) -> dict:
    out: dict = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = pair.partition("=")
        if key not in PipelineConfig.__dataclass_fields__ or not value:
            raise ValueError(f"RECS_MOVIELENS_PIPELINE: bad override {pair!r}")
        out[key] = type(getattr(PipelineConfig(), key))(value)
    return out


def _pipeline(split, retriever, data_dir: Path, bpr_seconds: float) -> None:
    """BPR alone vs retrievers + LightGBM ranker on the same test users and masks."""
    env = os.environ.get("RECS_MOVIELENS_PIPELINE", "")
    if env.strip() == "0":
        return
    cfg = PipelineConfig(**_overrides(env))
    items = split.item_ids.tolist()
    res = run_pipeline(split, lambda users: retriever.score_items(users, items), cfg, data_dir,
                       {"BPR fit (RecBole, early stop on valid)": bpr_seconds})
    print(f"full pipeline: candidates BPR top-{cfg.n_bpr} + popular {cfg.n_popular} + co-occurrence {cfg.n_cooc}, "
          f"LightGBM lambdarank ({res.trees} trees, num_leaves {cfg.num_leaves}, num_threads {cfg.num_threads}) "
          f"trained on the valid labels")
    print(f"  candidates per user: valid {res.candidates_per_user['valid']:.1f}, test "
          f"{res.candidates_per_user['test']:.1f}; positives inside them: valid {res.candidate_recall['valid']:.4f},"
          f" test {res.candidate_recall['test']:.4f}")
    print("  " + " " * 28 + "".join(f"{k:>14}" for k in METRICS))
    print(_row("BPR, valid holdout users", res.bpr_valid_holdout))
    print(_row("pipeline, valid holdout", res.pipeline_valid_holdout))
    print(_row("BPR alone (test)", res.bpr_test))
    print(_row("pipeline (test)", res.pipeline_test))
    for m in ("ndcg", "recall", "mrr", "hit"):
        d = res.diffs[m]
        print(f"  {d.metric} pipeline - BPR: {d.mean:+.4f} (95% paired bootstrap [{d.boot_low:+.4f}, "
              f"{d.boot_high:+.4f}], t [{d.t_low:+.4f}, {d.t_high:+.4f}], P(boot <= 0) {d.p_not_better:.4f}; "
              f"{d.better} users better, {d.worse} worse of {d.n_users})")
    print(f"  per-user metrics vs evaluate_scores: max |diff| {res.check_max_abs:.2e}")
    top = sorted(res.importance.items(), key=lambda kv: -kv[1])[:8]
    print("  gain importance: " + ", ".join(f"{n} {g:.3f}" for n, g in top))
    print("  seconds per stage: " + "; ".join(f"{n} {s:.1f}" for n, s in res.seconds.items()))


if __name__ == "__main__":
    main()
