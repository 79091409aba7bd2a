"""cold-start scenario: a small trained pipeline, per-segment offline metrics and true CTR with mitigations."""
import numpy as np
import pytest

from recs.datasets.policy import Ranking, Request
from recs.scenarios.cold_start import ColdStartConfig, ExplorePolicy, _metrics, cold_start_report, run_cold_start
from recs.sim import SimConfig


@pytest.fixture(scope="module")
def result():
    sim = SimConfig(n_users=250, n_items=800, days=6, requests_per_day=1_200, seed=1)
    return run_cold_start(ColdStartConfig(sim=sim, n_requests=80, max_eval_requests=300, max_ranker_requests=600,
                                          explore=0.3))


def test_segments_and_sources(result):
    assert result["kind"] == "simulate_cold_start" and result["new_items"] > 0
    off = {(r["source"], r["segment"]) for r in result["offline"]}
    for src in ("pipeline", "popularity", "covisit", "content", "suggest"):
        assert (src, "all") in off and (src, "anonymous") in off
    for r in result["offline"]:
        assert 0 <= r["recall"] <= 1 and 0 <= r["ndcg"] <= 1


def test_covisit_needs_history_popularity_does_not(result):
    by = {(r["source"], r["segment"]): r for r in result["offline"]}
    assert by[("covisit", "anonymous")]["recall"] == 0.0  # no history, no session items: nothing to co-visit
    assert by[("popularity", "anonymous")]["recall"] > 0.0
    assert by[("pipeline", "anonymous")]["recall"] > 0.0


def test_online_variants_and_exploration(result):
    on = {(r["segment"], r["variant"]): r for r in result["online"]}
    for seg in ("anonymous", "known_user"):
        for v in ("no_mitigation", "mitigated", "mitigated_explore"):
            r = on[(seg, v)]
            assert 0 < r["true_ctr"] < 1 and r["violations"] == 0
        assert on[(seg, "mitigated_explore")]["new_item_slot_share"] > on[(seg, "mitigated")]["new_item_slot_share"]
        assert "explore_cost" in on[(seg, "mitigated_explore")]


def test_report(result, tmp_path):
    md, html = cold_start_report(result).write(tmp_path, "cold_start")
    assert "<svg" in html.read_text() and "True CTR per segment" in md.read_text()


def test_metrics_and_explore_unit():
    assert _metrics(["a", "b", "c"], {"b"}, 3) == (1.0, pytest.approx(1 / np.log2(3)))
    assert _metrics(["a"], {"z"}, 3) == (0.0, 0.0)

    class Fixed:
        policy_id = "fixed"

        def rank(self, request, k):
            return Ranking(("a", "b", "c"), (3.0, 2.0, 1.0))

    class State:
        def is_eligible(self, ids, ts):
            return np.array([i != "x" for i in ids])

    from datetime import datetime, timezone
    pol = ExplorePolicy(Fixed(), State(), np.array(["x", "n1"], dtype=object), epsilon=1.0)
    r = pol.rank(Request("r1", datetime(2026, 1, 1, tzinfo=timezone.utc), "home", None, "s"), 3)
    assert r.item_ids == ("a", "b", "n1") and "explore" in r.stages
    with pytest.raises(ValueError):
        ColdStartConfig(explore=1.5)
