"""Power analysis for A/B tests: solve for sample size per arm, minimum detectable effect, power or duration.

Metrics:
- proportion: two-sample z-test. `pooled` (default) is the textbook formula of R's `power.prop.test` and
  statsmodels' `samplesize_proportions_2indep_onetail` (pooled variance under H0, unpooled under H1);
  `unpooled` uses the unpooled (Wald) variance in both; `cohen-h` is the arcsine effect size of statsmodels'
  `NormalIndPower`.
- mean: two-sample t-test with the noncentral t distribution (statsmodels' `TTestIndPower`).
- ratio: z-test on the delta-method linearised ratio; `std` is the per-unit standard deviation of the
  linearisation (y - R x) / mean(x) (see `evaluators/abtest_logs.py`, which estimates it from logs).
CUPED multiplies the per-unit variance by (1 - R^2). Several arms and metrics lower the per-test alpha
(`evaluators/multiple_testing.sizing_alpha`). A non-inferiority margin turns the design into a one-sided test
of H0: the treatment is worse by at least the margin, with a true difference of zero. A group-sequential design
sizes its maximum sample (`sequential_power`); the run length comes from `abtest_traffic.Traffic`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from scipy import optimize, stats

from recs.evaluators.abtest_traffic import MAX_DAYS, Traffic, whole_weeks
from recs.evaluators.multiple_testing import CORRECTION_NAMES, CORRECTIONS, sizing_alpha
from recs.evaluators.sequential_power import GS_METHODS, inflation_factor

METRICS = ("proportion", "mean", "ratio")
ALTERNATIVES = ("two-sided", "larger", "smaller")
PROPORTION_METHODS = ("pooled", "unpooled", "cohen-h")
_N_MAX = 1e13


@dataclass
class PowerDesign:
    """What the experiment measures and how it will be tested."""

    metric: str = "proportion"
    baseline: float = 0.0  # control proportion (proportion) or control mean / ratio (mean, ratio)
    std: float | None = None  # per-unit standard deviation (mean, ratio); ignored for proportions
    alpha: float = 0.05
    power: float = 0.8
    arms: int = 2
    n_metrics: int = 1
    correction: str = "bonferroni"
    alternative: str = "two-sided"
    method: str = "pooled"  # proportions only
    ni_margin: float | None = None  # absolute non-inferiority margin (> 0)
    cuped_r2: float = 0.0
    sequential: str | None = None  # obf | pocock: a group-sequential analysis with `looks` equally spaced looks
    looks: int = 1

    def __post_init__(self) -> None:
        if self.sequential is not None and self.sequential not in GS_METHODS:
            raise ValueError(f"sequential method must be one of {', '.join(GS_METHODS)}, got {self.sequential!r}")
        if self.looks < 1 or (self.sequential is not None and self.looks < 2):
            raise ValueError(f"a group-sequential design needs at least 2 looks, got {self.looks}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.alternative not in ALTERNATIVES:
            raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {self.alternative!r}")
        if self.method not in PROPORTION_METHODS:
            raise ValueError(f"method must be one of {', '.join(PROPORTION_METHODS)}, got {self.method!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not 0 < self.power < 1:
            raise ValueError(f"power must be in (0, 1), got {self.power}")
        if self.arms < 2:
            raise ValueError(f"arms must be >= 2, got {self.arms}")
        if self.n_metrics < 1:
            raise ValueError(f"n_metrics must be >= 1, got {self.n_metrics}")
        if not 0 <= self.cuped_r2 < 1:
            raise ValueError(f"CUPED R^2 must be in [0, 1), got {self.cuped_r2}")
        if self.metric == "proportion":
            if not 0 < self.baseline < 1:
                raise ValueError(f"baseline proportion must be in (0, 1), got {self.baseline}")
        else:
            if self.std is None or not self.std > 0 or not math.isfinite(self.std):
                raise ValueError(f"a {self.metric} metric needs a standard deviation > 0, got {self.std}")
            if not math.isfinite(self.baseline):
                raise ValueError("baseline mean must be finite")
        if self.ni_margin is not None and not self.ni_margin > 0:
            raise ValueError(f"non-inferiority margin must be > 0, got {self.ni_margin}")

    @property
    def n_comparisons(self) -> int:
        """Treatment-vs-control comparisons times success metrics."""
        return (self.arms - 1) * self.n_metrics

    @property
    def alpha_per_test(self) -> float:
        return sizing_alpha(self.alpha, self.n_comparisons, self.correction)  # type: ignore[arg-type]

    @property
    def one_sided(self) -> bool:
        return self.ni_margin is not None or self.alternative != "two-sided"

    @property
    def variance_factor(self) -> float:
        return 1.0 - self.cuped_r2

    def without_cuped(self) -> PowerDesign:
        return replace(self, cuped_r2=0.0)

    def describe(self) -> str:
        """One line naming the test that was sized."""
        if self.ni_margin is not None:
            worse = "higher" if self.alternative == "smaller" else "lower"
            head = f"non-inferiority, one-sided (H0: treatment {worse} by >= margin, true difference 0); "
        else:
            head = f"{self.alternative}; "
        if self.metric == "proportion":
            if self.ni_margin is not None:
                test = "z-test for proportions, unpooled (Wald) variance"
            else:
                test = {
                    "pooled": "z-test for proportions, pooled variance under H0 (R power.prop.test)",
                    "unpooled": "z-test for proportions, unpooled (Wald) variance",
                    "cohen-h": "z-test on Cohen's h (arcsine transform, statsmodels NormalIndPower)",
                }[self.method]
        elif self.metric == "mean":
            test = "two-sample t-test, noncentral t (statsmodels TTestIndPower)"
        else:
            test = "z-test on the delta-method linearised ratio"
        corr = ""
        if self.n_comparisons > 1:
            corr = (f"; {CORRECTION_NAMES[self.correction]} over {self.n_comparisons} comparisons, "
                    f"alpha per test {self.alpha_per_test:.4g}")
        cuped = f"; CUPED R^2={self.cuped_r2:.3g}" if self.cuped_r2 > 0 else ""
        seq = f"; group-sequential ({self.sequential}, {self.looks} looks)" if self.sequential else ""
        return head + test + corr + cuped + seq


# ----------------------------------------------------------------------------------------------------------- power
def power_at(design: PowerDesign, effect: float, n_per_arm: float) -> float:
    """Power of the test with `n_per_arm` units per arm when the true absolute difference is `effect` (> 0).

    With a non-inferiority margin, `effect` is the margin (the true difference is zero).
    """
    if effect <= 0:
        return float(design.alpha_per_test)
    a = design.alpha_per_test
    z = stats.norm.isf(a if design.one_sided else a / 2)
    vf = design.variance_factor
    if design.metric == "proportion":
        p1 = design.baseline
        if design.ni_margin is not None:
            sd = math.sqrt(2 * p1 * (1 - p1) * vf)
            return float(stats.norm.cdf(effect * math.sqrt(n_per_arm) / sd - z))
        p2 = p1 - effect if design.alternative == "smaller" else p1 + effect
        if not 0 < p2 < 1:
            return 1.0
        if design.method == "cohen-h":
            h = abs(2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1))) / math.sqrt(vf)
            nc = h * math.sqrt(n_per_arm / 2)
            return _normal_power(nc, z, design.one_sided)
        v_alt = (p1 * (1 - p1) + p2 * (1 - p2)) * vf
        if design.method == "pooled":
            pbar = (p1 + p2) / 2
            v_null = 2 * pbar * (1 - pbar) * vf
        else:
            v_null = v_alt
        num = effect * math.sqrt(n_per_arm)
        up = stats.norm.cdf((num - z * math.sqrt(v_null)) / math.sqrt(v_alt))
        if design.one_sided:
            return float(up)
        return float(up + stats.norm.cdf((-num - z * math.sqrt(v_null)) / math.sqrt(v_alt)))
    sd = float(design.std) * math.sqrt(vf)  # type: ignore[arg-type]
    nc = effect / sd * math.sqrt(n_per_arm / 2)
    if design.metric == "ratio":
        return _normal_power(nc, z, design.one_sided)
    df = 2 * n_per_arm - 2
    if df > 1e6 or nc > 30:  # scipy's noncentral t returns nan out here, where the t-test is a z-test
        return _normal_power(nc, z, design.one_sided)
    if design.one_sided:
        p = stats.nct.sf(stats.t.isf(a, df), df, nc)
    else:
        tc = stats.t.isf(a / 2, df)
        p = stats.nct.sf(tc, df, nc) + stats.nct.cdf(-tc, df, nc)
    return float(p) if math.isfinite(p) else _normal_power(nc, z, design.one_sided)


def _normal_power(nc: float, z: float, one_sided: bool) -> float:
    up = stats.norm.cdf(nc - z)
    return float(up if one_sided else up + stats.norm.cdf(-nc - z))


def n_for(design: PowerDesign, effect: float) -> float:
    """Continuous sample size per arm reaching `design.power` at absolute difference `effect` (round up yourself)."""
    if effect <= 0:
        raise ValueError(f"the effect must be > 0, got {effect}")
    if design.metric == "proportion" and design.ni_margin is None:
        p2 = design.baseline - effect if design.alternative == "smaller" else design.baseline + effect
        if not 0 < p2 < 1:
            raise ValueError(f"baseline {design.baseline} with effect {effect} leaves [0, 1]")
    f = lambda n: power_at(design, effect, n) - design.power  # noqa: E731
    lo = 2.0 if design.metric == "mean" else 1.0 + 1e-9
    if f(lo) >= 0:
        return lo
    hi = lo * 2
    while f(hi) < 0:
        lo, hi = hi, hi * 2
        if hi > _N_MAX:
            raise ValueError(f"effect {effect:g} is too small to detect with fewer than {_N_MAX:.0e} units per arm")
    return float(optimize.brentq(f, lo, hi, xtol=1e-6, rtol=1e-12, maxiter=500))


def mde_for(design: PowerDesign, n_per_arm: float) -> float:
    """Smallest absolute difference (or non-inferiority margin) detected with `design.power` at `n_per_arm`."""
    if n_per_arm < 2:
        raise ValueError(f"n per arm must be >= 2, got {n_per_arm}")
    if design.metric == "proportion" and design.ni_margin is None:
        hi = (design.baseline if design.alternative == "smaller" else 1 - design.baseline) * (1 - 1e-9)
    elif design.metric == "proportion":
        hi = 1.0
    else:
        hi = float(design.std) * 1e3  # type: ignore[arg-type]
    f = lambda d: power_at(design, d, n_per_arm) - design.power  # noqa: E731
    if f(hi) < 0:
        return math.nan
    lo = hi * 1e-12
    if f(lo) >= 0:
        return lo
    return float(optimize.brentq(f, lo, hi, xtol=1e-15, rtol=1e-12, maxiter=500))


# ----------------------------------------------------------------------------------------------------------- plan
@dataclass
class PowerPlan:
    """The solved design; `solved_for` names the quantity that was not given."""

    solved_for: str
    n_per_arm: int | None
    mde: float | None  # absolute difference (or non-inferiority margin)
    mde_relative: float | None
    power: float | None
    days: int | None
    days_raw: int | None
    method: str
    alpha: float
    alpha_per_test: float
    arms: int
    n_per_arm_without_cuped: int | None = None
    mde_without_cuped: float | None = None
    cuped_r2: float = 0.0
    mde_by_weeks: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_units(self) -> int | None:
        return None if self.n_per_arm is None else self.n_per_arm * self.arms

    def to_json(self) -> dict:
        return {
            "n_per_arm": self.n_per_arm,
            "mde": self.mde,
            "mde_relative": self.mde_relative,
            "power": self.power,
            "days": self.days,
            "method": self.method,
            "solved_for": self.solved_for,
            "alpha": self.alpha,
            "alpha_per_test": self.alpha_per_test,
            "arms": self.arms,
            "total_units": self.total_units,
            "cuped_r2": self.cuped_r2,
            "n_per_arm_without_cuped": self.n_per_arm_without_cuped,
            "mde_without_cuped": self.mde_without_cuped,
            "days_unrounded": self.days_raw,
            "mde_by_weeks": self.mde_by_weeks,
            "notes": self.notes,
        }


def _sequential_growth(design: PowerDesign, notes: list[str]) -> float:
    """Maximum over fixed-horizon sample of the design's group-sequential test (1 without one), noted."""
    if design.sequential is None:
        return 1.0
    r = inflation_factor(design.sequential, design.looks, design.alpha_per_test, design.power)
    notes.append(f"group-sequential ({design.sequential}, {design.looks} equally spaced looks): the maximum sample "
                 f"is {r:.3f} x the fixed-horizon one for the same power; pass it to abtest-analyze as "
                 "--planned-n-per-arm")
    return r


