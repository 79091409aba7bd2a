"""recs ingest: every kind of malformed row lands in quarantine with the right field and reason; counts reconcile."""
from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from recs.datasets.ingest import IngestConfig, IngestError, StrictViolation, ingest
from recs.datasets.io import read_table

from _ingest_fixtures import imp_row, write_csv, write_jsonl, write_parquet

BAD_CASES = [
    # (override, field, reason fragment)
    ({"propensity": "0"}, "propensity", "must be > 0"),
    ({"propensity": "1.5"}, "propensity", "must be <= 1"),
    ({"propensity": "abc"}, "propensity", "expected a number"),
    ({"propensity": "nan"}, "propensity", "must be a finite number"),
    ({"propensity": "inf"}, "propensity", "must be a finite number"),
    ({"position": "-1"}, "position", "must be >= 0"),
    ({"position": "2.5"}, "position", "expected an integer"),
    ({"surface": "web"}, "surface", "must be one of: home, search"),
    ({"clicked": "maybe"}, "clicked", "expected a boolean"),
    ({"session_id": None}, "session_id", "required value is missing"),
    ({"item_id": None}, "item_id", "required value is missing"),
    ({"ts": "not a time"}, "ts", "expected a timestamp"),
    ({"ts": "2024-02-30T10:00:00Z"}, "ts", "expected a timestamp"),
    ({"ts": None}, "ts", "required value is missing"),
]


@pytest.mark.parametrize("maker,suffix", [(write_csv, ".csv"), (write_jsonl, ".jsonl"), (write_parquet, ".parquet")])
def test_each_bad_row_is_quarantined_with_field_and_reason(tmp_path, maker, suffix):
    good = [imp_row(i) for i in range(6)]
    bad = [imp_row(100 + j, **over) for j, (over, _, _) in enumerate(BAD_CASES)]
    src = maker(tmp_path / f"in{suffix}", good + bad)
    rep = ingest([src], tmp_path / "ds", IngestConfig(table="impressions"))
    f = rep.files[0]
    assert (f.read, f.accepted, f.quarantined, f.duplicates) == (len(good) + len(bad), len(good), len(bad), 0)
    q = pl.read_parquet(rep.quarantine_file).sort("_row")
    assert q.height == len(bad)
    first_line = 2 if suffix == ".csv" else 1
    for k, (over, field, reason) in enumerate(BAD_CASES):
        r = q.row(k, named=True)
        assert r["_row"] == first_line + len(good) + k, r
        assert r["_field"] == field, (over, r)
        assert reason in r["_reason"], (over, r)
        assert r["_source_file"] == str(src)
        assert r["item_id"] == over.get("item_id", f"i{100 + k}")  # raw values kept as text
    out = read_table(tmp_path / "ds", "impressions")
    assert sorted(out["item_id"].to_list()) == sorted(r["item_id"] for r in good)
    assert out.schema["ts"] == pl.Datetime("us", "UTC")


def test_timestamps_with_time_zones_and_epochs(tmp_path):
    stamps = ["2024-01-01T12:00:00+02:00", "2024-01-01T10:00:00Z", "2024-01-01 10:00:00.000000+00:00",
              "2024-01-01T05:00:00-05:00", "1704103200", "1704103200000", "2024-01-01T10:00:00"]
    rows = [imp_row(i, ts=t, position=i) for i, t in enumerate(stamps)]
    rep = ingest([write_csv(tmp_path / "a.csv", rows)], tmp_path / "ds", IngestConfig(table="impressions"))
    assert rep.files[0].accepted == len(stamps)
    ts = read_table(tmp_path / "ds", "impressions")["ts"].unique().to_list()
    assert len(ts) == 1 and ts[0].isoformat() == "2024-01-01T10:00:00+00:00"


