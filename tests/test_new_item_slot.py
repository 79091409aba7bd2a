"""The new-item slot: the last slot of a share of requests goes to the best-scored new candidate, filters first."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recs.datasets.online_state import OnlineState
from recs.models.rerank import RerankConfig, gets_new_item_slot, policy_filter, rerank, with_new_item_slot

T0 = datetime(2026, 1, 10, tzinfo=timezone.utc)
CFG = RerankConfig(new_item_share=1.0, new_item_max_age_hours=48)


def _state(age_hours: list[float], stock: list[int] | None = None, restricted: list[bool] | None = None,
           blocked_sellers: set[int] = frozenset()) -> OnlineState:
    n = len(age_hours)
    cat = pl.DataFrame({
        "item_id": [f"i{j}" for j in range(n)], "category": [f"c{j % 2}" for j in range(n)],
        "subcategory": ["s"] * n, "seller_id": [f"x{j % 4}" for j in range(n)], "brand": ["b"] * n,
        "title": ["t"] * n, "price": [1.0] * n, "stock": stock or [5] * n, "restricted": restricted or [False] * n,
        "created_at": [T0 - timedelta(hours=a) for a in age_hours]})
    s = OnlineState(cat)
    for sid in blocked_sellers:
        s.apply_inventory("blocked_seller", f"x{sid}", 0, T0 - timedelta(days=30))
    return s


def test_the_best_scored_new_candidate_takes_the_last_slot():
    s = _state([500, 400, 300, 10, 20, 30, 200])           # i3, i4, i5 are new (under 48 h)
    ids = [f"i{j}" for j in range(7)]
    scores = np.array([9.0, 8.0, 7.0, 1.0, 3.0, 2.0, 6.0])
    out, sc = rerank(ids, scores, s, T0, 3, CFG)
    assert out == ["i0", "i1", "i2"]
    got, got_sc = with_new_item_slot(out, sc, ids, scores, s, T0, CFG)
    assert got == ["i0", "i1", "i4"] and got_sc == [9.0, 8.0, 3.0]
    # a slate that already shows a new item is left alone
    assert with_new_item_slot(["i0", "i5", "i1"], [9.0, 2.0, 8.0], ids, scores, s, T0, CFG)[0] == ["i0", "i5", "i1"]
    # the age limit is the configuration's
    old_enough = RerankConfig(new_item_share=1.0, new_item_max_age_hours=5)
    assert with_new_item_slot(out, sc, ids, scores, s, T0, old_enough)[0] == out


def test_filters_and_purchases_bind_the_new_item_slot():
    # i3 (best new) out of stock, i4 restricted, i5 from a blocked seller (x1): nothing new may be shown
    s = _state([500, 400, 300, 10, 20, 30], stock=[5, 5, 5, 0, 5, 5], restricted=[False] * 4 + [True, False],
               blocked_sellers={1})
    ids = [f"i{j}" for j in range(6)]
    scores = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])
    out, sc = rerank(ids, scores, s, T0, 2, CFG)
    assert with_new_item_slot(out, sc, ids, scores, s, T0, CFG)[0] == out
    s2 = _state([500, 400, 300, 10, 20])
    out, sc = rerank(ids[:5], scores[:5], s2, T0, 2, CFG)
    assert with_new_item_slot(out, sc, ids[:5], scores[:5], s2, T0, CFG, purchased=frozenset({"i3"}))[0] == \
        ["i0", "i4"]
    no_exclusion = RerankConfig(new_item_share=1.0, exclude_purchased=False)
    assert with_new_item_slot(out, sc, ids[:5], scores[:5], s2, T0, no_exclusion,
                              purchased=frozenset({"i3"}))[0] == ["i0", "i3"]


def test_the_category_cap_does_not_bind_the_slot():
    s = _state([500, 400, 300, 10])                        # i0 and i2 are category c0, i3 is c1, i1 c1
    ids = ["i0", "i2", "i1", "i3"]
    scores = np.array([9.0, 8.0, 7.0, 1.0])
    capped = RerankConfig(max_per_category=1, new_item_share=1.0)
    out, sc = rerank(ids, scores, s, T0, 2, capped)
    assert out == ["i0", "i1"]
    assert with_new_item_slot(out, sc, ids, scores, s, T0, capped)[0] == ["i0", "i3"]


def test_scores_stay_non_increasing_and_single_item_slates_are_left_alone():
    s = _state([500, 400, 300, 200, 10])                   # i0, i2, i4 category c0 (i4 new); i1, i3 category c1
    ids = ["i0", "i2", "i4", "i1", "i3"]
    scores = np.array([9.0, 8.8, 8.5, 7.0, 6.0])
    capped = RerankConfig(max_per_category=2, new_item_share=1.0)
    out, sc = rerank(ids, scores, s, T0, 4, capped)
    assert out == ["i0", "i2", "i1", "i3"] and sc == [9.0, 8.8, 7.0, 6.0]      # the cap held the new i4 back
    got, got_sc = with_new_item_slot(out, sc, ids, scores, s, T0, capped)
    assert got == ["i0", "i2", "i1", "i4"] and got_sc == [9.0, 8.8, 7.0, 7.0]  # its 8.5 held to the score before
    one, one_sc = rerank(ids, scores, s, T0, 1, CFG)
    assert with_new_item_slot(one, one_sc, ids, scores, s, T0, CFG) == (["i0"], [9.0])


def test_a_naive_request_time_is_utc_as_for_the_filters(monkeypatch):
    """On a host 5 hours behind UTC a naive time read as local would end the 48 hours 5 hours late (and miss i2)."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        s = _state([500, 400, 47.5])
        ids = ["i0", "i1", "i2"]
        scores = np.array([3.0, 2.0, 1.0])
        out, sc = rerank(ids, scores, s, T0, 2, CFG)
        naive = T0.replace(tzinfo=None)
        assert with_new_item_slot(out, sc, ids, scores, s, naive, CFG)[0] == \
            with_new_item_slot(out, sc, ids, scores, s, T0, CFG)[0] == ["i0", "i2"]
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_share_is_a_stable_hash_of_the_request_id():
    ids = [f"r{j}" for j in range(20_000)]
    for share in (0.1, 0.5):
        picked = [gets_new_item_slot(r, share) for r in ids]
        assert picked == [gets_new_item_slot(r, share) for r in ids]          # deterministic
        assert abs(np.mean(picked) - share) < 0.015
    assert not any(gets_new_item_slot(r, 0.0) for r in ids[:500])
    assert all(gets_new_item_slot(r, 1.0) for r in ids[:500])
    assert all(gets_new_item_slot(r, 0.5) for r in ids[:2000] if gets_new_item_slot(r, 0.1))   # nested shares


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="new_item_share"):
        RerankConfig(new_item_share=1.5)
    with pytest.raises(ValueError, match="new_item_max_age_hours"):
        RerankConfig(new_item_max_age_hours=0)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 25).flatmap(lambda n: st.tuples(
    st.lists(st.sampled_from([1.0, 30.0, 47.0, 49.0, 300.0, -5.0]), min_size=n, max_size=n),   # -5: not yet live
    st.lists(st.integers(0, 2), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n),
    st.sets(st.integers(0, 3)), st.lists(st.integers(0, n + 3), max_size=40), st.integers(1, 8),
    st.sets(st.integers(0, n)))))
