"""`recs report`: run folders of JSON results combined into one report; unknown kinds rendered generically."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from recs.cli import report_cmd
from recs.evaluators.drift import compare, monitor_to_dict, monitor_windows
from recs.reports.runs import build_report, headline, load_runs

EVALUATE = {"kind": "evaluate", "dataset": "sim-small", "n_requests": 20000,
            "metrics": {"popularity": {"ndcg@10": 0.21, "recall@10": 0.33},
                        "pipeline": {"ndcg@10": 0.29, "recall@10": 0.41}},
            "by_k": [{"k": k, "ndcg": 0.1 + 0.02 * k, "recall": 0.2 + 0.03 * k} for k in range(1, 11)]}
LOADTEST = {"kind": "loadtest", "target_qps": 2000, "achieved_qps": 1987.5, "passed": True,
            "latency_ms": {"p50": 11.2, "p95": 38.0, "p99": 71.5}}
MYSTERY = {"kind": "mystery", "answer": 42, "nested": {"deep": {"values": [1.0, 2.5, 2.0, 3.5]}},
           "weird": [[1, 2], [3]]}


def _drift_result() -> dict:
    rng = np.random.default_rng(0)
    ref = pl.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(["a", "b"], 2000)})
    cur = pl.DataFrame({"x": rng.normal(0.7, size=2000), "c": rng.choice(["a", "b"], 2000)})
    return compare(ref, cur).to_dict()


def _monitor_result() -> dict:
    rng = np.random.default_rng(1)
    ref = pl.DataFrame({"score": rng.normal(size=3000)})
    days = {f"2024-02-{d:02d}": pl.DataFrame({"score": rng.normal(0.6 if d >= 5 else 0, size=1000)})
            for d in range(1, 9)}
    return monitor_to_dict(monitor_windows(days, ref), "2024-02-05")


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    a, b = tmp_path / "run-a", tmp_path / "run-b"
    for d in (a, b):
        d.mkdir()
    (a / "evaluate.json").write_text(json.dumps(EVALUATE))
    (a / "drift.json").write_text(json.dumps(_drift_result()))
    (a / "monitor.json").write_text(json.dumps(_monitor_result()))
    (a / "config.json").write_text(json.dumps({"seed": 1}))  # no kind: listed, not rendered
    (b / "evaluate.json").write_text(json.dumps(EVALUATE | {"n_requests": 30000}))
    (b / "loadtest.json").write_text(json.dumps(LOADTEST))
    (b / "mystery.json").write_text(json.dumps(MYSTERY))
    return [a, b]


def test_load_runs_and_headlines(runs: list[Path]) -> None:
    results, skipped = load_runs(runs)
    assert sorted(r.kind for r in results) == ["drift", "drift_monitor", "evaluate", "evaluate", "loadtest", "mystery"]
    assert [f.name for f, _ in skipped] == ["config.json"]
    assert headline(LOADTEST) == "passed: True"
    assert headline(_drift_result()) == "verdict: drift"


def test_report_renders_every_kind_without_losing_fields(runs: list[Path], tmp_path: Path) -> None:
    results, skipped = load_runs(runs)
    rep = build_report(results, skipped, "Combined")
    html, md = rep.to_html(), rep.to_markdown()
    parser = HTMLParser()
    parser.feed(html)
    assert html.count("<svg") >= 6  # eval metric bars + by_k lines, drift PSI bars, monitor line, latency, mystery
    for text in ("ndcg@10", "0.29", "30,000", "71.5", "Per-feature drift", "Largest PSI per day", "answer",
                 "42", "weird[0]", "config.json", "no top-level", "Comparison"):
        assert text in html, text
        assert text in md, text
    assert "verdict: drift" in md and '<div class="callout bad">verdict: drift' in html
    assert '<div class="callout good">passed: pass</div>' in html


def test_load_runs_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_runs([tmp_path / "absent"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_runs([tmp_path])


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def _root() -> None:
        """test root"""

    report_cmd.register(a)
    return a


def test_cli_writes_html_and_md(app: typer.Typer, runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["report", "--runs", str(runs[0]), str(runs[1]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert "run-b" in (out / "report.md").read_text()


def test_cli_errors_are_one_line(app: typer.Typer, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(app, ["report", "--runs", str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no result files" in res.output
    res = CliRunner().invoke(app, ["report", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not a folder" in res.output and "Traceback" not in res.output
