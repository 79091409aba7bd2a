"""The data-volume scenario: one small world generated, trained and evaluated end to end."""
from __future__ import annotations

import pytest

from recs.scenarios.data_volume import WORLDS, world_volume_run


def test_default_worlds_only_change_volume():
    assert WORLDS["demo"] == {}
    for over in WORLDS.values():
        assert set(over) <= {"n_users", "n_items", "days"}


@pytest.mark.slow
def test_one_world_end_to_end(tmp_path):
    r = world_volume_run("tiny", {"n_users": 300, "n_items": 1_200, "days": 4, "requests_per_day": 3_000},
                         tmp_path)
    assert r["world"] == {"n_users": 300, "n_items": 1_200, "days": 4, "requests_per_day": 3_000, "seed": 0}
    v = r["volume"]
    assert v["user_impressions"] > 0 and v["item_impressions"] > 0 and 0 < v["items_shown"] <= 1_200
    t = r["true_ctr"]
    assert 0 < t["logging"] < t["oracle"] and 0 < t["pipeline"] < t["oracle"]
    assert t["pipeline_vs_logging"] == pytest.approx(t["pipeline"] / t["logging"])
    seg = r["true_ctr_segments"]
    assert set(seg) == {"anonymous", "logged_in"} and all(0 < seg[s]["pipeline"] < 1 for s in seg)
    learn = r["learnability_vs_logging"]
    assert learn["logging"] == pytest.approx(1.0) and learn["oracle"] > learn["learnt_from_clicks"] > 0
