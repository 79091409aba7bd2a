"""Slow statistical checks of the scenarios at their default sizes (`make test-slow`; several minutes)."""
import pytest

from recs.scenarios.cold_start import ColdStartConfig, run_cold_start
from recs.scenarios.drift import DriftScenarioConfig, run_drift
from recs.scenarios.stale_inventory import StaleInventoryConfig, run_stale_inventory

pytestmark = pytest.mark.slow


def test_drift_monitors_over_seeds():
    """Preference shift over 4 seeds (a freshly trained pipeline each): the label monitors detect it in at least
    half the runs (5 of 6 for calibration in docs/SCENARIOS.md), the label-free score monitor (blind to a change of
    true tastes) in at most half; drift-free runs alarm on few days (none of 24-30 in the docs)."""
    res = run_drift(DriftScenarioConfig(kind="preference", magnitude=0.5, seeds=4))
    m = res["monitors"]
    assert max(m["ndcg"]["detected_share"], m["calibration"]["detected_share"]) >= 0.5
    assert m["score_shift"]["detected_share"] <= 0.5
    for name, mon in m.items():
        assert mon["false_alarm_rate"] <= 0.15, name


def test_stale_inventory_default_run_trains_and_measures_the_loss():
    res = run_stale_inventory(StaleInventoryConfig())
    by = {s["age_s"]: s for s in res["snapshots"]}
    assert res["ranker"] == "pipeline"
    assert all(s["mitigated"]["oos_shown_share"] == 0.0 for s in res["snapshots"])
    assert by[86_400]["oos_shown_share"] > 0.05 and by[86_400]["purchase_loss"] > 0.05
    assert by[86_400]["mitigated"]["purchase_loss"] < by[86_400]["purchase_loss"] / 2


def test_cold_start_default_run_content_reaches_new_items():
    res = run_cold_start(ColdStartConfig())
    off = {(r["source"], r["segment"]): r for r in res["offline"]}
    assert off[("retriever:content", "known_user")]["new_item_recall"] > 0
    assert off[("pipeline:no_mitigation", "all")]["new_item_recall"] == 0.0
