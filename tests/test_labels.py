"""recs labels: attribution, graded labels, delayed feedback (matured / pending) and point-in-time attributes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recs.datasets.delay_model import DelayModel
from recs.datasets.labels import LabelConfig, build_labels, parse_duration
from recs.datasets.point_in_time import attributes_as_of
from recs.datasets.schemas import validate

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
UTC = pl.Datetime("us", "UTC")


def h(x: float) -> datetime:
    return T0 + timedelta(hours=x)


def imps(rows: list[tuple]) -> pl.DataFrame:
    """rows: (request_id, position, item_id, hour, user_id, session_id, clicked)."""
    return validate("impressions", pl.DataFrame({
        "request_id": [r[0] for r in rows], "ts": [h(r[3]) for r in rows], "user_id": [r[4] for r in rows],
        "session_id": [r[5] for r in rows], "surface": ["home"] * len(rows), "query": [None] * len(rows),
        "item_id": [r[2] for r in rows], "position": [r[1] for r in rows], "propensity": [0.5] * len(rows),
        "policy_id": ["p"] * len(rows), "clicked": [r[6] for r in rows],
    }, schema_overrides={"ts": UTC, "query": pl.Utf8, "user_id": pl.Utf8}))


def inters(rows: list[tuple]) -> pl.DataFrame:
    """rows: (kind, item_id, hour, request_id, user_id, session_id, value)."""
    return validate("interactions", pl.DataFrame({
        "event_id": [f"e{i}" for i in range(len(rows))], "ts": [h(r[2]) for r in rows],
        "user_id": [r[4] for r in rows], "session_id": [r[5] for r in rows], "kind": [r[0] for r in rows],
        "item_id": [r[1] for r in rows], "request_id": [r[3] for r in rows], "value": [r[6] for r in rows],
    }, schema_overrides={"ts": UTC, "user_id": pl.Utf8, "request_id": pl.Utf8, "value": pl.Float64}))


def test_attribution_grades_window_and_as_of():
    im = imps([("r1", 0, "a", 0, "u1", "s1", True), ("r1", 1, "b", 0, "u1", "s1", False),
               ("r2", 0, "a", 10, None, "s2", False), ("r3", 0, "c", 30, "u3", "s3", False)])
    ev = inters([
        ("click", "a", 0.1, "r1", "u1", "s1", None), ("add_to_cart", "a", 0.2, "r1", "u1", "s1", None),
        ("purchase", "a", 5, "r1", "u1", "s1", 30.0),            # r1/a: purchase within the window
        ("purchase", "b", 30, "r1", "u1", "s1", 9.0),            # r1/b: after the 24 h window -> not credited
        ("purchase", "a", 12, None, None, "s2", 12.0),           # no request_id: same session + item -> r2
        ("click", "c", 31, None, "u3", "other", None),           # no request_id: same user + item -> r3
        ("purchase", "c", 60, "r3", "u3", "s3", 5.0),            # after as_of: unknown yet
    ])
    res = build_labels(im, ev, LabelConfig(as_of=h(48), window=timedelta(hours=24)))
    df = res.frame.sort("request_id", "position")
    assert df.select("click", "add_to_cart", "purchase", "grade").rows() == [
        (True, True, True, 3), (False, False, False, 0), (True, True, True, 3), (True, False, False, 1)]
    assert df["revenue"].to_list() == [30.0, 0.0, 12.0, 0.0]
    assert df["label_status"].to_list() == ["matured", "matured", "matured", "pending"]
    assert res.summary["attributed_events"] == {"request_id": 3, "session_or_user": 2}
    # a purchase implies the earlier funnel steps (labels are cumulative), even when they were not logged
    off = build_labels(im, ev, LabelConfig(as_of=h(48), window=timedelta(hours=24), fallback_attribution=False))
    assert off.frame.sort("request_id")["purchase"].to_list() == [True, False, False, False]


def test_pending_rows_carry_conversion_probability_and_weights():
    rows = [(f"m{i}", 0, "a", 0, None, f"s{i}", True) for i in range(10)]  # matured, clicked
    rows += [("p_new", 0, "a", 47, None, "x", True), ("p_old", 0, "a", 30, None, "y", True),
             ("p_buy", 0, "a", 40, None, "z", True)]
    ev = [("purchase", "a", d, f"m{i}", None, f"s{i}", 1.0) for i, d in enumerate([1, 2, 4, 8])]
    ev.append(("purchase", "a", 41, "p_buy", None, "z", 1.0))
    res = build_labels(imps(rows), inters(ev), LabelConfig(as_of=h(48), window=timedelta(hours=24)))
    df = {r["request_id"]: r for r in res.frame.to_dicts()}
    assert res.delay_model.rates[True] == pytest.approx(0.4)
    # p_new: 1 h elapsed, F(1h) = 1/4 -> 0.4 * 0.75 / (1 - 0.4 * 0.25) = 1/3
    assert df["p_new"]["p_conversion_pending"] == pytest.approx(1 / 3)
    assert df["p_new"]["weight"] == pytest.approx(2 / 3)
    # p_old: 18 h elapsed, every matured delay is shorter -> nothing more to come
    assert df["p_old"]["p_conversion_pending"] == 0.0 and df["p_old"]["label_status"] == "pending"
    assert df["p_buy"]["p_conversion_pending"] == 0.0 and df["p_buy"]["weight"] == 1.0
    assert all(df[f"m{i}"]["p_conversion_pending"] == 0.0 and df[f"m{i}"]["weight"] == 1.0 for i in range(10))


def test_delay_model_formula_and_validation():
    m = DelayModel(window_s=100.0, delays_s=np.array([10.0, 20.0, 30.0, 40.0]), rates={True: 0.5, False: 0.0})
    assert m.cdf(np.array([0.0, 10.0, 25.0, 100.0])).tolist() == [0.0, 0.25, 0.5, 1.0]
    p = m.p_pending(np.array([0.0, 25.0, 25.0, 200.0]), np.array([True, True, False, True]))
    assert p.tolist() == pytest.approx([0.5, 0.25 / 0.75, 0.0, 0.0])
    with pytest.raises(ValueError):
        DelayModel(window_s=0.0)
    with pytest.raises(ValueError):
        DelayModel(window_s=10.0, delays_s=np.array([11.0]))


def _synthetic(seed: int, n: int = 20000, days: float = 10.0, window_h: float = 72.0):
    """Impressions uniform over `days`; 30% clicked; a clicked one converts w.p. 0.2 after an exponential delay."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, days * 24, n))
    clicked = rng.random(n) < 0.3
    converts = clicked & (rng.random(n) < 0.2)
    delay = rng.exponential(12.0, n)
    converts &= delay <= window_h
    im = imps([(f"r{i}", 0, f"i{i % 50}", t[i], None, f"s{i}", bool(clicked[i])) for i in range(n)])
    idx = np.flatnonzero(converts)
    ev = inters([("purchase", f"i{i % 50}", t[i] + delay[i], f"r{i}", None, f"s{i}", 1.0) for i in idx])
    return im, ev, t, converts


