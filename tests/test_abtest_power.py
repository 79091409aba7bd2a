"""Power analysis: known answers, statsmodels references, CUPED, multiplicity, duration, non-inferiority."""
from __future__ import annotations

import math

import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize, samplesize_proportions_2indep_onetail

from recs.evaluators.abtest_power import PowerDesign, Traffic, mde_for, n_for, plan, power_at, whole_weeks
from recs.evaluators.sequential_power import gs_power, inflation_factor


def prop(**kw) -> PowerDesign:
    return PowerDesign(metric="proportion", baseline=kw.pop("baseline", 0.2), **kw)


def mean(**kw) -> PowerDesign:
    return PowerDesign(metric="mean", baseline=kw.pop("baseline", 10.0), std=kw.pop("std", 1.0), **kw)


def test_proportion_known_answer_25583():
    assert plan(prop(), mde=0.01).n_per_arm == 25_583
    assert plan(prop(), mde=0.05, relative=True).n_per_arm == 25_583


@pytest.mark.parametrize("p1,d,alt", [(0.2, 0.01, "two-sided"), (0.05, 0.005, "two-sided"), (0.5, 0.02, "larger"),
                                      (0.1, 0.01, "larger")])
def test_proportion_matches_statsmodels_onetail(p1, d, alt):
    ref = samplesize_proportions_2indep_onetail(d, p1, 0.8, alpha=0.05, alternative=alt)
    n = n_for(prop(baseline=p1, alternative=alt), d)
    assert math.ceil(n) == math.ceil(ref)


def test_cohen_h_matches_normal_ind_power():
    h = proportion_effectsize(0.21, 0.2)
    ref = NormalIndPower().solve_power(h, power=0.8, alpha=0.05)
    assert n_for(prop(method="cohen-h"), 0.01) == pytest.approx(ref, rel=1e-6)


def test_unpooled_matches_closed_form():
    z = stats.norm.isf(0.025) + stats.norm.isf(0.2)
    closed = z**2 * (0.2 * 0.8 + 0.21 * 0.79) / 0.01**2
    assert n_for(prop(method="unpooled"), 0.01) == pytest.approx(closed, rel=1e-4)


def test_ttest_known_answer_394_and_statsmodels():
    assert plan(mean(std=1.0), mde=0.2).n_per_arm == 394
    for d, alpha, alt in [(0.2, 0.05, "two-sided"), (0.5, 0.01, "two-sided"), (0.3, 0.05, "larger")]:
        ref = TTestIndPower().solve_power(d, power=0.8, alpha=alpha, alternative=alt)
        assert n_for(mean(alpha=alpha, alternative=alt), d) == pytest.approx(ref, rel=1e-5)
    assert power_at(mean(), 0.2, 300) == pytest.approx(TTestIndPower().power(0.2, 300, 0.05), rel=1e-8)
    ref_mde = TTestIndPower().solve_power(nobs1=1000, power=0.9, alpha=0.05)  # statsmodels solves to ~1e-5
    assert mde_for(mean(power=0.9), 1000) == pytest.approx(ref_mde, rel=1e-4)
    assert TTestIndPower().power(mde_for(mean(power=0.9), 1000), 1000, 0.05) == pytest.approx(0.9, abs=1e-9)


def test_huge_samples_do_not_break_noncentral_t():
    n = n_for(mean(), 1e-4)
    assert n == pytest.approx(2 * (stats.norm.isf(0.025) + stats.norm.isf(0.2)) ** 2 / 1e-8, rel=1e-4)


@pytest.mark.parametrize("design", [prop(), prop(method="unpooled"), prop(method="cohen-h"), mean(),
                                    PowerDesign(metric="ratio", baseline=0.05, std=0.08)])
def test_mde_and_power_invert_n(design):
    d = 0.01 if design.metric != "mean" else 0.1
    n = n_for(design, d)
    assert power_at(design, d, n) == pytest.approx(0.8, abs=1e-6)
    assert mde_for(design, n) == pytest.approx(d, rel=1e-5)
    p = plan(design, mde=d, n_per_arm=math.ceil(n))
    assert p.solved_for == "power" and p.power >= 0.8


def test_cuped_shrinks_sample_by_one_minus_r2():
    base = plan(PowerDesign(metric="ratio", baseline=1.0, std=2.0), mde=0.05)
    cup = plan(PowerDesign(metric="ratio", baseline=1.0, std=2.0, cuped_r2=0.36), mde=0.05)
    assert cup.n_per_arm_without_cuped == base.n_per_arm
    assert cup.n_per_arm / base.n_per_arm == pytest.approx(0.64, abs=1e-3)
    m = plan(PowerDesign(metric="ratio", baseline=1.0, std=2.0, cuped_r2=0.36), n_per_arm=10_000)
    assert m.mde / m.mde_without_cuped == pytest.approx(0.8, rel=1e-4)


def test_arms_and_metrics_use_bonferroni_alpha():
    d = prop(arms=3, n_metrics=2)
    assert d.n_comparisons == 4 and d.alpha_per_test == pytest.approx(0.0125)
    ref = samplesize_proportions_2indep_onetail(0.01, 0.2, 0.8, alpha=0.0125)
    assert plan(d, mde=0.01).n_per_arm == math.ceil(ref)
    assert "Bonferroni" in plan(d, mde=0.01).method
    assert prop(arms=3, correction="none").alpha_per_test == 0.05


