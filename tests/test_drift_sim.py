"""Drift on the simulator's logged impressions: same policy -> ok, a different policy -> drift."""
from __future__ import annotations

import pytest

from recs.evaluators.drift import DriftConfig, compare

sim = pytest.importorskip("recs.sim")


@pytest.fixture(scope="module")
def logs():
    world = sim.World.build(sim.SimConfig(n_users=500, n_items=1000, days=2, requests_per_day=500, seed=0))
    a, _ = world.log_policy(world.logging_policy(), 600, seed=1)
    b, _ = world.log_policy(world.logging_policy(), 600, seed=2)
    u, _ = world.log_policy(world.uniform_policy(), 600, seed=3)
    return a, b, u


def test_same_policy_is_ok_when_slates_are_clustered(logs) -> None:
    a, b, _ = logs
    rep = compare(a, b, config=DriftConfig(cluster_column="request_id"))
    assert rep.verdict == "ok", rep.reasons
    assert rep.design_effect > 5  # slates of 5 to 10 rows
    skipped = dict(rep.skipped_columns)
    assert {"user_id", "item_id", "ts", "request_id"} <= set(skipped)


def test_uniform_policy_drifts_on_propensity_and_clicks(logs) -> None:
    a, _, u = logs
    rep = compare(a, u, config=DriftConfig(cluster_column="request_id"))
    status = {f.column: f.status for f in rep.features}
    assert rep.verdict == "drift"
    assert status["propensity"] == "drift" and status["clicked"] == "drift"
    assert status["position"] == "ok" and status["surface"] == "ok"
