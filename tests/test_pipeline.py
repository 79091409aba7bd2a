"""The trained pipeline: train all, load, rank under live inventory, evaluate, and the hard policy filters."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from recs.cli.main import app
from recs.datasets.online_state import OnlineState
from recs.models.pipeline import Pipeline
from recs.models.rerank import RerankConfig, rerank
from recs.models.train import TrainConfig, train_all
from recs.scenarios.evaluate import EvaluateConfig, evaluate
from recs.sim import SimConfig, World, generate_dataset

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    ds = root / "ds"
    generate_dataset(SimConfig(n_users=300, n_items=1200, days=5, requests_per_day=2500, seed=2), ds)
    model = root / "model"
    meta = train_all(ds, model, TrainConfig(embedding_epochs=3, max_ranker_requests=1200))
    return ds, model, meta


def test_train_all_writes_a_complete_model(trained):
    ds, model, meta = trained
    for f in ("model.json", "feature_spec.json", "ranker/model.txt", "snapshot/meta.json", "state/catalog.parquet",
              "fallback.json"):
        assert (model / f).exists(), f
    assert set(meta["retrievers"]) == {"popularity", "covisit", "content", "embedding", "suggest", "clickmodel"}
    assert meta["ranker"]["rows"] > 1000
    assert datetime.fromisoformat(meta["training_window"]["end"]) == datetime.fromisoformat(meta["holdout"]["start"])
    assert not list(model.rglob("*.pkl")) and not list(model.rglob("*.pickle"))


def test_ranking_respects_live_inventory_on_the_next_request(trained):
    ds, model, _ = trained
    world = World.load(ds)
    pipe = Pipeline.load(model, state=world.state)
    req = [r for r in world.sample_requests(20, 3) if r.surface == "home"][0]
    first = pipe.rank(req, 10)
    assert len(first.item_ids) == 10 and not first.fallback
    assert "rank" in first.stages and world.state.is_eligible(list(first.item_ids), req.ts).all()
    gone = first.item_ids[0]
    world.state.apply_inventory("stock", gone, 0, req.ts)
    assert gone not in pipe.rank(req, 10).item_ids


def test_search_suggestions_complete_the_prefix(trained):
    ds, model, _ = trained
    world = World.load(ds)
    pipe = Pipeline.load(model, state=world.state)
    reqs = [r for r in world.sample_requests(60, 4) if r.surface == "search"][:10]
    for r in reqs:
        ids = pipe.rank(r, 5).item_ids
        subs = [world.state.subcategory[world.state.index[i]] for i in ids]
        match = [s.startswith(r.query) for s in subs]
        assert match[0] and match == sorted(match, reverse=True), (r.query, subs)  # completions first


def test_evaluate_reports_segments_and_true_ctr(trained):
    ds, model, _ = trained
    res = evaluate(model, ds, EvaluateConfig(max_requests=300, true_ctr_requests=200))
    for seg in ("all", "anonymous", "logged_in"):
        assert 0 <= res["segments"][seg]["ndcg"] <= 1 and res["segments"][seg]["n"] > 0
    assert res["policy_violations"] == 0
    tc = res["true_ctr"]
    assert tc["oracle"] > tc["logging"] and 0 < tc["pipeline"] < tc["oracle"]
    assert tc["logging"] < tc["informed"] <= tc["oracle"] * 1.001
    assert all(tc[f"{p}_revenue_per_request"] > 0 for p in ("pipeline", "logging", "oracle", "informed"))
    assert tc["revenue_vs_logging"] == tc["pipeline_revenue_per_request"] / tc["logging_revenue_per_request"]
    assert set(res["retrievers"]) == {"popularity", "covisit", "content", "embedding", "suggest", "clickmodel"}
    new = res["true_ctr_new_items"]
    assert new["created_after"] == res["holdout"]["start"] and new["n_items"] > 0
    for p in ("pipeline", "logging", "oracle", "informed"):
        assert 0 <= new[p]["slot_share"] < 1 and new[p]["clicks_per_request"] >= 0
        assert (new[p]["ctr"] is None) == (new[p]["slot_share"] == 0)


def test_true_ctr_requests_are_their_own_stream(trained, monkeypatch):
    """`evaluate` draws its fresh requests from the evaluation's own stream, not the one diagnostics and benchmarks
    draw (`sample_requests(n, 17)`, which it shared until the sixth session); another seed gives another set."""
    from recs.scenarios.evaluate import TRUE_CTR_STREAM, true_ctr_requests

    ds, model, _ = trained
    world = World.load(ds)

    def draws(reqs):
        return [(r.user_id, r.surface, r.query) for r in reqs]

    ev = draws(true_ctr_requests(world, EvaluateConfig(true_ctr_requests=300)))
    assert ev == draws(true_ctr_requests(world, EvaluateConfig(true_ctr_requests=300)))   # reproducible
    assert ev != draws(world.sample_requests(300, 17))
    assert ev != draws(true_ctr_requests(world, EvaluateConfig(true_ctr_requests=300, seed=1)))
    seen = []
    original = World.sample_requests

    def recording(self, n, seed, ts=None):
        seen.append(seed)
        return original(self, n, seed, ts)

    monkeypatch.setattr(World, "sample_requests", recording)
    res = evaluate(model, ds, EvaluateConfig(max_requests=50, true_ctr_requests=40, seed=2, retrievers=False))
    assert seen == [2 + TRUE_CTR_STREAM]
    assert res["true_ctr_requests"] == {"n": 40, "seed": 2, "stream": 2 + TRUE_CTR_STREAM}
    for field, bad in (("seed", -1), ("k", 0), ("max_requests", 0), ("true_ctr_requests", -1)):
        with pytest.raises(ValueError, match=f"^{field} must be >= .*got {bad}$"):   # each bound named alone
            EvaluateConfig(**{field: bad})


def test_cli_train_and_evaluate_errors(tmp_path, trained):
    r = CliRunner().invoke(app, ["train", "all", "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "not found" in r.output
    ds, model, _ = trained
    r = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path), "--dataset", str(ds)])
    assert r.exit_code == 2 and "model.json" in r.output
    r = CliRunner().invoke(app, ["evaluate", "--model", str(model), "--dataset", str(ds), "--max-requests", "100",
                                 "--true-ctr-requests", "20", "--seed", "3", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["kind"] == "evaluate"
    assert res["true_ctr_requests"]["seed"] == 3                 # the CLI's --seed reaches the evaluation
    r = CliRunner().invoke(app, ["evaluate", "--model", str(model), "--dataset", str(ds), "--max-requests", "50",
                                 "--true-ctr-requests", "20"], terminal_width=200)
    assert r.exit_code == 0, r.output
    for row in ("true CTR on 20 fresh simulated requests", "anonymous", "revenue / request",
                "share of slots", "CTR of their slots", "x logging"):
        assert row in r.output, row


def test_cli_train_all_defaults_are_train_config_defaults(tmp_path, trained, monkeypatch):
    """`recs train all` without options trains what `TrainConfig()` says (every retriever kind included)."""
    import recs.models.train as train_mod

    seen = {}
    monkeypatch.setattr(train_mod, "train_all", lambda ds, out, cfg, **kw: seen.update(cfg=cfg))
    ds, _, _ = trained
    CliRunner().invoke(app, ["train", "all", "--dataset", str(ds), "--out", str(tmp_path / "m"), "--json"])
    assert seen["cfg"] == TrainConfig()
    CliRunner().invoke(app, ["train", "all", "--dataset", str(ds), "--out", str(tmp_path / "m3"), "--json",
                             "--retrievers", "popularity, suggest", "--max-ranker-requests", "50"])
    assert seen["cfg"].retrievers == ("popularity", "suggest") and seen["cfg"].max_ranker_requests == 50
    CliRunner().invoke(app, ["train", "all", "--dataset", str(ds), "--out", str(tmp_path / "m4"), "--json",
                             "--new-item-share", "0.25", "--price-weight", "0.5"])
    assert seen["cfg"].rerank == RerankConfig(new_item_share=0.25, price_weight=0.5)
    CliRunner().invoke(app, ["train", "all", "--dataset", str(ds), "--out", str(tmp_path / "m5"), "--json",
                             "--new-item-share", "0"])
    assert seen["cfg"].rerank == RerankConfig(new_item_share=0.0)
    r = CliRunner().invoke(app, ["train", "all", "--dataset", str(ds), "--out", str(tmp_path / "m6"),
                                 "--new-item-share", "2"])
    assert r.exit_code == 2 and "new_item_share" in r.output


def _state(n: int, stock, restricted, sellers_blocked) -> OnlineState:
    cat = pl.DataFrame({
        "item_id": [f"i{j}" for j in range(n)], "category": [f"c{j % 3}" for j in range(n)],
        "subcategory": ["s"] * n, "seller_id": [f"x{j % 4}" for j in range(n)], "brand": ["b"] * n,
        "title": ["t"] * n, "price": [1.0] * n, "stock": stock, "restricted": restricted,
        "created_at": [T0] * n})
    s = OnlineState(cat)
    for sid in sellers_blocked:
        s.apply_inventory("blocked_seller", f"x{sid}", 0, T0)
    return s


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.integers(0, 3), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n),
    st.sets(st.integers(0, 3)), st.lists(st.integers(0, n + 5), max_size=60), st.integers(0, 12),
    st.integers(0, 5))))
def test_no_filtered_item_ever_comes_out(args):
    n, stock, restricted, blocked, cand, k, cap = args
    s = _state(n, stock, restricted, blocked)
    ids = [f"i{j}" for j in cand]  # may hold unknown ids and repeats
    scores = np.random.default_rng(len(ids)).normal(size=len(ids))
    out, _ = rerank(ids, scores, s, T0 + timedelta(days=1), k, RerankConfig(max_per_category=cap))
    assert len(out) == len(set(out)) <= k
    assert all(s.is_eligible([i], T0 + timedelta(days=1))[0] for i in out)


def test_ci_gates(trained, tmp_path):
    """CI's own gates on the small simulated pipeline; a model that ranks at random fails them."""
    from recs.datasets.io import atomic_write_json
    from recs.features.skew import skew_check_dataset

    ds, model, _ = trained
    runs = tmp_path / "runs"
    atomic_write_json(runs / "evaluate.json", evaluate(model, ds, EvaluateConfig(max_requests=400,
                                                                                true_ctr_requests=600)))
    atomic_write_json(runs / "skew.json", skew_check_dataset(ds, 50))
    r = CliRunner().invoke(app, ["gate", "--config", "ci_gates.toml", "--candidate", str(runs)])
    assert r.exit_code == 0, r.output
    good = json.loads((runs / "evaluate.json").read_text())
    for section, key, bad in (
            ("true_ctr", "pipeline_vs_logging", 0.25),  # a uniform-random ranker: true CTR ~0.05 vs logging ~0.21
            ("true_ctr", "revenue_vs_logging", 0.5),    # a ranker that only shows the cheapest items
            ("true_ctr_new_items", "pipeline", {"slot_share": 0.0014, "ctr": None, "clicks_per_request": 0.0})):
        worse = json.loads(json.dumps(good))
        worse[section][key] = bad                       # the slot's share without the new-item slot: 0.0014
        atomic_write_json(runs / "evaluate.json", worse)
        r = CliRunner().invoke(app, ["gate", "--config", "ci_gates.toml", "--candidate", str(runs)])
        assert r.exit_code == 1, (key, r.output)


