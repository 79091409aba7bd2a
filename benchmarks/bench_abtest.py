"""A/B statistics: sizing latency, analysis throughput, boundary computation and calibration figures."""
from __future__ import annotations

import time

import numpy as np

from recs.evaluators.abtest_analyze import AnalyzeConfig, analyze
from recs.evaluators.abtest_calibration import MODES, rejections, simulate_batch
from recs.evaluators.abtest_power import PowerDesign, Traffic, plan
from recs.evaluators.abtest_sim import ExperimentSim, simulate_experiment_frame
from recs.evaluators.sequential import _boundaries, boundaries


def _timed(fn, repeat: int = 1):
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return out, (time.perf_counter() - t0) / repeat


def main() -> None:
    traffic = Traffic(daily_units=200_000, traffic_share=0.1)
    for name, design in [("proportion pooled", PowerDesign(metric="proportion", baseline=0.2)),
                         ("mean t-test", PowerDesign(metric="mean", baseline=10, std=30)),
                         ("ratio + CUPED", PowerDesign(metric="ratio", baseline=0.05, std=0.08, cuped_r2=0.3))]:
        d = 0.01 if design.metric != "mean" else 0.5
        p, t = _timed(lambda: plan(design, mde=d, traffic=traffic), repeat=5)
        print(f"plan {name:<18} n/arm {p.n_per_arm:>9,}  days {p.days:>3}  {t * 1e3:7.1f} ms (incl. 4-week table)")

    df = simulate_experiment_frame(n_units=1_000_000, seed=1, effects={"conversion": 0.02})
    cfg = AnalyzeConfig(metrics=["conversion", "revenue", "clicks/impressions"], covariates="auto",
                        guardrails=["p99_latency_ms<=+2%", "error_rate<=+0.1pp"])
    _, t = _timed(lambda: analyze(df, cfg), repeat=3)
    print(f"analyze 1,000,000 units, 3 metrics + 2 guardrails, CUPED: {t:.2f} s ({df.height / t:,.0f} units/s)")
    seq = AnalyzeConfig(metrics=["conversion"], sequential="obf", planned_n_per_arm=500_000, time_column="day")
    _, t = _timed(lambda: analyze(df, seq), repeat=3)
    print(f"analyze 1,000,000 units, group-sequential over 14 daily looks: {t:.2f} s")

    for k in (14, 50):
        _boundaries.cache_clear()
        _, t = _timed(lambda: boundaries(np.arange(1, k + 1) / k, 0.05, "obf"))
        print(f"O'Brien-Fleming boundaries, {k} looks: {t * 1e3:.0f} ms")

    n_exp = 2_000
    for metric in ("conversion", "clicks/impressions"):
        batch, t = _timed(lambda: simulate_batch(ExperimentSim(n_units=4_000, n_experiments=n_exp, days=14, seed=21),
                                                 metric))
        rates = {m: rejections(batch, m, tau=0.2).mean() for m in MODES}
        print(f"A/A {metric}: {n_exp} experiments x 4,000 units x 14 daily looks ({t:.0f} s): "
              + ", ".join(f"{m} {r:.2%}" for m, r in rates.items()))

    design = PowerDesign(metric="proportion", baseline=0.2)
    n = plan(design, mde=0.01).n_per_arm
    rng = np.random.default_rng(5)
    c, tr = rng.binomial(n, 0.2, 20_000), rng.binomial(n, 0.21, 20_000)
    pc, pt = c / n, tr / n
    z = (pt - pc) / np.sqrt((pc * (1 - pc) + pt * (1 - pt)) / n)
    print(f"power check: baseline 0.2, MDE 0.01, n/arm {n:,}: observed power {np.mean(np.abs(z) > 1.959964):.3f} "
          "over 20,000 binomial experiments (target 0.800)")


if __name__ == "__main__":
    main()
