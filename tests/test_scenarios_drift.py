"""drift scenario on the trained pipeline: label monitors catch a preference shift after the maturity lag, the
served items' attributes catch a price shift and a catalog-mix shift on the onset day, drift-free runs stay quiet."""
import numpy as np
import pytest

from recs.scenarios.common import small_sim
from recs.scenarios.drift import DriftScenarioConfig, apply_drift, rotate_rows, run_drift
from recs.scenarios.drift_monitors import drift_report
from recs.sim import World

from _scenario_fixtures import tiny_trained


def _run(kind: str, magnitude: float) -> dict:
    t = tiny_trained()
    return run_drift(DriftScenarioConfig(dataset=t.dataset, model_dir=t.model, ref_days=3, baseline_days=1, days=7,
                                         onset_day=5, kind=kind, magnitude=magnitude, requests_per_day=300, seeds=1,
                                         z=3.0))


@pytest.fixture(scope="module")
def preference():
    return _run("preference", 1.0)


@pytest.fixture(scope="module")
def price():
    return _run("price", 1.0)


@pytest.fixture(scope="module")
def catalog_mix():
    return _run("catalog_mix", 0.9)


def _days(res: dict, run: str = "runs") -> dict:
    return {r["day"]: r for r in res[run][0]["days"]}


def test_preference_drift_found_by_label_monitors_after_maturity(preference):
    assert "model" not in preference["config"] and preference["config"]["model_dir"]   # given, not trained here
    m = preference["monitors"]
    assert preference["kind"] == "simulate_drift" and preference["drift"]["changed"]["users"] > 0
    delays = [m[k]["mean_detection_delay_days"] for k in ("ndcg", "calibration")]
    assert any(d is not None for d in delays)
    assert all(d is None or d >= 1 for d in delays)  # labels mature one day later
    run, clean = _days(preference), _days(preference, "clean_runs")
    assert run[5]["true_ctr"] < 0.9 * clean[5]["true_ctr"]  # the damage, measured against the truth
    for key in ("impressions", "true_ctr", "ctr", "score_psi", "ndcg"):  # identical worlds before the onset
        assert run[4][key] == pytest.approx(clean[4][key]), key
    # the ranker's view of users (their histories) does not change: its scores do not move
    assert m["score_shift"]["detected_share"] == 0.0


def test_price_drift_found_by_feature_shift_on_onset_day(price):
    assert price["monitors"]["feature_shift"]["detection_delay_days"] == [0.0]
    run = _days(price)
    assert {"rel_price", "log_price"} & set(run[5]["flagged_features"]) and not run[4]["flagged_features"]


def test_catalog_mix_shift_moves_the_served_categories(catalog_mix):
    assert catalog_mix["drift"]["changed"]["items_delisted"] > 0
    run, clean = _days(catalog_mix), _days(catalog_mix, "clean_runs")
    assert "category" in run[5]["flagged_features"] and "category" not in clean[5]["flagged_features"]
    assert run[5]["true_ctr"] < clean[5]["true_ctr"]


def test_few_false_alarms_without_drift(preference, price, catalog_mix):
    """On the drift-free run (three monitored days, two with matured labels) each monitor alarms on at most one
    day; the false-alarm rate over many days and seeds is measured by the slow test and docs/SCENARIOS.md."""
    for res in (preference, price, catalog_mix):
        for name, mon in res["monitors"].items():
            alarms = sum(bool(d[f"{name}_alarm"]) for d in res["clean_runs"][0]["days"])
            assert alarms <= 1 and mon["clean_days"] >= 2, (res["drift"]["kind"], name, res["clean_runs"][0]["days"])


def test_label_monitors_skip_days_whose_labels_have_not_matured(preference):
    last = _days(preference)[6]
    assert not last["labels_matured"] and last["ndcg"] is None and last["ndcg_alarm"] is None
    assert preference["monitors"]["ndcg"]["clean_days"] == 2


