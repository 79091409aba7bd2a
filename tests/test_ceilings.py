"""`scenarios.ceilings`: the ceilings are ordered as their definitions say, on a tiny trained world."""
from __future__ import annotations

from recs.scenarios.ceilings import CeilingConfig, ceilings

from _scenario_fixtures import tiny_trained


def test_ceilings_are_ordered():
    t = tiny_trained()
    out = ceilings(t.model, t.dataset, CeilingConfig(n_requests=150, n_fit_requests=60, seed=5))
    ctr = {name: v["all"] for name, v in out["ctr"].items()}
    assert set(ctr) == {"logging", "pipeline", "pipeline_no_category_cap", "pipeline_no_ranker", "embedding_only",
                        "feature_ceiling", "candidate_oracle", "informed", "oracle"}
    assert all(0 < v < 1 for v in ctr.values())
    # knowing the truth beats every policy that has to learn it, on the same requests
    assert ctr["oracle"] >= max(v for k, v in ctr.items() if k != "oracle") - 1e-9
    assert ctr["candidate_oracle"] > ctr["pipeline"] and ctr["candidate_oracle"] > ctr["pipeline_no_ranker"]
    assert ctr["informed"] > ctr["logging"]
    assert abs(out["vs_logging"]["logging"] - 1.0) < 1e-12


def test_user_learnability_orders_taste_estimates(tmp_path):
    """Knowing the true taste beats any estimate from the logs; the oracle bounds everything."""
    from recs.scenarios.learnability import LearnabilityConfig, user_learnability
    from recs.sim import SimConfig, generate_dataset

    ds = tmp_path / "ds"
    generate_dataset(SimConfig(n_users=150, n_items=600, days=3, requests_per_day=1500, seed=4), ds)
    out = user_learnability(ds, LearnabilityConfig(n_requests=400, max_iter=100))
    ctr = out["ctr"]
    assert out["n_requests"] > 50 and out["n_impressions"] > 1000
    assert ctr["true_taste"] > ctr["learnt_from_clicks"] > ctr["logging"] * 0.8
    assert ctr["true_taste"] > ctr["items_from_clicks"] > ctr["logging"] * 0.8
    assert all(v <= ctr["oracle"] + 1e-9 for v in ctr.values())
