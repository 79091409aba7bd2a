"""Experiment analysis: scipy/statsmodels references, CUPED, delta method, SRM, corrections, guardrails, decision."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep
from statsmodels.stats.proportion import test_proportions_2indep as sm_test_proportions

from recs.evaluators.abtest_analyze import AnalyzeConfig, analyze
from recs.evaluators.abtest_input import ExperimentInputError, Guardrail, MetricSpec, load_experiment
from recs.evaluators.abtest_sim import ExperimentSim, simulate_experiment_frame
from recs.evaluators.abtest_stats import srm_test
from recs.evaluators.multiple_testing import adjust_pvalues


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return simulate_experiment_frame(ExperimentSim(n_units=6_000, seed=11, effects={"conversion": 0.3}))


def _arms(df, col):
    c = df.filter(pl.col("variant") == "control")[col].cast(pl.Float64).to_numpy()
    t = df.filter(pl.col("variant") == "treatment")[col].cast(pl.Float64).to_numpy()
    return c, t


def _one(df, metric, **kw):
    return analyze(df, AnalyzeConfig(metrics=[metric], correction="none", **kw)).metrics[0]


def test_mean_metric_is_welch_t(frame):
    r = _one(frame, "revenue")
    c, t = _arms(frame, "revenue")
    ref = stats.ttest_ind(t, c, equal_var=False)
    assert r.kind == "mean" and "Welch" in r.method
    assert r.diff == pytest.approx(t.mean() - c.mean(), rel=1e-10)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    lo, hi = ref.confidence_interval(0.95)
    assert r.ci == pytest.approx((lo, hi), rel=1e-6)


def test_proportion_is_unpooled_z(frame):
    r = _one(frame, "conversion")
    c, t = _arms(frame, "conversion")
    ref = sm_test_proportions(t.sum(), t.size, c.sum(), c.size, method="wald", compare="diff")
    lo, hi = confint_proportions_2indep(t.sum(), t.size, c.sum(), c.size, method="wald", compare="diff")
    assert r.kind == "proportion"
    # statsmodels' Wald uses n in the variance, we use n - 1 (the unbiased sample variance): a 1/n difference
    assert r.p_value == pytest.approx(ref.pvalue, rel=5e-3)
    assert r.ci == pytest.approx((lo, hi), rel=2e-3)
    assert (r.ci[1] - r.ci[0]) ** 2 / ((hi - lo) ** 2) == pytest.approx(1 + 1 / (c.size + t.size) * 2, rel=1e-3)
    assert r.outcome == "win"


def test_cuped_equals_ancova_regression(frame):
    r = _one(frame, "revenue", covariates="pre_revenue")
    x = frame.select((pl.col("variant") == "treatment").cast(pl.Float64).alias("t"),
                     pl.col("pre_revenue")).to_numpy()
    fit = sm.OLS(frame["revenue"].to_numpy(), sm.add_constant(x)).fit(cov_type="HC1")
    assert r.diff == pytest.approx(fit.params[1], rel=1e-8)
    se = (r.ci[1] - r.ci[0]) / 2 / stats.t.isf(0.025, 1e6)
    assert se == pytest.approx(fit.bse[1], rel=0.03)
    plain = _one(frame, "revenue")
    assert r.variance_reduction > 0 and (r.ci[1] - r.ci[0]) < (plain.ci[1] - plain.ci[0])


def test_ratio_metric_matches_cluster_robust_regression():
    df = simulate_experiment_frame(n_units=1_500, seed=5, effects={"ctr": 0.2})
    r = _one(df, "clicks/impressions")
    assert r.kind == "ratio"
    c, t = _arms(df, "clicks")
    ci, ti = _arms(df, "impressions")
    assert r.control_mean == pytest.approx(c.sum() / ci.sum()) and r.treatment_mean == pytest.approx(t.sum() / ti.sum())
    # expand to one row per impression, clicked 0/1, clustered by user: OLS slope = ratio difference
    imps = df["impressions"].to_numpy()
    clicks = df["clicks"].to_numpy()
    user = np.repeat(np.arange(df.height), imps)
    k = np.arange(imps.sum()) - np.repeat(np.cumsum(imps) - imps, imps)
    y = (k < np.repeat(clicks, imps)).astype(float)
    treat = np.repeat((df["variant"] == "treatment").to_numpy().astype(float), imps)
    fit = sm.OLS(y, sm.add_constant(treat)).fit(cov_type="cluster", cov_kwds={"groups": user})
    assert r.diff == pytest.approx(fit.params[1], rel=1e-8)
    se = (r.ci[1] - r.ci[0]) / 2 / stats.norm.isf(0.025)
    assert se == pytest.approx(fit.bse[1], rel=0.01)
    # the naive impression-level standard error (ignoring clustering) is too small
    assert sm.OLS(y, sm.add_constant(treat)).fit().bse[1] < 0.9 * se


def test_srm_matches_scipy_chisquare():
    counts = np.array([5_100, 4_900, 10_300])
    share = np.array([0.25, 0.25, 0.5])
    chi2, p = srm_test(counts, share)
    ref = stats.chisquare(counts, counts.sum() * share)
    assert chi2 == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)


def test_srm_mismatch_is_flagged_and_blocks_shipping():
    df = simulate_experiment_frame(n_units=20_000, seed=2, lost_share=0.05, effects={"conversion": 0.5})
    res = analyze(df, AnalyzeConfig(metrics=["conversion"]))
    assert res.srm_mismatch and res.verdict == "INVALID"
    ok = analyze(df, AnalyzeConfig(metrics=["conversion"], split="control=0.5,treatment=0.475"))
    assert not ok.srm_mismatch and ok.verdict == "SHIP"


@pytest.mark.parametrize("method,ref", [("holm", "holm"), ("bh", "fdr_bh"), ("bonferroni", "bonferroni")])
def test_corrections_match_statsmodels(method, ref):
    p = np.random.default_rng(0).uniform(0, 0.1, 12)
    assert adjust_pvalues(p, method) == pytest.approx(multipletests(p, method=ref)[1])


def test_metric_and_guardrail_parsing():
    assert MetricSpec.parse("clicks/impressions").denominator == "impressions"
    assert MetricSpec.parse("-bounce").lower_is_better
    g = Guardrail.parse("p99_latency_ms<=+2%")
    assert (g.metric.name, g.op, g.margin, g.relative) == ("p99_latency_ms", "<=", 0.02, True)
    g = Guardrail.parse("error_rate <= +0.1pp")
    assert g.margin == pytest.approx(0.001) and not g.relative
    g = Guardrail.parse("revenue>=-1.5%")
    assert g.op == ">=" and g.margin == pytest.approx(-0.015)
    for bad in ("latency<2%", "latency<=-2%", "revenue>=+1%", "<=2%"):
        with pytest.raises(ExperimentInputError):
            Guardrail.parse(bad)


def test_guardrail_non_inferiority_and_decision():
    df = simulate_experiment_frame(n_units=40_000, seed=4, effects={"conversion": 0.15, "latency": 0.05})
    ok = analyze(df, AnalyzeConfig(metrics=["conversion"], guardrails=["p99_latency_ms<=+8%",
                                                                       "error_rate<=+0.1pp"]))
    assert [g.outcome for g in ok.guardrails] == ["pass", "pass"] and ok.verdict == "SHIP"
    g = ok.guardrails[0]
    assert g.lift == pytest.approx(0.05, abs=0.005) and g.bound < 0.08
    bad = analyze(df, AnalyzeConfig(metrics=["conversion"], guardrails=["p99_latency_ms<=+2%"]))
    assert bad.guardrails[0].outcome == "fail" and bad.verdict == "DO NOT SHIP"
    assert "guardrail" in bad.decisions["treatment"]["reason"]
    loss = analyze(df, AnalyzeConfig(metrics=["conversion", "-p99_latency_ms"]))
    assert loss.metrics[1].outcome == "loss" and loss.verdict == "DO NOT SHIP"


def test_multi_arm_holm_family_and_named_control():
    df = simulate_experiment_frame(n_units=9_000, seed=8, variants=("base", "b", "c"))
    res = analyze(df, AnalyzeConfig(metrics=["conversion", "revenue"], control="base"))
    assert res.control == "base" and len(res.metrics) == 4
    raw = [m.p_value for m in res.metrics]
    assert [m.p_adjusted for m in res.metrics] == pytest.approx(list(multipletests(raw, method="holm")[1]))
    assert set(res.decisions) == {"b", "c"}


def _bad(df, msg, **kw):
    with pytest.raises(ExperimentInputError, match=msg):
        analyze(df, AnalyzeConfig(**{"metrics": ["conversion"], **kw}), source="exp.csv")


def test_bad_input_names_file_row_and_field(tmp_path):
    df = pl.DataFrame({"user_id": ["a", "b", "a", "d"], "variant": ["control", "treatment"] * 2,
                       "conversion": [1, 0, 1, 0], "revenue": [1.0, None, 2.0, 3.0]})
    _bad(df, r"exp.csv: row 3: field 'user_id'.*'a' appears more than once")
    df = df.with_columns(pl.Series("user_id", ["a", "b", "c", "d"]))
    _bad(df, r"exp.csv: row 2: field 'revenue' is empty", metrics=["revenue"])
    _bad(df, r"no column 'nope'", metrics=["nope"])
    _bad(df, r"control arm 'x' not found", control="x")
    _bad(df.filter(pl.col("variant") == "control"), r"1 arm")
    _bad(df, r"--split gives 3 shares", split="0.3,0.3,0.4")
    path = tmp_path / "exp.csv"
    df.write_csv(path)
    assert load_experiment(path).height == 4
    with pytest.raises(ExperimentInputError, match="no such file"):
        load_experiment(tmp_path / "missing.parquet")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ExperimentInputError, match="parquet or .csv"):
        load_experiment(tmp_path / "x.json")
