"""Degradation helpers: NDCG on matured labels over rolling windows, calibration, label-free score-shift alarm."""
from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recs.evaluators.degradation import (
    calibration, ndcg_per_request, rolling_calibration, rolling_ndcg, score_shift_alarm,
)
from recs.evaluators.drift import MonitorConfig, detection_delay, false_alarm_rate

T0 = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def _frame(rows: list[tuple[str, int, float, int]]) -> pl.DataFrame:
    """(request_id, day offset, score, label) rows."""
    return pl.DataFrame({
        "request_id": [r[0] for r in rows],
        "ts": [T0 + timedelta(days=r[1]) for r in rows],
        "score": [float(r[2]) for r in rows],
        "label": [r[3] for r in rows],
    })


def test_ndcg_known_values() -> None:
    f = _frame([("a", 0, 3, 0), ("a", 0, 2, 1), ("a", 0, 1, 0),  # relevant at rank 2: 1/log2(3)
                ("b", 0, 3, 1), ("b", 0, 2, 0),  # perfect
                ("c", 0, 1, 0), ("c", 0, 2, 0)])  # no positive: dropped
    got = dict(ndcg_per_request(f).iter_rows())
    assert got == {"a": pytest.approx(1 / math.log2(3)), "b": pytest.approx(1.0)}
    # cutoff: the relevant item at rank 2 falls outside k=1
    assert dict(ndcg_per_request(f, k=1).iter_rows())["a"] == 0.0


def test_ndcg_graded_gain_and_position_order() -> None:
    f = pl.DataFrame({"request_id": ["a", "a"], "position": [0, 1], "label": [1, 2]})
    exp = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))  # gains 2^l - 1 = 1, 3
    lin = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_per_request(f, score_col=None)["ndcg"][0] == pytest.approx(exp)
    assert ndcg_per_request(f, score_col=None, gain="linear")["ndcg"][0] == pytest.approx(lin)


def test_rolling_ndcg_window_and_maturity() -> None:
    f = _frame([("d0", 0, 2, 1), ("d0", 0, 1, 0),  # ndcg 1
                ("d1", 1, 2, 0), ("d1", 1, 1, 1),  # ndcg 1/log2(3)
                ("d2", 2, 2, 1), ("d2", 2, 1, 0),
                ("d3", 3, 2, 0), ("d3", 3, 1, 1)])
    out = rolling_ndcg(f, window_days=2)
    low = 1 / math.log2(3)
    assert out["ndcg"].to_list() == pytest.approx([1, low, 1, low])
    assert out["ndcg_rolling"].to_list() == pytest.approx([1, (1 + low) / 2, (1 + low) / 2, (1 + low) / 2])
    # as of day 3 with 2-day maturity: only requests up to day 1 have matured labels
    matured = rolling_ndcg(f, window_days=2, as_of=T0 + timedelta(days=3), maturity_days=2)
    assert matured["day"].to_list() == [date(2024, 5, 1), date(2024, 5, 2)]


def test_calibration_known_answer_and_table() -> None:
    cal = calibration([0.3] * 6, [1, 0, 0, 1, 0, 0], bins=10)
    assert cal.ece == pytest.approx(abs(0.3 - 1 / 3)) and cal.n == 6
    assert cal.table.height == 1 and cal.table["bin"][0] == 3
    assert cal.brier == pytest.approx((2 * 0.49 + 4 * 0.09) / 6)


def test_calibration_calibrated_vs_overconfident() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 50_000)
    y = rng.uniform(size=p.size) < p
    good = calibration(p, y, bins=10)
    bad = calibration(np.clip(p * 1.6, 0, 1), y, bins=10)
    assert good.ece < 0.01 and bad.ece > 0.1 and bad.mce > good.mce
    q = calibration(p, y, bins=10, strategy="quantile")
    assert q.table.height == 10 and (q.table["n"] - 5000).abs().max() <= 1
    with pytest.raises(ValueError):
        calibration([1.5], [1])


def test_rolling_calibration_tracks_a_miscalibrated_period() -> None:
    rng = np.random.default_rng(1)
    rows = []
    for d in range(6):
        p = rng.uniform(0.0, 0.5, 4000)
        truth = p if d < 3 else p * 0.5  # from day 3 the model over-predicts twofold
        rows.append(pl.DataFrame({"ts": [T0 + timedelta(days=d)] * p.size, "pred": p,
                                  "label": (rng.uniform(size=p.size) < truth).astype(np.int8)}))
    out = rolling_calibration(pl.concat(rows), window_days=2)
    assert out.height == 6 and all(e < 0.03 for e in out["ece"][:3]) and all(e > 0.08 for e in out["ece"][3:])
    assert out["ece_rolling"][3] < out["ece"][3]  # the window still holds a good day


def test_score_shift_alarm_fires_after_onset_only() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, 5000)
    daily = {i: rng.normal(0.0 if i < 5 else 0.6, 1, 2000) for i in range(8)}
    verdicts = score_shift_alarm(ref, daily)
    assert [v.alarm for v in verdicts] == [False] * 5 + [True] * 3
    assert detection_delay(verdicts, 5) == 0 and false_alarm_rate(verdicts, 5) == 0
    warn_level = score_shift_alarm(ref, daily, MonitorConfig(alarm_on="warn"))
    assert sum(v.alarm for v in warn_level) >= 3