def test_naive_labels_undercount_and_corrected_ones_do_not():
    im, ev, t, truth = _synthetic(0, n=20000, days=4)
    res = build_labels(im, ev, LabelConfig(as_of=h(4 * 24), window=timedelta(hours=72)))
    df = res.frame.sort("ts")
    pend = (df["label_status"] == "pending").to_numpy()
    true_pending = int(truth[pend].sum())
    naive_pending = int(df["purchase"].to_numpy()[pend].sum())
    corrected_pending = naive_pending + float(df["p_conversion_pending"].to_numpy()[pend].sum())
    assert naive_pending < 0.9 * true_pending             # cut at T, recent impressions look worse than they are
    assert abs(corrected_pending - true_pending) < 0.05 * true_pending
    assert (df["purchase"].to_numpy()[~pend] == truth[~pend]).all()  # matured rows are exact


def test_point_in_time_attributes_never_leak_future_changes():
    catalog = pl.DataFrame({"item_id": ["a", "b"], "price": [10.0, 5.0], "stock": [3, 0],
                            "restricted": [False, False]})
    events = pl.DataFrame({"item_id": ["a", "a", "b", "a"], "ts": [h(2), h(5), h(1), h(100)],
                           "kind": ["price", "stock", "new_item", "price"], "value": [12.0, 0.0, 7.0, 999.0]},
                          schema_overrides={"ts": UTC})
    rows = pl.DataFrame({"item_id": ["a", "a", "a", "b", "b"], "ts": [h(1), h(2), h(6), h(0.5), h(3)]},
                        schema_overrides={"ts": UTC})
    out = attributes_as_of(rows, catalog, events)
    assert out["price_at_ts"].to_list() == [10.0, 12.0, 12.0, 5.0, 5.0]   # the 999 at h100 never appears
    assert out["stock_at_ts"].to_list() == [3, 3, 0, 0, 7]
    assert out["item_id"].to_list() == rows["item_id"].to_list()          # row order kept


