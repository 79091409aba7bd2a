"""`recs sim generate` from the command line: bad options exit 2 with one line, good ones write a dataset."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from recs.cli.main import app

runner = CliRunner()


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("recs ")


def test_bad_options_exit_2(tmp_path):
    for args in (["--users", "-1"], ["--anonymous-share", "1.5"], ["--days", "0"], ["--scale", "huge"]):
        r = runner.invoke(app, ["sim", "generate", "--out", str(tmp_path / "x"), *args])
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output


def test_generate_json_and_refuse_non_empty(tmp_path):
    out = tmp_path / "ds"
    args = ["sim", "generate", "--out", str(out), "--users", "100", "--items", "500", "--days", "1",
            "--requests-per-day", "500", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["impressions"] > 0 and (out / "impressions").is_dir()
    r2 = runner.invoke(app, args)
    assert r2.exit_code == 2 and "not empty" in r2.output
    r3 = runner.invoke(app, [*args, "--overwrite"])
    assert r3.exit_code == 0
