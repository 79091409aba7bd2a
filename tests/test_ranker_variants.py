"""`benchmarks.ranker_variants`: each variant changes only what it names, and the model is restored after."""
from __future__ import annotations

import numpy as np

from benchmarks.ranker_variants import _variant_score


class _Booster:
    def __init__(self) -> None:
        self.calls: list = []

    def predict(self, X, num_iteration=None, num_threads=1):
        self.calls.append(num_iteration)
        return X[:, 0]


class _Ranker:
    def __init__(self) -> None:
        self.booster = _Booster()


class _Pipe:
    def __init__(self) -> None:
        self.ranker = _Ranker()

    def ranker_for(self, request):
        return self.ranker


def _as_trained(self, request, ids, feats, use_ranker=True):
    """Stands in for `Pipeline.score`: the ranker's prediction on the retrieval rank."""
    return np.asarray(self.ranker.booster.predict(np.asarray(feats["best_source_rank"], float)[:, None]))


def test_trees_variant_predicts_with_the_first_trees_and_restores_the_booster():
    pipe = _Pipe()
    original = pipe.ranker.booster
    feats = {"best_source_rank": np.array([3.0, 1.0, 2.0])}
    out = _variant_score(_as_trained, "trees", "150")(pipe, None, np.array(["a", "b", "c"]), feats)
    assert out.tolist() == [3.0, 1.0, 2.0]
    assert pipe.ranker.booster is original and original.calls == [150]


def test_cap_variant_scores_only_the_best_retrieved_and_puts_the_rest_below_in_retrieval_order():
    pipe = _Pipe()
    ids = np.array(["a", "b", "c", "d"])
    feats = {"best_source_rank": np.array([4.0, 1.0, 3.0, 2.0])}
    out = _variant_score(_as_trained, "cap", "2")(pipe, None, ids, feats)
    assert out[1] == 1.0 and out[3] == 2.0                   # the two best by retrieval rank, scored by the model
    assert max(out[0], out[2]) < min(out[1], out[3])         # the others below them
    assert out[0] > out[2]                                   # in retrieval order (the earlier position first)
    base = _variant_score(_as_trained, "base", "")(pipe, None, ids, feats)
    assert base.tolist() == [4.0, 1.0, 3.0, 2.0]
