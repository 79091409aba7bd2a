"""Drift monitor figures: comparison throughput, false-alarm rates without drift, detection delay after a shift,
and the effect of slate clustering on simulated impressions. Prints; asserts nothing.

    .venv/bin/python -m benchmarks.run drift
"""
from __future__ import annotations

import time
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import polars as pl

from recs.evaluators.drift import (
    DriftConfig, compare, detection_delay, false_alarm_rate, monitor_windows,
)

CATS = np.array(["electronics", "home", "fashion", "toys", "beauty", "sports", "books", "food"])
P0 = np.array([0.2, 0.18, 0.15, 0.12, 0.1, 0.1, 0.08, 0.07])


def frame(n: int, rng: np.random.Generator, shift: float = 0.0) -> pl.DataFrame:
    """Five numeric and two categorical features; `shift` moves the mean of `score` by that many sd."""
    return pl.DataFrame({
        "score": rng.normal(shift, 1.0, n),
        "price": rng.lognormal(3.0, 1.0, n),
        "ctr_7d": rng.beta(2, 50, n),
        "age_days": rng.exponential(90, n),
        "position": rng.integers(0, 10, n),
        "category": rng.choice(CATS, n, p=P0),
        "surface": rng.choice(["home", "search"], n, p=[0.7, 0.3]),
    })


def throughput() -> None:
    rng = np.random.default_rng(0)
    for n in (100_000, 1_000_000):
        ref, cur = frame(n, rng), frame(n, rng)
        t0 = time.perf_counter()
        compare(ref, cur)
        dt = time.perf_counter() - t0
        print(f"compare 7 columns, {n:,} + {n:,} rows: {dt:.2f} s ({2 * n / dt:,.0f} rows/s)")


def false_alarms(days: int = 400, n: int = 2000) -> None:
    drift = warn = 0
    for seed in range(days):
        rng = np.random.default_rng(10_000 + seed)
        v = compare(frame(4000, rng), frame(n, rng)).verdict
        drift += v == "drift"
        warn += v != "ok"
    print(f"no drift, {days} days x 7 features (ref 4,000 rows, day {n:,} rows): "
          f"drift-alarm rate {drift / days:.4f}, warn-or-drift rate {warn / days:.4f} (Holm, alpha 0.01)")


def _rule(verdicts: list, level: str, consecutive: int) -> list:
    """The same days re-alarmed under another rule (alarm level, days in a row)."""
    rank = {"ok": 0, "warn": 1, "drift": 2}
    run, out = 0, []
    for v in verdicts:
        run = run + 1 if rank[v.verdict] >= rank[level] else 0
        out.append(replace(v, alarm=run >= consecutive))
    return out


def delays(runs: int = 20, n: int = 2000, onset: int = 7, days: int = 14) -> None:
    d0 = date(2026, 1, 1)
    on = d0 + timedelta(days=onset)
    rules = [("drift", 1), ("drift", 2), ("warn", 1), ("warn", 2)]
    for shift in (0.05, 0.1, 0.2, 0.3, 0.5):
        got: dict = {r: [] for r in rules}
        fa: dict = {r: [] for r in rules}
        for seed in range(runs):
            rng = np.random.default_rng(20_000 + seed)
            ref = frame(4000, rng)
            by_day = {d0 + timedelta(days=i): frame(n, rng, shift if i >= onset else 0.0) for i in range(days)}
            v = monitor_windows(by_day, ref)
            for r in rules:
                vr = _rule(v, *r)
                got[r].append(detection_delay(vr, on))
                fa[r].append(false_alarm_rate(vr, on))
        for r in rules:
            hit = [g for g in got[r] if g is not None]
            mean = f"{np.mean(hit):.2f}" if hit else "n/a"
            print(f"score shift {shift:.2f} sd, alarm on {r[0]} x{r[1]} day(s): detected {len(hit)}/{runs} runs, "
                  f"mean delay {mean} days, pre-onset false-alarm rate {np.mean(fa[r]):.3f}")


def clustered(seeds: int = 10) -> None:
    try:
        from recs.sim import SimConfig, World
    except ImportError:
        print("simulator not importable: clustering figures skipped")
        return
    alarms = {None: [0, 0], "request_id": [0, 0]}
    changed = {None: 0, "request_id": 0}
    for seed in range(seeds):
        world = World.build(SimConfig(n_users=1000, n_items=2000, days=2, requests_per_day=500, seed=seed))
        a, _ = world.log_policy(world.logging_policy(), 800, seed=1)
        b, _ = world.log_policy(world.logging_policy(), 800, seed=2)
        u, _ = world.log_policy(world.uniform_policy(), 800, seed=3)
        for cl in alarms:
            v = compare(a, b, config=DriftConfig(cluster_column=cl)).verdict
            alarms[cl][0] += v == "drift"
            alarms[cl][1] += v != "ok"
            changed[cl] += compare(a, u, config=DriftConfig(cluster_column=cl)).verdict == "drift"
    for cl, (d, w) in alarms.items():
        print(f"simulated impressions (800 requests a side), logging policy vs itself, {seeds} worlds, cluster={cl}: "
              f"drift {d}/{seeds}, warn-or-drift {w}/{seeds}; logging vs uniform policy: drift {changed[cl]}/{seeds}")


def main() -> None:
    throughput()
    false_alarms()
    delays()
    clustered()


if __name__ == "__main__":
    main()
