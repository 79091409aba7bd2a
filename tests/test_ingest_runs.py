"""Runs of `recs ingest`: a run id is used once, the quarantine is in place before the table, ignored JSON keys."""
from __future__ import annotations

import json
import pathlib

import polars as pl
import pytest

import recs.datasets.ingest.pipeline as pipeline
from recs.datasets.ingest import IngestConfig, IngestError, ingest
from recs.datasets.ingest.writer import commit_parts
from recs.datasets.io import read_table

from _ingest_fixtures import imp_row, write_csv, write_jsonl

KEY = ["request_id", "position"]


def _table(ds: pathlib.Path) -> pl.DataFrame:
    return read_table(ds, "impressions").sort(KEY)


def _first_run(tmp_path: pathlib.Path) -> pathlib.Path:
    """Run `daily` on file A: rows i0, i1 accepted and one bad row (surface `tv`) quarantined."""
    ds = tmp_path / "ds"
    rows = [imp_row(0), imp_row(1), imp_row(2, surface="tv")]
    ingest([write_csv(tmp_path / "a.csv", rows)], ds, IngestConfig(table="impressions", run_id="daily"))
    return ds


def test_a_reused_run_id_is_refused_and_keeps_the_first_runs_rows(tmp_path):
    ds = _first_run(tmp_path)
    before = _table(ds)
    quarantine = (ds / "quarantine" / "impressions" / "daily.parquet").read_bytes()
    report = (ds / "_ingest" / "daily.json").read_text()
    b = write_csv(tmp_path / "b.csv", [imp_row(10), imp_row(11), imp_row(12, surface="tv")])
    with pytest.raises(IngestError, match="run id 'daily' was already used") as e:
        ingest([b], ds, IngestConfig(table="impressions", run_id="daily"))
    assert "\n" not in str(e.value) and "daily.json" in str(e.value)
    assert _table(ds).equals(before) and sorted(before["item_id"]) == ["i0", "i1"]
    assert (ds / "quarantine" / "impressions" / "daily.parquet").read_bytes() == quarantine
    assert (ds / "_ingest" / "daily.json").read_text() == report
    assert not list(ds.glob(".ingest-*"))
    (ds / "_ingest" / "daily.json").unlink()  # its parts alone are enough to refuse the id
    (ds / "quarantine" / "impressions" / "daily.parquet").unlink()
    with pytest.raises(IngestError, match=r"part-daily-\d+\.parquet: run id 'daily' was already used"):
        ingest([b], ds, IngestConfig(table="impressions", run_id="daily"))
    assert _table(ds).equals(before)
    rep = ingest([b], ds, IngestConfig(table="impressions", run_id="daily-2"))  # a new id is fine
    assert rep.totals["accepted"] == 2 and _table(ds).height == 4


def test_the_commit_never_replaces_a_part(tmp_path):
    ds = _first_run(tmp_path)
    before = _table(ds)
    old = sorted((ds / "impressions").rglob("*.parquet"))[0]
    staged = tmp_path / "staged"
    new = staged / old.relative_to(ds / "impressions")
    new.parent.mkdir(parents=True)
    pl.DataFrame({"x": [1]}).write_parquet(new)
    with pytest.raises(IngestError, match="already in the table"):
        commit_parts(ds, "impressions", staged, [new], as_folder=True)
    assert _table(ds).equals(before)
    assert new.is_file() and not list(ds.glob(".impressions*"))


def _rows_with_a_bad_one(tmp_path: pathlib.Path) -> pathlib.Path:
    return write_csv(tmp_path / "in.csv", [imp_row(0), imp_row(1), imp_row(2, propensity="7")])


def test_rejected_rows_are_in_place_before_the_table_is_committed(tmp_path, monkeypatch):
    def failing_commit(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "commit_parts", failing_commit)
    with pytest.raises(OSError):
        ingest([_rows_with_a_bad_one(tmp_path)], tmp_path / "ds", IngestConfig(table="impressions", run_id="r1"))
    q = pl.read_parquet(tmp_path / "ds" / "quarantine" / "impressions" / "r1.parquet")
    assert q.select("_row", "_field").rows() == [(4, "propensity")]
    assert not (tmp_path / "ds" / "impressions").exists()


def test_no_row_is_committed_when_the_quarantine_cannot_be_written(tmp_path, monkeypatch):
    real = pathlib.Path.replace

    def failing_replace(self, target):
        if self.name == "quarantine.parquet":
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(pathlib.Path, "replace", failing_replace)
    with pytest.raises((IngestError, OSError)) as e:
        ingest([_rows_with_a_bad_one(tmp_path)], tmp_path / "ds", IngestConfig(table="impressions", run_id="r1"))
    assert not (tmp_path / "ds" / "impressions").exists()  # the accepted rows were not committed either
    assert isinstance(e.value, IngestError) and "cannot set the rejected rows aside" in str(e.value)
    assert not list((tmp_path / "ds").glob(".ingest-*"))


def test_json_lines_report_their_ignored_keys(tmp_path):
    rows = [dict(imp_row(0), extra=1), imp_row(1), "not json", dict(imp_row(2), note={"a": 1}, extra=2)]
    p = tmp_path / "a.jsonl"
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    rep = ingest([p], tmp_path / "ds", IngestConfig(table="impressions"))
    assert rep.files[0].ignored_columns == ["extra", "note"]
    saved = json.loads((tmp_path / "ds" / "_ingest" / f"{rep.run_id}.json").read_text())
    assert saved["files"][0]["ignored_columns"] == ["extra", "note"]
    plain = ingest([write_jsonl(tmp_path / "b.jsonl", [imp_row(5)])], tmp_path / "ds",
                   IngestConfig(table="impressions"))
    assert plain.files[0].ignored_columns == []
