"""Content retriever: new items without interactions, add_items without refit, eligibility, persistence."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from _retriever_fixtures import T0, UTC, assert_valid, catalog, interactions, make_ineligible, rq, sim_data
from recs.models.base import TrainingData
from recs.models.retrievers import load_retriever
from recs.models.retrievers.content import ContentConfig, ContentRetriever


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return sim_data(tmp_path_factory)


@pytest.fixture(scope="module")
def content(sim):
    return ContentRetriever().fit(sim.train)


def _history_in(sim, subcategory: str, n: int = 4) -> tuple[str, ...]:
    old = sim.catalog.filter((pl.col("subcategory") == subcategory) & (pl.col("created_at") < sim.as_of))
    return tuple(old["item_id"].to_list()[:n])


def test_new_item_after_as_of_is_retrieved_for_matching_history(sim, content):
    new = sim.catalog.filter(pl.col("created_at") >= sim.as_of).sort("created_at")
    assert new.height > 0
    ts = new["created_at"].max() + timedelta(hours=1)
    state = sim.state()
    ok = state.is_eligible(new["item_id"].to_list(), ts)
    item = new.filter(pl.Series(ok)).row(0, named=True)          # a live new item (its seller not blocked)
    clicked = set(sim.interactions.filter(pl.col("ts") < sim.as_of)["item_id"].to_list())
    assert item["item_id"] not in clicked
    hist = _history_in(sim, item["subcategory"])
    n_sub = sim.catalog.filter(pl.col("subcategory") == item["subcategory"]).height
    out = content.retrieve(rq(ts, history=hist, user="u0000001", state=state), n_sub)
    assert item["item_id"] in out.item_ids.tolist()
    subs = dict(zip(sim.catalog["item_id"].to_list(), sim.catalog["subcategory"].to_list()))
    assert np.mean([subs[i] == item["subcategory"] for i in out.item_ids]) >= 0.8


def test_add_items_makes_a_new_item_retrievable_without_refit(sim):
    old = sim.catalog.filter(pl.col("created_at") < sim.as_of)
    cr = ContentRetriever().fit(TrainingData(sim.interactions, old, sim.as_of))
    base = old.row(0, named=True)
    row = dict(base, item_id="brand-new", title=f"{base['brand']} {base['subcategory']} glowing 7",
               created_at=sim.as_of + timedelta(hours=2))
    new = pl.DataFrame([row], schema=old.schema)
    assert cr.add_items(new) == 1 and cr.add_items(new) == 0, "a known id is not added twice"
    ts = sim.as_of + timedelta(hours=3)
    hist = _history_in(sim, base["subcategory"], 3)
    out = cr.retrieve(rq(ts, recent=hist), 30).item_ids.tolist()
    assert "brand-new" in out
    assert "brand-new" in cr.retrieve(rq(ts, recent=(base["item_id"],)), 5).item_ids.tolist()[:3]


def test_anonymous_session_results_are_k_unique_eligible(sim, content):
    items = sim.session_items(3)
    state = sim.state()
    out = content.retrieve(rq(sim.as_of, recent=items, state=state), 40)
    assert_valid(out, 40, state, sim.as_of)
    assert not set(items) & set(out.item_ids.tolist())
    assert len(content.retrieve(rq(sim.as_of, state=state), 10)) == 0, "nothing known: no content candidates"


def test_never_returns_ineligible_items(sim, content):
    items = sim.session_items(3)
    state = sim.state()
    head = content.retrieve(rq(sim.as_of, recent=items), 30).item_ids.tolist()
    make_ineligible(state, head[:15], sim.as_of)
    out = content.retrieve(rq(sim.as_of, recent=items, state=state), 30)
    assert_valid(out, 30, state, sim.as_of)
    assert not set(out.item_ids.tolist()) & set(head[:15])


def test_attribute_blocks_shape_similarity():
    cat = catalog([("q", "c1", "s1", "b1", 10), ("same_brand", "c1", "s1", "b1", 11),
                   ("other_brand", "c1", "s1", "b2", 10), ("other_sub", "c1", "s2", "b1", 10),
                   ("other_cat", "c2", "s3", "b3", 10)])
    cr = ContentRetriever(ContentConfig(new_item_boost=0.0)).fit(TrainingData(interactions([]), cat, T0))
    out = cr.retrieve(rq(T0, recent=("q",)), 4)
    assert out.item_ids.tolist() == ["same_brand", "other_brand", "other_sub", "other_cat"]
    sim_ = cr.similarity(rq(T0, recent=("q",)), ["same_brand", "nope"])
    assert sim_[0] == pytest.approx(out.scores[0]) and np.isnan(sim_[1])


def test_save_load_round_trip_including_added_items(sim, content, tmp_path):
    cr = ContentRetriever().fit(sim.train)
    base = sim.catalog.row(3, named=True)
    cr.add_items(pl.DataFrame([dict(base, item_id="added-1")], schema=sim.catalog.schema))
    cr.save(tmp_path / "ct")
    back = load_retriever(tmp_path / "ct")
    assert isinstance(back, ContentRetriever)
    q = rq(sim.as_of, recent=sim.session_items(3), history=(base["item_id"],), state=sim.state())
    a, b = cr.retrieve(q, 50), back.retrieve(q, 50)
    assert a.item_ids.tolist() == b.item_ids.tolist() and np.allclose(a.scores, b.scores)
    assert "added-1" in back.item_ids.tolist()


def test_bad_rows_name_the_item_and_field(sim, content):
    bad = sim.catalog.head(2).with_columns(
        pl.Series("item_id", ["x1", "x2"]), pl.Series("brand", [None, "b"], dtype=pl.Utf8))
    with pytest.raises(ValueError, match=r"add_items: item 'x1': field 'brand'"):
        content.add_items(bad)
    with pytest.raises(ValueError, match="missing column"):
        content.add_items(sim.catalog.head(1).drop("title"))
    with pytest.raises(ValueError, match="w_brand"):
        ContentConfig(w_brand=-1)
    assert UTC == sim.catalog.schema["created_at"]


def test_items_added_one_by_one_score_exactly_as_a_full_build(sim, tmp_path, monkeypatch):
    """The incremental path (growing CSR, column-major copy rebuilt only now and then, a tail copy in between)
    gives the same candidates and scores, bit for bit, as building every vector at once (a save / load)."""
    import recs.models.retrievers.content as content_mod

    monkeypatch.setattr(content_mod, "CSC_SLACK", 4)       # exercise both the tail and the rebuild
    old = sim.catalog.filter(pl.col("created_at") < sim.as_of)
    new = sim.catalog.filter(pl.col("created_at") >= sim.as_of).sort("created_at", "item_id")
    assert new.height >= 20
    cr = ContentRetriever().fit(TrainingData(sim.interactions, old, sim.as_of))
    state = sim.state()
    ts = new["created_at"].max() + timedelta(hours=1)
    subs = new["subcategory"].unique().sort().to_list()[:4]
    queries = [rq(ts, history=_history_in(sim, s, 3), user="u0000001", state=state) for s in subs]
    rebuilds = set()
    for j in range(new.height):
        cr.add_items(new.slice(j, 1))
        if j % 5 == 4 or j == new.height - 1:
            got = [cr.retrieve(q, 40) for q in queries]
            rebuilds.add(cr._n_csc)
    assert len(rebuilds) > 1 and cr._n_csc < len(cr.item_ids), "both paths ran"
    cr.save(tmp_path / "c")
    full = load_retriever(tmp_path / "c")
    for q, a in zip(queries, got):
        b = full.retrieve(q, 40)
        assert a.item_ids.tolist() == b.item_ids.tolist() and np.array_equal(a.scores, b.scores)
    assert np.array_equal(cr._rows.get(state, cr.item_ids), state.indices(cr.item_ids))
    assert np.array_equal(cr._by_created, full._by_created)
