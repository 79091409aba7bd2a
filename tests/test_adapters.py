"""Adapters: Open Bandit Dataset CSV, RecBole atomic files, anonymous session logs."""
from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from recs.datasets.adapters.obd import read_obd_csv
from recs.datasets.adapters.recbole_atomic import NOT_ATOMIC, ingest_recbole, read_recbole
from recs.datasets.adapters.sessions import read_sessions
from recs.datasets.ingest import IngestConfig, IngestError, ingest
from recs.datasets.io import read_table
from recs.datasets.schemas import validate

from _obd_sample import obd_csv

OBD_HEADER = (",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,user_feature_2,"
              "user_feature_3,user-item_affinity_0,user-item_affinity_1")
OBD_ROWS = [
    "0,2019-11-24 00:00:34.762830+00:00,14,3,0,0.0125,81ce,03a5,c2e4,f975,0.0,0.0",
    "1,2019-11-24 00:00:53.965051+00:00,7,1,1,0.0125,81ce,03a5,2723,c39b,0.0,1.0",
    "2,2019-11-24 00:01:02.000000+00:00,79,2,0,0.0125,81ce,03a5,2723,c39b,0.0,0.0",
]


def _obd(tmp_path, rows=OBD_ROWS, policy="random"):
    d = tmp_path / "obd" / policy / "all"
    d.mkdir(parents=True)
    p = d / "all.csv"
    p.write_text("\n".join([OBD_HEADER, *rows]) + "\n")
    return p


def test_obd_csv_to_canonical_impressions(tmp_path):
    df = read_obd_csv(_obd(tmp_path))
    validate("impressions", df)
    assert df["position"].to_list() == [2, 0, 1]  # 1-based -> 0-based
    assert df["clicked"].to_list() == [False, True, False]
    assert df["propensity"].to_list() == [0.0125] * 3
    assert df["request_id"].to_list() == ["obd-random-all-0", "obd-random-all-1", "obd-random-all-2"]  # one each
    assert df["policy_id"].unique().to_list() == ["obd:random"]
    assert df["user_id"].null_count() == 3 and df["surface"].unique().to_list() == ["home"]
    assert df["ts"][1].isoformat() == "2019-11-24T00:00:53.965051+00:00"


def test_obd_bad_rows_quarantined_by_ingest(tmp_path):
    rows = OBD_ROWS + ["3,2019-11-24 00:02:00+00:00,5,0,0,0.0125,a,b,c,d,0,0",    # position 0 -> -1
                       "4,2019-11-24 00:02:00+00:00,5,1,0,0,a,b,c,d,0,0",          # propensity 0
                       "5,2019-11-24 00:02:00+00:00,5,x,0,0.5,a,b,c,d,0,0"]        # position not a number
    rep = ingest([_obd(tmp_path, rows)], tmp_path / "ds", IngestConfig(table="impressions", format="obd"))
    f = rep.files[0]
    assert (f.read, f.accepted, f.quarantined) == (6, 3, 3)
    q = pl.read_parquet(rep.quarantine_file).sort("_row")
    assert q.select("_row", "_field").rows() == [(5, "position"), (6, "propensity"), (7, "position")]
    assert q["position"].to_list()[2] == "x"  # raw value kept
    with pytest.raises(IngestError, match=r"all.csv:5: position: must be >= 0"):
        read_obd_csv(tmp_path / "obd" / "random" / "all" / "all.csv")


def test_obd_policies_with_the_same_file_name_keep_all_their_rows(tmp_path):
    """`random/all/all.csv` and `bts/all/all.csv`: same stem, same row indexes, different events."""
    files = [_obd(tmp_path, policy="random"), _obd(tmp_path, policy="bts")]
    rep = ingest(files, tmp_path / "ds", IngestConfig(table="impressions", format="obd"))
    assert [(f.accepted, f.duplicates) for f in rep.files] == [(3, 0), (3, 0)]
    out = read_table(tmp_path / "ds", "impressions")
    assert out.height == 6 and out["request_id"].n_unique() == 6
    assert out.group_by("policy_id").len().sort("policy_id").rows() == [("obd:bts", 3), ("obd:random", 3)]
    assert sorted(out.filter(pl.col("policy_id") == "obd:bts")["request_id"]) == [f"obd-bts-all-{i}" for i in range(3)]
    by_time = IngestConfig(table="impressions", format="obd", obd_request_grouping="timestamp")
    assert ingest(files, tmp_path / "ds2", by_time).totals["accepted"] == 6


