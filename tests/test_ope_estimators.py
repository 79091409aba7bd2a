"""Off-policy estimators: exact agreement with direct numpy formulas, intervals, and protective diagnostics."""
from __future__ import annotations

import math

import numpy as np
import pytest

from recs.evaluators.ope import (DR, IPS, SNIPS, ClippedIPS, OPEConfig, PseudoInverse, RewardModelConfig,
                                 RewardPredictions, build_inputs, run_ope)
from recs.evaluators.ope.base import Decomposition, stderr_of
from recs.evaluators.ope.intervals import bootstrap, lift_influence
from recs.evaluators.ope.synthetic import SyntheticBandit

FAST_RM = RewardModelConfig(num_threads=1, num_boost_round=20)


def _inputs(kind="softmax", n=3000, seed=1, **kw):
    sb = SyntheticBandit(target_kind=kind, **kw)
    logs, target = sb.frames(n, seed)
    return sb, logs, build_inputs(logs, target)


def test_ips_snips_match_numpy_exactly():
    sb, logs, inp = _inputs()
    a = sb.arrays(3000, 1)  # the same draw, straight from the generator
    w = a["target_prob"] / a["propensity"]
    y = a["clicked"].astype(float)
    R, N = 3000, len(y)
    assert IPS().decompose(inp).value() == pytest.approx(np.sum(w * y) / R, rel=1e-12)
    assert SNIPS().decompose(inp).value() == pytest.approx(np.sum(w * y) / np.sum(w) * N / R, rel=1e-12)
    assert ClippedIPS(5.0).decompose(inp).value() == pytest.approx(np.sum(np.minimum(w, 5) * y) / R, rel=1e-12)
    per_req = (w * y).reshape(R, -1).sum(axis=1)
    ips_se = stderr_of(IPS().decompose(inp).influence())
    assert ips_se == pytest.approx(per_req.std(ddof=1) / np.sqrt(R), rel=1e-9)  # clustered by request


def test_pseudo_inverse_matches_numpy():
    sb, logs, inp = _inputs(n=2000)
    a = sb.arrays(2000, 1)
    w = (a["target_prob"] / a["propensity"]).reshape(2000, -1)
    y = a["clicked"].reshape(2000, -1).sum(axis=1)
    expect = np.mean((w.sum(axis=1) - (sb.k - 1)) * y)
    assert PseudoInverse().decompose(inp).value() == pytest.approx(expect, rel=1e-12)
    assert inp.slate_pscore is not None


def test_dr_with_exact_reward_model_is_dm_plus_zero_mean_correction():
    _, _, inp = _inputs(n=2000)
    q = RewardPredictions(np.full(inp.n_impressions, 0.2), np.full(len(inp.t_prob), 0.2))
    dr = DR().decompose(inp, q).value()
    w = inp.weights
    expect = np.sum(inp.t_prob * 0.2) / inp.n_requests + np.sum(w * (inp.reward - 0.2)) / inp.n_requests
    assert dr == pytest.approx(expect, rel=1e-12)


def test_bootstrap_agrees_with_normal_interval():
    _, _, inp = _inputs(n=3000)
    rep = run_ope(inp, OPEConfig(estimators=("ips", "snips"), n_bootstrap=200, seed=3))
    for name in ("ips", "snips"):
        e = rep.estimates[name]
        assert e.boot.stderr == pytest.approx(e.normal.stderr, rel=0.25)
        assert e.boot.ci_low < e.normal.value < e.boot.ci_high
    lift = rep.estimates["ips"].lift
    assert lift.value == pytest.approx(rep.estimates["ips"].normal.value / rep.logging.value)
    assert rep.estimates["ips"].lift_boot.ci_low < lift.value < rep.estimates["ips"].lift_boot.ci_high


def test_bootstrap_matches_normal_intervals_across_chunks_and_blocks():
    """Many requests, replicates in several blocks and requests in uneven chunks: bootstrap stderr and interval
    ends agree with the influence-function ones for linear, ratio and DR estimators and for the lift."""
    _, _, inp = _inputs("softmax", n=20_000, seed=5)
    q = RewardPredictions(np.full(inp.n_impressions, 0.15), np.full(len(inp.t_prob), 0.15))
    decs = {n: e.decompose(inp, q) for n, e in (("ips", IPS()), ("snips", SNIPS()), ("dr", DR()))}
    base = Decomposition(np.bincount(inp.req_idx, weights=inp.reward, minlength=inp.n_requests))
    reps = bootstrap({**decs, "base": base}, 600, seed=7, chunk=3_001, max_block=256)
    for name, d in {**decs, "base": base}.items():
        se = stderr_of(d.influence())
        boot = reps[name]
        assert boot.std(ddof=1) == pytest.approx(se, rel=0.12), name  # ~3 sd of the estimate at 600 replicates
        lo, hi = np.quantile(boot, [0.025, 0.975])
        assert lo == pytest.approx(d.value() - 1.96 * se, abs=0.3 * se), name
        assert hi == pytest.approx(d.value() + 1.96 * se, abs=0.3 * se), name
    lift = reps["ips"] / reps["base"]
    _, psi = lift_influence(decs["ips"].value(), decs["ips"].influence(), base.value(), base.influence())
    assert lift.std(ddof=1) == pytest.approx(stderr_of(psi), rel=0.12)