COMPACT_AND_EPOCHS = [
    # (ts text, accepted as (UTC ISO) or None, reason fragment when quarantined)
    ("20240301", "2024-03-01T00:00:00+00:00", None),  # was epoch seconds: 1970-08-23
    ("20240301100000", "2024-03-01T10:00:00+00:00", None),  # was epoch ms: 2611-05-23
    (" 20240301 ", "2024-03-01T00:00:00+00:00", None),
    ("1709287200", "2024-03-01T10:00:00+00:00", None),  # epoch s, ms, us within the range
    ("1709287200000", "2024-03-01T10:00:00+00:00", None),
    ("1709287200000000", "2024-03-01T10:00:00+00:00", None),
    ("881250949", "1997-12-04T15:55:49+00:00", None),  # MovieLens 100k times are 1997-98
    ("20241301", None, "not a valid YYYYMMDD"),  # no month 13; never read as an epoch number
    ("20240301250000", None, "not a valid YYYYMMDD"),
    ("12345678", None, "not a valid YYYYMMDD"),
    ("99999999999", None, "epoch number outside 1990-01-01 .. 2100-01-01"),  # seconds: year 5138
    ("1709287200000000000", None, "epoch number outside"),  # nanoseconds read as us: year 56,000
    ("-5", None, "epoch number outside"),
    ("0", None, "epoch number outside"),
]


def test_compact_dates_and_implausible_epoch_numbers(tmp_path):
    rows = [imp_row(i, ts=t, request_id=f"r{i}") for i, (t, _, _) in enumerate(COMPACT_AND_EPOCHS)]
    rep = ingest([write_csv(tmp_path / "a.csv", rows)], tmp_path / "ds", IngestConfig(table="impressions"))
    out = {r["item_id"]: r["ts"].isoformat() for r in read_table(tmp_path / "ds", "impressions").to_dicts()}
    q = {r["item_id"]: r for r in pl.read_parquet(rep.quarantine_file).to_dicts()}
    for i, (text, ok, why) in enumerate(COMPACT_AND_EPOCHS):
        if ok:
            assert out.get(f"i{i}") == ok, text
        else:
            assert f"i{i}" not in out, text
            assert (q[f"i{i}"]["_field"], q[f"i{i}"]["ts"]) == ("ts", text), text  # field and raw value kept
            assert why in q[f"i{i}"]["_reason"], (text, q[f"i{i}"]["_reason"])
    assert rep.files[0].quarantined == len(q) == sum(1 for _, ok, _ in COMPACT_AND_EPOCHS if not ok)


def test_compact_dates_take_the_assumed_zone_and_epoch_range_is_configurable(tmp_path):
    rows = [imp_row(0, ts="20240701120000"), imp_row(1, ts="1709287200"), imp_row(2, ts="1719835200")]
    src = write_csv(tmp_path / "a.csv", rows)
    cfg = IngestConfig(table="impressions", assume_timezone="Europe/Berlin", epoch_range=("2024-06-01", "2025-01-01"))
    rep = ingest([src], tmp_path / "ds", cfg)
    out = read_table(tmp_path / "ds", "impressions").sort("item_id")
    assert [t.isoformat() for t in out["ts"]] == ["2024-07-01T10:00:00+00:00", "2024-07-01T12:00:00+00:00"]
    assert rep.reasons == {"ts: epoch number outside 2024-06-01 .. 2025-01-01 as seconds, ms and us (epoch_range)": 1}
    rep = ingest([src], tmp_path / "ds2", IngestConfig(table="impressions", assume_timezone=None))
    assert rep.reasons == {"ts: timestamp has no time zone (pass --assume-timezone)": 1}  # compact: no zone


def test_parquet_epoch_numbers_outside_the_range_are_quarantined(tmp_path):
    """Numbers in a numeric Parquet column are epoch numbers only (never compact dates)."""
    rows = [imp_row(i) for i in range(3)]
    df = pl.DataFrame(rows, schema={c: pl.Utf8 for c in rows[0]}).with_columns(
        pl.Series("ts", [1709287200, 20240301, 20240301100000]))
    df.write_parquet(tmp_path / "a.parquet")
    rep = ingest([tmp_path / "a.parquet"], tmp_path / "ds", IngestConfig(table="impressions"))
    assert (rep.files[0].accepted, rep.files[0].quarantined) == (1, 2)
    q = pl.read_parquet(rep.quarantine_file).sort("_row")
    assert q["ts"].to_list() == ["20240301", "20240301100000"]
    assert all(r.startswith("epoch number outside") for r in q["_reason"])


