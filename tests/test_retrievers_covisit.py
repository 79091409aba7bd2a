"""Co-visitation retriever: pair weighting, time window, anonymous sessions, eligibility, persistence."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from _retriever_fixtures import T0, assert_valid, catalog, interactions, make_ineligible, rq, sim_data
from recs.models.base import TrainingData
from recs.models.retrievers import load_retriever
from recs.models.retrievers.covisit import CovisitConfig, CovisitRetriever


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return sim_data(tmp_path_factory)


@pytest.fixture(scope="module")
def cov(sim):
    return CovisitRetriever().fit(sim.train)


def _synthetic(config: CovisitConfig | None = None) -> CovisitRetriever:
    cat = catalog([(i, "c", "s", "b", 10) for i in "abcdefg"])
    t = T0
    rows = []
    for j in range(5):                          # a with b in 5 sessions, 1 minute apart
        rows += [(f"ab{j}", "a", t, "click"), (f"ab{j}", "b", t + timedelta(minutes=1), "click")]
    rows += [("ac", "a", t, "click"), ("ac", "c", t + timedelta(minutes=2), "add_to_cart")]   # a, c carted
    rows += [("ad", "a", t, "click"), ("ad", "d", t + timedelta(hours=3), "click")]           # outside window
    rows += [("rep", "a", t, "click"), ("rep", "e", t + timedelta(minutes=1), "click")]
    rows += [("rep", "a", t + timedelta(minutes=2), "click"), ("rep", "e", t + timedelta(minutes=3), "click")]
    rows += [("late", "a", t + timedelta(days=9), "click"), ("late", "g", t + timedelta(days=9), "click")]
    data = TrainingData(interactions(rows), cat, T0 + timedelta(days=1))
    return CovisitRetriever(config).fit(data)


def test_pair_weights_window_and_as_of():
    cov = _synthetic(CovisitConfig(popularity_damping=0.0))
    nb = dict(cov.neighbours("a"))
    assert list(nb)[0] == "b" and nb["b"] == 1.0
    assert "d" not in nb, "pairs further apart than the window do not count"
    assert "g" not in nb, "sessions after as_of do not count"
    # a carted neighbour (weight 2) in one session beats one clicked co-visit, and repeats within a session count once
    assert nb["c"] == pytest.approx(2 * nb["e"])
    assert nb["e"] == pytest.approx(1 / 5)


def test_direction_weights():
    cat = catalog([(i, "c", "s", "b", 10) for i in "xyz"])
    rows = [("s1", "x", T0, "click"), ("s1", "y", T0 + timedelta(minutes=1), "click"),     # y after x
            ("s2", "z", T0, "click"), ("s2", "x", T0 + timedelta(minutes=1), "click")]     # z before x
    data = TrainingData(interactions(rows), cat, T0 + timedelta(days=1))
    cov = CovisitRetriever(CovisitConfig(popularity_damping=0.0, backward_weight=0.25)).fit(data)
    assert cov.neighbours("x") == [("y", 1.0), ("z", 0.25)]


def test_anonymous_session_gets_neighbours_of_its_clicks(sim, cov):
    items = sim.session_items(3)
    state = sim.state()
    out = cov.retrieve(rq(sim.as_of, recent=items, state=state), 20)
    assert_valid(out, 20, state, sim.as_of)
    assert not set(items) & set(out.item_ids.tolist()), "seed items are excluded"
    nb = {n for i in items for n, _ in cov.neighbours(i, 50)}
    assert set(out.item_ids.tolist()) <= nb
    assert len(cov.retrieve(rq(sim.as_of, state=state), 20)) == 0, "no seeds, no co-visitation candidates"


def test_history_seeds_and_recency(sim, cov):
    items = sim.session_items(3)
    by_hist = cov.retrieve(rq(sim.as_of, history=items, user="u0000001"), 10)
    assert len(by_hist) == 10
    newest = cov.retrieve(rq(sim.as_of, recent=(items[0], items[2])), 5).item_ids.tolist()
    flipped = cov.retrieve(rq(sim.as_of, recent=(items[2], items[0])), 5).item_ids.tolist()
    assert newest != flipped, "the newest session item weighs more"


def test_never_returns_ineligible_items(sim, cov):
    items = sim.session_items(3)
    state = sim.state()
    first = cov.retrieve(rq(sim.as_of, recent=items), 30).item_ids.tolist()
    make_ineligible(state, first[:12], sim.as_of)
    out = cov.retrieve(rq(sim.as_of, recent=items, state=state), 15)
    assert_valid(out, 15, state, sim.as_of)
    assert not set(out.item_ids.tolist()) & set(first[:12])


def test_save_load_round_trip(sim, cov, tmp_path):
    cov.save(tmp_path / "cv")
    back = load_retriever(tmp_path / "cv")
    assert isinstance(back, CovisitRetriever)
    state = sim.state()
    q = rq(sim.as_of, recent=sim.session_items(3), history=sim.session_items(1), state=state)
    a, b = cov.retrieve(q, 30), back.retrieve(q, 30)
    assert a.item_ids.tolist() == b.item_ids.tolist() and np.allclose(a.scores, b.scores)
    assert (tmp_path / "cv" / "neighbours.parquet").is_file()


def test_empty_log_and_bad_config():
    cov = CovisitRetriever().fit(TrainingData(interactions([]), catalog([("a", "c", "s", "b", 1)]), T0))
    assert len(cov.retrieve(rq(T0, recent=("a",)), 5)) == 0
    with pytest.raises(ValueError, match="max_session_events"):
        CovisitConfig(max_session_events=1)
    with pytest.raises(ValueError, match="window_minutes"):
        CovisitConfig(window_minutes=0)
