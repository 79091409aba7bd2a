"""stale-inventory scenario: stale snapshots show out-of-stock items; the serve-time mitigations show none."""
import pytest

from recs.scenarios.common import Clock, InventorySnapshot, small_sim
from recs.scenarios.stale_inventory import StaleInventoryConfig, run_stale_inventory, stale_inventory_report
from recs.sim import World


@pytest.fixture(scope="module")
def result():
    sim = small_sim(n_users=300, n_items=800, requests_per_day=6_000, seed=3)
    return run_stale_inventory(StaleInventoryConfig(sim=sim, ages_s=(0, 3_600, 21_600, 86_400), warmup_h=6,
                                                    n_requests=200, cache_n=30))


def test_json_shape(result):
    assert result["kind"] == "simulate_stale_inventory"
    assert [s["age_s"] for s in result["snapshots"]] == [0, 3_600, 21_600, 86_400]
    for s in result["snapshots"]:
        for key in ("oos_shown_share", "price_changed_share", "true_ctr"):
            assert 0.0 <= s[key] <= 1.0
        assert set(s["mitigated"]) >= {"oos_shown_share", "true_ctr"}


def test_mitigated_never_shows_unavailable_items(result):
    for s in result["snapshots"]:
        assert s["mitigated"]["oos_shown_share"] == 0.0
        assert s["mitigated"]["ineligible_shown_share"] == 0.0
        assert s["filter_only"]["oos_shown_share"] == 0.0
        assert s["mitigated"]["price_changed_share"] == 0.0
        assert s["mitigated"]["short_slate_share"] == 0.0


def test_staleness_grows_with_age_and_costs_clicks(result):
    by = {s["age_s"]: s for s in result["snapshots"]}
    assert by[0]["oos_shown_share"] == 0.0 and by[0]["price_changed_share"] == 0.0
    assert by[86_400]["oos_shown_share"] > by[3_600]["oos_shown_share"]
    assert by[86_400]["oos_shown_share"] > 0.01
    assert by[86_400]["price_changed_share"] > by[0]["price_changed_share"]
    assert by[86_400]["click_loss"] > 0 and by[86_400]["purchase_loss"] > 0
    assert by[86_400]["mitigated"]["true_ctr"] > by[86_400]["true_ctr"]


def test_report_renders(result, tmp_path):
    md, html = stale_inventory_report(result).write(tmp_path, "stale_inventory")
    assert "<svg" in html.read_text() and "True CTR against snapshot age" in md.read_text()


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of step_s"):
        StaleInventoryConfig(ages_s=(0, 100))
    with pytest.raises(ValueError, match="cache_n"):
        StaleInventoryConfig(cache_n=3)
    with pytest.raises(ValueError, match="divide 3600"):
        Clock(World.build(small_sim(n_users=50, n_items=200)), step_s=700)


def test_clock_sells_stock_and_snapshot_is_a_copy():
    world = World.build(small_sim(n_users=200, n_items=400, requests_per_day=20_000))
    snap = InventorySnapshot.take(world, 0)
    clock = Clock(world, 900)
    for _ in range(8):
        clock.step()
    assert (world.state.stock < snap.stock).any()  # sales depleted live stock, the snapshot kept its values
    assert snap.stock.sum() != world.state.stock.sum()
