"""Popularity retriever: counts, trending, per-category lists, eligibility, personalisation, persistence."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from _retriever_fixtures import T0, assert_valid, catalog, interactions, make_ineligible, rq, sim_data
from recs.models.base import TrainingData
from recs.models.retrievers import GLOBAL, RETRIEVERS, load_retriever
from recs.models.retrievers.popularity import PopularityConfig, PopularityRetriever


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return sim_data(tmp_path_factory)


@pytest.fixture(scope="module")
def pop(sim):
    return PopularityRetriever().fit(sim.train)


def _synthetic():
    cat = catalog([("a", "c1", "s1", "b1", 10), ("b", "c1", "s1", "b1", 10), ("c", "c2", "s2", "b2", 10),
                   ("d", "c2", "s2", "b2", 10)])
    as_of = T0 + timedelta(days=10)
    rows = [(f"old{j}", "a", as_of - timedelta(days=6), "click") for j in range(10)]        # a: many, long ago
    rows += [(f"new{j}", "b", as_of - timedelta(hours=6), "click") for j in range(3)]      # b: few, recent
    rows += [("p", "c", as_of - timedelta(days=2), "purchase")]                              # c: one purchase (5)
    rows += [("late", "d", as_of + timedelta(hours=1), "purchase")] * 5                      # after as_of
    return TrainingData(interactions(rows), cat, as_of)


def test_counts_windows_and_trend_on_synthetic_log():
    pop = PopularityRetriever().fit(_synthetic())
    t = {r["item_id"]: r for r in pop.table.iter_rows(named=True)}
    assert t["a"]["w_all"] == 10 and t["a"]["w_7d"] == 10 and t["a"]["w_1d"] == 0
    assert t["b"]["w_1d"] == 3 and t["c"]["w_all"] == 5
    assert t["d"]["w_all"] == 0, "events at or after as_of must not count"
    assert t["a"]["trend"] == pytest.approx(10 * 0.5 ** 6)
    assert pop.item_ids.tolist()[:2] == ["b", "c"], "trending order favours recent activity"
    by_all = PopularityRetriever(PopularityConfig(rank_by="w_all")).fit(_synthetic())
    assert by_all.item_ids.tolist()[:3] == ["a", "c", "b"]


def test_global_results_are_k_unique_eligible(sim, pop):
    state = sim.state()
    out = pop.retrieve(rq(sim.as_of, state=state), 50)
    assert_valid(out, 50, state, sim.as_of)
    assert out.source == "popularity"


def test_never_returns_ineligible_items(sim, pop):
    state = sim.state()
    head = pop.item_ids[:30].tolist()
    reasons = make_ineligible(state, head, sim.as_of)
    assert set(reasons.values()) == {"out_of_stock", "restricted", "blocked_seller"}
    unfiltered = pop.retrieve(rq(sim.as_of), 50).item_ids.tolist()
    assert set(head) & set(unfiltered), "without a state the head of the list is returned"
    for query in (rq(sim.as_of, state=state), rq(sim.as_of, recent=sim.session_items(), state=state)):
        out = pop.retrieve(query, 50)
        assert_valid(out, 50, state, sim.as_of)
        assert not set(out.item_ids.tolist()) & set(head)


def test_session_categories_reshape_anonymous_results(sim, pop):
    items = sim.session_items(2)
    cats = {pop._cat_of[i] for i in items}
    anon = pop.retrieve(rq(sim.as_of), 20)
    personal = pop.retrieve(rq(sim.as_of, recent=items), 20)
    share = np.mean([pop._cat_of[i] in cats for i in personal.item_ids])
    base = np.mean([pop._cat_of[i] in cats for i in anon.item_ids])
    assert share >= 0.7 and share > base
    assert anon.item_ids.tolist() == pop.item_ids[:20].tolist()


def test_history_counts_for_logged_in_users(sim, pop):
    items = sim.session_items(3)
    cats = {pop._cat_of[i] for i in items}
    out = pop.retrieve(rq(sim.as_of, history=items, user="u0000001"), 20)
    assert np.mean([pop._cat_of[i] in cats for i in out.item_ids]) >= 0.7


def test_popular_by_category_and_fallback_lists(sim, pop):
    cat = pop.category[0]
    lst = pop.popular_by_category(cat, 10)
    assert len(lst) == 10 and all(pop._cat_of[i] == cat for i in lst)
    sc = pop.scores[[pop._pos[i] for i in lst]]
    assert np.all(np.diff(sc) <= 0)
    state = sim.state()
    make_ineligible(state, lst[:3], sim.as_of)
    live = pop.popular_by_category(cat, 10, state, sim.as_of)
    assert not set(live) & set(lst[:3]) and state.is_eligible(live, sim.as_of).all()
    assert pop.popular_by_category("no-such-category", 5) == pop.item_ids[:5].tolist()
    fb = pop.fallback_lists(7)
    assert set(fb) == set(sim.catalog["category"].unique()) | {GLOBAL}
    assert all(len(v) == 7 for v in fb.values())
    assert fb[GLOBAL] == pop.item_ids[:7].tolist()


def test_item_features(pop):
    f = pop.item_features([pop.item_ids[0], "unknown"])
    assert f["pop_trend"][0] == pop.scores[0] and f["pop_trend"][1] == 0.0
    assert set(f) == {"pop_w_1d", "pop_w_7d", "pop_w_all", "pop_trend"}


def test_save_load_round_trip(sim, pop, tmp_path):
    pop.save(tmp_path / "pop")
    back = load_retriever(tmp_path / "pop")
    assert isinstance(back, PopularityRetriever) and back.config == pop.config
    state = sim.state()
    for query in (rq(sim.as_of, state=state), rq(sim.as_of, recent=sim.session_items(), state=state)):
        a, b = pop.retrieve(query, 40), back.retrieve(query, 40)
        assert a.item_ids.tolist() == b.item_ids.tolist() and np.array_equal(a.scores, b.scores)
    assert back.fallback_lists(5) == pop.fallback_lists(5)
    assert not list(tmp_path.glob("pop/*.pkl"))
    assert RETRIEVERS["popularity"] is PopularityRetriever


def test_bad_config_and_bad_saved_files(tmp_path, pop):
    with pytest.raises(ValueError, match="rank_by"):
        PopularityConfig(rank_by="forever")
    with pytest.raises(ValueError, match="kind_weights"):
        PopularityConfig(kind_weights={"view": 1.0})
    with pytest.raises(ValueError, match="personal_weight"):
        PopularityConfig(personal_weight=1.5)
    with pytest.raises(RuntimeError, match="fit"):
        PopularityRetriever().retrieve(rq(T0), 5)
    pop.save(tmp_path / "p")
    (tmp_path / "p" / "meta.json").write_text('{"kind": "covisit", "format_version": 1}')
    with pytest.raises(ValueError, match="meta.json: field 'kind'"):
        PopularityRetriever.load(tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_retriever(tmp_path / "nothing")
