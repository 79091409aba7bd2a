"""Candidate blending: quotas, de-duplication, fill from other sources, per-source features; end to end."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _retriever_fixtures import rq, sim_data
from recs.models.base import Candidates
from recs.models.blend import BlendConfig, blend
from recs.models.retrievers import RETRIEVERS


def cands(source: str, ids: list[str]) -> Candidates:
    return Candidates(np.array(ids, dtype=object), np.linspace(1.0, 0.1, len(ids)) if ids else np.zeros(0), source)


def test_quotas_are_respected_and_duplicates_merged():
    a = cands("covisit", [f"i{j}" for j in range(50)])
    b = cands("popularity", [f"i{j}" for j in range(0, 100, 2)])     # overlaps a's even items
    out = blend([a, b], {"covisit": 10, "popularity": 5}, total=15)
    assert len(out) == 15 and len(set(out.item_ids.tolist())) == 15
    assert out.counts() == {"covisit": 10, "popularity": 5}
    f = out.features
    i0 = out.item_ids.tolist().index("i0")                     # found by both: both sources' features
    assert f["score_covisit"][i0] == 1.0 and f["score_popularity"][i0] == 1.0 and f["n_sources"][i0] == 2
    assert f["rank_covisit"][i0] == 0 and f["rank_popularity"][i0] == 0
    only_pop = [j for j, o in enumerate(out.origin) if o == "popularity"]
    assert all(int(out.item_ids[j][1:]) >= 20 or int(out.item_ids[j][1:]) % 2 == 0 for j in only_pop)
    absent = [j for j, i in enumerate(out.item_ids) if int(i[1:]) % 2 == 1]
    assert absent and np.isnan(f["score_popularity"][absent]).all() and np.isnan(f["rank_popularity"][absent]).all()


def test_unused_quota_is_filled_from_other_sources():
    short = cands("covisit", ["a", "b"])
    long = cands("popularity", [f"p{j}" for j in range(100)])
    out = blend([short, long], {"covisit": 50, "popularity": 10}, total=40)
    assert len(out) == 40 and out.counts() == {"covisit": 2, "popularity": 38}
    no_fill = blend([short, long], total=40, config=BlendConfig(quotas={"covisit": 50, "popularity": 10},
                                                                     fill=False))
    assert len(no_fill) == 12


def test_round_robin_interleaves_sources_and_source_without_quota_only_fills():
    a, b = cands("a", ["a1", "a2", "a3"]), cands("b", ["b1", "b2", "b3"])
    out = blend([a, b], {"a": 2, "b": 2}, total=4)
    assert out.item_ids.tolist() == ["a1", "b1", "a2", "b2"]
    c = cands("c", ["c1"])
    out = blend([a, c], {"a": 1}, total=3)
    assert out.item_ids.tolist() == ["a1", "a2", "c1"] and out.features["score_c"][2] == 1.0
    assert out.origin.tolist() == ["a", "a", "c"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="distinct"):
        blend([cands("x", ["1"]), cands("x", ["2"])], {"x": 1}, 2)
    with pytest.raises(ValueError, match="quotas\\[x\\]"):
        BlendConfig(quotas={"x": -1})
    with pytest.raises(ValueError, match="total"):
        BlendConfig(total=0)
    assert len(blend([], {}, 5)) == 0
    assert len(blend([cands("x", [])], {"x": 5}, 5)) == 0


lists = st.lists(st.lists(st.integers(0, 60), max_size=40), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(raw=lists, quota=st.integers(0, 20), total=st.integers(1, 80))
def test_blend_invariants(raw, quota, total):
    cl = [cands(f"s{k}", list(dict.fromkeys(f"i{x}" for x in ids))) for k, ids in enumerate(raw)]
    out = blend(cl, {c.source: quota for c in cl}, total)
    ids = out.item_ids.tolist()
    union = set().union(*[set(c.item_ids.tolist()) for c in cl])
    assert len(ids) == len(set(ids)) == min(total, len(union))
    for c in cl:
        srcs = out.features[f"rank_{c.source}"]
        pos = {i: r for r, i in enumerate(c.item_ids.tolist())}
        assert all((np.isnan(srcs[j]) and i not in pos) or srcs[j] == pos.get(i) for j, i in enumerate(ids))
    if total >= quota * len(cl):   # quotas fit: a source short of its quota gave every item it had
        for c in cl:
            assert out.counts()[c.source] >= quota or set(c.item_ids.tolist()) <= set(ids)
    strict = blend(cl, total=total, config=BlendConfig(quotas={c.source: quota for c in cl}, fill=False))
    assert all(n <= quota for n in strict.counts().values())
    assert strict.item_ids.tolist() == ids[:len(strict)], "the fill phase only appends"


def test_retrievers_blend_to_a_few_hundred_candidates(tmp_path_factory):
    sim = sim_data(tmp_path_factory)
    state = sim.state()
    query = rq(sim.as_of, recent=sim.session_items(3), history=sim.session_items(1), state=state,
               user="u0000001", surface="search", q=sim.queries["prefix"][0])
    lists = [RETRIEVERS[k]().fit(sim.train).retrieve(query, 150) for k in ("covisit", "content", "popularity",
                                                                          "suggest")]
    out = blend(lists, {"covisit": 100, "content": 60, "popularity": 60, "suggest": 60}, total=300)
    assert 250 <= len(out) <= 300 and len(set(out.item_ids.tolist())) == len(out)
    assert state.is_eligible(out.item_ids.tolist(), sim.as_of).all()
    frame = out.to_frame()
    assert {"item_id", "origin", "score_covisit", "rank_suggest", "n_sources"} <= set(frame.columns)
    assert frame["n_sources"].max() >= 2
