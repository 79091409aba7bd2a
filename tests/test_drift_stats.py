"""Known answers for the drift statistics: PSI, bins, KS, chi-square, Holm / Bonferroni."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from recs.evaluators import drift_stats as ds


def test_psi_two_bins_known_value() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    assert ds.psi_from_counts(np.array([50, 50]), np.array([25, 75])) == pytest.approx(
        0.25 * math.log(2) + 0.25 * math.log(1.5), rel=1e-12)
    assert ds.psi_from_counts(np.array([50, 50]), np.array([25, 75])) == pytest.approx(0.2746530721670274)


def test_psi_is_zero_for_identical_and_symmetric() -> None:
    a, b = np.array([10, 20, 30, 40]), np.array([40, 30, 20, 10])
    assert ds.psi_from_counts(a, a * 3) == 0.0
    assert ds.psi_from_counts(a, b) == pytest.approx(ds.psi_from_counts(b, a))


def test_psi_empty_bin_uses_epsilon() -> None:
    # reference bin 2 is empty: its share is floored at epsilon = 1e-4
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert ds.psi_from_counts(np.array([100, 0]), np.array([50, 50]), epsilon=1e-4) == pytest.approx(expected)
    assert expected == pytest.approx(4.6043, abs=1e-4)
    # bins empty on both sides contribute nothing
    assert ds.psi_from_counts(np.array([50, 0, 50]), np.array([25, 0, 75])) == pytest.approx(0.2746530721670274)


def test_psi_numeric_on_reference_deciles_known_value() -> None:
    ref = np.arange(1000, dtype=float)  # deciles: 100 values per bin
    cur = np.arange(500, dtype=float)  # all in the bottom five bins, 0.2 each
    expected = 5 * (0.2 - 0.1) * math.log(2) + 5 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert ds.psi_numeric(ref, cur, bins=10, epsilon=1e-4) == pytest.approx(expected)
    assert expected == pytest.approx(3.797, abs=1e-3)


def test_quantile_edges_merge_ties_and_right_closed_bins() -> None:
    ref = np.array([0.0] * 60 + list(range(1, 41)), dtype=float)  # 60% zeros
    edges = ds.quantile_edges(ref, 10)
    assert edges[0] == 0.0 and len(edges) == len(np.unique(edges)) < 9
    counts = ds.bin_counts(ref, edges)
    assert counts[0] == 60  # all zeros fall in (-inf, 0]
    assert counts.sum() == 100 and counts[-1] == 0


def test_bin_counts_puts_missing_in_last_bin() -> None:
    counts = ds.bin_counts(np.array([1.0, np.nan, 3.0, np.inf]), np.array([2.0]))
    assert counts.tolist() == [1.0, 1.0, 2.0]


def test_missing_share_change_moves_psi() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=5000)
    cur = rng.normal(size=5000)
    cur[:1500] = np.nan
    assert ds.psi_numeric(ref, cur) > 0.25


def test_ks_matches_scipy_and_ignores_nan() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=800), rng.normal(0.2, size=600)
    d, p = ds.ks_test(np.append(a, np.nan), b)
    ref = stats.ks_2samp(a, b)
    assert d == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert math.isnan(ds.ks_test(np.array([np.nan]), b)[1])


def test_chi_square_known_value() -> None:
    stat, p, dof = ds.chi_square_test(np.array([10, 20]), np.array([20, 10]))
    assert stat == pytest.approx(4 * 25 / 15) and dof == 1
    assert p == pytest.approx(stats.chi2.sf(4 * 25 / 15, 1))
    assert ds.chi_square_test(np.array([5, 0]), np.array([7, 0]))[1] == 1.0  # one category: undefined


def test_category_counts_pool_rare_and_missing() -> None:
    ref = ["a"] * 500 + ["b"] * 495 + ["rare1"] * 2 + ["rare2"] * 2 + [None]
    cur = ["a"] * 400 + ["b"] * 400 + ["c"] * 200
    cc = ds.category_counts(ref, cur, min_share=0.005, max_categories=50)
    assert cc.categories == ("a", "b", "c", ds.OTHER)
    assert cc.reference.tolist() == [500, 495, 0, 5] and cc.current.tolist() == [400, 400, 200, 0]
    assert cc.n_pooled == 3  # rare1, rare2 and the missing marker
    capped = ds.category_counts(ref, cur, min_share=0.0, max_categories=2)
    assert capped.categories == ("a", "b", ds.OTHER)


def test_holm_and_bonferroni_match_statsmodels() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    assert ds.adjust_pvalues(p, "holm").tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(2)
    q = rng.uniform(size=30) ** 3
    for method, sm in (("holm", "holm"), ("bonferroni", "bonferroni")):
        assert ds.adjust_pvalues(q, method) == pytest.approx(multipletests(q, method=sm)[1])
    with_nan = ds.adjust_pvalues(np.array([0.01, np.nan, 0.02]), "bonferroni")
    assert with_nan[0] == pytest.approx(0.02) and math.isnan(with_nan[1])
    with pytest.raises(ValueError):
        ds.adjust_pvalues(p, "fdr")  # type: ignore[arg-type]


def test_design_effect_and_clustered_tests() -> None:
    assert ds.design_effect(np.repeat(np.arange(100), 8)) == 8.0 and ds.design_effect(None) == 1.0
    # 900 one-row clusters and 20 of 50 rows: sum(m^2) / sum(m) = (900 + 20 * 2500) / 1900, not the mean size 2.07
    mixed = np.concatenate([np.arange(900), np.repeat(np.arange(900, 920), 50)])
    assert ds.design_effect(mixed) == pytest.approx(50_900 / 1_900)
    stat, p, dof = ds.chi_square_test(np.array([10, 20]), np.array([20, 10]), deff=2.0)
    assert stat == pytest.approx(4 * 25 / 15 / 2) and p == pytest.approx(stats.chi2.sf(stat, 1))
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=2000), rng.normal(0.1, size=2000)
    d1, p1 = ds.ks_test(a, b)
    d4, p4 = ds.ks_test(a, b, deff=4.0)
    assert d1 == d4 and p4 > p1
    assert p4 == pytest.approx(stats.kstwobign.sf(d1 * math.sqrt(500 * 500 / 1000)))


def test_clusters_of_unequal_size_keep_ks_false_alarms_rare() -> None:
    """No drift, one value per cluster (900 of one row, 20 of 50): the clustered KS test rejects at most its level
    (with the mean cluster size as the design effect it rejected 96% at alpha 0.01)."""
    rng = np.random.default_rng(0)
    groups = np.concatenate([np.arange(900), np.repeat(np.arange(900, 920), 50)])
    deff = ds.design_effect(groups)
    sizes = np.bincount(groups)

    def sample() -> np.ndarray:
        return np.repeat(rng.normal(size=len(sizes)), sizes)

    rejected = sum(ds.ks_test(sample(), sample(), deff=deff)[1] < 0.05 for _ in range(200))
    assert rejected <= 20
