"""Two-sample distribution-shift statistics: PSI, Kolmogorov-Smirnov, chi-square, multiple-testing corrections.

All functions take plain numpy arrays (reference first, current second) and are vectorised. Conventions:

- PSI (population stability index) = sum_b (c_b - r_b) * ln(c_b / r_b) over bins b, where r_b, c_b are the
  reference and current shares of bin b. A share of zero is replaced by `epsilon` before the sum (otherwise the
  log is infinite); shares are not re-normalised afterwards, so an empty bin contributes a bounded, large term.
- Numeric bins are reference quantiles (right-closed: (e_{i-1}, e_i]); with ties, duplicate edges are merged,
  so a feature with few distinct values gets fewer bins. Missing values (null/NaN) form one extra bin.
- Categorical bins are categories; categories rarer than `min_share` in both samples are pooled into one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats

Correction = Literal["holm", "bonferroni", "none"]
OTHER = "__other__"
MISSING = "__missing__"


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference quantiles 1/bins .. (bins-1)/bins, duplicates removed (shape (<= bins-1,))."""
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    ref = np.asarray(reference, dtype=float)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.empty(0)
    qs = np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(qs)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of finite `values` in right-closed bins (-inf, e1], (e1, e2], ..., (ek, inf), plus a last bin
    for missing (NaN) values: shape (len(edges) + 2,)."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    idx = np.searchsorted(edges, v[finite], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(float)
    return np.append(counts, float((~finite).sum()))


def psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, epsilon: float = 1e-4) -> float:
    """PSI of two count vectors over the same bins; zero shares are floored at `epsilon`."""
    r = np.asarray(ref_counts, dtype=float)
    c = np.asarray(cur_counts, dtype=float)
    if r.shape != c.shape:
        raise ValueError(f"count vectors differ in shape: {r.shape} vs {c.shape}")
    if r.sum() <= 0 or c.sum() <= 0:
        return float("nan")
    keep = (r > 0) | (c > 0)  # bins empty in both samples contribute nothing
    rp = np.maximum(r[keep] / r.sum(), epsilon)
    cp = np.maximum(c[keep] / c.sum(), epsilon)
    return float(np.sum((cp - rp) * np.log(cp / rp)))


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = 10, epsilon: float = 1e-4) -> float:
    """PSI of a numeric feature on `bins` reference-quantile bins (plus a missing-value bin)."""
    edges = quantile_edges(reference, bins)
    return psi_from_counts(bin_counts(reference, edges), bin_counts(current, edges), epsilon)