def test_apply_drift_changes_only_what_it_says():
    w = World.build(small_sim(n_users=100, n_items=300))
    v0, p0, r0 = w.users.vec.copy(), w.state.price.copy(), w.state.restricted.copy()
    apply_drift(w, "preference", 0.5, np.random.default_rng(0))
    assert not np.allclose(w.users.vec, v0)
    assert np.allclose(np.linalg.norm(w.users.vec, axis=1), np.linalg.norm(v0, axis=1))
    assert np.array_equal(w.state.price, p0)
    out = apply_drift(w, "price", 0.5, np.random.default_rng(0))
    changed = w.state.price != p0
    assert 0 < changed.mean() < 1 and np.all(w.state.price[changed] > p0[changed])
    assert out["items_repriced"] >= changed.sum()
    out = apply_drift(w, "catalog_mix", 0.5, np.random.default_rng(1))
    gone = w.state.restricted & ~r0
    cats = {w.catalog.category_names[c] for c in np.unique(w.catalog.category[gone])}
    assert gone.sum() == out["items_delisted"] > 0 and cats <= set(out["categories"])


@pytest.mark.parametrize("magnitude", [0.2, 0.5, 0.8, 1.0])
def test_preference_drift_rotates_every_user_by_magnitude_times_90_degrees(magnitude: float) -> None:
    """Every user's angle between old and new preference is exactly magnitude x 90 degrees (the old rotation mixed
    in `v q`, not orthogonal to `v`: 13.5-75.8 degrees per user at magnitude 0.5)."""
    w = World.build(small_sim(n_users=400, n_items=300))
    v0 = w.users.vec.copy()
    apply_drift(w, "preference", magnitude, np.random.default_rng(3))
    v1 = w.users.vec
    n0, n1 = np.linalg.norm(v0, axis=1), np.linalg.norm(v1, axis=1)
    assert np.all(n0 > 0) and np.allclose(n1, n0)
    angle = np.degrees(np.arccos(np.clip(np.sum(v0 * v1, axis=1) / (n0 * n1), -1.0, 1.0)))
    assert np.allclose(angle, magnitude * 90.0, atol=1e-6), (angle.min(), angle.max())


def test_rotate_rows_handles_zero_rows_and_parallel_directions() -> None:
    v = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    out = rotate_rows(v, np.pi / 3, np.random.default_rng(0))
    assert np.array_equal(out[0], v[0])
    cos = np.sum(out[1:] * v[1:], axis=1) / np.linalg.norm(v[1:], axis=1) ** 2
    assert np.allclose(cos, 0.5) and np.allclose(np.linalg.norm(out, axis=1), np.linalg.norm(v, axis=1))
    with pytest.raises(ValueError, match="dimension"):
        rotate_rows(np.ones((2, 1)), 0.5, np.random.default_rng(0))


def test_report_and_validation(price, tmp_path):
    md, html = drift_report(price).write(tmp_path, "drift")
    assert "<svg" in html.read_text() and "feature_shift" in md.read_text()
    assert "True CTR of the served slates" in md.read_text()
    with pytest.raises(ValueError, match="kind"):
        DriftScenarioConfig(kind="weather")
    with pytest.raises(ValueError, match="onset_day"):
        DriftScenarioConfig(onset_day=2, ref_days=2)
    with pytest.raises(ValueError, match="at most 1"):
        DriftScenarioConfig(kind="catalog_mix", magnitude=1.5)
    with pytest.raises(ValueError, match="at most 2"):
        DriftScenarioConfig(kind="preference", magnitude=2.5)
    with pytest.raises(ValueError, match="features"):
        DriftScenarioConfig(features=("colour",))
    with pytest.raises(ValueError, match="ref_days is 2"):
        run_drift(DriftScenarioConfig(dataset=tiny_trained().dataset, model_dir=tiny_trained().model, ref_days=2))