def test_naive_timestamps_rejected_without_assumed_zone(tmp_path):
    rows = [imp_row(0, ts="2024-01-01T10:00:00"), imp_row(1, ts="2024-01-01T10:00:00Z")]
    rep = ingest([write_csv(tmp_path / "a.csv", rows)], tmp_path / "ds",
                 IngestConfig(table="impressions", assume_timezone=None))
    q = pl.read_parquet(rep.quarantine_file)
    assert q["_reason"].to_list() == ["timestamp has no time zone (pass --assume-timezone)"]


def test_assumed_zone_converts_to_utc(tmp_path):
    rows = [imp_row(0, ts="2024-07-01 12:00:00")]
    ingest([write_csv(tmp_path / "a.csv", rows)], tmp_path / "ds",
           IngestConfig(table="impressions", assume_timezone="Europe/Berlin"))
    assert read_table(tmp_path / "ds", "impressions")["ts"][0].isoformat() == "2024-07-01T10:00:00+00:00"


@pytest.mark.parametrize("blank", ["", None])
def test_broken_json_lines_are_quarantined_with_line_numbers(tmp_path, blank):
    p = tmp_path / "a.jsonl"
    lines = [json.dumps(imp_row(0)), blank, "{not json", json.dumps(imp_row(1)), "[1, 2]",
             json.dumps(imp_row(2, surface="x"))]
    lines = [ln for ln in lines if ln is not None]
    p.write_text("\n".join(lines) + "\n")
    rep = ingest([p], tmp_path / "ds", IngestConfig(table="impressions"))
    f = rep.files[0]
    assert (f.read, f.accepted, f.quarantined) == (5, 2, 3)
    q = pl.read_parquet(rep.quarantine_file).sort("_row")
    shift = 0 if blank is None else 1
    assert q["_row"].to_list() == [2 + shift, 4 + shift, 5 + shift]
    assert q["_field"].to_list() == ["(line)", "(line)", "surface"]
    q = q.filter(pl.col("_field") == "(line)")
    assert all(r.startswith("invalid JSON") for r in q["_reason"])


def test_duplicates_within_run_and_idempotent_reingest(tmp_path):
    rows = [imp_row(i) for i in range(9)]
    a = write_csv(tmp_path / "a.csv", rows + [imp_row(0, item_id="other")])  # same (request_id, position) as row 0
    b = write_jsonl(tmp_path / "b.jsonl", rows[:4])
    rep = ingest([a, b], tmp_path / "ds", IngestConfig(table="impressions"))
    assert [(f.accepted, f.duplicates) for f in rep.files] == [(9, 1), (0, 4)]
    before = read_table(tmp_path / "ds", "impressions").sort("request_id", "position")
    assert before.filter(pl.col("request_id") == "r0", pl.col("position") == 0)["item_id"].to_list() == ["i0"]
    rep2 = ingest([a, b], tmp_path / "ds", IngestConfig(table="impressions"))
    assert rep2.totals == {"read": 14, "accepted": 0, "quarantined": 0, "duplicates": 14}
    assert read_table(tmp_path / "ds", "impressions").sort("request_id", "position").equals(before)


def test_late_rows_land_in_their_own_partition(tmp_path):
    ingest([write_csv(tmp_path / "a.csv", [imp_row(0, ts="2024-03-05T10:00:00Z")])], tmp_path / "ds",
           IngestConfig(table="impressions"))
    late = [imp_row(3, ts="2024-03-01T23:59:59+00:00"), imp_row(4, ts="2024-03-05T00:30:00+01:00")]
    rep = ingest([write_csv(tmp_path / "b.csv", late)], tmp_path / "ds", IngestConfig(table="impressions"))
    assert rep.partitions == ["date=2024-03-01", "date=2024-03-04"]
    days = sorted(p.name for p in (tmp_path / "ds" / "impressions").iterdir())
    assert days == ["date=2024-03-01", "date=2024-03-04", "date=2024-03-05"]
    part = pl.read_parquet(next((tmp_path / "ds" / "impressions" / "date=2024-03-04").glob("*.parquet")))
    assert part["item_id"].to_list() == ["i4"]


def test_report_file_and_identity(tmp_path):
    rows = [imp_row(i) for i in range(5)] + [imp_row(7, propensity="2")]
    rep = ingest([write_csv(tmp_path / "a.csv", rows)], tmp_path / "ds", IngestConfig(table="impressions"))
    saved = json.loads((tmp_path / "ds" / "_ingest" / f"{rep.run_id}.json").read_text())
    assert saved["reconciled"] is True
    f = saved["files"][0]
    assert f["read"] == f["accepted"] + f["quarantined"] + f["duplicates"] == 6
    assert saved["reasons"] == {"propensity: must be <= 1": 1}


