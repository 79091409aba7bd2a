"""Group-sequential boundaries and the mixture SPRT."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from scipy import stats

from recs.evaluators.abtest_analyze import AnalyzeConfig, analyze
from recs.evaluators.abtest_calibration import rejections, simulate_batch
from recs.evaluators.abtest_sim import ExperimentSim, simulate_experiment_frame
from recs.evaluators.sequential import boundaries, msprt, spent


def test_obf_boundaries_match_published_lan_demets_values():
    # Lan-DeMets O'Brien-Fleming-type, 5 equally spaced looks, two-sided alpha 0.05 (R ldbounds / gsDesign)
    b = boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.05, "obf")
    assert b == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=2e-3)


def test_single_look_is_the_fixed_test_and_spending_is_monotone():
    assert boundaries([1.0], 0.05)[0] == pytest.approx(stats.norm.isf(0.025), abs=1e-9)
    t = np.linspace(0.01, 1, 50)
    for kind in ("obf", "pocock"):
        s = spent(t, 0.05, kind)
        assert np.all(np.diff(s) > 0) and s[-1] == pytest.approx(0.05)


@pytest.mark.parametrize("kind", ["obf", "pocock"])
def test_boundaries_spend_exactly_alpha_under_brownian_motion(kind):
    f = np.array([0.1, 0.25, 0.3, 0.55, 0.7, 1.0])  # unequal spacing
    b = boundaries(f, 0.05, kind)
    rng = np.random.default_rng(1)
    steps = rng.standard_normal((400_000, f.size)) * np.sqrt(np.diff(np.concatenate([[0.0], f])))
    z = np.cumsum(steps, axis=1) / np.sqrt(f)
    crossed = np.abs(z) >= b
    assert crossed.any(axis=1).mean() == pytest.approx(0.05, abs=0.0015)
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    by_look = np.array([(first == k).mean() for k in range(f.size)])
    assert by_look == pytest.approx(np.diff(np.concatenate([[0.0], spent(f, 0.05, kind)])), abs=1.5e-3)


def test_final_look_spends_the_rest_and_bad_fractions_are_rejected():
    early = boundaries([0.3, 0.6], 0.05)
    final = boundaries([0.3, 0.6], 0.05, final=True)
    assert final[0] == early[0] and final[1] < early[1]
    with pytest.raises(ValueError):
        boundaries([0.5, 0.4])


def test_msprt_interval_contains_estimate_and_p_is_running_min():
    d = np.array([0.0, 0.5, 0.1, 2.0])
    se = np.array([1.0, 0.8, 0.5, 0.4])
    p, lo, hi = msprt(d, se, tau=1.0, alpha=0.05, axis=0)
    assert np.all(np.diff(p) <= 0) and np.all(lo <= hi)
    assert np.all(np.diff(lo) >= 0) and np.all(np.diff(hi) <= 0)  # running intersection
    single_p, slo, shi = msprt(d, se, 1.0, 0.05)
    assert np.all((slo < d) & (d < shi))
    # the confidence sequence excludes 0 exactly when the always-valid p-value is below alpha
    assert ((slo > 0) | (shi < 0)).tolist() == (single_p < 0.05).tolist()


def test_small_aa_batch_peeking_inflates_and_sequential_controls():
    batch = simulate_batch(ExperimentSim(n_units=1_000, n_experiments=600, days=10, seed=3), "conversion")
    assert rejections(batch, "peeking").mean() > 0.1
    assert rejections(batch, "obf").mean() < 0.085
    assert rejections(batch, "msprt", tau=0.2).mean() < 0.06


def test_analyze_sequential_group_and_msprt_modes():
    df = simulate_experiment_frame(n_units=30_000, seed=6, effects={"conversion": 0.2})
    half = df.filter(pl.col("day") <= 7)
    cont = analyze(half, AnalyzeConfig(metrics=["conversion"], sequential="obf", planned_n_per_arm=15_000,
                                       time_column="day"))
    m = cont.metrics[0]
    assert m.sequential["looks"] == 7 and m.sequential["information_fraction"] == pytest.approx(0.5, abs=0.01)
    fixed = analyze(half, AnalyzeConfig(metrics=["conversion"]))
    assert (m.ci[1] - m.ci[0]) > (fixed.metrics[0].ci[1] - fixed.metrics[0].ci[0])
    done = analyze(df, AnalyzeConfig(metrics=["conversion"], sequential="obf", planned_n_per_arm=15_000,
                                     time_column="day"))
    assert done.metrics[0].outcome == "win" and done.verdict == "SHIP"
    assert done.metrics[0].sequential["crossed_at_look"] is not None
    one = analyze(half, AnalyzeConfig(metrics=["conversion"], sequential="obf", planned_n_per_arm=15_000,
                                      previous_looks=[0.25]))
    assert one.metrics[0].sequential["looks"] == 2
    ms = analyze(df, AnalyzeConfig(metrics=["conversion"], sequential="msprt", time_column="day", msprt_tau=0.2))
    assert ms.metrics[0].sequential["looks"] == 14
    assert ms.metrics[0].p_value > analyze(df, AnalyzeConfig(metrics=["conversion"])).metrics[0].p_value
    with pytest.raises(ValueError, match="planned sample size"):
        AnalyzeConfig(metrics=["conversion"], sequential="obf")


def test_an_interim_win_whose_guardrail_is_not_yet_shown_continues():
    """At a group-sequential interim look the guardrail's bound is still wide: a win whose guardrail is not yet
    non-inferior continues (the same data as the complete sample, or declared final, ship or do not)."""
    df = simulate_experiment_frame(n_units=20_000, days=14, effects={"conversion": 0.5}, seed=3)
    cfg = AnalyzeConfig(metrics=["conversion"], guardrails=["p99_latency_ms<=+0.5%"], sequential="obf",
                        planned_n_per_arm=50_000, time_column="day")
    interim = analyze(df, cfg)
    assert interim.metrics[0].outcome == "win" and interim.guardrails[0].outcome == "fail"
    assert interim.verdict == "CONTINUE"
    assert analyze(df, replace(cfg, final_look=True)).verdict in ("SHIP", "DO NOT SHIP")
    assert analyze(df, replace(cfg, planned_n_per_arm=10_000)).verdict == "SHIP"


def test_msprt_without_a_win_continues_until_the_planned_sample_or_the_last_look():
    df = simulate_experiment_frame(n_units=4_000, seed=8)
    cfg = AnalyzeConfig(metrics=["conversion"], sequential="msprt", time_column="day", msprt_tau=0.2)
    assert analyze(df, cfg).verdict == "CONTINUE"
    assert analyze(df, replace(cfg, final_look=True)).verdict == "DO NOT SHIP"
    assert analyze(df, replace(cfg, planned_n_per_arm=1_000)).verdict == "DO NOT SHIP"


@pytest.mark.parametrize("info,final", [([0.5, 2.0], False), ([0.3, 0.6, 1.5], False), ([0.5, 0.6], True)])
def test_boundaries_keep_alpha_when_the_sample_overruns_or_ends_early(info, final):
    """Alpha spent at min(t, 1), the looks' joint law at the actual information: Monte Carlo type I error at 5%
    (spending and law both at the capped times gave 5.45%, 5.34% and 4.11% with Pocock)."""
    c = boundaries(info, 0.05, "pocock", final=final)
    rng = np.random.default_rng(0)
    t = np.array(info)
    w = np.cumsum(rng.standard_normal((400_000, len(t))) * np.sqrt(np.diff(t, prepend=0.0)), axis=1)
    assert (np.abs(w / np.sqrt(t)) >= c).any(axis=1).mean() == pytest.approx(0.05, abs=0.0025)
