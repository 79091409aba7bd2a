"""delayed-feedback scenario: naive labels bias the predicted conversion rate low; corrections get closer."""
import pytest

from recs.scenarios.delayed_feedback import DelayedFeedbackConfig, delayed_feedback_report, run_delayed_feedback
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
