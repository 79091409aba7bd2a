"""`recs drift` end to end on Parquet / CSV files and folders: output, JSON, exit codes, one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from recs.cli import drift_cmd


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def _root() -> None:
        """test root"""

    drift_cmd.register(a)
    return a


def _frame(seed: int, shift: float = 0.0, n: int = 3000) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "score": rng.normal(shift, 1.0, n),
        "price": rng.lognormal(3.0, 1.0, n),
        "surface": rng.choice(["home", "search"], n, p=[0.6, 0.4]),
    })


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    ref, same, shifted = tmp_path / "ref.parquet", tmp_path / "same.parquet", tmp_path / "cur"
    _frame(0).write_parquet(ref)
    _frame(1).write_parquet(same)
    shifted.mkdir()
    full = _frame(2, shift=0.8)
    full.head(1500).write_parquet(shifted / "part-0.parquet")
    full.tail(1500).write_parquet(shifted / "part-1.parquet")
    _frame(3).write_csv(tmp_path / "cur.csv")
    return {"ref": ref, "same": same, "shifted": shifted, "csv": tmp_path / "cur.csv", "dir": tmp_path}


def test_ok_table_and_exit_zero(app: typer.Typer, files: dict[str, Path]) -> None:
    res = CliRunner().invoke(app, ["drift", "--reference", str(files["ref"]), "--current", str(files["same"]),
                                   "--fail-on-drift"])
    assert res.exit_code == 0, res.output
    assert "verdict: ok" in res.output and "score" in res.output and "surface" in res.output


def test_drift_json_out_and_fail_exit(app: typer.Typer, files: dict[str, Path]) -> None:
    out = files["dir"] / "res" / "drift.json"
    res = CliRunner().invoke(app, ["drift", "-r", str(files["ref"]), "-c", str(files["shifted"]), "--json",
                                   "--out", str(out), "--fail-on-drift", "--correction", "bonferroni"])
    assert res.exit_code == 1
    printed = json.loads(res.stdout)
    written = json.loads(out.read_text())
    assert printed["verdict"] == written["verdict"] == "drift" and written["kind"] == "drift"
    assert written["n_current"] == 3000 and written["config"]["correction"] == "bonferroni"
    status = {f["column"]: f["status"] for f in written["features"]}
    assert status == {"score": "drift", "price": "ok", "surface": "ok"}
    # without --fail-on-drift, drift still exits 0
    res = CliRunner().invoke(app, ["drift", "-r", str(files["ref"]), "-c", str(files["shifted"])])
    assert res.exit_code == 0 and "verdict: drift" in res.output


def test_columns_and_categorical_from_csv(app: typer.Typer, files: dict[str, Path]) -> None:
    res = CliRunner().invoke(app, ["drift", "-r", str(files["ref"]), "-c", str(files["csv"]), "--json",
                                   "--columns", "score,surface"])
    assert res.exit_code == 0, res.output
    assert [f["column"] for f in json.loads(res.stdout)["features"]] == ["score", "surface"]


@pytest.mark.parametrize("args, message", [
    (["--columns", "nope"], "no column 'nope'"),
    (["--bins", "1"], "bins must be >= 2"),
    (["--correction", "fdr"], "correction must be"),
])
def test_bad_input_is_one_line_exit_2(app: typer.Typer, files: dict[str, Path], args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["drift", "-r", str(files["ref"]), "-c", str(files["same"]), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_missing_and_unreadable_files(app: typer.Typer, files: dict[str, Path]) -> None:
    res = CliRunner().invoke(app, ["drift", "-r", str(files["dir"] / "absent.parquet"), "-c", str(files["same"])])
    assert res.exit_code == 2 and "absent.parquet: no such file" in res.output
    bad = files["dir"] / "bad.parquet"
    bad.write_bytes(b"not parquet")
    res = CliRunner().invoke(app, ["drift", "-r", str(bad), "-c", str(files["same"])])
    assert res.exit_code == 2 and "bad.parquet: cannot read" in res.output and "Traceback" not in res.output


def test_monitor_by_day_reports_delay(app: typer.Typer, files: dict[str, Path]) -> None:
    from datetime import datetime, timedelta, timezone

    days = []
    for d in range(6):
        f = _frame(10 + d, shift=0.8 if d >= 4 else 0.0, n=1000)
        days.append(f.with_columns(ts=pl.lit(datetime(2026, 1, 5, 12, tzinfo=timezone.utc) + timedelta(days=d))))
    cur = files["dir"] / "days.parquet"
    pl.concat(days).write_parquet(cur)
    out = files["dir"] / "monitor.json"
    res = CliRunner().invoke(app, ["drift", "-r", str(files["ref"]), "-c", str(cur), "--by-day", "ts",
                                   "--onset", "2026-01-09", "--out", str(out), "--fail-on-drift"])
    assert res.exit_code == 1, res.output
    assert "detection delay 0 days" in res.output and "ALARM" in res.output
    result = json.loads(out.read_text())
    assert result["kind"] == "drift_monitor" and result["n_alarms"] == 2 and result["false_alarm_rate"] == 0.0
    assert [d["alarm"] for d in result["days"]] == [False] * 4 + [True] * 2
    res = CliRunner().invoke(app, ["drift", "-r", str(files["ref"]), "-c", str(cur), "--by-day", "ts",
                                   "--onset", "Jan 9"])
    assert res.exit_code == 2 and "--onset Jan 9" in res.output
