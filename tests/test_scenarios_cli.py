"""`recs simulate ...` commands: JSON output, report files, one-line errors with exit code 2."""
import json

from typer.testing import CliRunner

from recs.cli.main import app

from _scenario_fixtures import tiny_trained

runner = CliRunner()
SMALL = ["--users", "200", "--items", "500"]


def _json(res) -> dict:
    return json.loads(res.stdout[res.stdout.index("{"):])


def test_stale_inventory_with_a_given_model_json_and_out(tmp_path):
    t = tiny_trained()
    res = runner.invoke(app, ["simulate", "stale-inventory", "--dataset", str(t.dataset), "--model", str(t.model),
                              "--requests", "40", "--warmup-hours", "2", "--ages", "0,3600,21600", "--json",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = _json(res)
    assert data["ranker"] == "pipeline" and data["model"]["model"] == str(t.model)
    assert [s["age_s"] for s in data["snapshots"]] == [0, 3600, 21600]
    assert all(s["mitigated"]["oos_shown_share"] == 0.0 for s in data["snapshots"])
    for name in ("stale_inventory.json", "stale_inventory.md", "stale_inventory.html"):
        assert (tmp_path / name).is_file()
    assert json.loads((tmp_path / "stale_inventory.json").read_text())["kind"] == "simulate_stale_inventory"


def test_stale_inventory_oracle_table():
    res = runner.invoke(app, ["simulate", "stale-inventory", *SMALL, "--ranker", "oracle", "--requests", "30",
                              "--warmup-hours", "1", "--ages", "0,900"])
    assert res.exit_code == 0, res.output
    assert "stale inventory (oracle ranker" in res.stdout and "15m" in res.stdout


def test_drift_on_a_given_model_json():
    t = tiny_trained()
    res = runner.invoke(app, ["simulate", "drift", "--dataset", str(t.dataset), "--model", str(t.model),
                              "--kind", "catalog-mix", "--days", "5", "--onset-day", "4", "--baseline-days", "1",
                              "--requests-per-day", "48", "--seeds", "1", "--json"])
    assert res.exit_code == 0, res.output
    data = _json(res)
    assert data["drift"]["kind"] == "catalog_mix" and data["config"]["ref_days"] == 3
    assert set(data["monitors"]) == {"score_shift", "feature_shift", "ndcg", "calibration"}


def test_bad_input_is_one_line_exit_2(tmp_path):
    t = tiny_trained()
    for args, msg in ((["stale-inventory", "--ages", "0,100"], "multiple of step_s"),
                      (["stale-inventory", "--ages", "a,b"], "comma-separated integers"),
                      (["stale-inventory", "--ranker", "magic"], "ranker must be one of"),
                      (["stale-inventory", "--model", str(t.model)], "needs --dataset"),
                      (["stale-inventory", "--dataset", str(tmp_path)], "not a simulated dataset"),
                      (["drift", "--kind", "weather"], "kind must be one of"),
                      (["drift", "--onset-day", "20"], "onset_day"),
                      (["drift", "--dataset", str(tmp_path)], "not a simulated dataset"),
                      (["delayed-feedback", "--dataset", str(tmp_path)], "not a simulated dataset"),
                      (["delayed-feedback", "--days", "3"], "must exceed"),
                      (["cold-start", "--explore", "2"], "explore must be in"),
                      (["cold-start", "--dataset", str(tmp_path)], "not a simulated dataset")):
        res = runner.invoke(app, ["simulate", *args])
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) <= 2, (args, res.output)