def test_poisson_weights_are_the_exact_inverse_cdf():
    from recs.evaluators.ope.intervals import _THRESHOLDS, poisson_weights
    w = poisson_weights(np.random.default_rng(11), (50, 20_000))
    u = np.random.default_rng(11).integers(0, 1 << 32, size=(50, 20_000), dtype=np.uint32)
    assert np.array_equal(w, np.searchsorted(_THRESHOLDS, u.astype(np.int64), side="right").astype(np.float32))
    # and the thresholds are Poisson(1)'s CDF
    k = np.arange(len(_THRESHOLDS))
    cdf = np.cumsum(np.exp(-1.0) / np.array([math.factorial(i) for i in k]))
    assert np.allclose(_THRESHOLDS / 2.0 ** 32, cdf, atol=2 ** -32)
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.02


def test_estimates_recover_truth_on_supported_targets():
    for kind in ("softmax", "sparse"):
        sb, _, inp = _inputs(kind, n=6000, seed=2)
        rep = run_ope(inp, OPEConfig(estimators=("ips", "snips", "dr", "sndr"), reward_model=FAST_RM))
        truth = sb.true_value()
        for name, e in rep.estimates.items():
            assert abs(e.normal.value - truth) < 4 * e.normal.stderr, (kind, name, e.normal.value, truth)
        assert not any("support" in w for w in rep.warnings)


def test_deterministic_target_clipping_bias_is_visible():
    sb, _, inp = _inputs("deterministic", n=6000, seed=4)
    rep = run_ope(inp, OPEConfig(estimators=("ips", "clipped-ips"), clip=5.0))
    truth = sb.true_value()
    assert abs(rep.estimates["ips"].normal.value - truth) < 4 * rep.estimates["ips"].normal.stderr
    clipped = rep.estimates["clipped-ips"].normal
    assert clipped.ci_high < truth  # clipping biases a non-negative reward downwards


def test_target_that_never_agrees_with_logger_warns_and_snips_is_undefined():
    _, _, inp = _inputs("off-support", n=1000, logger_items=40)
    rep = run_ope(inp, OPEConfig(estimators=("ips", "snips", "dm", "dr"), reward_model=FAST_RM))
    assert rep.estimates["ips"].normal.value == 0.0
    assert np.isnan(rep.estimates["snips"].normal.value)
    assert rep.diagnostics["ess"] == 0.0
    assert rep.diagnostics["unseen_item_position_mass_share"] == pytest.approx(1.0)
    text = " ".join(rep.warnings)
    assert "disagrees completely" in text and "support deficiency" in text and "snips is undefined" in text
    assert rep.to_dict()["estimates"]["snips"]["value"] is None  # JSON null, not NaN


def test_partial_support_is_flagged():
    # the target spreads mass over all 50 items; the logger never shows the last 10
    sb, _, inp = _inputs("softmax", n=3000, logger_items=40)
    rep = run_ope(inp, OPEConfig(estimators=("ips",)))
    assert rep.diagnostics["unseen_item_mass_share"] > 0.01
    assert any("support deficiency" in w for w in rep.warnings)
    assert rep.estimates["ips"].normal.ci_high < sb.true_value()  # the bias the warning is about


def test_small_ess_warns():
    _, _, inp = _inputs("deterministic", n=150)
    rep = run_ope(inp, OPEConfig(estimators=("ips",)))
    assert rep.diagnostics["ess"] < 100
    assert any("effective sample size" in w for w in rep.warnings)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown estimator"):
        OPEConfig(estimators=("ips", "magic"))
    with pytest.raises(ValueError, match="bootstrap"):
        OPEConfig(n_bootstrap=5)
    with pytest.raises(ValueError, match="clip"):
        OPEConfig(clip=0)
    with pytest.raises(ValueError, match="n_folds"):
        RewardModelConfig(n_folds=1)