def ks_test(reference: np.ndarray, current: np.ndarray, deff: float = 1.0) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov on the finite values: (statistic D, p-value). NaN when a side is empty.

    `deff` > 1 (design effect of clustered rows, e.g. the items of one slate) shrinks both sample sizes to
    n / deff and takes the p-value from the asymptotic Kolmogorov distribution at those effective sizes.
    """
    r = np.asarray(reference, dtype=float)
    c = np.asarray(current, dtype=float)
    r = r[np.isfinite(r)]
    c = c[np.isfinite(c)]
    if r.size == 0 or c.size == 0:
        return float("nan"), float("nan")
    res = stats.ks_2samp(r, c, alternative="two-sided", method="auto")
    if deff <= 1.0:
        return float(res.statistic), float(res.pvalue)
    n1, n2 = max(r.size / deff, 1.0), max(c.size / deff, 1.0)
    en = math.sqrt(n1 * n2 / (n1 + n2))
    return float(res.statistic), float(min(1.0, stats.kstwobign.sf(res.statistic * en)))


@dataclass(frozen=True)
class CategoryCounts:
    """Reference and current counts over the same (pooled) categories."""

    categories: tuple[str, ...]
    reference: np.ndarray  # shape (n_categories,)
    current: np.ndarray  # shape (n_categories,)
    n_pooled: int  # how many raw categories went into OTHER


def _value_counts(values: pl.Series | np.ndarray | list) -> dict[str, int]:
    s = values if isinstance(values, pl.Series) else pl.Series("v", values, strict=False)
    s = s.cast(pl.Utf8).fill_null(MISSING)
    vc = s.value_counts()
    return dict(zip(vc[:, 0].to_list(), vc[:, 1].to_list()))


def category_counts(
    reference: pl.Series | np.ndarray | list,
    current: pl.Series | np.ndarray | list,
    min_share: float = 0.005,
    max_categories: int = 50,
) -> CategoryCounts:
    """Count categories in both samples (missing -> MISSING); pool those below `min_share` in both samples,
    and those beyond the `max_categories` most frequent (by combined share), into OTHER."""
    rd, cd = _value_counts(reference), _value_counts(current)
    cats = np.array(sorted(set(rd) | set(cd)), dtype=object)
    rc = np.array([float(rd.get(k, 0)) for k in cats])
    cc = np.array([float(cd.get(k, 0)) for k in cats])
    rs = rc / max(rc.sum(), 1.0)
    cs = cc / max(cc.sum(), 1.0)
    keep = (rs >= min_share) | (cs >= min_share)
    order = np.argsort(-(rs + cs), kind="stable")
    top = np.zeros(len(cats), dtype=bool)
    top[order[:max_categories]] = True
    keep &= top
    if keep.all():
        return CategoryCounts(tuple(cats.tolist()), rc, cc, 0)
    return CategoryCounts(
        tuple(cats[keep].tolist()) + (OTHER,),
        np.append(rc[keep], rc[~keep].sum()),
        np.append(cc[keep], cc[~keep].sum()),
        int((~keep).sum()),
    )


def chi_square_test(ref_counts: np.ndarray, cur_counts: np.ndarray, deff: float = 1.0) -> tuple[float, float, int]:
    """Chi-square test of homogeneity on a 2 x K table of counts: (statistic, p-value, degrees of freedom).

    `deff` > 1 applies the first-order Rao-Scott correction for clustered rows (statistic / deff).
    Categories empty in both samples are dropped; with fewer than 2 categories left the test is undefined
    (statistic 0, p-value 1, dof 0).
    """
    r = np.asarray(ref_counts, dtype=float)
    c = np.asarray(cur_counts, dtype=float)
    keep = (r + c) > 0
    table = np.vstack([r[keep], c[keep]])
    if table.shape[1] < 2 or r.sum() == 0 or c.sum() == 0:
        return 0.0, 1.0, 0
    res = stats.chi2_contingency(table, correction=False)
    stat = float(res.statistic) / max(deff, 1.0)
    return stat, float(stats.chi2.sf(stat, res.dof)), int(res.dof)


def design_effect(groups: np.ndarray | pl.Series | None) -> float:
    """Worst-case design effect of rows clustered in `groups` (1.0 without groups): with the rows of a cluster
    perfectly correlated, the variance of a mean grows by sum(m_g^2) / sum(m_g) over clusters of sizes m_g, which
    is the mean cluster size only when all clusters are the same size (a few large clusters weigh more)."""
    if groups is None:
        return 1.0
    s = groups if isinstance(groups, pl.Series) else pl.Series("g", groups, strict=False)
    if not s.len():
        return 1.0
    m = s.value_counts()["count"].to_numpy().astype(float)
    return float((m * m).sum() / m.sum())


def adjust_pvalues(pvalues: np.ndarray, method: Correction = "holm") -> np.ndarray:
    """Family-wise adjusted p-values (NaN entries stay NaN and do not count towards the family size).

    holm: step-down, p_(i) * (m - i + 1) made monotone; bonferroni: p * m; none: unchanged. Capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    if method == "none":
        adj = pv.copy()
    elif method == "bonferroni":
        adj = np.minimum(pv * m, 1.0)
    elif method == "holm":
        order = np.argsort(pv, kind="stable")
        scaled = pv[order] * (m - np.arange(m))
        stepped = np.minimum(np.maximum.accumulate(scaled), 1.0)
        adj = np.empty(m)
        adj[order] = stepped
    else:
        raise ValueError(f"unknown correction {method!r} (holm, bonferroni, none)")
    out[ok] = adj
    return out
