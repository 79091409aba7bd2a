"""cold-start scenario: per-segment offline metrics for each retriever and the pipeline, true CTR with and without
the mitigations (content with new items indexed, popularity by category, exploration)."""
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from recs.datasets.io import read_table
from recs.datasets.policy import Ranking, Request
from recs.datasets.requests import requests_from_logs
from recs.models.pipeline import Pipeline
from recs.models.rerank import RerankConfig, rerank
from recs.scenarios.cold_start import (ColdStartConfig, ExplorePolicy, VARIANTS, _metrics,
                                       cold_start_report, run_cold_start)
from recs.scenarios.trained import ModelSettings
from recs.sim import SimConfig

from _scenario_fixtures import tiny_trained
from test_evaluate_state import stock_flips


@pytest.fixture(scope="module")
def result():
    t = tiny_trained()
    return run_cold_start(ColdStartConfig(dataset=t.dataset, model_dir=t.model, n_requests=80, max_eval_requests=300,
                                          explore=0.3))


def test_segments_and_sources(result):
    assert result["kind"] == "simulate_cold_start" and result["new_items"] > 0
    assert "sim" not in result["config"] and "model" not in result["config"] and result["config"]["model_dir"]
    off = {(r["source"], r["segment"]) for r in result["offline"]}
    for src in ("pipeline:no_mitigation", "pipeline:mitigated", "retriever:popularity", "retriever:covisit",
                "retriever:content", "retriever:suggest"):
        assert (src, "all") in off and (src, "anonymous") in off and (src, "known_user") in off
    for r in result["offline"]:
        assert 0 <= r["recall"] <= 1 and 0 <= r["ndcg"] <= 1
    on = {(r["segment"], r["policy"]) for r in result["online"]}
    for seg in ("anonymous", "new_user", "known_user"):
        assert all((seg, f"pipeline:{v}") in on for v in VARIANTS)
        assert (seg, "retriever:popularity") in on


def test_history_retrievers_need_history_popularity_does_not(result):
    by = {(r["source"], r["segment"]): r for r in result["offline"]}
    # offline, logged anonymous requests carry their session's earlier clicks: covisit has something to go on
    assert by[("retriever:covisit", "anonymous")]["recall"] > 0.0
    assert by[("retriever:popularity", "anonymous")]["recall"] > 0.0
    assert by[("pipeline:mitigated", "anonymous")]["recall"] > 0.0
    on = {(r["segment"], r["policy"]): r for r in result["online"]}
    assert on[("anonymous", "retriever:covisit")]["empty_share"] == 1.0      # fresh requests: no history, no session
    assert on[("anonymous", "retriever:popularity")]["true_ctr"] > 0


def test_new_items_reach_slates_only_through_the_mitigations(result):
    on = {(r["segment"], r["policy"]): r for r in result["online"]}
    for seg in ("anonymous", "new_user", "known_user"):
        # nothing trained before the cut-off knows the new items
        assert on[(seg, "pipeline:no_mitigation")]["new_item_slot_share"] == 0.0
        assert on[(seg, "pipeline:popularity")]["new_item_slot_share"] == 0.0
        assert on[(seg, "pipeline:mitigated_explore")]["new_item_slot_share"] > 0.0
        assert "explore_cost" in on[(seg, "pipeline:mitigated_explore")]
        for v in VARIANTS:
            r = on[(seg, f"pipeline:{v}")]
            assert 0 < r["true_ctr"] < 1 and r["violations"] == 0
    # the content retriever with the new items indexed proposes them to users with a history
    assert on[("known_user", "retriever:content")]["new_item_slot_share"] > 0.0


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

    pol = ExplorePolicy(Fixed(), State(), np.array(["x", "n1"], dtype=object), epsilon=1.0)
    r = pol.rank(Request("r1", datetime(2026, 1, 1, tzinfo=timezone.utc), "home", None, "s"), 3)
    assert r.item_ids == ("a", "b", "n1") and "explore" in r.stages
    with pytest.raises(ValueError):
        ColdStartConfig(explore=1.5)
    with pytest.raises(ValueError, match="holdout"):
        ColdStartConfig(model=ModelSettings(holdout_days=0))
    with pytest.raises(ValueError, match="at least 3 simulated days"):
        ColdStartConfig(sim=SimConfig(days=2))


def test_offline_requests_carry_their_session_and_the_inventory_of_their_time(monkeypatch):
    """Offline, each held-out request has its session's earlier clicks (until the ninth session: none) and is ranked
    on the inventory as logged at its time (until then: as at the end of the log)."""
    t = tiny_trained()
    hold = read_table(t.dataset, "impressions").filter(pl.col("ts") > t.cutoff)
    (gone_rid, gone), (back_rid, back) = stock_flips(t.dataset, hold)
    plan: dict[str, list[str]] = defaultdict(list)
    plan[gone_rid].append(gone)
    plan[back_rid].append(back)
    seen: dict[str, Request] = {}
    served: dict[str, tuple[str, ...]] = {}

    def planned(self, request: Request, k: int) -> Ranking:
        ids = plan.get(request.request_id, [])
        out, sc = rerank(ids, [1.0] * len(ids), self.state, request.ts, k, RerankConfig(0, False))
        seen[request.request_id], served[request.request_id] = request, tuple(out)
        return Ranking(tuple(out), tuple(sc))

    monkeypatch.setattr(Pipeline, "rank", planned)
    res = run_cold_start(ColdStartConfig(dataset=t.dataset, model_dir=t.model, n_requests=5,
                                         max_eval_requests=10**6))
    assert served[gone_rid] == (gone,) and served[back_rid] == ()
    logged = requests_from_logs(hold, read_table(t.dataset, "interactions"))
    offline = [r for r in seen if r in logged]
    assert len(offline) == next(r["requests"] for r in res["offline"]
                                if (r["source"], r["segment"]) == ("pipeline:mitigated", "all"))
    assert all(seen[r].recent_items == logged[r].recent_items for r in offline)
    assert sum(bool(seen[r].recent_items) for r in offline) > len(offline) / 5

