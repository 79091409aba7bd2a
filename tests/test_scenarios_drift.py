"""drift scenario: label monitors catch a preference shift, feature PSI catches a price shift, no false alarms."""
import numpy as np
import pytest

from recs.scenarios.common import small_sim
from recs.scenarios.drift import DriftScenarioConfig, apply_drift, drift_report, run_drift
from recs.sim import World

SIM = small_sim(n_users=300, n_items=800, days=6, requests_per_day=2_500, seed=2)


@pytest.fixture(scope="module")
def preference():
    return run_drift(DriftScenarioConfig(sim=SIM, kind="preference", onset_day=4, ref_days=2, magnitude=0.8, seeds=1))


@pytest.fixture(scope="module")
def price():
    return run_drift(DriftScenarioConfig(sim=SIM, kind="price", onset_day=4, ref_days=2, magnitude=0.6, seeds=1))


def test_preference_drift_found_by_label_monitors_after_maturity(preference):
    m = preference["monitors"]
    assert preference["kind"] == "simulate_drift"
    delays = [m[k]["mean_detection_delay_days"] for k in ("ndcg", "calibration")]
    assert any(d is not None for d in delays)
    assert all(d is None or d >= 1 for d in delays)  # labels mature one day later
    run = {r["day"]: r for r in preference["run"]["days"]}
    assert run[4]["ctr"] < run[3]["ctr"] and run[4]["ndcg"] < run[3]["ndcg"]
    # the model's inputs do not see a change of true preferences: its scores do not move
    assert m["score_shift"]["detected_share"] == 0.0


def test_price_drift_found_by_feature_shift_on_onset_day(price):
    m = price["monitors"]["feature_shift"]
    assert m["detection_delay_days"] == [0.0]
    run = {r["day"]: r for r in price["run"]["days"]}
    assert "rel_price" in run[4]["flagged_features"] and not run[3]["flagged_features"]


def test_few_false_alarms_without_drift(preference, price):
    """On drift-free runs (a handful of monitored days each) no monitor alarms on more than one day in four;
    the false-alarm rate over many days is measured by `make bench BENCH=drift` and the slow tests."""
    for res in (preference, price):
        for name, mon in res["monitors"].items():
            assert mon["false_alarm_rate"] <= 0.25, name
            assert mon["false_alarm_rate_before_onset"] <= 0.25, name


def test_apply_drift_changes_only_what_it_says():
    w = World.build(small_sim(n_users=100, n_items=300))
    v0, p0 = w.users.vec.copy(), w.state.price.copy()
    apply_drift(w, "preference", 0.5, np.random.default_rng(0))
    assert not np.allclose(w.users.vec, v0)
    assert np.allclose(np.linalg.norm(w.users.vec, axis=1), np.linalg.norm(v0, axis=1))
    assert np.array_equal(w.state.price, p0)
    apply_drift(w, "price", 0.5, np.random.default_rng(0))
    changed = w.state.price != p0
    assert 0 < changed.mean() < 1 and np.all(w.state.price[changed] > p0[changed])


def test_report_and_validation(price, tmp_path):
    md, html = drift_report(price).write(tmp_path, "drift")
    assert "<svg" in html.read_text() and "feature_shift" in md.read_text()
    with pytest.raises(ValueError, match="kind"):
        DriftScenarioConfig(kind="weather")
    with pytest.raises(ValueError, match="onset_day"):
        DriftScenarioConfig(onset_day=1, ref_days=3)
