"""Delayed-feedback labels against the simulator's ground truth (`truth/conversions`)."""
from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from recs.datasets.io import read_table
from recs.datasets.labels import LabelConfig, labels_from_dataset

sim = pytest.importorskip("recs.sim")


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "ds"
    cfg = sim.SimConfig.for_scale("small", days=3, requests_per_day=3000, seed=7)
    summary = sim.generate_dataset(cfg, out)
    return out, cfg, summary


def test_corrected_labels_match_truth_where_naive_ones_undercount(sim_dataset):
    ds, cfg, _ = sim_dataset
    window = timedelta(days=2)
    as_of = cfg.start + timedelta(days=cfg.days)
    res = labels_from_dataset(ds, LabelConfig(as_of=as_of, window=window))
    conv = read_table(ds / "truth", "conversions").select("request_id", "position", pl.col("ts").alias("conv_ts"))
    df = res.frame.join(conv, on=["request_id", "position"], how="left").with_columns(
        (pl.col("conv_ts").is_not_null() & (pl.col("conv_ts") - pl.col("ts") <= window)).alias("truth"))
    pend = df.filter(pl.col("label_status") == "pending")
    mat = df.filter(pl.col("label_status") == "matured")
    truth_pending = int(pend["truth"].sum())
    naive_pending = int(pend["purchase"].sum())
    corrected_pending = naive_pending + float(pend["p_conversion_pending"].sum())
    assert truth_pending > 200
    assert naive_pending < 0.95 * truth_pending
    assert abs(corrected_pending - truth_pending) < 0.05 * truth_pending
    assert (mat["purchase"] == mat["truth"]).all()  # a closed window is exact
    assert df.height == res.summary["impressions"] and df["weight"].is_between(0, 1).all()


def test_sim_dataset_point_in_time_prices_match_replay(sim_dataset):
    ds, cfg, _ = sim_dataset
    res = labels_from_dataset(ds, LabelConfig(as_of=cfg.start + timedelta(days=cfg.days), window=timedelta(days=1)))
    catalog = read_table(ds, "catalog").select("item_id", "price")
    events = read_table(ds, "inventory_events").filter(pl.col("kind") == "price")
    sample = res.frame.sample(300, seed=0).select("item_id", "ts", "price_at_ts")
    ev = {}
    for r in events.sort("ts").iter_rows(named=True):
        ev.setdefault(r["item_id"], []).append((r["ts"], r["value"]))
    base = dict(catalog.iter_rows())
    for item, ts, got in sample.iter_rows():
        want = base[item]
        for t, v in ev.get(item, []):
            if t <= ts:
                want = v
        assert got == want


def test_sim_tables_reingest_cleanly_and_idempotently(sim_dataset, tmp_path):
    from recs.datasets.ingest import IngestConfig, ingest

    ds, _, summary = sim_dataset
    for table in ("impressions", "interactions", "inventory_events"):
        rep = ingest([ds / table], tmp_path / "copy", IngestConfig(table=table))
        assert rep.totals["accepted"] == summary["rows"][table] and rep.totals["quarantined"] == 0
    rep = ingest([ds / "impressions"], tmp_path / "copy", IngestConfig(table="impressions"))
    assert rep.totals["duplicates"] == summary["rows"]["impressions"]
    a = read_table(ds, "impressions").sort("request_id", "position")
    b = read_table(tmp_path / "copy", "impressions").sort("request_id", "position").select(a.columns)
    assert a.equals(b)
