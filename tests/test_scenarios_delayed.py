"""delayed-feedback scenario: naive labels bias the predicted conversion rate low; corrections get closer."""
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from recs.scenarios.delayed_feedback import (DelayedFeedbackConfig, _features, delayed_feedback_report,
                                             item_stats_before_day, run_delayed_feedback)
from recs.sim import SimConfig


@pytest.fixture(scope="module")
def result():
    sim = SimConfig(n_users=300, n_items=800, days=6, requests_per_day=2_000, seed=1, delay_median_hours=6.0,
                    delay_sigma=1.5)
    return run_delayed_feedback(DelayedFeedbackConfig(sim=sim, window_h=72, num_rounds=40, seed=1))


def test_shape(result):
    assert result["kind"] == "simulate_delayed_feedback"
    assert [v["variant"] for v in result["variants"]] == ["naive", "matured", "weighted", "soft"]
    assert result["test_rows"] > 1000 and 0 < result["train"]["matured_share"] < 1


def test_naive_labels_are_biased_low_and_corrections_are_closer(result):
    by = {v["variant"]: v for v in result["variants"]}
    assert result["train"]["observed_rate"] < result["train"]["true_rate"]
    assert by["naive"]["rel_bias"] < -0.10
    for name in ("soft", "matured"):
        assert abs(by[name]["rel_bias"]) < abs(by["naive"]["rel_bias"]) - 0.05
        assert by[name]["train_label_rate"] > by["naive"]["train_label_rate"]
    assert by["weighted"]["train_label_rate"] >= by["naive"]["train_label_rate"]


def test_models_rank_better_than_chance(result):
    for v in result["variants"]:
        assert v["auc"] > 0.6 and 0 < v["ndcg"] <= 1


def test_report(result, tmp_path):
    md, html = delayed_feedback_report(result).write(tmp_path, "delayed_feedback")
    assert "<svg" in html.read_text() and "soft" in md.read_text()


def test_config_needs_matured_labels():
    with pytest.raises(ValueError, match="must exceed"):
        DelayedFeedbackConfig(sim=SimConfig(days=3), window_h=72)


def test_item_statistics_are_point_in_time():
    """A row's item impression count and click rate come from the days before its own day only: later impressions
    (after the row, up to T) and the row's own day do not enter (before the fix training rows used every impression
    up to T with leave-one-out on their own click)."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    at = [t0 + timedelta(hours=h) for h in (1, 2, 3, 26, 27, 50, 51, 52)]   # day 0: 3 rows, day 1: 2, day 2: 3
    imp = pl.DataFrame({"item_id": ["a"] * 8, "ts": at, "clicked": [True, False, True, False, True, True, True, True],
                        "surface": ["home"] * 8, "user_id": ["u"] * 8, "position": [0] * 8})
    stats = item_stats_before_day(imp.select("item_id", "ts", "clicked"), t0)
    assert stats.sort("_day").select("_day", "_n", "_c").rows() == [(0, 0.0, 0.0), (1, 3.0, 2.0), (2, 5.0, 3.0)]
    cat = pl.DataFrame({"item_id": ["a"], "price": [10.0], "subcategory": ["s"]})
    f = _features(imp, cat, stats, t0)
    assert f["item_ctr"].to_list() == pytest.approx([0.1] * 3 + [3 / 13] * 2 + [4 / 15] * 3)
    # the first two days' features do not depend on what happened later
    early = imp.filter(pl.col("ts") < t0 + timedelta(days=2))
    f2 = _features(early, cat, item_stats_before_day(early.select("item_id", "ts", "clicked"), t0), t0)
    assert f2["item_ctr"].to_list() == f["item_ctr"].to_list()[:5]
    assert f2["item_imps"].to_list() == f["item_imps"].to_list()[:5]