def _rel(design: PowerDesign, d: float | None) -> float | None:
    if d is None or not math.isfinite(d) or design.baseline == 0:
        return None
    return d / abs(design.baseline)


def plan(
    design: PowerDesign,
    mde: float | None = None,
    relative: bool = False,
    n_per_arm: int | None = None,
    days: int | None = None,
    traffic: Traffic | None = None,
) -> PowerPlan:
    """Solve for whichever of n per arm, MDE, power or duration is not given.

    `mde` is absolute unless `relative` (then a fraction of the baseline); with a non-inferiority margin in the
    design, the margin plays the role of the effect and `mde` must be None.
    """
    notes: list[str] = []
    if relative and mde is not None:
        if design.baseline == 0:
            raise ValueError("a relative MDE needs a non-zero baseline")
        mde = mde * abs(design.baseline)
    if design.ni_margin is not None:
        if mde is not None:
            raise ValueError("give either an MDE or a non-inferiority margin, not both")
        mde = design.ni_margin
    if mde is not None and not mde > 0:
        raise ValueError(f"the MDE must be > 0, got {mde}")
    if days is not None and traffic is None:
        raise ValueError("--days needs traffic: --daily-units or --from-logs")
    if days is not None and days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if n_per_arm is not None and days is not None:
        raise ValueError("give either n per arm or days, not both")
    if n_per_arm is not None and n_per_arm < 2:
        raise ValueError(f"n per arm must be >= 2, got {n_per_arm}")
    if mde is None and n_per_arm is None and days is None:
        raise ValueError("give one of --mde, --n-per-arm or --days")

    days_raw: int | None = None
    if days is not None:
        n_per_arm = int(traffic.units_in(days) / design.arms)  # type: ignore[union-attr]
        days_raw = days
        if days % 7:
            notes.append(f"{days} days is not a whole number of weeks: weekday effects may bias the result")
        if n_per_arm < 2:
            raise ValueError(f"{days} days of traffic give fewer than 2 units per arm")

    n_plain: int | None = None
    mde_plain: float | None = None
    if design.sequential is not None and n_per_arm is not None:
        raise ValueError("a group-sequential plan solves for the maximum sample: give --mde, not --n-per-arm "
                         "or --days")
    if n_per_arm is None:
        solved = "n_per_arm"
        grow = _sequential_growth(design, notes)
        n_per_arm = math.ceil(n_for(design, mde) * grow - 1e-9)  # type: ignore[arg-type]
        power = design.power
        if design.cuped_r2 > 0:
            n_plain = math.ceil(n_for(design.without_cuped(), mde) * grow - 1e-9)  # type: ignore[arg-type]
        if design.alternative != "two-sided" and design.ni_margin is None:
            both = power_at(replace(design, alternative="two-sided"), mde, n_per_arm)  # type: ignore[arg-type]
            notes.append(f"sized for a one-sided test; `recs abtest-analyze` tests success metrics two-sided, "
                         f"which has {both:.1%} power at this sample (plan with --alternative two-sided to match)")
    elif mde is None:
        solved = "mde"
        mde = mde_for(design, n_per_arm)
        power = design.power
        if design.cuped_r2 > 0:
            mde_plain = mde_for(design.without_cuped(), n_per_arm)
        if not math.isfinite(mde):
            mde = None
            notes.append("no effect inside the metric's range reaches the target power at this sample size")
    else:
        solved = "power"
        power = power_at(design, mde, n_per_arm)
    if traffic is not None and days is None:
        days_raw = traffic.days_for(n_per_arm, design.arms)
        days = None if days_raw is None else whole_weeks(days_raw)
        if days_raw is None:
            notes.append(f"the traffic does not reach {n_per_arm} units per arm within {MAX_DAYS} days")
        elif solved == "n_per_arm":
            solved = "n_per_arm+days"
    if traffic is not None and traffic.cumulative:
        notes.append("duration uses the distinct units the logs reach per day count (returning units are not "
                     "counted twice); beyond the logged days the recent rate of new units is extrapolated")
    weeks = []
    if traffic is not None:
        for w in (1, 2, 3, 4):
            n_w = int(traffic.units_in(7 * w) / design.arms)
            row = {"weeks": w, "n_per_arm": n_w, "mde": None, "mde_relative": None, "power_at_mde": None}
            if n_w >= 2:
                m_w = mde_for(design, n_w)
                row["mde"] = m_w if math.isfinite(m_w) else None
                row["mde_relative"] = _rel(design, row["mde"])
                if mde is not None:
                    row["power_at_mde"] = power_at(design, mde, n_w)
            weeks.append(row)
    return PowerPlan(
        solved_for=solved, n_per_arm=n_per_arm, mde=mde, mde_relative=_rel(design, mde), power=power,
        days=days, days_raw=days_raw, method=design.describe(), alpha=design.alpha,
        alpha_per_test=design.alpha_per_test, arms=design.arms, n_per_arm_without_cuped=n_plain,
        mde_without_cuped=mde_plain, cuped_r2=design.cuped_r2, mde_by_weeks=weeks, notes=notes,
    )
