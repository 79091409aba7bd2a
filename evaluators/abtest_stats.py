"""Vectorised A/B statistics from additive sufficient statistics.

A metric is a ratio of per-unit sums y / x (a mean or proportion has x = 1), optionally with a pre-period
covariate c. Per group we keep the additive sums n, Sy, Sx, Sc and the cross sums of squares, so cumulative
looks (daily peeking) are running sums and thousands of simulated experiments are one numpy expression.

Every metric is estimated through its per-unit linearisation L = R + (y - R x) / mean(x), whose group mean is the
ratio R = mean(y) / mean(x) and whose sample variance / n is the delta-method variance of R; CUPED subtracts
theta * (c - mean(c)) from L with theta pooled within groups (Deng et al. 2013, 2018).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

_SUMS = ("n", "sy", "sx", "sc", "syy", "sxx", "scc", "syx", "syc", "sxc")


@dataclass
class Moments:
    """Sums over units per group; every array has the same shape (..., n_groups). y, x, c are stored shifted."""

    n: np.ndarray
    sy: np.ndarray
    sx: np.ndarray
    sc: np.ndarray
    syy: np.ndarray
    sxx: np.ndarray
    scc: np.ndarray
    syx: np.ndarray
    syc: np.ndarray
    sxc: np.ndarray
    shift_y: float = 0.0
    shift_x: float = 0.0
    shift_c: float = 0.0
    has_x: bool = False
    has_c: bool = False

    def cumsum(self, axis: int) -> Moments:
        """Running totals along `axis` (e.g. days: the data of each cumulative look)."""
        kw = {k: np.cumsum(getattr(self, k), axis=axis) for k in _SUMS}
        return Moments(**kw, shift_y=self.shift_y, shift_x=self.shift_x, shift_c=self.shift_c,
                       has_x=self.has_x, has_c=self.has_c)

    def take(self, index, axis: int) -> Moments:
        kw = {k: np.take(getattr(self, k), index, axis=axis) for k in _SUMS}
        return Moments(**kw, shift_y=self.shift_y, shift_x=self.shift_x, shift_c=self.shift_c,
                       has_x=self.has_x, has_c=self.has_c)


def moments_from_frame(
    df: pl.DataFrame,
    variant: str,
    groups: list[str],
    y: str,
    x: str | None = None,
    c: str | None = None,
    by: list[str] | None = None,
) -> tuple[Moments, list[list]]:
    """Sufficient statistics of metric y / x (covariate c) per (by..., variant) on a full grid.

    Returns the moments with shape (len(levels of by[0]), ..., len(groups)) and the sorted levels of each `by`
    column. Groups absent from the data get zeros.
    """
    by = list(by or [])
    cols = {"y": pl.col(y).cast(pl.Float64)}
    if x is not None:
        cols["x"] = pl.col(x).cast(pl.Float64)
    if c is not None:
        cols["c"] = pl.col(c).cast(pl.Float64)
    base = df.select([pl.col(b) for b in by] + [pl.col(variant).cast(pl.Utf8).alias("__g")]
                     + [e.alias(k) for k, e in cols.items()])
    shifts = {k: float(base[k].mean() or 0.0) for k in cols}
    z = {k: pl.col(k) - shifts[k] for k in cols}
    one = pl.lit(1.0)
    zy, zx, zc = z["y"], z.get("x", one), z.get("c", pl.lit(0.0))
    agg = base.group_by(by + ["__g"]).agg(
        pl.len().cast(pl.Float64).alias("n"),
        zy.sum().alias("sy"), zx.sum().alias("sx"), zc.sum().alias("sc"),
        (zy * zy).sum().alias("syy"), (zx * zx).sum().alias("sxx"), (zc * zc).sum().alias("scc"),
        (zy * zx).sum().alias("syx"), (zy * zc).sum().alias("syc"), (zx * zc).sum().alias("sxc"),
    )
    levels = [sorted(base[b].unique().to_list()) for b in by]
    shape = tuple(len(lv) for lv in levels) + (len(groups),)
    gidx = {g: i for i, g in enumerate(groups)}
    agg = agg.filter(pl.col("__g").is_in(list(groups)))
    index = []
    for b, lv in zip(by, levels):
        pos = {v: i for i, v in enumerate(lv)}
        index.append(np.array([pos[v] for v in agg[b].to_list()], dtype=np.int64))
    index.append(np.array([gidx[g] for g in agg["__g"].to_list()], dtype=np.int64))
    arrays = {}
    for k in _SUMS:
        a = np.zeros(shape)
        a[tuple(index)] = agg[k].to_numpy()
        arrays[k] = a
    if x is None:  # x = 1 exactly: store it unshifted so that mean(x) = 1 and var(x) = 0
        arrays["sx"] = arrays["n"].copy()
        arrays["sxx"] = arrays["n"].copy()
        arrays["syx"] = arrays["sy"].copy()
        arrays["sxc"] = arrays["sc"].copy()
    return Moments(**arrays, shift_y=shifts["y"], shift_x=shifts.get("x", 0.0), shift_c=shifts.get("c", 0.0),
                   has_x=x is not None, has_c=c is not None), levels


@dataclass
class GroupEstimates:
    """Per-group estimate (mean or ratio, CUPED-adjusted if asked), per-unit variance of its linearisation, n."""

    mean: np.ndarray
    unit_var: np.ndarray
    n: np.ndarray
    unit_var_unadjusted: np.ndarray
    theta: np.ndarray | None = None

    @property
    def se2(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.unit_var / self.n


def estimate_groups(m: Moments, cuped: bool = False) -> GroupEstimates:
    """Group means / ratios with their delta-method (and CUPED) per-unit variances."""
    n = m.n
    with np.errstate(divide="ignore", invalid="ignore"):
        my, mx, mc = m.sy / n, m.sx / n, m.sc / n
        dof = np.maximum(n - 1, 1)
        vyy = (m.syy - n * my * my) / dof
        vxx = (m.sxx - n * mx * mx) / dof
        vcc = (m.scc - n * mc * mc) / dof
        cyx = (m.syx - n * my * mx) / dof
        cyc = (m.syc - n * my * mc) / dof
        cxc = (m.sxc - n * mx * mc) / dof
        ybar, xbar = my + m.shift_y, mx + m.shift_x
        ratio = ybar / xbar
        var_l = (vyy - 2 * ratio * cyx + ratio * ratio * vxx) / (xbar * xbar)
        var_l = np.maximum(var_l, 0.0)
        if not cuped or not m.has_c:
            return GroupEstimates(ratio, var_l, n, var_l)
        cov_lc = (cyc - ratio * cxc) / xbar
        w = np.maximum(n - 1, 0)
        theta = (w * cov_lc).sum(axis=-1, keepdims=True) / (w * vcc).sum(axis=-1, keepdims=True)
        theta = np.where(np.isfinite(theta), theta, 0.0)
        mc_all = m.sc.sum(axis=-1, keepdims=True) / n.sum(axis=-1, keepdims=True)
        adj = ratio - theta * (mc - mc_all)
        var_adj = np.maximum(var_l - 2 * theta * cov_lc + theta * theta * vcc, 0.0)
    return GroupEstimates(adj, var_adj, n, var_l, theta)


@dataclass
class Comparison:
    """Treatment minus control, vectorised over any leading shape."""

    control_mean: np.ndarray
    treatment_mean: np.ndarray
    diff: np.ndarray
    se: np.ndarray
    df: np.ndarray  # Welch-Satterthwaite degrees of freedom (inf for z-tests)
    lift: np.ndarray
    lift_se: np.ndarray
    n_control: np.ndarray
    n_treatment: np.ndarray

    @property
    def stat(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.diff / self.se

    def pvalue(self, alternative: str = "two-sided") -> np.ndarray:
        """p-value of H0: no difference (t with Welch df, normal when df is inf)."""
        t = self.stat
        dist = _dist(self.df)
        if alternative == "larger":
            return dist.sf(t)
        if alternative == "smaller":
            return dist.cdf(t)
        return 2 * dist.sf(np.abs(t))

    def crit(self, level: float | np.ndarray) -> np.ndarray:
        """Upper `level` quantile of the test distribution (e.g. level=alpha/2 for a two-sided interval)."""
        return _dist(self.df).isf(level)

    def ci(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        q = self.crit(alpha / 2)
        return self.diff - q * self.se, self.diff + q * self.se

    def lift_ci(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        q = stats.norm.isf(alpha / 2)
        return self.lift - q * self.lift_se, self.lift + q * self.lift_se


class _TDist:
    def __init__(self, df: np.ndarray) -> None:
        self.df = np.asarray(df, dtype=float)

    def _use_normal(self) -> np.ndarray:
        return ~np.isfinite(self.df) | (self.df > 1e7)

    def sf(self, x):
        return np.where(self._use_normal(), stats.norm.sf(x), stats.t.sf(x, np.where(self._use_normal(), 1, self.df)))

    def cdf(self, x):
        return self.sf(-np.asarray(x))

    def isf(self, q):
        return np.where(self._use_normal(), stats.norm.isf(q),
                        stats.t.isf(q, np.where(self._use_normal(), 1, self.df)))


def _dist(df: np.ndarray) -> _TDist:
    return _TDist(df)


def compare(est: GroupEstimates, treatment: int, control: int, welch: bool) -> Comparison:
    """Difference treatment - control; `welch` uses the t distribution with Welch df, else the normal."""
    mt, mc = est.mean[..., treatment], est.mean[..., control]
    nt, nc = est.n[..., treatment], est.n[..., control]
    with np.errstate(divide="ignore", invalid="ignore"):
        vt, vc = est.unit_var[..., treatment] / nt, est.unit_var[..., control] / nc
        se = np.sqrt(vt + vc)
        if welch:
            df = (vt + vc) ** 2 / (vt * vt / np.maximum(nt - 1, 1) + vc * vc / np.maximum(nc - 1, 1))
            df = np.where(np.isfinite(df), df, np.inf)
        else:
            df = np.full(np.shape(se), np.inf)
        lift = mt / mc - 1
        lift_se = np.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    return Comparison(mc, mt, mt - mc, se, df, lift, lift_se, nc, nt)


def srm_test(counts: np.ndarray, expected_share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson chi-square goodness of fit of unit counts per arm to the planned split: (statistic, p-value)."""
    counts = np.asarray(counts, dtype=float)
    share = np.asarray(expected_share, dtype=float)
    share = share / share.sum()
    total = counts.sum(axis=-1, keepdims=True)
    exp = total * share
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = ((counts - exp) ** 2 / exp).sum(axis=-1)
    return chi2, stats.chi2.sf(chi2, counts.shape[-1] - 1)
