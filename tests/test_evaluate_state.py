"""`recs evaluate` ranks each hold-out request on the inventory as it was when the request arrived, not as at the end
of the hold-out (until the ninth session every request saw the end state)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recs.datasets.io import read_table
from recs.datasets.point_in_time import attributes_as_of
from recs.datasets.policy import Ranking, Request
from recs.models.pipeline import Pipeline
from recs.models.rerank import RerankConfig, rerank
from recs.scenarios.evaluate import EvaluateConfig, evaluate, holdout_replay, holdout_start

from _scenario_fixtures import tiny_trained


def _as_of(rows: pl.DataFrame, dataset: Path) -> pl.DataFrame:
    """`rows` (item_id, ts) with stock and restricted flag at ts, by the offline point-in-time join."""
    rows = rows.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    return attributes_as_of(rows, read_table(dataset, "catalog"), read_table(dataset, "inventory_events"))


def stock_flips(dataset: Path, holdout: pl.DataFrame) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two (request_id, item_id) pairs of clicked hold-out requests: an item clicked there, in stock then and out
    of stock at the end of the hold-out; an item out of stock then (never shown) and in stock at the end."""
    end = holdout["ts"].max()
    catalog = read_table(dataset, "catalog")
    blocked = read_table(dataset, "sellers").filter(pl.col("blocked_from").is_not_null())["seller_id"]
    clicked = holdout.filter(pl.col("clicked")).select("request_id", "item_id", "ts")
    now = _as_of(clicked, dataset)
    later = _as_of(clicked.with_columns(pl.lit(end).alias("ts")), dataset)
    flip = np.flatnonzero((now["stock_at_ts"] > 0).to_numpy() & ~now["restricted_at_ts"].to_numpy()
                          & (later["stock_at_ts"] == 0).to_numpy())
    assert len(flip), "no clicked item sold out by the end of the hold-out"
    gone = (now["request_id"][int(flip[0])], now["item_id"][int(flip[0])])
    ok_items = catalog.filter(~pl.col("seller_id").is_in(blocked.implode()))["item_id"]
    for rid, ts in clicked.unique("request_id", keep="first").sort("ts").select("request_id", "ts").rows()[::25]:
        both = pl.DataFrame({"item_id": ok_items}).join(catalog.select("item_id", "created_at"), on="item_id")
        both = both.filter(pl.col("created_at") <= ts)
        a = _as_of(both.select("item_id", pl.lit(ts).alias("ts")), dataset)
        b = _as_of(both.select("item_id", pl.lit(end).alias("ts")), dataset)
        back = np.flatnonzero((a["stock_at_ts"] == 0).to_numpy() & (b["stock_at_ts"] > 0).to_numpy()
                              & ~a["restricted_at_ts"].to_numpy() & ~b["restricted_at_ts"].to_numpy())
        if len(back):
            return gone, (rid, a["item_id"][int(back[0])])
    raise AssertionError("no item out of stock at a request's time and back in stock by the end")


@pytest.fixture(scope="module")
def tiny():
    t = tiny_trained()
    hold = read_table(t.dataset, "impressions").filter(pl.col("ts") >= holdout_start(t.model))
    return t.dataset, t.model, hold


def test_requests_see_the_inventory_of_their_own_time(tiny, monkeypatch):
    ds, model, hold = tiny
    (gone_rid, gone), (back_rid, back) = stock_flips(ds, hold)
    plan: dict[str, list[str]] = defaultdict(list)
    plan[gone_rid].append(gone)
    plan[back_rid].append(back)
    served: dict[str, tuple[str, ...]] = {}

    def planned(self, request: Request, k: int) -> Ranking:
        """The planned items through the serve-time policy filter, on the state the evaluation gives the pipeline."""
        ids = plan.get(request.request_id, [])
        out, sc = rerank(ids, [1.0] * len(ids), self.state, request.ts, k, RerankConfig(0, False))
        served[request.request_id] = tuple(out)
        return Ranking(tuple(out), tuple(sc))

    monkeypatch.setattr(Pipeline, "rank", planned)
    res = evaluate(model, ds, EvaluateConfig(max_requests=10**6, true_ctr_requests=0, retrievers=False))
    assert served[gone_rid] == (gone,)      # in stock at the request's time: recommendable (end state: sold out)
    assert served[back_rid] == ()           # out of stock then, back in stock at the end: filtered
    assert res["policy_violations"] == 0
    assert res["holdout"]["requests_evaluated"] == len(served)


def test_holdout_replay_matches_the_point_in_time_join(tiny):
    """At sampled request times every item's stock, price and flag equal the offline as-of join's."""
    ds, _, hold = tiny
    end = hold["ts"].max()
    replay = holdout_replay(ds, end)
    catalog = read_table(ds, "catalog").filter(pl.col("created_at") <= end)
    for ts in hold.sort("ts")["ts"].gather_every(400).to_list() + [end]:
        st = replay.at(ts)
        pit = _as_of(catalog.select("item_id", pl.lit(ts).alias("ts")), ds)
        rows = st.indices(pit["item_id"].to_list())
        assert (rows >= 0).all() and len(st) == catalog.height
        assert (st.stock[rows] == pit["stock_at_ts"].to_numpy()).all(), ts
        assert (st.restricted[rows] == pit["restricted_at_ts"].to_numpy()).all(), ts
        assert np.allclose(st.price[rows], pit["price_at_ts"].to_numpy()), ts
    with pytest.raises(ValueError, match="forward only"):
        replay.at(hold["ts"].min())