def test_non_inferiority_one_sided_sizing():
    p = plan(mean(std=2.0, ni_margin=0.1))
    closed = 2 * (stats.norm.isf(0.05) + stats.norm.isf(0.2)) ** 2 * 4 / 0.01
    assert p.n_per_arm == pytest.approx(closed, rel=0.002)
    assert "non-inferiority" in p.method and "one-sided" in p.method
    q = plan(prop(ni_margin=0.01))
    closed = (stats.norm.isf(0.05) + stats.norm.isf(0.2)) ** 2 * 2 * 0.16 / 0.01**2
    assert q.n_per_arm == math.ceil(closed)
    with pytest.raises(ValueError, match="either an MDE or a non-inferiority margin"):
        plan(prop(ni_margin=0.01), mde=0.01)


def test_duration_rounds_up_to_whole_weeks_with_traffic_table():
    t = Traffic(daily_units=10_000, traffic_share=0.5)
    p = plan(prop(), mde=0.01, traffic=t)  # 51,166 units at 5,000 a day: 11 days -> 14
    assert p.days_raw == 11 and p.days == 14
    assert [r["weeks"] for r in p.mde_by_weeks] == [1, 2, 3, 4]
    assert p.mde_by_weeks[0]["n_per_arm"] == 17_500
    mdes = [r["mde"] for r in p.mde_by_weeks]
    assert mdes == sorted(mdes, reverse=True)
    assert p.mde_by_weeks[1]["power_at_mde"] > 0.8 > p.mde_by_weeks[0]["power_at_mde"]
    assert plan(prop(), mde=0.05, traffic=Traffic(1e6)).days == 7  # minimum one week
    assert whole_weeks(1) == 7 and whole_weeks(8) == 14


def test_days_given_solves_mde_and_power():
    t = Traffic(daily_units=2_000)
    p = plan(prop(), days=14, traffic=t)
    assert p.solved_for == "mde" and p.n_per_arm == 14_000
    assert power_at(prop(), p.mde, 14_000) == pytest.approx(0.8, abs=1e-6)
    q = plan(prop(), days=10, mde=0.01, traffic=t)
    assert q.solved_for == "power" and 0 < q.power < 0.8 and any("whole number of weeks" in n for n in q.notes)


def test_cumulative_reach_from_logs_counts_distinct_units():
    t = Traffic(daily_units=400, cumulative=(400, 700, 900, 1000))
    assert t.units_in(4) == 1000
    assert t.units_in(6) == pytest.approx(1000 + 2 * 150)  # recent rate of new units: (1000 - 700) / 2
    assert t.days_for(600, 2) == 6


@pytest.mark.parametrize("kw,msg", [
    ({"metric": "proportion", "baseline": 1.2}, "baseline proportion"),
    ({"metric": "mean", "baseline": 1.0}, "standard deviation"),
    ({"metric": "median", "baseline": 1.0}, "metric must be"),
    ({"metric": "proportion", "baseline": 0.2, "alpha": 0.7}, "alpha"),
    ({"metric": "proportion", "baseline": 0.2, "cuped_r2": 1.0}, "CUPED"),
    ({"metric": "proportion", "baseline": 0.2, "arms": 1}, "arms"),
])
def test_bad_designs_are_rejected(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PowerDesign(**kw)


def test_plan_needs_one_target_and_valid_effects():
    with pytest.raises(ValueError, match="one of"):
        plan(prop())
    with pytest.raises(ValueError, match="leaves"):
        plan(prop(baseline=0.995), mde=0.01)
    with pytest.raises(ValueError, match="traffic"):
        plan(prop(), days=7)


@pytest.mark.parametrize("kind,published", [("obf", 1.026), ("pocock", 1.207)])
def test_group_sequential_inflation_matches_published_factors(kind, published):
    """Five equal looks, alpha 0.05 two-sided, power 0.8 (Jennison & Turnbull 2000, table 2.4 / 2.1)."""
    assert inflation_factor(kind, 5, 0.05, 0.8) == pytest.approx(published, abs=0.01)


def test_a_group_sequential_plan_has_its_power_at_the_inflated_sample():
    fixed = plan(PowerDesign(metric="proportion", baseline=0.2), mde=0.01)
    seq = plan(PowerDesign(metric="proportion", baseline=0.2, sequential="pocock", looks=14), mde=0.01)
    r = inflation_factor("pocock", 14, 0.05, 0.8)
    assert seq.n_per_arm == math.ceil(n_for(PowerDesign(metric="proportion", baseline=0.2), 0.01) * r - 1e-9)
    assert r > 1.2 and seq.n_per_arm > fixed.n_per_arm
    assert any("--planned-n-per-arm" in n for n in seq.notes)
    drift = stats.norm.isf(0.025) + stats.norm.ppf(0.8)
    assert gs_power("pocock", 14, 0.05, drift, seed=1) < 0.72            # the fixed-horizon sample: 70%
    assert gs_power("pocock", 14, 0.05, drift * math.sqrt(r), seed=1) == pytest.approx(0.8, abs=0.005)
    with pytest.raises(ValueError, match="maximum sample"):
        plan(PowerDesign(metric="proportion", baseline=0.2, sequential="obf", looks=14), n_per_arm=1000)


def test_a_one_sided_plan_says_what_the_two_sided_analysis_gets():
    p = plan(PowerDesign(metric="proportion", baseline=0.2, alternative="larger"), mde=0.01)
    assert p.n_per_arm == 20_151
    assert any("70.1% power" in n for n in p.notes)
