"""OPE against the simulator's ground truth (`sim.run_policy` gives a target's true value)."""
from __future__ import annotations

import zlib

import numpy as np
import polars as pl
import pytest

from recs.datasets.policy import Ranking, Request, SlotProbabilities
from recs.evaluators.ope import (OPEConfig, RewardModelConfig, build_inputs, run_ope, sampled_target_from_policy,
                                 target_probs_from_policy)

sim = pytest.importorskip("recs.sim")


class PoolUniform:
    """Target: a uniformly random ordered k-subset of the logger's candidate pool (inside the logger's support)."""

    policy_id = "pool-uniform"

    def __init__(self, world) -> None:
        self.logger = world.logging_policy()
        self.w = world

    def _pool(self, request: Request) -> np.ndarray:
        pools, _ = self.logger.pools_for(request)
        return pools.pool[0][pools.pool[0] >= 0]

    def rank(self, request: Request, k: int) -> Ranking:
        pool = self._pool(request)
        rng = np.random.default_rng([99, zlib.crc32(request.request_id.encode())])
        pick = rng.permutation(pool)[:k]
        return Ranking(tuple(self.w.item_ids[pick]), tuple(0.0 for _ in pick), ("pool-uniform",))

    def slot_probabilities(self, request: Request, k: int) -> SlotProbabilities:
        pool = self._pool(request)
        kk = min(k, len(pool))
        return SlotProbabilities(tuple(self.w.item_ids[pool]), np.full((kk, len(pool)), 1.0 / max(len(pool), 1)))


def _world():
    return sim.World.build(sim.SimConfig(n_users=400, n_items=800, days=1, seed=0))


def _slates(imps: pl.DataFrame) -> tuple[dict, dict]:
    k = dict(imps.group_by("request_id").agg(pl.col("position").max() + 1).iter_rows())
    shown = dict(imps.group_by("request_id").agg("item_id").iter_rows())
    return k, shown


def test_logging_policy_as_target_reproduces_on_policy_value():
    w = _world()
    imps, reqs = w.log_policy(w.logging_policy(), 300, seed=1)
    k, shown = _slates(imps)
    target = target_probs_from_policy(w.logging_policy(), list(reqs.values()), k, include=shown)
    inp = build_inputs(imps, target)
    assert np.allclose(inp.weights, 1.0)
    rep = run_ope(inp, OPEConfig(estimators=("ips", "snips")))
    assert rep.estimates["ips"].normal.value == pytest.approx(rep.logging.value, rel=1e-12)
    assert rep.estimates["snips"].normal.value == pytest.approx(rep.logging.value, rel=1e-12)
    assert not any("effective sample size" in x or "weight" in x for x in rep.warnings)


@pytest.mark.slow
def test_interval_coverage_over_50_seeds():
    """IPS, SNIPS and DR 95% intervals cover the true value >= 90% of the time; clipping's bias is visible."""
    w = _world()
    target = PoolUniform(w)
    truth = sim.run_policy(target, 20_000, 12345, w).clicks_per_request
    names = ("ips", "snips", "clipped-ips", "dr")
    cfg = OPEConfig(estimators=names, clip=3.0, reward_model=RewardModelConfig(num_threads=1, num_boost_round=30))
    values, covered = {n: [] for n in names}, {n: 0 for n in names}
    seeds = range(50)
    for seed in seeds:
        imps, reqs = w.log_policy(w.logging_policy(), 1500, seed=1000 + seed)
        k, _ = _slates(imps)
        rl = list(reqs.values())
        inp = build_inputs(imps, target_probs_from_policy(target, rl, k),
                           dm_target=sampled_target_from_policy(target, rl, k))
        rep = run_ope(inp, cfg)
        for n in names:
            e = rep.estimates[n].normal
            values[n].append(e.value)
            covered[n] += e.ci_low <= truth <= e.ci_high
    cov = {n: covered[n] / len(seeds) for n in names}
    bias = {n: float(np.mean(values[n]) - truth) for n in names}
    print(f"truth {truth:.4f}; coverage {cov}; mean bias {bias}")
    for n in ("ips", "snips", "dr"):
        assert cov[n] >= 0.9, (n, cov[n])
    se_mean = np.std(values["clipped-ips"]) / np.sqrt(len(seeds))
    assert bias["clipped-ips"] < -3 * se_mean  # clipping biases downwards, visibly
