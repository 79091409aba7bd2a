"""recs capacity model, and the loadtest / capacity CLI commands."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from recs.cli import loadtest_cmd
from recs.serving.capacity import CapacityConfig, CapacityError, plan_capacity, read_measurements
from recs.serving.stub_server import StubConfig, make_app, running_server

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    loadtest_cmd.register(app)
    return app


def _run(rps: float, p99: float, errors: int = 0, requests: int = 10_000, cores: float | None = 1.0, **kw) -> dict:
    d = {"p50_ms": p99 / 3, "p90_ms": p99 / 2, "p99_ms": p99, "p999_ms": p99 * 1.5, "achieved_rps": rps,
         "errors": errors, "fallback_share": 0.01, "requests": requests, "target_rps": rps, **kw}
    if cores is not None:
        d["server_cores"] = cores
    return d


def _write(tmp_path: Path, name: str, obj) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_capacity_arithmetic_matches_the_documented_model(tmp_path: Path) -> None:
    m = read_measurements([_write(tmp_path, "a.json", _run(2000, 60, cores=2))], None)
    plan = plan_capacity(CapacityConfig(peak_qps=180_000, cache_hit=0.3, cache_hit_cost=0.0, headroom=0.3,
                                        cores_per_server=16, zones=3, spare_per_zone=1), m)
    r = plan.results
    assert r["per_core_sustainable_rps"] == 1000 and r["per_core_usable_rps"] == 700
    assert r["load_in_miss_units_qps"] == 126_000
    assert r["cores_serving_peak"] == 180          # 126000 / 700
    assert r["servers_serving_peak"] == 12         # ceil(180 / 16)
    assert r["servers_per_zone"] == 7              # ceil(12 / (3 - 1)) + 1 spare
    assert r["servers_total"] == 21 and r["cores_total"] == 336
    # with one zone down the other two zones still run below the sustainable rate
    assert r["utilisation_at_peak_one_zone_down"] < 1
    assert plan.assumptions["headroom"] == 0.3 and plan.assumptions["zones"] == 3

    single = plan_capacity(CapacityConfig(peak_qps=180_000, cache_hit=0.3, cache_hit_cost=0.0, zones=1,
                                          spare_per_zone=1), m)
    assert single.results["servers_total"] == 13   # N+1
    cost = plan_capacity(CapacityConfig(peak_qps=180_000, cache_hit=0.5, cache_hit_cost=0.1), m)
    assert cost.results["load_in_miss_units_qps"] == pytest.approx(180_000 * (0.5 + 0.5 * 0.1))


def test_capacity_picks_the_fastest_run_within_budget_and_error_rate(tmp_path: Path) -> None:
    runs = [_run(500, 40), _run(1000, 90), _run(1500, 300), _run(1200, 100, errors=500)]
    m = read_measurements([_write(tmp_path, "sweep.json", runs)], None)
    assert plan_capacity(CapacityConfig(), m).chosen["achieved_rps"] == 1000
    # 40 ms of the 120 ms budget spent outside the server leaves 80 ms: only the 500 rps run qualifies
    assert plan_capacity(CapacityConfig(overhead_ms=40), m).chosen["achieved_rps"] == 500
    with pytest.raises(CapacityError, match="no measured run met p99 <= 10 ms"):
        plan_capacity(CapacityConfig(p99_budget_ms=10), m)


def test_capacity_ignores_runs_that_met_the_budget_by_degrading(tmp_path: Path) -> None:
    """A run whose p99 held only because most answers were popular lists is shedding, not capacity."""
    runs = [_run(200, 35, fallback_share=0.05), _run(800, 70, fallback_share=0.65), _run(400, 50)]
    m = read_measurements([_write(tmp_path, "sweep.json", runs)], None)
    plan = plan_capacity(CapacityConfig(), m)
    assert plan.chosen["achieved_rps"] == 400 and plan.chosen["fallback_share"] == 0.01
    assert plan.assumptions["max_fallback_share"] == 0.05 and any("fallback share" in n for n in plan.notes)
    assert plan_capacity(CapacityConfig(max_fallback_share=0.7), m).chosen["achieved_rps"] == 800
    with pytest.raises(CapacityError, match="fallback share <= 0.001"):
        plan_capacity(CapacityConfig(max_fallback_share=0.001), m)
    no_key = read_measurements([_write(tmp_path, "old.json", {k: v for k, v in _run(300, 40).items()
                                                              if k != "fallback_share"})], None)
    assert plan_capacity(CapacityConfig(), no_key).chosen["fallback_share"] is None   # older files still usable
    with pytest.raises(ValueError, match="--max-fallback-share"):
        CapacityConfig(max_fallback_share=1.5)


def test_capacity_input_errors_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(CapacityError, match="no server_cores"):
        read_measurements([_write(tmp_path, "a.json", _run(100, 10, cores=None))], None)
    assert read_measurements([_write(tmp_path, "a.json", _run(100, 10, cores=None))], 4.0)[0].server_cores == 4.0
    bad = _run(100, 10)
    bad["p99_ms"] = "fast"
    with pytest.raises(CapacityError, match=r"b\.json: field 'p99_ms' must be a non-negative number"):
        read_measurements([_write(tmp_path, "b.json", bad)], None)
    (tmp_path / "c.json").write_text("{oops")
    with pytest.raises(CapacityError, match=r"c\.json: not valid JSON"):
        read_measurements([tmp_path / "c.json"], None)
    with pytest.raises(ValueError, match="--headroom"):
        CapacityConfig(headroom=1.0)
    with pytest.raises(ValueError, match="--overhead-ms"):
        CapacityConfig(overhead_ms=200)


def test_cli_loadtest_json_then_capacity(tmp_path: Path) -> None:
    app = _app()
    with running_server(make_app(StubConfig(delay_ms=1))) as url:
        r = runner.invoke(app, ["loadtest", "--url", url, "--rate", "40", "--duration", "1", "--json",
                                "--mix", "home=1,search=1", "--server-cores", "1",
                                "--save", str(tmp_path / "lt.json")])
        assert r.exit_code == 0, r.output
        human = runner.invoke(app, ["loadtest", "--url", url, "--rate", "20", "--duration", "0.5"])
        assert human.exit_code == 0 and "achieved" in human.output and "p99" in human.output
        sweep = runner.invoke(app, ["loadtest", "--url", url, "--rate", "20,40", "--duration", "0.5", "--json",
                                    "--server-cores", "1", "--save", str(tmp_path / "sweep.json")])
    assert sweep.exit_code == 0, sweep.output
    sweep_doc = json.loads(sweep.stdout)
    assert sweep_doc["kind"] == "loadtest_sweep"
    runs = sweep_doc["runs"]
    assert [x["target_rps"] for x in runs] == [20, 40] and [x["requests"] for x in runs] == [10, 20]
    d = json.loads(r.stdout)
    assert list(d)[:7] == ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "achieved_rps", "errors", "fallback_share"]
    assert d["requests"] == 40 and d["server_cores"] == 1 and d["kind"] == "loadtest"
    assert d["latency_ms"]["p99"] == d["p99_ms"]
    assert json.loads((tmp_path / "lt.json").read_text()) == d
    r = runner.invoke(app, ["capacity", "--peak-qps", "180000", "--p99-budget-ms", "5000",
                            "--measured", str(tmp_path / "lt.json"), "--cache-hit", "0.2", "--json",
                            "--max-fallback-share", "1"])      # the stub marks every anonymous answer a fallback
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["kind"] == "capacity"
    assert plan["results"]["servers_total"] > 0 and plan["assumptions"]["cache_hit_share"] == 0.2
    r = runner.invoke(app, ["capacity", "--measured", str(tmp_path / "lt.json"), "--measured",
                            str(tmp_path / "sweep.json"), "--p99-budget-ms", "5000", "--json",
                            "--max-fallback-share", "1"])
    assert r.exit_code == 0 and json.loads(r.stdout)["chosen"]["source"].startswith(str(tmp_path))
    r = runner.invoke(app, ["capacity", "--measured", str(tmp_path / "lt.json"), "--max-fallback-share", "1"])
    assert r.exit_code in (0, 2)  # human output renders (exit 2 only if this loaded machine missed 120 ms)
    assert "assumptions" in r.output or "no measured run met" in r.output


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    app = _app()
    for args, msg in [
        (["loadtest", "--url", "http://example.com", "--rate", "1", "--duration", "1"], "loopback"),
        (["loadtest", "--url", "http://127.0.0.1:9", "--rate", "1", "--duration", "1", "--mix", "cart=1"], "--mix"),
        (["loadtest", "--url", "http://127.0.0.1:9", "--rate", "1", "--duration", "1",
          "--users-file", str(tmp_path / "nope.txt")], "users file not found"),
        (["capacity", "--measured", str(tmp_path / "nope.json")], "file not found"),
        (["loadtest", "--url", "http://127.0.0.1:9", "--rate", "10,-5", "--duration", "1"], "rates must be > 0"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert msg in r.output and len([ln for ln in r.output.splitlines() if ln.strip()]) == 1