def test_strict_stops_at_first_bad_row_and_writes_nothing(tmp_path):
    rows = [imp_row(i) for i in range(4)] + [imp_row(9, surface="tv"), imp_row(10, propensity="0")]
    src = write_csv(tmp_path / "a.csv", rows)
    with pytest.raises(StrictViolation) as e:
        ingest([src], tmp_path / "ds", IngestConfig(table="impressions", strict=True))
    assert str(e.value) == f"{src}:6: surface: must be one of: home, search"
    assert e.value.exit_code == 1
    assert not any(p for p in (tmp_path / "ds").iterdir())


def test_compressed_inputs_and_globs(tmp_path):
    zstd = pytest.importorskip("zstandard")
    rows = [imp_row(i) for i in range(6)]
    (tmp_path / "in").mkdir()
    src = write_jsonl(tmp_path / "a.jsonl", rows[:3])
    (tmp_path / "in" / "a.jsonl.gz").write_bytes(gzip.compress(src.read_bytes()))
    csv_src = write_csv(tmp_path / "b.csv", rows[3:])
    (tmp_path / "in" / "b.csv.zst").write_bytes(zstd.ZstdCompressor().compress(csv_src.read_bytes()))
    rep = ingest([str(tmp_path / "in" / "*")], tmp_path / "ds", IngestConfig(table="impressions"))
    assert [(f.compression, f.accepted) for f in rep.files] == [("gzip", 3), ("zstd", 3)]
    assert rep.files[1].kind == "csv"


@pytest.mark.parametrize("case", ["missing", "glob", "truncated_gz", "truncated_zst", "missing_column", "binary",
                                  "bad_parquet"])
def test_unreadable_inputs_are_one_line_errors_naming_the_file(tmp_path, case):
    good = write_csv(tmp_path / "good.csv", [imp_row(i) for i in range(3)])
    data = good.read_bytes()
    if case == "missing":
        path = tmp_path / "nope.csv"
    elif case == "glob":
        path = tmp_path / "none-*.csv"
    elif case == "truncated_gz":
        path = tmp_path / "t.csv.gz"
        path.write_bytes(gzip.compress(data * 50)[:-30])
    elif case == "truncated_zst":
        zstd = pytest.importorskip("zstandard")
        path = tmp_path / "t.csv.zst"
        path.write_bytes(zstd.ZstdCompressor().compress(data * 50)[:-10])
    elif case == "missing_column":
        path = write_csv(tmp_path / "m.csv", [imp_row(0)], cols=[c for c in imp_row(0) if c != "propensity"])
    elif case == "binary":
        path = tmp_path / "b.csv"
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    else:
        path = tmp_path / "b.parquet"
        path.write_bytes(b"PAR1" + b"garbage" * 10)
    with pytest.raises(IngestError) as e:
        ingest([good, path], tmp_path / "ds", IngestConfig(table="impressions"))
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert e.value.exit_code == 2
    assert not (tmp_path / "ds" / "impressions").exists()  # nothing written, good file included


def test_interrupted_commit_leaves_previous_dataset_intact(tmp_path, monkeypatch):
    ingest([write_csv(tmp_path / "a.csv", [imp_row(i) for i in range(6)])], tmp_path / "ds",
           IngestConfig(table="impressions"))
    before = read_table(tmp_path / "ds", "impressions").sort("request_id", "position")
    import recs.datasets.ingest.writer as writer

    real = writer.os.replace
    calls = {"n": 0}

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # after moving the first new part into the next version, before the swap
            raise KeyboardInterrupt("killed")
        return real(src, dst)

    monkeypatch.setattr(writer.os, "replace", flaky)
    more = [imp_row(i, ts=f"2024-02-0{1 + i % 3}T00:00:00Z") for i in range(30, 36)]
    with pytest.raises(KeyboardInterrupt):
        ingest([write_csv(tmp_path / "b.csv", more)], tmp_path / "ds", IngestConfig(table="impressions"))
    monkeypatch.setattr(writer.os, "replace", real)
    assert read_table(tmp_path / "ds", "impressions").sort("request_id", "position").equals(before)
    assert not list((tmp_path / "ds").glob(".impressions*"))


