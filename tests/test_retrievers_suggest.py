"""Search-bar suggestions: completions (count, decay, personalisation, back-off) and product suggestions."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from _retriever_fixtures import (T0, assert_valid, catalog, interactions, make_ineligible, queries, rq,
                                 sim_data)
from recs.models.base import TrainingData
from recs.models.retrievers import load_retriever
from recs.models.retrievers.suggest import SuggestConfig, SuggestRetriever

AS_OF = T0 + timedelta(days=10)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return sim_data(tmp_path_factory)


@pytest.fixture(scope="module")
def sug(sim):
    return SuggestRetriever().fit(sim.train)


def _synthetic(config: SuggestConfig | None = None) -> SuggestRetriever:
    cat = catalog([("s1", "wear", "shoes", "acme", 50), ("s2", "wear", "shoes", "zeta", 60),
                   ("t1", "wear", "shirt", "acme", 20), ("t2", "wear", "shirt", "zeta", 25),
                   ("k1", "kitchen", "shaker", "omni", 10)])
    day = timedelta(days=1)
    log = [("sh", "shoes", AS_OF - day)] * 5 + [("sh", "shirt", AS_OF - day)] * 3
    log += [("sh", "shaker", AS_OF - 9 * day)] * 6                 # popular once, long ago
    log += [("sha", "shaker", AS_OF - 9 * day, "k1")]
    log += [("sh", "shoes acme", AS_OF - day, "s1")] * 2 + [("sho", "shoes", AS_OF + day)] * 50   # the last after as_of
    ev = interactions([("x", "t2", AS_OF - day, "click"), ("x", "t1", AS_OF - day, "click"),
                       ("y", "s2", AS_OF - day, "purchase")])
    return SuggestRetriever(config).fit(TrainingData(ev, cat, AS_OF, queries=queries(log)))


def test_completions_ranked_by_decayed_count():
    sug = _synthetic(SuggestConfig(catalog_prior=0.0, query_half_life_days=2.0))
    got = sug.complete("sh", 4)
    assert [q for q, _ in got][:3] == ["shoes", "shirt", "shoes acme"]
    assert got[0][1] == 1.0 and all(a[1] >= b[1] for a, b in zip(got, got[1:]))
    slow = _synthetic(SuggestConfig(catalog_prior=0.0, query_half_life_days=1000.0))
    assert slow.complete("sh", 1)[0][0] == "shaker", "without decay the old, more frequent query wins"
    assert sug.complete("SH ", 3) == sug.complete("sh ", 3)
    assert all(q.startswith("sho") for q, _ in sug.complete("sho", 5))


def test_completions_personalised_by_history_and_session():
    sug = _synthetic(SuggestConfig(catalog_prior=0.0))
    assert sug.complete("sh", 1)[0][0] == "shoes"
    assert sug.complete("sh", 1, user_history=("t1", "t2"))[0][0] == "shirt"
    assert sug.complete("sh", 1, session_items=("t1",))[0][0] == "shirt"
    assert sug.complete("sh", 1, session_items=("unknown-item",))[0][0] == "shoes"


def test_unseen_prefix_backs_off_gracefully():
    sug = _synthetic()
    back = sug.complete("shoq", 3)
    assert back and back[0][0].startswith("sho") and back[0][1] < 1.0
    assert sug.complete("", 2)[0][0] == "shoes", "an empty prefix gives the most searched queries"
    assert sug.complete("zzz", 2), "a prefix sharing nothing falls back to popular queries"
    assert sug.complete(None, 2) == sug.complete("", 2)
    assert sug.complete("sh", 0) == []


def test_catalog_names_complete_prefixes_never_searched():
    sug = _synthetic()
    assert [q for q, _ in sug.complete("om", 3)] == ["omni"]
    assert "shaker" in [q for q, _ in _synthetic(SuggestConfig(query_half_life_days=0.5)).complete("sha", 3)]


def test_product_suggestions_match_the_prefix(sim, sug):
    state = sim.state()
    words = {r[0]: set(" ".join([r[1], r[2], r[3]]).lower().split())
             for r in sim.catalog.select("item_id", "subcategory", "brand", "title").iter_rows()}
    for q in sim.queries["prefix"].unique().sort().to_list()[:15]:
        out = sug.retrieve(rq(sim.as_of, state=state, surface="search", q=q), 5)
        assert_valid(out, 5, state, sim.as_of)
        assert all(any(w.startswith(q.lower()) for w in words[i]) for i in out.item_ids), q
        assert out.source == "suggest"


def test_product_suggestions_use_the_log_association_and_affinity():
    sug = _synthetic(SuggestConfig(catalog_prior=0.0))
    assert sug.retrieve(rq(AS_OF, surface="search", q="sh"), 5).item_ids[0] == "s1", "clicked for 'sh'"
    assert sug.retrieve(rq(AS_OF, surface="search", q="sha"), 1).item_ids.tolist() == ["k1"]
    anon = sug.retrieve(rq(AS_OF, surface="search", q="shirt"), 2).item_ids.tolist()
    assert anon == ["t1", "t2"]                  # equally popular: catalog order
    fan = sug.retrieve(rq(AS_OF, recent=("s2",), surface="search", q="shirt"), 2).item_ids.tolist()
    assert fan == ["t2", "t1"], "a zeta session prefers the zeta shirt"
    two = sug.retrieve(rq(AS_OF, surface="search", q="shoes ac"), 3)
    assert two.item_ids[0] == "s1" and len(two) == 3, "exact match first, then topped up from shorter prefixes"
    assert np.all(np.diff(two.scores) <= 0)


def test_product_suggestions_skip_ineligible_and_back_off(sim, sug):
    q = sim.queries["prefix"].value_counts().sort(["count", "prefix"], descending=[True, False])["prefix"][0]
    first = sug.retrieve(rq(sim.as_of, surface="search", q=q), 10).item_ids.tolist()
    state = sim.state()
    make_ineligible(state, first[:6], sim.as_of)
    out = sug.retrieve(rq(sim.as_of, state=state, surface="search", q=q), 10)
    assert_valid(out, 10, state, sim.as_of)
    assert not set(out.item_ids.tolist()) & set(first[:6])
    odd = sug.retrieve(rq(sim.as_of, state=state, surface="search", q="qqqq"), 10)
    assert_valid(odd, 10, state, sim.as_of)
    home = sug.retrieve(rq(sim.as_of, state=state, recent=sim.session_items(2)), 10)
    assert_valid(home, 10, state, sim.as_of)


def test_completions_on_simulated_log_extend_the_prefix(sim, sug):
    for q in sim.queries["prefix"].unique().sort().to_list()[:20]:
        got = sug.complete(q, 5)
        assert got and all(c.startswith(q.lower()) for c, _ in got), q


def test_save_load_round_trip(sim, sug, tmp_path):
    sug.save(tmp_path / "sg")
    back = load_retriever(tmp_path / "sg")
    assert isinstance(back, SuggestRetriever)
    state = sim.state()
    hist = sim.session_items(3)
    for q in ("ne", "x", "zzzz", None):
        a = sug.retrieve(rq(sim.as_of, history=hist, state=state, surface="search", q=q), 8)
        b = back.retrieve(rq(sim.as_of, history=hist, state=state, surface="search", q=q), 8)
        assert a.item_ids.tolist() == b.item_ids.tolist() and np.allclose(a.scores, b.scores)
        assert sug.complete(q, 5, user_history=hist) == back.complete(q, 5, user_history=hist)


def test_bad_inputs():
    with pytest.raises(ValueError, match="backoff_penalty"):
        SuggestConfig(backoff_penalty=2.0)
    cat = catalog([("a", "c", "s", "b", 1)])
    with pytest.raises(ValueError, match="queries: missing column"):
        SuggestRetriever().fit(TrainingData(interactions([]), cat, AS_OF, queries=pl.DataFrame({"ts": [1]})))
    empty = SuggestRetriever().fit(TrainingData(interactions([]), cat, AS_OF))
    assert [q for q, _ in empty.complete("s", 3)] == ["s"]
    assert empty.retrieve(rq(AS_OF, surface="search", q="zz"), 3).item_ids.tolist() == ["a"]


def test_query_category_is_the_smallest_of_equally_frequent_ones():
    """A name spread evenly over several categories gets the same category whatever the catalog order."""
    cats = ["wear", "home", "kitchen", "toys", "garden", "books", "audio", "baby"]
    rows = [(f"i{j}", c, "shoes", f"brand{j}", 10) for j, c in enumerate(cats)]
    rows += [("x1", "toys", "lamp", "lumo", 5), ("x2", "home", "lamp", "lumo", 5), ("x3", "home", "lamp", "lumo", 5)]
    queries_ = pl.Series(["shoes", "lumo", "red lamp"])
    rng = np.random.default_rng(0)
    got = set()
    for _ in range(20):
        items = catalog([rows[j] for j in rng.permutation(len(rows))])
        got.add(tuple(SuggestRetriever._query_attrs(queries_, items).sort("query").rows()))
    assert got == {(("lumo", None, "home", "lumo"), ("red lamp", "lamp", "home", None),
                    ("shoes", "shoes", "audio", None))}
