"""`recs ingest` on the command line: JSON report, exit codes 0 / 1 (strict) / 2 (unreadable input)."""
from __future__ import annotations

import gzip
import json

from typer.testing import CliRunner

from recs.cli.main import app

from _ingest_fixtures import imp_row, write_csv

runner = CliRunner()


def test_cli_json_report_and_reingest(tmp_path):
    src = write_csv(tmp_path / "a.csv", [imp_row(i) for i in range(5)] + [imp_row(9, surface="tv")])
    args = ["ingest", "--table", "impressions", "--out", str(tmp_path / "ds"), "--json", str(src)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["totals"] == {"read": 6, "accepted": 5, "quarantined": 1, "duplicates": 0}
    assert rep["reconciled"] is True
    again = json.loads(runner.invoke(app, args).stdout)
    assert again["totals"] == {"read": 6, "accepted": 0, "quarantined": 1, "duplicates": 5}


def test_cli_strict_exit_1_and_bad_input_exit_2(tmp_path):
    src = write_csv(tmp_path / "a.csv", [imp_row(0), imp_row(1, propensity="7")])
    r = runner.invoke(app, ["ingest", "--table", "impressions", "--out", str(tmp_path / "ds"), "--strict", str(src)])
    assert r.exit_code == 1
    assert f"{src}:3: propensity: must be <= 1" in " ".join(r.output.split())
    assert "Traceback" not in r.output
    bad = tmp_path / "t.csv.gz"
    bad.write_bytes(gzip.compress(src.read_bytes() * 20)[:-12])
    r = runner.invoke(app, ["ingest", "--table", "impressions", "--out", str(tmp_path / "ds"), str(bad)])
    assert r.exit_code == 2 and "truncated or corrupt gzip" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["ingest", "--table", "nope", "--out", str(tmp_path / "ds"), str(src)])
    assert r.exit_code == 2 and "unknown table" in r.output


def test_cli_recbole_reports_each_table(tmp_path):
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t10\t881250949\n")
    (tmp_path / "toy.item").write_text("item_id:token\tmovie_title:token_seq\n10\tHeat\n")
    r = runner.invoke(app, ["ingest", "--table", "interactions", "--format", "recbole", "--out",
                            str(tmp_path / "ds"), "--json", str(tmp_path / "toy.inter")])
    assert r.exit_code == 0, r.output
    reps = json.loads(r.stdout)
    assert [x["table"] for x in reps] == ["interactions", "catalog"]


def test_cli_text_output_lists_skipped_files_and_ignored_columns(tmp_path):
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\tmood:token\n"
                                        "1\t10\t881250949\tok\n")
    (tmp_path / "notes.txt").write_text("not an atomic file\n")
    r = runner.invoke(app, ["ingest", "--table", "interactions", "--format", "recbole", "--out",
                            str(tmp_path / "ds"), str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert f"skipped: {tmp_path / 'notes.txt'} (not a RecBole atomic file" in r.output
    assert f"ignored columns: mood ({tmp_path / 'toy.inter'})" in r.output


def test_cli_max_memory(tmp_path):
    src = write_csv(tmp_path / "a.csv", [imp_row(i) for i in range(5)])
    base = ["ingest", "--table", "impressions", "--out", str(tmp_path / "ds"), "--json"]
    r = runner.invoke(app, [*base, "--max-memory", "400M", str(src)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["totals"]["accepted"] == 5
    for bad, msg in [("lots", "not a memory size"), ("100M", "at least 384 MiB")]:
        r = runner.invoke(app, [*base, "--max-memory", bad, str(src)])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


def test_parse_size_and_sizing():
    from recs.datasets.ingest.config import IngestConfig, parse_size

    assert [parse_size(t) for t in ("512M", "1.5G", "2GiB", "300MB", "1000")] == [
        512 << 20, int(1.5 * (1 << 30)), 2 << 30, 300 << 20, 1000]
    small, big = (IngestConfig(table="impressions", max_memory=m << 20) for m in (384, 2048))
    assert small.batch_rows < big.batch_rows and small.writer_buffer_bytes < big.writer_buffer_bytes
    assert IngestConfig(table="impressions", max_memory=384 << 20, batch_rows=7).batch_rows == 7
