"""The vectorised serving paths give the answers of the straightforward definitions they replace.

Blend (plain-list round robin), top-k selection (sampled bound), the title word-prefix test (one regex), the
cached per-row feature codes, re-ranking with known state rows, and the content and click-model retrievers'
whole-array scoring, each against a direct re-statement of the rule on random or trained inputs.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from recs.datasets.policy import Request
from recs.features.compute import compute_features, item_codes, word_prefix_matcher
from recs.features.online import StateCodes, online_inputs
from recs.models.base import Candidates, RetrievalQuery
from recs.models.blend import BlendConfig, blend
from recs.models.rerank import rerank
from recs.models.retrievers._common import top_indices

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# ---- blend ---------------------------------------------------------------------------------------------------
def _blend_reference(lists, quotas, total, fill):
    """The round robin as specified: every source visited in every round; first occurrence kept."""
    names = [c.source for c in lists]
    ids = [list(c.item_ids) for c in lists]
    taken, order, origin, ptr = {}, [], [], [0] * len(ids)

    def run(limits):
        got = [0] * len(ids)
        while len(order) < total:
            moved = False
            for s in range(len(ids)):
                while got[s] < limits[s] and ptr[s] < len(ids[s]):
                    iid = ids[s][ptr[s]]
                    ptr[s] += 1
                    if iid not in taken:
                        taken[iid] = len(order)
                        order.append(iid)
                        origin.append(names[s])
                        got[s] += 1
                        moved = True
                        break
                if len(order) >= total:
                    return
            if not moved:
                return

    run([quotas.get(n, 0) for n in names])
    if fill and len(order) < total:
        run([np.inf] * len(ids))
    feats = {}
    for s, c in enumerate(lists):
        sc, rk = np.full(len(order), np.nan), np.full(len(order), np.nan)
        for j, iid in enumerate(ids[s]):
            p = taken.get(iid)
            if p is not None and np.isnan(rk[p]):
                sc[p], rk[p] = c.scores[j], c.ranks[j]
        feats[f"score_{names[s]}"], feats[f"rank_{names[s]}"] = sc, rk
    return order, origin, feats


@pytest.mark.parametrize("seed", range(40))
def test_blend_matches_the_round_robin_definition(seed):
    rng = random.Random(seed)
    pool = [f"i{j}" for j in range(rng.randint(5, 120))]
    lists = []
    for s in range(rng.randint(1, 5)):
        n = rng.randint(0, 60)
        ids = [rng.choice(pool) for _ in range(n)]            # repeats inside a source and across sources
        lists.append(Candidates(np.array(ids, dtype=object), np.sort(np.random.default_rng(seed + s).random(n))[::-1],
                                f"src{s}"))
    quotas = {c.source: rng.randint(0, 40) for c in lists if rng.random() < 0.9}
    total, fill = rng.randint(1, 150), rng.random() < 0.5
    got = blend(lists, quotas=quotas, config=BlendConfig(quotas=quotas, total=total, fill=fill))
    order, origin, feats = _blend_reference(lists, quotas, total, fill)
    assert got.item_ids.tolist() == order
    assert got.origin.tolist() == origin
    for name, v in feats.items():
        np.testing.assert_array_equal(got.features[name], v)


# ---- top-k ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(30))
def test_top_indices_is_the_sorted_head(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 150_000))
    n = int(rng.integers(1, 3000))
    s = rng.normal(size=m) + (rng.random() * 2 - 1)
    s[rng.random(m) < rng.random()] = -np.inf if seed % 2 else 0.0
    for floor in (0.0, -np.inf):
        pos = np.flatnonzero(s > floor)
        want = pos[np.lexsort((pos, -s[pos]))][:n]
        np.testing.assert_array_equal(top_indices(s, n, floor), want)   # distinct values: a unique answer
    tied = np.round(np.abs(s), 1)
    pos = np.flatnonzero(tied > 0)
    np.testing.assert_array_equal(tied[top_indices(tied, n)], np.sort(tied[pos])[::-1][:n])


# ---- title word prefix -------------------------------------------------------------------------------------------
def test_word_prefix_matcher_agrees_with_splitting():
    rng = random.Random(0)
    alphabet = "abAB é-1.\t\n\u00a0\u2003\x1c"
    for _ in range(30_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        p = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3))).lower()
        assert word_prefix_matcher(p)(text) == any(w.startswith(p) for w in text.lower().split()), (text, p)


# ---- a trained pipeline ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from recs.models.train import TrainConfig, train_all
    from recs.sim import SimConfig, generate_dataset

    root = tmp_path_factory.mktemp("fast")
    generate_dataset(SimConfig(n_users=300, n_items=900, days=5, requests_per_day=1500, seed=5), root / "ds")
    train_all(root / "ds", root / "model",
              TrainConfig(retrievers=("popularity", "covisit", "content", "suggest", "clickmodel"),
                          max_ranker_requests=600, holdout_days=1, ranker_days=2))
    return root / "model"


@pytest.fixture(scope="module")
def pipe(model_dir):
    from recs.models.pipeline import Pipeline

    return Pipeline.load(model_dir)


def _requests(p, n=60):
    rng = random.Random(3)
    users = sorted(p.histories)
    items = p.state.item_ids
    ts = datetime.fromtimestamp(int(p.state.created_us.max()) / 1e6, timezone.utc) + timedelta(hours=1)
    out = []
    for i in range(n):
        search = i % 3 == 0
        uid = rng.choice(users) if i % 2 else None
        recent = tuple(str(items[rng.randrange(len(items))]) for _ in range(rng.choice([0, 1, 3])))
        q = rng.choice(["a", "s", "sh", "ko", "x", "b "]) if search else None
        out.append(Request(f"r{i}", ts, "search" if search else "home", uid, f"s{i}", q, recent))
    return out


def test_cached_codes_and_rows_give_the_same_features_and_slate(pipe):
    p = pipe
    for req in _requests(p):
        ids, feats = p.candidates(req)
        if not len(ids):
            continue
        rows = p.rows_of(ids)
        np.testing.assert_array_equal(rows, p.state.indices(list(ids)))
        plain = compute_features(online_inputs(req, ids, p.state, feats), p.snapshot, p.attrs)
        fast = compute_features(online_inputs(req, ids, p.state, feats, rows, p.codes), p.snapshot, p.attrs)
        np.testing.assert_array_equal(fast, plain)
        sc = p.ranker.predict(plain)
        assert rerank(ids, sc, p.state, req.ts, 10, p.rerank_cfg, frozenset(), rows) == \
            rerank(list(ids), list(sc), p.state, req.ts, 10, p.rerank_cfg, frozenset())


def test_state_codes_follow_appended_items(pipe, model_dir):
    from recs.models.state_files import load_state

    p = pipe
    st = load_state(model_dir / "state")     # its own state: the module's pipeline stays as loaded
    codes = StateCodes(p.snapshot)
    before = codes.get(st).copy()
    st.apply_inventory("new_item", "brand_new_item", 5, T0, {
        "category": st.category[0], "subcategory": st.subcategory[0], "seller_id": st.seller_id[0],
        "brand": st.brand[0], "title": "brand new", "price": 9.5})
    after = codes.get(st)
    assert len(after) == len(before) + 1
    np.testing.assert_array_equal(after[:-1], before)
    np.testing.assert_array_equal(after, item_codes(p.snapshot, st.item_ids, st.category, st.subcategory,
                                                    st.brand))


def test_prefix_rule_is_the_subcategory_then_title_rule(pipe):
    p = pipe
    ids = p.state.item_ids[:400]
    for prefix in ("a", "S", "sh", "zz", "b c", "1"):
        q = prefix.lower()
        sub = np.array([str(s).lower().startswith(q) for s in p.state.subcategory[:400]])
        title = np.array([any(w.startswith(q) for w in str(t).lower().split()) for t in p.state.title[:400]])
        want = sub if sub.any() else (title if title.any() else np.ones(400, dtype=bool))
        np.testing.assert_array_equal(p.prefix_matches(ids, prefix), want)


def test_content_retriever_whole_array_scores(pipe):
    p = pipe
    c = p.retrievers["content"]
    for req in _requests(p, 30):
        q = RetrievalQuery(req, p.history(req.user_id), p.state)
        cols, vals, seeds = c.profile(q)
        if not len(cols):
            continue
        v = np.zeros(c.X.shape[1])
        v[cols] = vals
        dense = c.X @ v                                       # cosine with the profile, straight from the matrix
        age = np.maximum(int(req.ts.timestamp() * 1e6) - c.created_us, 0) / 86_400e6
        hl = c.config.new_item_half_life_days
        boost = np.where(age < 10 * hl, 1.0 + c.config.new_item_boost * 0.5 ** (age / hl), 1.0)
        want = np.where(dense > 0, dense * c._pop_mult * boost, 0.0)
        np.testing.assert_allclose(c._dense_scores(cols, vals, req.ts), want, rtol=1e-12, atol=0)
        got = c.retrieve(q, 20)
        s = c._dense_scores(cols, vals, req.ts)
        order = np.lexsort((np.arange(len(s)), -s))
        order = order[s[order] > 0]
        ok = p.state.is_eligible(c.item_ids[order].tolist(), req.ts)
        ref = [i for i, e in zip(c.item_ids[order].tolist(), ok) if e and i not in set(seeds)][:20]
        assert got.item_ids.tolist() == ref


def test_click_model_scores_every_row_as_it_scores_some(pipe):
    p = pipe
    cm = p.retrievers["clickmodel"]
    st = p.state
    for req in _requests(p, 30):
        hist = p.history(req.user_id)
        every = cm.score_rows(req, hist, st, None)
        rows = np.arange(len(st))
        np.testing.assert_allclose(every, cm.score_rows(req, hist, st, rows), rtol=1e-6, atol=1e-6)
        got = cm.retrieve(RetrievalQuery(req, hist, st), 25)
        ok = st.eligible_mask(req.ts) & np.isfinite(every)
        r = np.flatnonzero(ok)
        want = r[np.lexsort((r, -every[r]))][:25]
        assert got.item_ids.tolist() == st.item_ids[want].tolist()


def test_suggest_boost_through_codes_is_the_boost_by_name(pipe):
    p = pipe
    sg = p.retrievers["suggest"]
    rng = np.random.default_rng(4)
    users = sorted(p.histories)
    for j in range(20):
        aff = sg.affinities(p.histories[users[j % len(users)]], tuple(p.state.item_ids[rng.integers(0, 50, 2)]))
        rows = rng.integers(0, len(sg.item_ids), 300)
        np.testing.assert_array_equal(sg._boost_rows(aff, rows),
                                      sg._boost(aff, sg._subcategory[rows], sg._category[rows], sg._brand[rows]))
