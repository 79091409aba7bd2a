"""OPE intervals with a registered user's requests as one independent unit (not each request)."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recs.evaluators.ope import build_inputs
from recs.evaluators.ope.base import Decomposition, stderr_of
from recs.evaluators.ope.intervals import bootstrap
from recs.evaluators.ope.synthetic import SyntheticBandit


def _heavy_users(rng: np.random.Generator, users: int = 200, per_user: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Per-request values whose level is the user's (gamma-distributed activity), and the users' codes."""
    level = rng.gamma(0.5, 2.0, users)
    units = np.repeat(np.arange(users), per_user)
    return rng.poisson(level[units] * 0.3).astype(float), units


def test_clustered_standard_error_matches_the_spread_of_the_estimate():
    """200 users x 25 requests: the per-request standard error is far too small (95% intervals covered the truth
    46% of the time); summing the influence by user gives the estimate's real spread."""
    rng = np.random.default_rng(0)
    est, se_req, se_user = [], [], []
    for _ in range(300):
        y, units = _heavy_users(rng)
        d = Decomposition(y)
        est.append(d.value())
        se_req.append(stderr_of(d.influence()))
        se_user.append(stderr_of(d.influence(), units))
    spread = float(np.std(est))
    assert np.mean(se_user) == pytest.approx(spread, rel=0.15)
    assert np.mean(se_req) < 0.5 * spread
    covered = np.abs(np.array(est) - 0.3) <= 1.96 * np.array(se_user)
    assert covered.mean() >= 0.9


def test_one_request_per_unit_is_the_unclustered_case():
    y, _ = _heavy_users(np.random.default_rng(1))
    d = Decomposition(y, a=y * 0.5 + 1, b=np.ones(len(y)), m=np.full(len(y), 0.2))
    assert stderr_of(d.influence(), np.arange(len(y))) == pytest.approx(stderr_of(d.influence()))
    plain = bootstrap({"x": d}, 200, seed=3)["x"]
    assert np.allclose(bootstrap({"x": d}, 200, seed=3, units=np.arange(len(y)))["x"], plain)


def test_bootstrap_resamples_whole_users():
    y, units = _heavy_users(np.random.default_rng(2))
    d = Decomposition(y)
    reps = bootstrap({"x": d}, 2_000, seed=0, units=units)["x"]
    assert np.std(reps) == pytest.approx(stderr_of(d.influence(), units), rel=0.1)
    assert np.std(bootstrap({"x": d}, 2_000, seed=0)["x"]) < 0.5 * np.std(reps)


def test_units_are_users_then_sessions_then_requests():
    logs, target = SyntheticBandit(target_kind="sparse").frames(6, 0)
    assert build_inputs(logs.drop("user_id"), target).req_unit is None           # every request its own unit
    assert build_inputs(logs, target).req_unit is None                           # distinct visitors: the same
    k = logs.height // 6
    users = ["a", "a", None, None, "b", "a"]
    sessions = ["s1", "s2", "s3", "s3", "s4", "s5"]
    logs = logs.with_columns(pl.Series("user_id", np.repeat(np.array(users, dtype=object), k).tolist(),
                                       dtype=pl.Utf8),
                             pl.Series("session_id", np.repeat(sessions, k).tolist()))
    inp = build_inputs(logs, target)
    unit = dict(zip(inp.request_ids.tolist(), inp.req_unit.tolist()))
    assert unit["r0"] == unit["r1"] == unit["r5"]          # user a
    assert unit["r2"] == unit["r3"] != unit["r4"]          # anonymous, one session; user b
    assert len(set(unit.values())) == 3
