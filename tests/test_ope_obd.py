"""IPS and SNIPS on the Open Bandit Dataset sample (through the `obd` adapter) against direct numpy formulas.

The sample CSV ships inside the `obp` wheel; `tests/_obd_sample.py` fetches it once with `pip download` into a cache
(or takes RECS_OBD_CSV / an installed obp). The tests skip, with the reason, only when it cannot be had.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recs.evaluators.ope import IPS, SNIPS, OPEConfig, build_inputs, run_ope

from _obd_sample import obd_csv


@pytest.fixture(scope="module")
def obd() -> pl.DataFrame:
    path, why = obd_csv("random")
    if path is None:
        pytest.skip(why)
    from recs.datasets.adapters.obd import read_obd_csv
    return read_obd_csv(path)


def test_ips_snips_on_obd_match_numpy(obd):
    n_items = obd["item_id"].n_unique()
    # target: Bernoulli-TS-like stochastic policy: softmax over item ids' logged CTR, the same at every position
    ctr = obd.group_by("item_id").agg(pl.col("clicked").mean().alias("ctr"))
    z = ctr["ctr"].to_numpy() * 50
    p = np.exp(z - z.max())
    ctr = ctr.with_columns(pl.Series("prob", p / p.sum()))
    positions = obd.select("position").unique()
    target = (obd.select("request_id").unique().join(positions, how="cross").join(ctr.select("item_id", "prob"),
                                                                                  how="cross"))
    inp = build_inputs(obd, target)
    assert n_items == 80 and inp.n_impressions == obd.height
    df = obd.join(ctr.select("item_id", "prob"), on="item_id")
    w = (df["prob"] / df["propensity"]).to_numpy()
    y = df["clicked"].cast(pl.Float64).to_numpy()
    R, N = inp.n_requests, inp.n_impressions
    assert IPS().decompose(inp).value() == pytest.approx(np.sum(w * y) / R, rel=1e-12)
    assert SNIPS().decompose(inp).value() == pytest.approx(np.sum(w * y) / np.sum(w) * N / R, rel=1e-12)
    rep = run_ope(inp, OPEConfig(estimators=("ips", "snips")))
    assert rep.diagnostics["ess"] > 100


def test_uniform_target_on_random_logs_equals_on_policy(obd):
    """OBD 'random' logs are uniform: a uniform target has weight 1 everywhere and IPS is the on-policy mean."""
    items = obd.select("item_id").unique()
    target = (obd.select("request_id", "position").unique().join(items, how="cross")
              .with_columns(prob=pl.lit(1.0 / items.height)))
    inp = build_inputs(obd, target)
    assert np.allclose(inp.weights, 1.0)
    rep = run_ope(inp, OPEConfig(estimators=("ips",)))
    assert rep.estimates["ips"].normal.value == pytest.approx(rep.logging.value, rel=1e-12)
