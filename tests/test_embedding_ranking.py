"""RecBole's protocol without RecBole: the per-user ratio split and the full-ranking metrics."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from recs.models.embedding.full_ranking import (
    FullRankingSplit, evaluate_scores, evaluate_topk, split_by_user, split_counts,
)


def _recbole_calcu_split_ids(tot: int, ratios: list[float]) -> list[int]:
    """RecBole 1.2.1 `Dataset._calcu_split_ids`, transcribed: the reference our vectorised version must match."""
    cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
    cnt[0] = tot - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * tot < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


@pytest.mark.parametrize("ratios", [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
def test_split_counts_match_recbole(ratios: list[float]) -> None:
    totals = np.arange(1, 400)
    got = split_counts(totals, ratios)
    for tot, row in zip(totals, got):
        assert row.tolist() == _recbole_calcu_split_ids(int(tot), ratios), tot


def _interactions(n_users: int = 40, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(100, size=int(rng.integers(3, 30)), replace=False):
            rows.append((f"u{u}", f"i{i}"))
    return pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row")


def test_split_is_a_per_user_partition_with_recbole_counts() -> None:
    df = _interactions()
    split = split_by_user(df, (0.8, 0.1, 0.1), seed=3)
    parts = [split.train, split.valid, split.test]
    assert sum(p.height for p in parts) == df.height
    assert pl.concat(parts).sort(["user_id", "item_id"]).equals(df.sort(["user_id", "item_id"]))
    n = df.group_by("user_id").len()
    for u, tot in zip(n["user_id"].to_list(), n["len"].to_list()):
        got = [p.filter(pl.col("user_id") == u).height for p in parts]
        assert got == _recbole_calcu_split_ids(tot, [0.8, 0.1, 0.1])
    again = split_by_user(df, (0.8, 0.1, 0.1), seed=3)
    assert again.test.equals(split.test)
    assert not split_by_user(df, (0.8, 0.1, 0.1), seed=4).test.sort(["user_id", "item_id"]).equals(
        split.test.sort(["user_id", "item_id"]))


def test_split_round_trips_through_parquet(tmp_path) -> None:
    split = split_by_user(_interactions(), seed=1)
    split.save(tmp_path / "split")
    again = FullRankingSplit.load(tmp_path / "split")
    for name in ("train", "valid", "test"):
        assert again.part(name).equals(split.part(name))


def _tiny_split() -> FullRankingSplit:
    mk = lambda rows: pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row")  # noqa: E731
    train = mk([("a", "i0"), ("a", "i1"), ("b", "i2")])
    valid = mk([("a", "i5"), ("b", "i6")])
    test = mk([("a", "i2"), ("a", "i3"), ("b", "i4")])
    return FullRankingSplit(train, valid, test)


def test_metrics_match_hand_computation() -> None:
    split = _tiny_split()
    items = split.item_ids.tolist()  # i0..i6
    # a: history i0,i1,i5 masked; ranking of the rest: i2, i4, i6, i3  -> hits at ranks 1 and 4 (k=4)
    # b: history i2,i6 masked; ranking: i0, i1, i3, i4, i5 -> hit at rank 4
    prefs = {"a": ["i0", "i1", "i5", "i2", "i4", "i6", "i3"], "b": ["i2", "i6", "i0", "i1", "i3", "i4", "i5"]}

    def score(users):
        out = np.zeros((len(users), len(items)))
        for r, u in enumerate(users):
            for rank, it in enumerate(prefs[u]):
                out[r, items.index(it)] = 100 - rank
        return out

    m = evaluate_scores(split, score, "test", k=4)
    d = [1 / math.log2(r + 1) for r in range(1, 5)]
    ndcg_a = (d[0] + d[3]) / (d[0] + d[1])
    ndcg_b = d[3] / d[0]
    assert m["ndcg@4"] == pytest.approx((ndcg_a + ndcg_b) / 2)
    assert m["recall@4"] == pytest.approx((2 / 2 + 1 / 1) / 2)
    assert m["mrr@4"] == pytest.approx((1 + 1 / 4) / 2)
    assert m["precision@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["hit@4"] == 1.0 and m["n_users"] == 2
    k2 = evaluate_scores(split, score, "test", k=2)
    assert k2["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    # the same lists given ready-made score the same
    lists = {"a": ["i2", "i4", "i6", "i3"], "b": ["i0", "i1", "i3", "i4"]}
    assert evaluate_topk(split, lists, "test", k=4) == pytest.approx(m)


def test_valid_phase_masks_train_only_and_unknown_scores_never_rank() -> None:
    split = _tiny_split()
    items = split.item_ids.tolist()

    def score(users):  # everything -inf except each user's valid item
        out = np.full((len(users), len(items)), -np.inf)
        for r, u in enumerate(users):
            out[r, items.index({"a": "i5", "b": "i6"}[u])] = 1.0
        return out

    m = evaluate_scores(split, score, "valid", k=3)
    assert m["recall@3"] == 1.0 and m["ndcg@3"] == 1.0
    t = evaluate_scores(split, score, "test", k=3)  # valid items are masked in test, the rest is -inf
    assert t["recall@3"] == 0.0 and t["hit@3"] == 0.0


def test_scorer_of_wrong_shape_is_rejected() -> None:
    split = _tiny_split()
    with pytest.raises(ValueError, match="shape"):
        evaluate_scores(split, lambda users: np.zeros((len(users), 3)), "test")