def test_context_free_visitors_get_their_own_ranker(trained):
    ds, model, meta = trained
    assert set(meta["ranker"]["models"]) == {"personal", "cold"}
    assert (model / "ranker_cold" / "model.txt").is_file()
    world = World.load(ds)
    pipe = Pipeline.load(model, state=world.state)
    reqs = world.sample_requests(60, 5)
    anon = next(r for r in reqs if r.user_id is None and not r.recent_items)
    home = next(r for r in reqs if r.user_id is not None and r.surface == "home" and pipe.history(r.user_id))
    assert pipe.ranker_for(anon) is pipe.cold_ranker and pipe.ranker_for(home) is pipe.ranker


def test_tree_surfaces_serve_the_base_score_where_the_trees_are_off(trained, tmp_path):
    """`TrainConfig.tree_surfaces`: by default the personal ranker's trees serve both surfaces; a model whose
    model.json says ["home"] serves the base score (the click model's) alone on the search bar; a model.json from
    before the setting serves the trees everywhere."""
    import shutil

    from recs.features.compute import compute_features
    from recs.features.online import online_inputs
    from recs.models.ranker import BaseScore, base_scores

    ds, model, meta = trained
    assert meta["ranker"]["tree_surfaces"] == ["home", "search"]
    world = World.load(ds)
    pipe = Pipeline.load(model, state=world.state)
    reqs = world.sample_requests(80, 5)
    search = next(r for r in reqs if r.surface == "search" and not pipe.is_context_free(r))
    home = next(r for r in reqs if r.surface == "home" and not pipe.is_context_free(r))
    assert pipe.ranker_for(search) is pipe.ranker and pipe.ranker_for(home) is pipe.ranker

    def with_trees(surfaces) -> Pipeline:
        folder = tmp_path / "_".join(surfaces or ["legacy"])
        shutil.copytree(model, folder)
        m = json.loads((folder / "model.json").read_text())
        if surfaces is None:
            del m["ranker"]["tree_surfaces"]
        else:
            m["ranker"]["tree_surfaces"] = surfaces
        (folder / "model.json").write_text(json.dumps(m))
        return Pipeline.load(folder, state=world.state)

    home_only = with_trees(["home"])
    assert isinstance(home_only.ranker_for(search), BaseScore) and home_only.ranker_for(home) is home_only.ranker
    ids, feats = home_only.candidates(search)
    scores = home_only.score(search, ids, feats)
    X = compute_features(online_inputs(search, ids, home_only.state, feats), home_only.snapshot, home_only.attrs)
    np.testing.assert_array_equal(scores, base_scores(X, home_only.ranker.base_feature, home_only.ranker.base_weight))
    assert not np.array_equal(scores, home_only.ranker.predict(X))      # the trees would have changed the scores
    legacy = with_trees(None)
    assert legacy.ranker_for(search) is legacy.ranker
    bad = tmp_path / "bad_rerank"
    shutil.copytree(model, bad)
    m = json.loads((bad / "model.json").read_text())
    m["rerank"]["cap_surfaces"] = ["feed"]
    (bad / "model.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"model\.json: field 'rerank': cap_surfaces"):
        Pipeline.load(bad, state=world.state)


def test_price_weight_adds_its_log_price_term_and_leans_slates_to_pricier_items(trained):
    from dataclasses import replace

    ds, model, _ = trained
    world = World.load(ds)
    pipe = Pipeline.load(model, state=world.state)
    reqs = [r for r in world.sample_requests(80, 7) if r.surface == "home"][:15]
    plain, leaning = [], []
    for req in reqs:
        ids, feats = pipe.candidates(req)
        base = pipe.score(req, ids, feats)
        rows = pipe.rows_of(ids)
        pipe.rerank_cfg = replace(pipe.rerank_cfg, price_weight=0.5)
        tilted = pipe.score(req, ids, feats)
        pipe.rerank_cfg = replace(pipe.rerank_cfg, price_weight=0.0)
        np.testing.assert_allclose(tilted - base, 0.5 * np.log(pipe.state.price[rows]), rtol=1e-9)
        plain.append(np.mean([pipe.state.price[pipe.state.index[i]] for i in pipe.rank(req, 10).item_ids]))
        pipe.rerank_cfg = replace(pipe.rerank_cfg, price_weight=0.5)
        leaning.append(np.mean([pipe.state.price[pipe.state.index[i]] for i in pipe.rank(req, 10).item_ids]))
        pipe.rerank_cfg = replace(pipe.rerank_cfg, price_weight=0.0)
    assert np.mean(leaning) > np.mean(plain)
    with pytest.raises(ValueError, match="price_weight"):
        RerankConfig(price_weight=-1)


def test_category_cap_applies_on_the_home_page_only():
    s = _state(9, [5] * 9, [False] * 9, set())          # categories c0, c1, c2 in turn
    ids = ["i0", "i3", "i6", "i1", "i4", "i7", "i2", "i5", "i8"]       # all of c0 first, then c1, then c2
    scores = -np.arange(9.0)
    cfg = RerankConfig(max_per_category=2)
    home, _ = rerank(ids, scores, s, T0 + timedelta(days=1), 4, cfg.for_surface("home"))
    search, _ = rerank(ids, scores, s, T0 + timedelta(days=1), 4, cfg.for_surface("search"))
    assert home == ["i0", "i3", "i1", "i4"] and search == ["i0", "i3", "i6", "i1"]
    assert cfg.for_surface("home") is cfg and RerankConfig(cap_surfaces=["home", "search"]).for_surface("search")\
        .max_per_category == 4
    with pytest.raises(ValueError, match="cap_surfaces"):
        RerankConfig(cap_surfaces=("feed",))


def test_candidate_negatives_are_unshown_grade_zero_rows():
    from recs.models.training_rows import with_candidate_negatives

    lab = pl.DataFrame({"request_id": ["a"] * 3 + ["b"] * 2, "ts": [T0] * 5, "item_id": ["x", "y", "z", "x", "w"],
                        "position": [0, 1, 2, 0, 1], "grade": [1, 0, 0, 0, 3]})
    cands = {"a": np.array(["x", "p", "q", "r", "y"], dtype=object), "b": np.array(["x", "w"], dtype=object)}
    out = with_candidate_negatives(lab, cands, 2, np.random.default_rng(0))
    added = out.join(lab.select("request_id", "item_id", pl.lit(1).alias("logged")), on=["request_id", "item_id"],
                     how="left").filter(pl.col("logged").is_null())
    assert added.height == 2 and set(added["item_id"]) <= {"p", "q", "r"} and (added["grade"] == 0).all()
    assert added["position"].is_between(0, 2).all() and (out["weight"] == 1.0).all()
    assert out.filter(pl.col("grade") > 0).height == 2                  # logged labels untouched


def test_ranker_boosts_from_a_base_feature_and_keeps_it_through_save_and_load(tmp_path):
    """With `base_feature`, scores are the trees' output plus the feature (LightGBM init_score), after a reload too."""
    from recs.features.spec import FEATURE_NAMES
    from recs.models.ranker import Ranker, RankerConfig, train_ranker

    rng = np.random.default_rng(0)
    n_req, per = 200, 8
    X = rng.normal(size=(n_req * per, len(FEATURE_NAMES))).astype(np.float32)
    j = FEATURE_NAMES.index("cm_score")
    y = (X[:, j] + 0.3 * rng.normal(size=len(X)) > 1.0).astype(np.int32)
    req = np.repeat(np.arange(n_req), per)
    cfg = RankerConfig(n_estimators=5, num_threads=1, base_feature="cm_score", base_weight=2.0)
    rk = train_ranker(X[:1200], y[:1200], req[:1200], None, X[1200:], y[1200:], req[1200:], cfg)
    trees = rk.booster.predict(X, num_iteration=rk.best_iteration)
    assert np.allclose(rk.predict(X), trees + 2.0 * X[:, j])
    rk.save(tmp_path / "rk")
    back = Ranker.load(tmp_path / "rk")
    assert back.base_feature == "cm_score" and np.allclose(back.predict(X), rk.predict(X))
    with pytest.raises(ValueError, match="base_feature"):
        RankerConfig(base_feature="no_such_feature")


def test_the_pipeline_gives_new_items_the_last_slot(trained, tmp_path):
    """`recs train all`'s default serves the new-item slot: where a request gets it, only the last slot differs
    from the same pipeline without it, and holds an item created within the age limit; a model.json from before the
    setting serves without it."""
    import shutil
    from dataclasses import replace

    ds, model, meta = trained
    assert meta["rerank"]["new_item_share"] == 1.0
    world = World.load(ds)
    pipe = Pipeline.load(model, state=world.state)
    pipe.index_new_items()
    with_slot, without = pipe.rerank_cfg, replace(pipe.rerank_cfg, new_item_share=0.0)
    changed = 0
    for r in world.sample_requests(150, 8):
        k = world.k_for(r)
        pipe.rerank_cfg = without
        plain = pipe.rank(r, k)
        pipe.rerank_cfg = with_slot
        got = pipe.rank(r, k)
        if "new_item_slot" in got.stages:
            changed += 1
            assert got.item_ids[:-1] == plain.item_ids[:-1] and got.item_ids[-1] not in plain.item_ids
            created = world.state.created_us[world.state.index[got.item_ids[-1]]]
            assert created >= (r.ts - timedelta(hours=with_slot.new_item_max_age_hours)).timestamp() * 1e6
        else:
            assert got.item_ids == plain.item_ids
    assert changed > 10
    legacy = tmp_path / "legacy"
    shutil.copytree(model, legacy)
    m = json.loads((legacy / "model.json").read_text())
    del m["rerank"]["new_item_share"]
    (legacy / "model.json").write_text(json.dumps(m))
    assert Pipeline.load(legacy, state=world.state).rerank_cfg.new_item_share == 0.0


def test_already_purchased_items_stay_filtered_from_training_and_live_purchases(trained):
    """Purchases before the cut-off come with the model; a live purchase is not pushed out by later clicks."""
    from recs.datasets.io import read_table
    from recs.models.state_files import purchases_frame

    ds, model, meta = trained
    world = World.load(ds)
    pipe = Pipeline.load(model, state=world.state)
    cut = datetime.fromisoformat(meta["holdout"]["start"])
    saved = purchases_frame(read_table(ds, "interactions"), cut)
    assert saved.height > 0 and pipe.purchases == {u: frozenset(i) for u, i in saved.iter_rows()}
    req = [r for r in world.sample_requests(80, 9) if r.user_id is not None and r.surface == "home"][0]
    pipe.purchases, pipe.repurchase = {}, {}                          # no category known as bought again
    first = pipe.rank(req, 10).item_ids
    pipe.purchases = {req.user_id: frozenset({first[0]})}            # bought before the cut-off
    assert first[0] not in pipe.rank(req, 10).item_ids
    cat = world.state.category[world.state.index[first[0]]]
    for measured, filtered in (((100, 0.40), False), ((100, 0.01), True), ((10, 0.40), True)):
        pipe.repurchase = {cat: measured}                             # (purchases, repeat share) of its category
        assert (first[0] not in pipe.rank(req, 10).item_ids) == filtered, measured
    pipe.repurchase = {}
    pipe.purchases = {}
    world.state.record_event(req.user_id, "s-live", first[1], "purchase")
    for j in range(60):                                               # more than a history holds
        world.state.record_event(req.user_id, "s-live", first[2 + j % 5], "click")
    assert first[1] not in pipe.rank(req, 10).item_ids
    assert first[1] not in [i for i, _ in world.state.user_history.get(req.user_id, ())]   # pushed out there


def test_repurchase_shares_per_category():
    from recs.models.state_files import repurchase_frame

    t = [datetime(2026, 1, 1, h, tzinfo=timezone.utc) for h in range(6)]
    inter = pl.DataFrame({"ts": t, "user_id": ["u1", "u1", "u2", "u1", "u2", None],
                          "item_id": ["a", "a", "a", "b", "c", "c"], "kind": ["purchase"] * 6})
    cat = pl.DataFrame({"item_id": ["a", "b", "c"], "category": ["food", "food", "tv"]})
    got = repurchase_frame(inter, cat, datetime(2026, 1, 1, 5, tzinfo=timezone.utc))
    assert got.rows() == [("food", 4, 0.25), ("tv", 1, 0.0)]     # u1 bought a twice; the anonymous one is not counted
