"""Training-serving skew: offline (point-in-time over the dataset) and online (live state) features are identical."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from recs.datasets.io import read_table
from recs.datasets.requests import requests_from_logs
from recs.features.skew import skew_check
from recs.features.snapshot import Vocab, build_snapshot
from recs.models.training_rows import day_start
from recs.sim import SimConfig, generate_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("skew") / "ds"
    generate_dataset(SimConfig(n_users=200, n_items=800, days=3, requests_per_day=1500, seed=5), out)
    return out


def _inputs(ds, n_requests=150):
    imp = read_table(ds, "impressions")
    inter = read_table(ds, "interactions")
    catalog = read_table(ds, "catalog")
    events = read_table(ds, "inventory_events")
    sellers = read_table(ds, "sellers")
    rng = np.random.default_rng(0)
    later = imp.filter(pl.col("ts") >= day_start(imp["ts"].min()) + timedelta(days=1))
    rids = rng.choice(later["request_id"].unique().sort().to_numpy(), n_requests, replace=False).tolist()
    rows = later.filter(pl.col("request_id").is_in(rids)).select("request_id", "item_id")
    requests = requests_from_logs(imp.filter(pl.col("request_id").is_in(rids)), inter)
    vocab = Vocab.from_catalog(catalog)
    cache = {}

    def snap(ts):
        d = day_start(ts)
        if d not in cache:
            cache[d] = build_snapshot(catalog, inter, imp, events, d, vocab)
        return cache[d]

    return rows, requests, catalog, sellers, events, snap


def test_online_and_offline_features_are_identical(ds):
    rows, requests, catalog, sellers, events, snap = _inputs(ds)
    res = skew_check(rows, requests, catalog, sellers, events, snap)
    assert res["rows"] > 500 and res["requests"] == 150
    assert res["mismatches"] == 0, res["mismatches_by_feature"]


def test_skew_check_detects_a_leak(ds):
    """A price event applied online but hidden offline must show up as mismatches (the check can fail)."""
    rows, requests, catalog, sellers, events, snap = _inputs(ds, 60)
    items = rows["item_id"].unique().to_list()[:40]
    first = min(r.ts for r in requests.values())
    fake = pl.DataFrame({"event_id": [f"x{i}" for i in range(len(items))], "ts": [first] * len(items),
                         "item_id": items, "kind": ["price"] * len(items), "value": [12345.0] * len(items)},
                        schema_overrides={"ts": events.schema["ts"]})
    from recs.features import skew as skew_mod
    from recs.features.offline import offline_inputs as real_offline

    def offline_without_fake(rows_, requests_, catalog_, events_, retrieval=None):
        return real_offline(rows_, requests_, catalog_, events_.filter(~pl.col("event_id").str.starts_with("x")))

    skew_mod.offline_inputs, saved = offline_without_fake, skew_mod.offline_inputs
    try:
        res = skew_check(rows, requests, catalog, sellers, pl.concat([events, fake]).sort("ts"), snap)
    finally:
        skew_mod.offline_inputs = saved
    assert res["mismatches"] > 0 and "log_price" in res["mismatches_by_feature"]