def test_labels_use_the_last_change_at_or_before_each_impression():
    im, ev, _, _ = _synthetic(1, n=600, days=3)
    catalog = pl.DataFrame({"item_id": [f"i{k}" for k in range(50)], "price": np.linspace(1, 50, 50),
                            "stock": np.arange(50), "restricted": [False] * 50})
    rng = np.random.default_rng(2)
    past = pl.DataFrame({"item_id": [f"i{k}" for k in rng.integers(0, 50, 300)],
                         "ts": [h(x) for x in rng.uniform(-5, 72, 300)],
                         "kind": rng.choice(["price", "stock"], 300).tolist(), "value": rng.uniform(1, 9, 300)},
                        schema_overrides={"ts": UTC})
    cfg = LabelConfig(as_of=h(200), window=timedelta(hours=24))
    base = build_labels(im, ev, cfg, catalog, past).frame
    # brute force: for every row, the last event of its item at or before the row's ts, else the catalog
    evs = past.sort("ts").to_dicts()
    cat = {r["item_id"]: r for r in catalog.to_dicts()}
    for row in base.to_dicts():
        price, stock = cat[row["item_id"]]["price"], cat[row["item_id"]]["stock"]
        for e in evs:
            if e["item_id"] == row["item_id"] and e["ts"] <= row["ts"]:
                if e["kind"] == "price":
                    price = e["value"]
                else:
                    stock = int(round(e["value"]))
        assert (row["price_at_ts"], row["stock_at_ts"]) == (price, stock)
    # and a price or stock change just after the last impression never reaches any row
    end = im["ts"].max()
    future = pl.DataFrame({"item_id": [f"i{k}" for k in range(50)] * 2, "ts": [end + timedelta(microseconds=1)] * 100,
                           "kind": ["price"] * 50 + ["stock"] * 50, "value": [12345.0] * 50 + [0.0] * 50},
                          schema_overrides={"ts": UTC})
    leaked = build_labels(im, ev, cfg, catalog, pl.concat([past, future])).frame
    assert leaked.select("price_at_ts", "stock_at_ts").equals(base.select("price_at_ts", "stock_at_ts"))


def test_parse_duration():
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("36h") == timedelta(hours=36)
    assert parse_duration("2") == timedelta(days=2)
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_labels_cli(tmp_path):
    from recs.cli.main import app
    from recs.datasets.io import atomic_write_parquet

    im, ev, _, _ = _synthetic(3, n=500, days=2)
    atomic_write_parquet(im, tmp_path / "ds" / "impressions" / "date=2024-01-01" / "part-0.parquet")
    atomic_write_parquet(ev, tmp_path / "ds" / "interactions" / "date=2024-01-01" / "part-0.parquet")
    runner = CliRunner()
    r = runner.invoke(app, ["labels", "--dataset", str(tmp_path / "ds"), "--as-of", "2024-01-03T00:00:00Z",
                            "--attribution-window", "1d", "--out", str(tmp_path / "labels"), "--json"])
    assert r.exit_code == 0, r.output
    out = pl.read_parquet(tmp_path / "labels" / "labels.parquet")
    assert out.height == 500 and {"grade", "label_status", "p_conversion_pending", "weight"} <= set(out.columns)
    bad = runner.invoke(app, ["labels", "--dataset", str(tmp_path / "ds"), "--as-of", "whenever",
                              "--out", str(tmp_path / "l2")])
    assert bad.exit_code == 2 and "whenever" in bad.output


def test_a_click_after_the_cut_is_not_known_yet_unless_the_logs_have_no_click_events():
    im = imps([("r1", 0, "a", 10, "u1", "s1", True), ("r1", 1, "b", 10, "u1", "s1", False)])
    ev = inters([("click", "a", 10.5, "r1", "u1", "s1", None)])               # clicked at 10:30
    cut = LabelConfig(as_of=h(10.1), window=timedelta(hours=24))              # labels cut at 10:06
    assert build_labels(im, ev.filter(pl.col("ts") <= h(10.1)), cut, click_events=True).frame["click"].to_list() \
        == [False, False]
    assert build_labels(im, ev, cut).frame["click"].to_list() == [False, False]
    assert build_labels(im, ev, LabelConfig(as_of=h(11))).frame["click"].to_list() == [True, False]
    no_clicks = inters([("purchase", "z", 1, "r9", "u9", "s9", 1.0)])         # a log without click events
    assert build_labels(im, no_clicks, cut).frame["click"].to_list() == [True, False]   # the flag, as logged


def test_an_item_shown_twice_in_a_request_is_credited_once_at_its_top_position():
    im = imps([("r1", 0, "a", 0, "u1", "s1", False), ("r1", 1, "a", 0, "u1", "s1", False)])
    ev = inters([("click", "a", 0.1, "r1", "u1", "s1", None), ("purchase", "a", 1, "r1", "u1", "s1", 10.0)])
    res = build_labels(im, ev, LabelConfig(as_of=h(48), window=timedelta(hours=24)))
    df = res.frame.sort("position")
    assert df["purchase"].to_list() == [True, False] and df["revenue"].to_list() == [10.0, 0.0]
    assert res.summary["purchases_observed"] == 1 and res.summary["revenue_observed"] == 10.0


def test_the_summary_says_when_no_window_has_closed():
    im = imps([("r1", 0, "a", 0, "u1", "s1", False)])
    res = build_labels(im, inters([("click", "a", 0.1, "r1", "u1", "s1", None)]),
                       LabelConfig(as_of=h(1), window=timedelta(days=30)))
    assert res.summary["delay_model_fitted"] is False and res.summary["matured"] == 0
    assert res.frame["p_conversion_pending"].to_list() == [0.0]