def test_no_filtered_item_ever_comes_out_of_the_slot(args):
    ages, stock, restricted, blocked, cand, k, bought = args
    s = _state(ages, stock, restricted, blocked)
    ids = [f"i{j}" for j in cand]                           # may hold unknown ids and repeats
    scores = np.random.default_rng(len(ids)).normal(size=len(ids))
    purchased = frozenset(f"i{j}" for j in bought)
    out, sc = rerank(ids, scores, s, T0, k, CFG, purchased)
    got, got_sc = with_new_item_slot(out, sc, ids, scores, s, T0, CFG, purchased)
    assert len(got) == len(out) == len(set(got)) and len(got_sc) == len(got)
    assert policy_filter(got, s, T0, purchased).all()
    assert got[:-1] == out[:-1] and got_sc[:-1] == sc[:-1]
    if got != out:
        assert got_sc[-1] <= got_sc[-2]

    def young(i: str) -> bool:
        row = s.index.get(i)
        return row is not None and T0 - timedelta(hours=48) <= \
            datetime.fromtimestamp(s.created_us[row] / 1e6, timezone.utc) <= T0

    # it fires exactly when the slate (2 items or more) shows no new item and an unseen, showable new one exists
    showable = [i for i in dict.fromkeys(ids) if young(i) and i not in out and policy_filter([i], s, T0, purchased)[0]]
    assert (got != out) == (len(out) >= 2 and not any(young(i) for i in out) and bool(showable))
    if got != out:
        assert got[-1] in showable
