"""`scenarios.learnable_bound`: only registered users' tastes are replaced; true ones give the informed policy back."""
from __future__ import annotations

import numpy as np

from recs.scenarios.evaluate import EvaluateConfig, true_ctr_requests
from recs.scenarios.learnability import LearnabilityConfig
from recs.scenarios.learnable_bound import ESTIMATES, LearntTastePolicy, learnable_bound
from recs.sim import SimConfig, World, generate_dataset, request_rewards


def test_bound_replaces_only_registered_users_tastes(tmp_path):
    ds = tmp_path / "ds"
    generate_dataset(SimConfig(n_users=150, n_items=600, days=3, requests_per_day=1500, seed=4), ds)
    out = learnable_bound(ds, LearnabilityConfig(max_iter=60), EvaluateConfig(true_ctr_requests=300))
    ctr = out["ctr"]
    assert out["n_requests"] == 300 and 0 < out["users_with_impressions"] <= 150
    assert out["best"] in ESTIMATES
    for k in ESTIMATES:
        # anonymous visitors are ranked exactly as the informed policy ranks them (the same population prior)
        assert ctr[f"bound_{k}"]["anonymous"] == ctr["informed"]["anonymous"]
        assert ctr[f"bound_{k}"]["all"] <= ctr["oracle"]["all"] + 1e-9
    assert out["best_vs_logging"] == ctr[f"bound_{out['best']}"]["all"] / ctr["logging"]["all"]
    # with the true tastes for every user the bound is the informed policy, request for request
    world = World.load(ds)
    reqs = true_ctr_requests(world, EvaluateConfig(true_ctr_requests=120))
    truth = LearntTastePolicy(world, world.users.vec, np.ones(world.users.n, dtype=bool))
    np.testing.assert_array_equal(request_rewards(truth, reqs, world).clicks,
                                  request_rewards(world.informed_policy(), reqs, world).clicks)
    # a known user is ranked by the estimate given, not by the true taste
    other = np.roll(world.users.vec, 1, axis=0)
    req = next(r for r in reqs if r.user_id is not None and r.surface == "home")
    ctx = world.contexts[req.request_id]
    vecs, betas = LearntTastePolicy(world, other, np.ones(world.users.n, dtype=bool)).visitor(ctx)
    assert np.array_equal(vecs, other[ctx.user_row][None, :]) and betas[0] == ctx.price_sens
    # a user without impressions gets the prior: the same ranking as an anonymous visitor's
    unknown = LearntTastePolicy(world, world.users.vec, np.zeros(world.users.n, dtype=bool))
    vecs, _ = unknown.visitor(ctx)
    assert vecs.shape[0] > 1 and np.array_equal(vecs, world.informed_policy().prior_vec)
