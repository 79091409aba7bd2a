"""Ranking metrics against hand-computed values."""
from __future__ import annotations

import math

import pytest

from recs.evaluators.ranking import MetricAccumulator, list_metrics


def test_values_of_one_list():
    m = list_metrics(["x", "a", "y", "b"], {"a", "b", "c"}, 4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["ndcg"] == pytest.approx(dcg / ideal)
    assert m["mrr"] == pytest.approx(1 / 2) and m["hit_rate"] == 1.0


def test_more_relevant_items_than_k_make_a_full_list_perfect():
    m = list_metrics(["a", "b"], {"a", "b", "c", "d"}, 2)
    assert m["ndcg"] == pytest.approx(1.0) and m["recall"] == pytest.approx(0.5)


def test_a_repeated_item_counts_once():
    m = list_metrics(["a", "a", "a"], {"a"}, 3)
    assert m == {"recall": 1.0, "ndcg": pytest.approx(1.0), "mrr": 1.0, "hit_rate": 1.0}
    m = list_metrics(["x", "a", "a", "b"], {"a", "b"}, 4)      # the repeat keeps its slot: b is at rank 4
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert m["ndcg"] == pytest.approx(dcg / (1 + 1 / math.log2(3))) and m["recall"] == 1.0


def test_only_the_top_k_count_and_misses_score_zero():
    assert list_metrics(["x", "y", "a"], {"a"}, 2) == {"recall": 0.0, "ndcg": 0.0, "mrr": 0.0, "hit_rate": 0.0}
    assert list_metrics([], {"a"}, 5)["ndcg"] == 0.0


def test_accumulator_averages_per_segment_and_skips_requests_without_relevant_items():
    acc = MetricAccumulator(2)
    acc.add(["all", "home"], ["a", "x"], {"a"})
    acc.add(["all"], ["x", "y"], {"a"})
    acc.add(["all"], ["a"], set())                          # nothing relevant: not a request to score
    res = acc.result()
    assert res["all"]["recall"] == pytest.approx(0.5) and res["home"]["recall"] == 1.0
