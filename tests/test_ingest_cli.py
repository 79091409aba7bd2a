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
