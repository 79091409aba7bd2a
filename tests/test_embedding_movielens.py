"""MovieLens-100K, RecBole protocol: our BPR retriever within 10% of RecBole's published test figures (slow)."""
from __future__ import annotations

import pytest

from recs.models.embedding.movielens import PUBLISHED_BPR_TEST, run_bpr_benchmark


@pytest.mark.slow
def test_bpr_reaches_published_ml100k_figures(shared_data, tmp_path) -> None:
    inter = shared_data / "ml-100k" / "ml-100k.inter"
    if not inter.is_file():
        pytest.skip(f"{inter} is absent")
    res = run_bpr_benchmark(inter, tmp_path / "split")
    for metric in ("recall@10", "ndcg@10"):
        assert res.test_exact[metric] == pytest.approx(PUBLISHED_BPR_TEST[metric], rel=0.10), metric
        assert res.test_ann[metric] == pytest.approx(res.test_exact[metric], abs=0.01), metric
    # our evaluator reproduces RecBole's own evaluation of the same model on the validation split
    for metric in ("recall@10", "ndcg@10", "mrr@10"):
        assert res.valid_exact[metric] == pytest.approx(res.retriever.emb.best_valid[metric], abs=1e-5), metric
    assert res.ann_recall >= 0.95
    assert (tmp_path / "split" / "test.parquet").is_file()
