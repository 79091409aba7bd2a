"""`recs replay --counterfactual` end to end on small synthetic logs."""
from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from recs.cli.main import app
from recs.evaluators.ope.synthetic import SyntheticBandit


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ope")
    logs, target = SyntheticBandit(target_kind="sparse").frames(1500, 0)
    logs.write_parquet(d / "logs.parquet")
    target.write_csv(d / "target.csv")
    target.with_columns(pl.col("prob") * 1.5).write_parquet(d / "bad.parquet")
    off_logs, off = SyntheticBandit(target_kind="off-support", logger_items=40).frames(1500, 0)
    off_logs.write_parquet(d / "off_logs.parquet")
    off.write_parquet(d / "off.parquet")
    labels = logs.select("request_id", "position").with_columns(
        purchase=(pl.col("position") == 0) & (pl.col("request_id").str.ends_with("7")),
        label_status=pl.when(pl.col("request_id").str.ends_with("3")).then(pl.lit("pending"))
        .otherwise(pl.lit("matured")))
    labels.write_parquet(d / "labels.parquet")
    return d


def _run(*args):
    return CliRunner().invoke(app, ["replay", "--counterfactual", *map(str, args)])


def test_json_output(files):
    r = _run("--logs", files / "logs.parquet", "--target-probs", files / "target.csv", "--json",
             "--estimators", "ips,snips,clipped-ips,dr,pi", "--bootstrap", "50", "--clip", "10")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 1500 and set(d["estimates"]) == {"ips", "snips", "clipped-ips", "dr", "pi"}
    for e in d["estimates"].values():
        assert e["ci_low"] <= e["value"] <= e["ci_high"]
        assert {"value", "stderr", "ci_low", "ci_high", "lift", "bootstrap"} <= set(e)
    assert d["logging_value"] > 0 and d["diagnostics"]["ess"] > 0
    ips = d["estimates"]["ips"]
    assert ips["lift"]["value"] == pytest.approx(ips["value"] / d["logging_value"])
    for lift in (e["lift"] for e in d["estimates"].values()):
        assert lift["ci_low"] <= lift["value"] <= lift["ci_high"] and lift["stderr"] > 0
        assert lift["bootstrap"]["ci_low"] < lift["bootstrap"]["ci_high"]
    g = d["diagnostics"]
    for key in ("ess", "ess_ratio", "max_weight", "mean_weight", "support_coverage", "unseen_item_mass_share",
                "unlogged_position_mass_share", "unseen_item_position_mass_share", "pending_requests_dropped"):
        assert key in g, key
    assert g["max_weight"] >= g["mean_weight"] > 0
    assert {"read_align", "estimators", "bootstrap", "diagnostics"} <= set(d["timings_s"])


def test_target_that_never_agrees_warns_loudly(files):
    r = _run("--logs", files / "off_logs.parquet", "--target-probs", files / "off.parquet", "--json",
             "--estimators", "ips,snips")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["estimates"]["ips"]["value"] == 0.0 and d["estimates"]["snips"]["value"] is None
    assert "disagrees completely" in r.stderr and "support deficiency" in r.stderr
    assert any("disagrees completely" in w for w in d["warnings"])


def test_purchase_counts_only_matured_requests(files):
    r = _run("--logs", files / "logs.parquet", "--target-probs", files / "target.csv", "--json",
             "--estimators", "ips", "--reward", "purchase", "--labels", files / "labels.parquet")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 1500 - 150 and d["diagnostics"]["pending_requests_dropped"] == 150  # ids ending in 3
    assert d["reward"] == "purchase"
    everything = json.loads(_run("--logs", files / "logs.parquet", "--target-probs", files / "target.csv", "--json",
                                 "--estimators", "ips", "--reward", "purchase", "--labels",
                                 files / "labels.parquet", "--include-pending").stdout)
    assert everything["n"] == 1500 and everything["diagnostics"]["pending_requests_dropped"] == 0


def test_table_output(files):
    r = _run("--logs", files / "logs.parquet", "--target-probs", files / "target.csv", "--estimators", "ips,snips")
    assert r.exit_code == 0, r.output
    assert "snips" in r.stdout and "diagnostics" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--target-probs", "bad.parquet"], "field prob"),
    (["--target-probs", "missing.csv"], "no such file"),
    (["--target-probs", "target.csv", "--estimators", "ips,bogus"], "unknown estimator"),
    (["--target-probs", "target.csv", "--reward", "purchase"], "purchase"),
    (["--model", "nowhere"], "--model"),
    (["--policy", "uniform"], "dataset folder"),
    (["--policy", "nonsense"], "--policy must be one of"),
    ([], "exactly one of"),
])
def test_bad_usage_exits_2_with_one_line(files, args, message):
    args = [str(files / a) if a.endswith((".csv", ".parquet")) else a for a in args]
    r = _run("--logs", files / "logs.parquet", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_requires_counterfactual_flag(files):
    r = CliRunner().invoke(app, ["replay", "--logs", str(files / "logs.parquet"), "--policy", "logging"])
    assert r.exit_code == 2 and "--counterfactual" in r.output
