"""Drift comparison, verdict rules, day-by-day monitoring, detection delay and false-alarm rate."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recs.evaluators.drift import (
    DriftConfig, MonitorConfig, _status, compare, detection_delay, false_alarm_rate, monitor_to_dict,
    monitor_windows, run_false_alarm_rate, split_by_day,
)

CATS = np.array(["electronics", "home", "fashion", "toys", "beauty"])
P0 = np.array([0.3, 0.25, 0.2, 0.15, 0.1])


def features(n: int, rng: np.random.Generator, shift: float = 0.0, cat_p: np.ndarray = P0) -> pl.DataFrame:
    """A synthetic feature frame: numeric, heavy-tailed, integer and categorical columns plus an id."""
    return pl.DataFrame({
        "request_id": [f"r{i}" for i in rng.integers(0, 10**12, n)],
        "price": rng.lognormal(3.0 + shift, 1.0, n),
        "ctr_7d": rng.beta(2, 50, n),
        "position": rng.integers(0, 10, n),
        "category": rng.choice(CATS, n, p=cat_p),
        "score": rng.normal(0.0, 1.0, n),
    })


def test_no_drift_is_ok_and_identifiers_skipped() -> None:
    rng = np.random.default_rng(0)
    rep = compare(features(4000, rng), features(4000, rng))
    assert rep.verdict == "ok", rep.reasons
    assert {f.column for f in rep.features} == {"price", "ctr_7d", "position", "category", "score"}
    assert dict(rep.skipped_columns) == {"request_id": "identifier (name ends in _id)"}
    kinds = {f.column: (f.kind, f.test) for f in rep.features}
    assert kinds["category"] == ("categorical", "chi2") and kinds["price"] == ("numeric", "ks")
    assert all(f.psi < 0.05 for f in rep.features)


def test_numeric_shift_is_flagged_on_that_column_only() -> None:
    rng = np.random.default_rng(1)
    rep = compare(features(4000, rng), features(4000, rng, shift=0.5))
    status = {f.column: f.status for f in rep.features}
    assert rep.verdict == "drift" and status["price"] == "drift"
    assert all(s == "ok" for c, s in status.items() if c != "price")
    price = next(f for f in rep.features if f.column == "price")
    assert price.p_adjusted < 1e-10 and price.current_center > price.reference_center


def test_categorical_shift_is_flagged() -> None:
    rng = np.random.default_rng(2)
    rep = compare(features(4000, rng), features(4000, rng, cat_p=np.array([0.1, 0.1, 0.2, 0.3, 0.3])),
                  columns=["category", "score"])
    status = {f.column: f.status for f in rep.features}
    assert status == {"category": "drift", "score": "ok"}
    cat = next(f for f in rep.features if f.column == "category")
    assert cat.reference_center.startswith("electronics (") and cat.current_center.split(" ")[0] in ("toys", "beauty")


def test_status_rules() -> None:
    cfg = DriftConfig()
    assert _status(0.30, 0.5, cfg) == "drift"  # large PSI alone
    assert _status(0.15, 0.001, cfg) == "drift"  # moderate PSI and significant
    assert _status(0.15, 0.5, cfg) == "warn"  # moderate PSI, not significant (small samples)
    assert _status(0.02, 0.001, cfg) == "warn"  # significant but tiny effect
    assert _status(0.02, 0.5, cfg) == "ok"
    assert _status(float("nan"), float("nan"), cfg) == "ok"


def test_categorical_override_and_explicit_errors() -> None:
    rng = np.random.default_rng(3)
    ref, cur = features(500, rng), features(500, rng)
    rep = compare(ref, cur, columns=["position"], categorical=["position"])
    assert rep.features[0].kind == "categorical" and rep.features[0].note.startswith("10 categories")
    with pytest.raises(ValueError, match="'nope' is not in the reference"):
        compare(ref, cur, columns=["nope"])
    with pytest.raises(ValueError, match="cannot compare"):
        compare(ref, cur.with_columns(pl.col("price").cast(pl.Utf8)), columns=["price"])


def test_small_samples_are_skipped_and_missing_columns_warn() -> None:
    rng = np.random.default_rng(4)
    rep = compare(features(1000, rng), features(20, rng), columns=["price"])
    assert rep.features[0].status == "skipped" and rep.verdict == "ok"
    rep = compare(features(1000, rng), features(1000, rng).drop("ctr_7d"))
    assert rep.verdict == "warn" and rep.only_in_reference == ("ctr_7d",)


def test_unique_strings_are_skipped_as_identifiers() -> None:
    rng = np.random.default_rng(9)
    ref = features(500, rng).with_columns(token=pl.col("request_id"))
    rep = compare(ref, features(500, rng).with_columns(token=pl.col("request_id")))
    assert dict(rep.skipped_columns)["token"] == "identifier-like (mostly unique values)"


def test_clustered_rows_use_the_design_effect() -> None:
    """Slates of 10 rows sharing one request-level value: iid tests over-reject, the cluster option does not."""
    alarms = {None: 0, "request_id": 0}
    for seed in range(30):
        rng = np.random.default_rng(300 + seed)
        frames = []
        for _ in range(2):
            req = np.repeat(np.arange(300), 10)
            frames.append(pl.DataFrame({"request_id": req.astype(str),
                                        "user_score": np.repeat(rng.normal(size=300), 10) + rng.normal(0, 0.1, 3000)}))
        for cl in alarms:
            rep = compare(frames[0], frames[1], config=DriftConfig(cluster_column=cl))
            alarms[cl] += rep.verdict != "ok"
            if cl:
                assert rep.design_effect == 10.0
    assert alarms["request_id"] <= 2 and alarms[None] >= 10


def test_datetimes_are_not_compared_by_default() -> None:
    rng = np.random.default_rng(5)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    ref = features(300, rng).with_columns(ts=pl.lit(t0))
    cur = features(300, rng).with_columns(ts=pl.lit(t0 + timedelta(days=30)))
    rep = compare(ref, cur)
    assert "ts" in dict(rep.skipped_columns) and rep.verdict == "ok"


def test_report_frame_and_dict() -> None:
    rng = np.random.default_rng(6)
    rep = compare(features(2000, rng), features(2000, rng, shift=0.6))
    frame = rep.to_frame()
    assert frame["column"][0] == "price" and frame["status"][0] == "drift"
    d = rep.to_dict()
    assert d["kind"] == "drift" and d["verdict"] == "drift" and d["config"]["correction"] == "holm"
    assert len(d["features"]) == 5


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DriftConfig(psi_warn=0.3, psi_drift=0.2)
    with pytest.raises(ValueError):
        DriftConfig(correction="fdr")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MonitorConfig(consecutive=0)


def _run(rng: np.random.Generator, days: int, onset: int | None, shift: float,
         n: int = 1500) -> dict[date, pl.DataFrame]:
    d0 = date(2024, 3, 1)
    return {d0 + timedelta(days=i): features(n, rng, shift if onset is not None and i >= onset else 0.0)
            for i in range(days)}


def test_monitor_detects_shift_with_zero_delay_and_no_false_alarms() -> None:
    rng = np.random.default_rng(7)
    ref = features(3000, rng)
    days = _run(rng, 10, onset=6, shift=0.5)
    onset = date(2024, 3, 7)
    verdicts = monitor_windows(days, ref)
    assert [v.alarm for v in verdicts] == [False] * 6 + [True] * 4
    assert detection_delay(verdicts, onset) == 0.0
    assert false_alarm_rate(verdicts, onset) == 0.0
    assert verdicts[-1].flagged == ("price",)
    slow = monitor_windows(days, ref, config=MonitorConfig(consecutive=2))
    assert detection_delay(slow, onset) == 1.0
    d = monitor_to_dict(verdicts, onset, MonitorConfig())
    assert d["kind"] == "drift_monitor" and d["detection_delay_days"] == 0.0 and d["n_alarms"] == 4


def test_delay_none_when_never_alarmed_and_fa_rate_counts_pre_onset() -> None:
    rng = np.random.default_rng(8)
    verdicts = monitor_windows({i: features(800, rng) for i in range(4)}, features(2000, rng))
    assert detection_delay(verdicts, 2) is None
    assert false_alarm_rate(verdicts) == 0.0 and run_false_alarm_rate([verdicts]) == 0.0
    assert np.isnan(false_alarm_rate(verdicts, onset_day=0))


def test_false_alarm_rate_over_seeds_is_low() -> None:
    """40 drift-free runs of 5 days, 5 features each: the drift alarm must (almost) never fire."""
    runs = []
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        ref = features(2000, rng)
        runs.append(monitor_windows(_run(rng, 5, None, 0.0, n=1000), ref))
    day_rate = np.mean([false_alarm_rate(r) for r in runs])
    assert day_rate <= 0.01
    assert run_false_alarm_rate(runs) <= 0.05


@pytest.mark.slow
def test_false_alarm_rate_over_many_seeds_respects_alpha() -> None:
    """2000 drift-free days: `drift` alarms ~never; `warn` (any Holm-significant column) at most ~alpha."""
    drift_days = warn_days = 0
    total = 2000
    for seed in range(total):
        rng = np.random.default_rng(50_000 + seed)
        rep = compare(features(1500, rng), features(1000, rng))
        drift_days += rep.verdict == "drift"
        warn_days += rep.verdict in ("warn", "drift")
    assert drift_days / total <= 0.003
    assert warn_days / total <= 0.02  # family-wise alpha 0.01, plus binomial slack


def test_split_by_day() -> None:
    t0 = datetime(2024, 1, 1, 23, tzinfo=timezone.utc)
    frame = pl.DataFrame({"ts": [t0, t0 + timedelta(hours=2), t0 + timedelta(hours=3)], "x": [1, 2, 3]})
    parts = split_by_day(frame)
    assert list(parts) == [date(2024, 1, 1), date(2024, 1, 2)] and parts[date(2024, 1, 2)]["x"].to_list() == [2, 3]
