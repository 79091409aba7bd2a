"""`recs abtest-power` and `recs abtest-analyze` end to end (JSON, exit codes, one-line errors, --from-logs)."""
from __future__ import annotations

import json

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from recs.cli import abtest_cmd
from recs.evaluators.abtest_sim import simulate_experiment_frame

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer(pretty_exceptions_enable=False)
    abtest_cmd.register(a)
    return a


def run(app, *args):
    return runner.invoke(app, list(args))


def js(result) -> dict:
    assert result.exit_code in (0, 3), result.output
    return json.loads(result.stdout)


def test_power_json_known_answers(app):
    out = js(run(app, "abtest-power", "--metric", "proportion", "--baseline", "0.2", "--mde", "0.01", "--json"))
    assert {"n_per_arm", "mde", "power", "days", "method"} <= set(out)
    assert out["n_per_arm"] == 25_583 and out["power"] == 0.8 and out["days"] is None
    assert "pooled variance" in out["method"]
    out = js(run(app, "abtest-power", "--metric", "proportion", "--baseline", "0.2", "--mde", "0.01",
                 "--method", "cohen-h", "--json"))
    assert "Cohen's h" in out["method"] and out["n_per_arm"] == 25_580
    out = js(run(app, "abtest-power", "--metric", "mean", "--mean", "10", "--std", "1", "--mde", "0.2", "--json"))
    assert out["n_per_arm"] == 394 and "t-test" in out["method"]


def test_power_duration_cuped_and_arms(app):
    out = js(run(app, "abtest-power", "--metric", "proportion", "--baseline", "0.2", "--mde", "0.05", "--relative",
                 "--daily-units", "10000", "--traffic-share", "0.5", "--arms", "3", "--cuped-r2", "0.2", "--json"))
    assert out["days"] % 7 == 0 and out["days"] >= out["days_unrounded"]
    assert out["n_per_arm_without_cuped"] > out["n_per_arm"]
    assert "Bonferroni" in out["method"] and len(out["mde_by_weeks"]) == 4
    res = run(app, "abtest-power", "--metric", "proportion", "--baseline", "0.2", "--days", "14",
              "--daily-units", "5000")
    assert res.exit_code == 0 and "solved for mde" in res.stdout and "MDE against duration" in res.stdout


def test_power_relative_mde_is_a_fraction_not_percent(app):
    a = js(run(app, "abtest-power", "--metric", "proportion", "--baseline", "0.2", "--mde", "0.05", "--relative",
               "--json"))
    assert a["n_per_arm"] == 25_583


@pytest.mark.parametrize("args,msg", [
    (["--metric", "proportion", "--mde", "0.01"], "--baseline"),
    (["--metric", "mean", "--mean", "1", "--mde", "0.01"], "--std"),
    (["--metric", "proportion", "--baseline", "0.2"], "one of --mde"),
    (["--metric", "proportion", "--baseline", "0.2", "--mde", "0.01", "--alternative", "up"], "alternative"),
    (["--from-logs", "/nonexistent", "--metric-name", "ctr", "--mde", "0.01"], "not a dataset folder"),
    (["--metric-name", "ctr", "--mde", "0.01"], "need --from-logs"),
])
def test_power_bad_input_is_one_line_exit_2(app, args, msg):
    res = run(app, "abtest-power", *args)
    assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from recs.sim import SimConfig, generate_dataset

    out = tmp_path_factory.mktemp("abtest") / "ds"
    generate_dataset(SimConfig(n_users=300, n_items=400, days=4, requests_per_day=800, seed=3), out)
    return out


def test_power_from_logs_ratio_with_cuped(app, dataset):
    out = js(run(app, "abtest-power", "--from-logs", str(dataset), "--metric-name", "ctr", "--mde", "0.1",
                 "--relative", "--cuped-from-logs", "--json"))
    logs = out["logs"]
    assert logs["kind"] == "ratio" and logs["anonymous_units"] > 0 and 0 <= logs["cuped_r2"] < 1
    assert "delta-method" in out["method"] and out["days"] % 7 == 0
    assert any("session_id" in n for n in out["notes"])
    imps = pl.read_parquet(str(dataset / "impressions" / "**" / "*.parquet"))
    ctr = imps["clicked"].mean()
    assert logs["baseline"] == pytest.approx(ctr)
    conv = js(run(app, "abtest-power", "--from-logs", str(dataset), "--metric-name", "conversion",
                  "--n-per-arm", "1000", "--json"))
    assert conv["mde"] > 0 and 0 < conv["logs"]["baseline"] < 1
    bad = run(app, "abtest-power", "--from-logs", str(dataset), "--metric-name", "ctr", "--metric", "mean",
              "--mde", "0.01")
    assert bad.exit_code == 2 and "contradicts" in bad.output


def test_analyze_json_and_exit_codes(app, tmp_path):
    ok = tmp_path / "exp.parquet"
    simulate_experiment_frame(n_units=20_000, seed=1, effects={"conversion": 0.3}).write_parquet(ok)
    out = js(run(app, "abtest-analyze", "--data", str(ok), "--metrics", "conversion,revenue,clicks/impressions",
                 "--pre-period-covariate", "auto", "--guardrails", "p99_latency_ms<=+2%,error_rate<=+0.1pp",
                 "--json"))
    assert out["verdict"] == "SHIP" and not out["srm"]["mismatch"]
    assert [m["metric"] for m in out["metrics"]] == ["conversion", "revenue", "clicks/impressions"]
    assert all(m["covariate"] for m in out["metrics"]) and len(out["guardrails"]) == 2
    text = run(app, "abtest-analyze", "--data", str(ok), "--metrics", "conversion", "--sequential",
               "--planned-n-per-arm", "10000", "--time-column", "day")
    assert text.exit_code == 0 and "DECISION (treatment)" in text.stdout and "O'Brien-Fleming" in text.stdout
    srm = tmp_path / "srm.csv"
    simulate_experiment_frame(n_units=20_000, seed=1, lost_share=0.05).write_csv(srm)
    res = run(app, "abtest-analyze", "--data", str(srm), "--metrics", "conversion")
    assert res.exit_code == 3 and "SAMPLE RATIO MISMATCH" in res.stdout and "INVALID" in res.stdout
    res = run(app, "abtest-analyze", "--data", str(srm), "--metrics", "conversion", "--json")
    assert res.exit_code == 3 and json.loads(res.stdout)["srm"]["mismatch"] is True


def test_analyze_bad_input_is_one_line_exit_2(app, tmp_path):
    bad = tmp_path / "bad.csv"
    pl.DataFrame({"user_id": ["a", "b", "c"], "variant": ["control", "treatment", "control"],
                  "conversion": [1, None, 0]}).write_csv(bad)
    res = run(app, "abtest-analyze", "--data", str(bad), "--metrics", "conversion")
    assert res.exit_code == 2 and "row 2: field 'conversion'" in res.output and "Traceback" not in res.output
    res = run(app, "abtest-analyze", "--data", str(bad), "--metrics", "conversion", "--guardrails", "latency<2%")
    assert res.exit_code == 2 and "guardrail" in res.output
    res = run(app, "abtest-analyze", "--data", str(bad), "--metrics", "conversion", "--sequential-method", "obf")
    assert res.exit_code == 2 and "planned" in res.output
