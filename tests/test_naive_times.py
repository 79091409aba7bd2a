"""A naive time means UTC everywhere (`datasets.online_state.to_us`), also on a host whose zone is not UTC: the
simulator's eligibility and logging policy and the online features read it as the filters do."""
from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from recs.features.online import online_inputs
from recs.sim import SimConfig, World

TINY = SimConfig(n_users=60, n_items=400, days=1, requests_per_day=500, seed=5)


@pytest.fixture
def west_of_utc(monkeypatch):
    """The host's zone 5 hours behind UTC (a naive time read as local would be 5 hours late)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_times_are_utc_in_the_simulator_and_the_online_features(west_of_utc):
    world = World.build(TINY)
    created = np.sort(world.state.created_us[world.state.created_us > int(TINY.start.timestamp() * 1e6)])
    assert len(created) >= 2
    aware = TINY.start + timedelta(microseconds=int((created[0] + created[-1]) // 2 - TINY.start.timestamp() * 1e6))
    naive = aware.replace(tzinfo=None)
    # items created between the aware time and 5 hours later separate the two readings
    assert not np.array_equal(world.eligible(aware), world.eligible(aware + timedelta(hours=5)))
    assert np.array_equal(world.eligible(naive), world.eligible(aware))

    req = world.sample_requests(1, 0, ts=aware)[0]
    logger = world.logging_policy()
    assert logger.rank(replace(req, ts=naive), 10) == logger.rank(req, 10)

    ids = world.state.item_ids[:3]
    got = online_inputs(replace(req, ts=naive), ids, world.state).ts_us
    assert (got == online_inputs(req, ids, world.state).ts_us).all()
    assert got[0] == int(aware.timestamp() * 1_000_000)