def test_unpartitioned_table_is_a_single_file(tmp_path):
    rows = [{"item_id": "a", "category": "c", "subcategory": "s", "seller_id": "x", "brand": "b", "title": "t",
             "price": "9.5", "stock": "3", "restricted": "no", "created_at": "2024-01-01"},
            {"item_id": "b", "category": "c", "subcategory": "s", "seller_id": "x", "brand": "b", "title": "t",
             "price": "-1", "stock": "3", "restricted": "no", "created_at": "2024-01-01"}]
    p = write_jsonl(tmp_path / "cat.jsonl", rows)
    rep = ingest([p], tmp_path / "ds", IngestConfig(table="catalog"))
    assert (tmp_path / "ds" / "catalog.parquet").is_file()
    assert rep.reasons == {"price: must be > 0": 1}
    rows2 = [dict(rows[0], item_id="c")]
    ingest([write_jsonl(tmp_path / "cat2.jsonl", rows2 + rows[:1])], tmp_path / "ds", IngestConfig(table="catalog"))
    assert sorted(read_table(tmp_path / "ds", "catalog")["item_id"].to_list()) == ["a", "c"]


@pytest.mark.parametrize("tail", ["", "\n", "\n   ", "\n\n"])
def test_jsonl_read_count_with_or_without_final_newline(tmp_path, tail):
    p = tmp_path / "a.jsonl"
    p.write_text("\n".join(json.dumps(imp_row(i)) for i in range(4)) + tail)
    rep = ingest([p], tmp_path / "ds", IngestConfig(table="impressions"))
    assert (rep.files[0].read, rep.files[0].accepted) == (4, 4)


def test_jsonl_blank_lines_keep_line_numbers_in_quarantine_and_strict(tmp_path):
    p = tmp_path / "a.jsonl"
    lines = [json.dumps(imp_row(0)), "", "  ", json.dumps(imp_row(1, surface="tv")), json.dumps(imp_row(2))]
    p.write_text("\n".join(lines) + "\n")
    rep = ingest([p], tmp_path / "ds", IngestConfig(table="impressions"))
    assert (rep.files[0].read, rep.files[0].accepted, rep.files[0].quarantined) == (3, 2, 1)
    assert pl.read_parquet(rep.quarantine_file)["_row"].to_list() == [4]
    with pytest.raises(StrictViolation, match=r"a.jsonl:4: surface: must be one of"):
        ingest([p], tmp_path / "ds2", IngestConfig(table="impressions", strict=True))


@pytest.mark.parametrize("kwargs, field", [
    ({"run_id": "../escape"}, "run_id"),
    ({"obd_request_grouping": "nope"}, "obd_request_grouping"),
    ({"interaction_kind": "view"}, "interaction_kind"),
    ({"max_memory": 1000}, "max-memory"),
    ({"epoch_range": ("1970-01-01", "2100-01-01")}, "epoch_range"),  # 8-digit numbers would be plausible epochs
    ({"epoch_range": ("2000-01-01", "2300-01-01")}, "epoch_range"),  # so would 14-digit ones (as ms)
    ({"epoch_range": ("2100-01-01", "2000-01-01")}, "epoch_range"),
    ({"epoch_range": ("yesterday", "2100-01-01")}, "epoch_range"),
])
def test_bad_config_is_a_one_line_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        IngestConfig(table="interactions", **kwargs)


def test_a_write_failure_is_not_reported_as_unreadable_input(tmp_path, monkeypatch):
    """A full disk while staging parts names the part being written, not the input file, and leaves no dataset."""
    src = write_csv(tmp_path / "a.csv", [imp_row(i) for i in range(30)])
    real = pl.DataFrame.write_parquet

    def failing(self, file, *a, **k):
        if "part-" in str(file):
            raise OSError(28, "No space left on device")
        return real(self, file, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing)
    with pytest.raises(IngestError, match="cannot write staged part") as e:
        ingest([src], tmp_path / "ds", IngestConfig(table="impressions"))
    assert "unreadable" not in str(e.value) and "a.csv" not in str(e.value)
    assert not (tmp_path / "ds" / "impressions").exists()
