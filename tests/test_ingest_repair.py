"""Records polars cannot read (a ragged CSV row, a JSON number beyond the float range) are quarantined with their
line and reason, and the rest of the file is ingested: one bad record no longer stops the run."""
from __future__ import annotations

import json

import polars as pl
import pytest

from recs.datasets.adapters.recbole_atomic import ingest_recbole, read_recbole
from recs.datasets.ingest import IngestConfig, StrictViolation, ingest
from recs.datasets.ingest.repair import _undecodable
from recs.datasets.io import read_table

from _ingest_fixtures import IMP_COLS, imp_row, write_csv


def _csv_lines(rows: list[dict]) -> list[str]:
    return [",".join("" if r.get(c) is None else str(r[c]) for c in IMP_COLS) for r in rows]


def test_ragged_csv_rows_are_quarantined_with_their_line_and_the_rest_ingested(tmp_path):
    good = _csv_lines([imp_row(i, request_id=f"r{i}") for i in range(3000)])
    lines = [",".join(IMP_COLS), *good[:1000],
             _csv_lines([imp_row(5000, request_id="r5000")])[0] + ",extra",  # line 1002: 12 fields
             *good[1000:2000],
             "",  # line 2003: a blank line is a row of empty fields, as polars reads it
             '"r9"x,2024-01-01T10:00:00Z,u,s,home,,i9,0,0.5,p0,false',  # line 2004: malformed quoting
             _csv_lines([imp_row(6000, request_id="r6000", surface="tv")])[0],  # line 2005: a bad value
             *good[2000:]]
    src = tmp_path / "a.csv"
    src.write_text("\n".join(lines) + "\n")
    rep = ingest([src], tmp_path / "ds", IngestConfig(table="impressions"))
    f = rep.files[0]
    assert (f.read, f.accepted, f.quarantined, f.duplicates) == (3004, 3000, 4, 0)
    q = pl.read_parquet(rep.quarantine_file).sort("_row")
    assert q.select("_row", "_field").rows() == [(1002, "(line)"), (2003, "request_id"), (2004, "(line)"),
                                                 (2005, "surface")]
    assert q["_reason"][0] == "row has 12 fields, the header 11"
    assert q["_reason"][2].startswith("malformed CSV record")
    assert (q["item_id"][0], q["request_id"][0]) == ("i5000", "r5000")  # the first 11 fields are kept
    assert q["_source_file"].unique().to_list() == [str(src)]
    out = read_table(tmp_path / "ds", "impressions")
    assert sorted(out["item_id"].to_list()) == sorted(f"i{i}" for i in range(3000))
    with pytest.raises(StrictViolation, match=r"a.csv:1002: \(line\): row has 12 fields, the header 11"):
        ingest([src], tmp_path / "ds2", IngestConfig(table="impressions", strict=True))


def test_ragged_csv_row_of_one_file_leaves_the_other_files_alone(tmp_path):
    a = write_csv(tmp_path / "a.csv", [imp_row(i) for i in range(3)])
    b = tmp_path / "b.csv"
    b.write_text(write_csv(tmp_path / "tmp.csv", [imp_row(i) for i in range(3, 6)]).read_text() + "x,,,,,,,,,,,,\n")
    rep = ingest([a, b], tmp_path / "ds", IngestConfig(table="impressions"))
    assert [(f.read, f.accepted, f.quarantined) for f in rep.files] == [(3, 3, 0), (4, 3, 1)]
    assert rep.reasons == {"(line): row has 13 fields, the header 11": 1}
    assert rep.to_dict()["reconciled"] is True


def test_ragged_recbole_line_is_quarantined_and_read_recbole_names_it(tmp_path):
    hdr = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (tmp_path / "toy.inter").write_text(hdr + "1\t10\t4\t881250949\n2\t11\t5\t881250950\tjunk\n3\t12\t3\t881250951\n")
    (tmp_path / "toy.user").write_text("user_id:token\tage:token\n1\t24\n3\t30\n")
    reps = ingest_recbole([tmp_path / "toy.inter"], tmp_path / "ds", IngestConfig(table="interactions",
                                                                                    format="recbole"))
    assert [(r.table, r.totals["accepted"], r.totals["quarantined"]) for r in reps] == [
        ("interactions", 2, 1), ("users", 2, 0)]
    q = pl.read_parquet(reps[0].quarantine_file)
    assert q.select("_row", "_field", "_reason").rows() == [(3, "(line)", "row has 5 fields, the header 4")]
    with pytest.raises(Exception, match=r"toy.inter:3: \(line\): row has 5 fields"):
        read_recbole(tmp_path / "toy.inter")


def _jsonl(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_json_numbers_polars_cannot_read_are_quarantined_with_line_and_key(tmp_path):
    row = json.dumps(imp_row(1))
    lines = [json.dumps(imp_row(0)),
             row.replace('"propensity": 0.5', '"propensity": 1e400'),  # line 2: beyond the float range
             json.dumps(imp_row(2)),
             row.replace('"propensity": 0.5', '"propensity": NaN').replace('"i1"', '"i3"'),  # line 4
             row.replace('"query": ""', '"query": {"deep": [1, -1E+999]}').replace('"i1"', '"i4"'),  # line 5
             row.replace('"i1"', '"i5"') + ' {"b": 1}',  # line 6: not JSON
             json.dumps(imp_row(6, surface="tv"))]  # line 7: a bad value
    src = _jsonl(tmp_path / "a.jsonl", lines)
    rep = ingest([src], tmp_path / "ds", IngestConfig(table="impressions"))
    f = rep.files[0]
    assert (f.read, f.accepted, f.quarantined) == (7, 2, 5)
    q = pl.read_parquet(rep.quarantine_file).sort("_row")
    assert q.select("_row", "_field").rows() == [(2, "propensity"), (4, "propensity"), (5, "query"), (6, "(line)"),
                                                 (7, "surface")]
    assert q["_reason"].to_list()[:2] == ["invalid JSON: number beyond the float range",
                                          "invalid JSON: NaN and Infinity are not JSON numbers"]
    assert (q["propensity"][0], q["item_id"][0], q["propensity"][1]) == ("1e400", "i1", "NaN")  # record kept
    assert sorted(read_table(tmp_path / "ds", "impressions")["item_id"]) == ["i0", "i2"]
    with pytest.raises(StrictViolation, match=r"a.jsonl:2: propensity: invalid JSON: number beyond the float"):
        ingest([src], tmp_path / "ds2", IngestConfig(table="impressions", strict=True))


def test_lines_only_polars_rejects_are_found_by_halving():
    """The last guard of the JSON repair reader: whatever polars' decoder refuses is named, line by line."""
    dtype = pl.Struct({"a": pl.Utf8})
    texts = ['{"a": 1}'] * 37 + ['{"a": 1e400}'] + ['{"a": "x"}'] * 20 + ['{"b": 1e999}']
    bad = _undecodable(texts, dtype)
    assert sorted(bad) == [37, 58]
    assert all("InvalidNumber" in m or "json" in m.lower() for m in bad.values())
    assert _undecodable(['{"a": 2}'], dtype) == {}
