"""The simulator: determinism, schemas, exact propensities, truth agreeing with logs, inventory dynamics."""
from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from recs.datasets.io import read_table
from recs.datasets.schemas import validate
from recs.sim import SimConfig, World, generate_dataset, request_rewards, run_policy
from recs.sim.logging_policy import LoggingCore, Pools

TINY = SimConfig(n_users=300, n_items=1_200, days=2, requests_per_day=3_000, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "ds"
    generate_dataset(TINY, out)
    return out


def test_tables_match_canonical_schemas(dataset):
    for table in ("catalog", "sellers", "users", "impressions", "interactions", "queries", "inventory_events"):
        df = read_table(dataset, table)
        assert df.height > 0, table
        validate(table, df)


def test_same_seed_same_data(dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(TINY, again)
    for table in ("impressions", "interactions", "inventory_events", "queries"):
        a = read_table(dataset, table).sort(*(["request_id", "position"] if table == "impressions" else
                                               ["request_id"] if table == "queries" else ["event_id"]))
        b = read_table(again, table).sort(*(["request_id", "position"] if table == "impressions" else
                                             ["request_id"] if table == "queries" else ["event_id"]))
        assert a.equals(b), table
    other = tmp_path / "other"
    generate_dataset(TINY.with_(seed=4), other)
    assert not read_table(other, "impressions")["item_id"].equals(read_table(dataset, "impressions")["item_id"])


def test_anonymous_share_and_slate_sizes(dataset):
    imp = read_table(dataset, "impressions")
    req = imp.group_by("request_id").agg(pl.col("user_id").first(), pl.col("surface").first(), pl.len().alias("n"))
    anon = req["user_id"].is_null().mean()
    assert 0.30 < anon < 0.40
    sizes = dict(req.group_by("surface").agg(pl.col("n").max()).iter_rows())
    assert sizes == {"home": TINY.k_home, "search": TINY.k_search}
    assert imp.filter(pl.col("surface") == "home")["query"].null_count() == imp.filter(
        pl.col("surface") == "home").height
    assert imp.filter(pl.col("surface") == "search")["query"].null_count() == 0


def _mc_check(world: World, prefixes, user_rows, recent, n_draws=40_000, seed=0):
    """Sample many slates for fixed requests; empirical P(item at pos) must match the logged propensity."""
    core = LoggingCore(world)
    elig = world.eligible(world.cfg.start + timedelta(hours=1))
    lists = core.candidate_lists(elig)
    est = core.user_estimate(np.array(user_rows), [np.array(r, dtype=np.int64) for r in recent])
    pools = core.pools(est, prefixes, elig, lists)
    rng = np.random.default_rng(seed)
    for r in range(len(prefixes)):
        rep = Pools(*(np.repeat(getattr(pools, f)[r:r + 1], n_draws, axis=0) for f in
                      ("pool", "pool_n", "subcats", "is_search", "pop_n")))
        k = np.full(n_draws, world.cfg.k_search if prefixes[r] else world.cfg.k_home)
        slates = core.sample(rep, k, elig, rng)
        prop = core.propensity(rep, slates, k, elig)
        cells = pl.DataFrame({"item": slates.ravel(), "pos": np.tile(np.arange(slates.shape[1]), n_draws),
                              "prop": prop.ravel()}).filter(pl.col("item") >= 0)
        freq = cells.group_by("item", "pos").agg(pl.len().alias("n"), pl.col("prop").first(),
                                                 pl.col("prop").std().alias("sd"))
        assert freq["sd"].fill_null(0).max() < 1e-12  # propensity is a function of (request, item, pos)
        f = freq.with_columns((pl.col("n") / n_draws).alias("emp"))
        frequent = f.filter(pl.col("prop") * n_draws >= 30)
        se = np.sqrt(frequent["prop"] * (1 - frequent["prop"]) / n_draws)
        z = np.abs(frequent["emp"] - frequent["prop"]) / se
        assert z.max() < 5.0, frequent.with_columns(z=z).sort("z", descending=True).head()
        # rare cells (the uniform exploration over the population), pooled per position
        rare_mass = np.clip(1 - frequent.group_by("pos").agg(pl.col("prop").sum()).sort("pos")["prop"].to_numpy(), 0, 1)
        rare_emp = 1 - frequent.group_by("pos").agg(pl.col("emp").sum()).sort("pos")["emp"].to_numpy()
        rare_se = np.sqrt(rare_mass * (1 - rare_mass) / n_draws) + 1e-12
        assert np.all(np.abs(rare_emp - rare_mass) < 5 * rare_se + 1e-9), (rare_emp, rare_mass)
        # frequent cells: the greedy slate's cells carry most of the mass
        assert f["prop"].max() > 0.7


def test_logging_propensity_is_exact_by_monte_carlo():
    world = World.build(TINY)
    sub = world.catalog.subcat_names[0]
    _mc_check(world, [None, None, sub[:2]], [5, -1, -1], [[], [10, 11], []])


def test_every_eligible_item_has_support_at_every_slot():
    world = World.build(TINY)
    policy = world.logging_policy()
    req = world.sample_requests(1, seed=5)[0]
    k = world.k_for(req)
    elig_ids = world.item_ids[world.eligible(req.ts)]
    sp = policy.slot_probabilities(req, k, include=list(elig_ids[:200]))
    assert (sp.probs > 0).all()
    # per slot the probabilities over all eligible items sum to one (unlisted items share the uniform part)
    full = policy.slot_probabilities(req, k, include=list(elig_ids))
    np.testing.assert_allclose(full.probs.sum(axis=1), 1.0, atol=1e-9)


def test_logged_ctr_agrees_with_truth(dataset):
    """The logged click rate agrees with the true click probabilities of the logged slates within sampling error."""
    imp = read_table(dataset, "impressions")
    truth = read_table(dataset / "truth", "impressions")
    j = imp.join(truth, on=["request_id", "position"], how="inner")
    assert j.height == imp.height
    p = j["p_click"].to_numpy()
    emp, exp = j["clicked"].mean(), p.mean()
    se = np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(emp - exp) < 4 * se, (emp, exp, se)


def test_run_policy_true_value_agrees_with_logged_ctr():
    world = World.build(TINY)
    policy = world.logging_policy()
    logged, _ = world.log_policy(policy, 4_000, seed=1)
    truth = run_policy(policy, 4_000, seed=2, world=world)
    emp = logged["clicked"].mean()
    se = np.sqrt(truth.ctr_stderr ** 2 + emp * (1 - emp) / logged.height * 2)
    assert abs(emp - truth.ctr) < 4 * se, (emp, truth)
    oracle = run_policy(world.oracle_policy(), 2_000, seed=2, world=world)
    uniform = run_policy(world.uniform_policy(), 2_000, seed=2, world=world)
    assert uniform.ctr < truth.ctr < oracle.ctr


def test_segment_values_equal_runs_on_the_segment_alone():
    world = World.build(TINY)
    reqs = world.sample_requests(300, 5)
    anon = np.array([r.user_id is None for r in reqs])
    assert 0 < anon.sum() < len(reqs)
    rewards = request_rewards(world.logging_policy(), reqs, world)
    clicks = sum(world.expected_reward(r, world.logging_policy().rank(r, world.k_for(r)).item_ids).clicks
                 for r in reqs)
    assert rewards.value().ctr == pytest.approx(clicks / rewards.shown.sum())
    for mask in (anon, ~anon):
        alone = run_policy(world.logging_policy(), int(mask.sum()), 0, world,
                           requests=[r for r, m in zip(reqs, mask) if m])
        assert rewards.value(mask) == alone
    with pytest.raises(ValueError, match="no requests"):
        rewards.value(np.zeros(len(reqs), dtype=bool))


def test_request_rewards_item_subset_counts_its_slots_and_clicks(dataset):
    """An item subset's slots and expected clicks, checked slot by slot against the truth; the whole catalogue as
    the subset gives the policy's own figures, an empty one none."""
    world = World.load(dataset)
    reqs = world.sample_requests(120, 9)
    pol = world.logging_policy()
    subset = np.zeros(len(world.item_ids), dtype=bool)
    subset[::3] = True
    rewards = request_rewards(pol, reqs, world, item_subset=subset)
    slots = clicks = 0.0
    for r in reqs:
        idx = world.state.indices(list(pol.rank(r, world.k_for(r)).item_ids))
        p_click = world.click_probs(world.contexts[r.request_id], idx)[0]
        slots += subset[idx].sum()
        clicks += p_click[subset[idx]].sum()
    got = rewards.subset_value()
    assert 0 < slots < rewards.shown.sum()
    assert got["slot_share"] == pytest.approx(slots / rewards.shown.sum())
    assert got["ctr"] == pytest.approx(clicks / slots)
    assert got["clicks_per_request"] == pytest.approx(clicks / len(reqs))
    everything = request_rewards(pol, reqs, world, item_subset=np.ones(len(world.item_ids), dtype=bool))
    assert everything.subset_value()["ctr"] == pytest.approx(everything.value().ctr)
    assert everything.subset_value()["slot_share"] == 1.0
    nothing = request_rewards(pol, reqs, world, item_subset=np.zeros(len(world.item_ids), dtype=bool))
    assert nothing.subset_value() == {"slot_share": 0.0, "ctr": None, "clicks_per_request": 0.0}
    with pytest.raises(ValueError, match="no item subset"):
        request_rewards(pol, reqs, world).subset_value()
    with pytest.raises(ValueError, match="no requests"):
        rewards.subset_value(np.zeros(len(reqs), dtype=bool))
    half = np.arange(len(reqs)) < 60
    part = rewards.subset_value(half)
    assert part["clicks_per_request"] == pytest.approx(rewards.subset_clicks[half].sum() / 60)


def test_delayed_purchases_are_cut_at_log_end(dataset):
    conv = read_table(dataset / "truth", "conversions")
    inter = read_table(dataset, "interactions")
    end = TINY.start + timedelta(days=TINY.days)
    late = conv.filter(pl.col("ts") > end)
    assert late.height > 0
    assert inter["ts"].max() <= end
    assert inter.filter(pl.col("kind") == "purchase").height == conv.height - late.height
    delay_h = (conv["ts"] - read_table(dataset, "impressions").join(conv.select("request_id", "position"),
               on=["request_id", "position"])["ts"]).dt.total_seconds() / 3600
    assert delay_h.median() < 6 and delay_h.max() > 24  # minutes to days, heavy-tailed


def test_inventory_dynamics(dataset):
    cat = read_table(dataset, "catalog")
    ev = read_table(dataset, "inventory_events")
    kinds = dict(ev.group_by("kind").len().iter_rows())
    assert {"stock", "price", "new_item"} <= set(kinds)
    new_items = cat.filter(pl.col("created_at") >= TINY.start).height
    assert 0.01 * TINY.days < new_items / cat.height < 0.06 * TINY.days
    assert ev.filter(pl.col("kind") == "stock")["value"].min() >= 0
    sellers = read_table(dataset, "sellers")
    assert sellers["blocked_from"].null_count() < sellers.height


def test_logging_policy_never_shows_ineligible_items(dataset):
    """Every shown item was in stock, unrestricted, live and not from a blocked seller at its hour's start."""
    imp = read_table(dataset, "impressions").select("ts", "item_id")
    cat = read_table(dataset, "catalog").select("item_id", "created_at", "seller_id")
    sellers = read_table(dataset, "sellers")
    j = imp.join(cat, on="item_id").join(sellers, on="seller_id")
    assert j.filter(pl.col("created_at") > pl.col("ts").dt.truncate("1h")).height == 0
    assert j.filter(pl.col("blocked_from") <= pl.col("ts").dt.truncate("1h")).height == 0
    from recs.datasets.point_in_time import attributes_as_of

    hours = imp.select("item_id", pl.col("ts").dt.truncate("1h").alias("ts")).unique()
    pit = attributes_as_of(hours, read_table(dataset, "catalog"), read_table(dataset, "inventory_events"))
    assert pit.filter(pl.col("stock_at_ts") <= 0).height == 0
    assert pit.filter(pl.col("restricted_at_ts")).height == 0


def test_interrupted_generation_leaves_nothing(tmp_path):
    out = tmp_path / "broken"

    def boom(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(TINY, out, progress=boom)
    assert not out.exists()
    assert not any(p.name.startswith(".broken") for p in tmp_path.iterdir())


def test_world_load_matches_final_state(dataset):
    world = World.load(dataset)
    final = read_table(dataset / "truth", "final_state")
    assert np.array_equal(world.state.stock, final.sort("item_id")["stock"].to_numpy())
    cfg = json.loads((dataset / "truth" / "config.json").read_text())
    assert cfg["seed"] == TINY.seed


def test_config_rejects_impossible_values():
    with pytest.raises(ValueError):
        SimConfig(n_users=-1)
    with pytest.raises(ValueError):
        SimConfig(anonymous_share=1.5)


def test_logging_policy_reproduces_logged_propensities_point_in_time(dataset):
    """Rebuilt from the logs and the world rewound to each request's hour, the logger gives the logged propensity."""
    from recs.evaluators.ope.target import requests_from_impressions
    from recs.sim.point_in_time import point_in_time

    imp = read_table(dataset, "impressions")
    rids = imp["request_id"].unique().sort().gather_every(25)
    sub = imp.filter(pl.col("request_id").is_in(rids.implode()))
    world = World.load(dataset)
    policy = point_in_time(world, world.logging_policy(), dataset)
    requests, ks = requests_from_impressions(imp)  # whole log: sessions' earlier clicks are recent items
    keep = set(rids.to_list())
    requests = [r for r in requests if r.request_id in keep]
    shown = {r: list(v) for r, v in sub.group_by("request_id").agg("item_id").iter_rows()}
    logged = {(r, p): (i, q) for r, p, i, q in sub.select("request_id", "position", "item_id",
                                                          "propensity").iter_rows()}
    checked = 0
    for req in sorted(requests, key=lambda r: r.ts):
        sp = policy.slot_probabilities(req, ks[req.request_id], include=shown[req.request_id])
        col = {i: j for j, i in enumerate(sp.item_ids)}
        for p in range(ks[req.request_id]):
            item, prop = logged[(req.request_id, p)]
            assert sp.probs[p, col[item]] == pytest.approx(prop, rel=1e-9), (req.request_id, p)
            checked += 1
    assert checked > 500


def test_informed_ceiling_sits_between_logging_and_oracle():
    """The informed policy knows registered users' tastes but not the search intent behind a prefix: it equals
    the oracle on their home requests and where the prefix names one subcategory, and loses on anonymous visitors
    and on prefixes several subcategories share."""
    world = World.build(TINY)
    reqs = world.sample_requests(1_500, seed=4)
    names = world.catalog.subcat_names

    def n_match(r):
        return sum(n.startswith(r.query) for n in names) if r.surface == "search" else 0

    anon = [r for r in reqs if r.user_id is None]
    known = [r for r in reqs if r.user_id is not None and n_match(r) <= 1][:100]
    ambiguous = [r for r in reqs if r.user_id is not None and n_match(r) > 1]
    assert len(known) == 100 and len(ambiguous) >= 20
    informed, oracle = world.informed_policy(), world.oracle_policy()
    assert [informed.rank(r, 5).item_ids for r in known] == [oracle.rank(r, 5).item_ids for r in known]
    # the informed ranking does not depend on the hidden intent: give each ambiguous request another subcategory
    # its prefix matches, and the informed ranking stays the same while the oracle's follows the intent
    before = {r.request_id: (informed.rank(r, 5).item_ids, oracle.rank(r, 5).item_ids) for r in ambiguous}
    saved = {r.request_id: world.contexts[r.request_id] for r in ambiguous}
    try:
        for r in ambiguous:
            ctx = saved[r.request_id]
            other = next(s for s, n in enumerate(names) if n.startswith(r.query) and s != ctx.intent)
            world.contexts[r.request_id] = dataclasses.replace(ctx, intent=other)
        assert all(informed.rank(r, 5).item_ids == before[r.request_id][0] for r in ambiguous)
        moved = sum(oracle.rank(r, 5).item_ids != before[r.request_id][1] for r in ambiguous)
        assert moved >= len(ambiguous) // 2, (moved, len(ambiguous))
    finally:
        world.contexts.update(saved)
    amb = {name: run_policy(p, len(ambiguous), 0, world, requests=ambiguous).ctr
           for name, p in (("informed", informed), ("oracle", oracle))}
    assert amb["informed"] < amb["oracle"], amb
    v = {name: run_policy(p, len(anon), 0, world, requests=anon).ctr
         for name, p in (("logging", world.logging_policy()), ("informed", informed), ("oracle", oracle))}
    assert v["logging"] < v["informed"] < v["oracle"], v
