"""The data-volume scenario: one small world generated, trained and evaluated end to end."""
from __future__ import annotations

import polars as pl
import pytest

from recs.scenarios.data_volume import WORLDS, world_volume_run


def test_default_worlds_only_change_volume():
    """Every world is the demo's configuration with fewer users, fewer items or more days, nothing else: the same
    traffic per day and the same simulator settings."""
    from dataclasses import asdict

    from recs.sim import SimConfig

    assert WORLDS["demo"] == {}
    demo = asdict(SimConfig.for_scale("small"))
    for name, over in WORLDS.items():
        cfg = asdict(SimConfig.for_scale("small", **over))
        changed = {k for k in cfg if cfg[k] != demo[k]}
        assert changed == set(over) and changed <= {"n_users", "n_items", "days"}, name
        assert cfg["n_users"] <= demo["n_users"] and cfg["n_items"] <= demo["n_items"] and cfg["days"] >= demo["days"]


@pytest.mark.slow
def test_one_world_end_to_end(tmp_path):
    r = world_volume_run("tiny", {"n_users": 300, "n_items": 1_200, "days": 4, "requests_per_day": 3_000},
                         tmp_path)
    assert r["world"] == {"n_users": 300, "n_items": 1_200, "days": 4, "requests_per_day": 3_000, "seed": 0}
    v = r["volume"]
    assert v["user_impressions"] > 0 and v["item_impressions"] > 0 and 0 < v["items_shown"] <= 1_200
    t = r["true_ctr"]
    assert 0 < t["logging"] < t["oracle"] and 0 < t["pipeline"] < t["oracle"]
    # the world on disk is the one asked for (the result's "world" only echoes the configuration)
    users, catalog = pl.read_parquet(tmp_path / "tiny" / "dataset" / "users.parquet"), \
        pl.read_parquet(tmp_path / "tiny" / "dataset" / "catalog.parquet")
    assert users.height == 300 and catalog.height == 1_200
    seg = r["true_ctr_segments"]
    assert set(seg) == {"anonymous", "logged_in"} and all(0 < seg[s]["pipeline"] < 1 for s in seg)
    learn = r["learnability_vs_logging"]
    assert learn["logging"] == pytest.approx(1.0) and learn["oracle"] > learn["learnt_from_clicks"] > 0