def test_obd_missing_column_is_an_error(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text(",timestamp,item_id,position,click\n0,2019-11-24 00:00:00+00:00,1,1,0\n")
    with pytest.raises(IngestError, match="missing column.*propensity_score"):
        read_obd_csv(p)


@pytest.fixture(scope="module", params=["random", "bts"])
def obd_sample(request):
    """The real OBD sample of each behaviour policy (fetched once from the obp wheel; skips with the reason)."""
    path, why = obd_csv(request.param)
    if path is None:
        pytest.skip(why)
    return request.param, path


def test_obd_real_sample_ingests_every_row(tmp_path, obd_sample):
    policy, path = obd_sample
    raw = pl.read_csv(path)
    rep = ingest([path], tmp_path / "ds", IngestConfig(table="impressions", format="obd"))
    f = rep.files[0]
    assert raw.height == 10_000
    assert (f.read, f.accepted, f.quarantined, f.duplicates) == (10_000, 10_000, 0, 0)
    out = read_table(tmp_path / "ds", "impressions").sort("request_id")
    assert sorted(out["position"].unique().to_list()) == [0, 1, 2]  # OBD's 1..3
    assert out["item_id"].n_unique() == raw["item_id"].n_unique() == 80
    assert int(out["clicked"].sum()) == int(raw["click"].sum())
    assert out["propensity"].sort().to_list() == raw["propensity_score"].sort().to_list()
    assert out["policy_id"].unique().to_list() == [f"obd:{policy}"]
    assert out["request_id"].n_unique() == raw.height  # each row its own request
    again = ingest([path], tmp_path / "ds", IngestConfig(table="impressions", format="obd"))
    assert again.totals["duplicates"] == 10_000


def test_recbole_small_hand_written(tmp_path):
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                        "1\t10\t4\t881250949\n2\t11\t5\t881250950\n2\t11\t5\t881250950\n")
    (tmp_path / "toy.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                       "10\tToy Story\t1995\tAnimation Comedy\n11\tHeat\t\tAction\n")
    (tmp_path / "toy.user").write_text("user_id:token\tage:token\n1\t24\n2\t53\n")
    reps = ingest_recbole([tmp_path / "toy.inter"], tmp_path / "ds", IngestConfig(table="interactions",
                                                                                    format="recbole"))
    assert [(r.table, r.totals["accepted"], r.totals["duplicates"]) for r in reps] == [
        ("interactions", 2, 1), ("catalog", 2, 0), ("users", 2, 0)]
    inter = read_table(tmp_path / "ds", "interactions").sort("user_id")
    assert inter["event_id"].to_list() == ["toy:1:10:881250949", "toy:2:11:881250950"]
    assert inter["value"].to_list() == [4.0, 5.0]
    cat = read_table(tmp_path / "ds", "catalog").sort("item_id")
    assert cat["category"].to_list() == ["Animation", "Action"]
    assert cat["created_at"].dt.year().to_list() == [1995, 1970]
    users = read_table(tmp_path / "ds", "users").sort("user_id")
    assert users["created_at"][0].isoformat() == "1997-12-04T15:55:49+00:00"


def test_recbole_compressed_files_are_ingested_and_unknown_files_reported(tmp_path):
    hdr = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (tmp_path / "a.inter").write_text(hdr + "1\t10\t4\t881250949\n")
    with gzip.open(tmp_path / "b.inter.gz", "wt") as fh:
        fh.write(hdr + "2\t20\t3\t891717742\n3\t30\t5\t878887116\n")
    with gzip.open(tmp_path / "b.item.gz", "wt") as fh:  # the sibling of b.inter.gz
        fh.write("item_id:token\tmovie_title:token_seq\n20\tHeat\n30\tFargo\n")
    (tmp_path / "notes.txt").write_text("not an atomic file\n")
    reps = ingest_recbole([tmp_path], tmp_path / "ds", IngestConfig(table="interactions", format="recbole"))
    assert [(f.file.split("/")[-1], f.accepted) for f in reps[0].files] == [("a.inter", 1), ("b.inter.gz", 2)]
    assert read_table(tmp_path / "ds", "interactions")["user_id"].sort().to_list() == ["1", "2", "3"]
    assert [(r.table, r.totals["accepted"]) for r in reps[1:]] == [("catalog", 2)]
    assert reps[0].skipped_files == {str(tmp_path / "notes.txt"): NOT_ATOMIC}
    saved = json.loads((tmp_path / "ds" / "_ingest" / f"{reps[0].run_id}.json").read_text())
    assert saved["skipped_files"] == {str(tmp_path / "notes.txt"): NOT_ATOMIC}
    assert read_recbole(tmp_path / "b.inter.gz").height == 2


def test_recbole_missing_key_inputs_are_reported_under_the_source_field(tmp_path):
    """event_id is derived from user_id, item_id and timestamp: a row lacking one names it, not event_id."""
    hdr = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    p = tmp_path / "a.inter"
    p.write_text(hdr + "1\t10\t4\t\n\t20\t3\t891717742\n3\t\t5\t891717742\n3\t30\t5\tabc\n4\t40\t5\t891717742\n")
    rep = ingest([p], tmp_path / "ds", IngestConfig(table="interactions", format="recbole"))
    assert (rep.totals["accepted"], rep.totals["quarantined"]) == (1, 4)
    q = pl.read_parquet(rep.quarantine_file).sort("_row")
    assert q.select("_row", "_field", "_reason").rows() == [
        (2, "timestamp:float", "required value is missing"), (3, "user_id:token", "required value is missing"),
        (4, "item_id:token", "required value is missing"),
        (5, "ts", "expected a timestamp (ISO 8601 with offset, YYYYMMDD[HHMMSS], or epoch seconds/ms/us)")]
    assert "event_id: required value is missing" not in rep.reasons
    with pytest.raises(IngestError, match=r"a.inter:2: timestamp:float: required value is missing"):
        read_recbole(p)


def test_sessions_missing_key_inputs_are_reported_under_the_source_field(tmp_path):
    p = tmp_path / "views.csv"
    p.write_text("session_id;user_id;item_id;timeframe;eventdate\n;NA;5;100;2016-05-09\n1;NA;5;;2016-05-09\n")
    rep = ingest([p], tmp_path / "ds", IngestConfig(table="interactions", format="sessions"))
    q = pl.read_parquet(rep.quarantine_file).sort("_row")
    assert q.select("_row", "_field").rows() == [(2, "session_id"), (3, "timeframe")]


def test_recbole_bad_header(tmp_path):
    p = tmp_path / "x.inter"
    p.write_text("user_id\titem_id\n1\t2\n")
    with pytest.raises(IngestError, match="not `name:type`"):
        read_recbole(p)


def test_recbole_ml100k(shared_data, tmp_path):
    folder = shared_data / "ml-100k"
    reps = ingest_recbole([folder / "ml-100k.inter"], tmp_path / "ds",
                          IngestConfig(table="interactions", format="recbole"))
    totals = {r.table: r.totals for r in reps}
    assert totals["interactions"] == {"read": 100000, "accepted": 100000, "quarantined": 0, "duplicates": 0}
    assert totals["catalog"]["accepted"] == 1682 and totals["users"]["accepted"] == 943
    inter = read_table(tmp_path / "ds", "interactions")
    assert inter["user_id"].n_unique() == 943 and inter["item_id"].n_unique() == 1682
    again = ingest_recbole([folder], tmp_path / "ds", IngestConfig(table="interactions", format="recbole"))
    assert again[0].totals["duplicates"] == 100000


def test_sessions_hand_written(tmp_path):
    p = tmp_path / "views.csv"
    p.write_text("session_id;user_id;item_id;timeframe;eventdate\n1;NA;81766;526309;2016-05-09\n"
                 "1;NA;31331;1031018;2016-05-09\n2;77;5;10;2016-05-10\n3;NA;6;x;2016-05-10\n")
    rep = ingest([p], tmp_path / "ds", IngestConfig(table="interactions", format="sessions"))
    assert (rep.totals["accepted"], rep.totals["quarantined"]) == (3, 1)
    df = read_table(tmp_path / "ds", "interactions").sort("event_id")
    assert df["user_id"].to_list() == [None, None, "77"]
    assert df["ts"][0].isoformat() == "2016-05-09T00:17:11.018000+00:00"
    assert set(df["kind"]) == {"click"}
    q = pl.read_parquet(rep.quarantine_file)
    assert q["_field"].to_list() == ["ts"] and q["_row"].to_list() == [5]


def test_sessions_diginetica_sample(shared_data):
    df = read_sessions(shared_data / "diginetica-sample" / "sample_train-item-views.csv")
    assert df.height == 12391  # header + 12,391 views; the last line has no newline
    assert df["user_id"].null_count() == 7681  # "NA" users are anonymous; the rest are logged in
    assert df["event_id"].n_unique() == df.height
    validate("interactions", df)
