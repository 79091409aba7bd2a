"""`recs simulate ...` commands: JSON output, report files, one-line errors with exit code 2."""
import json

from typer.testing import CliRunner

from recs.cli.main import app

runner = CliRunner()
SMALL = ["--users", "200", "--items", "500"]


def test_stale_inventory_json_and_out(tmp_path):
    res = runner.invoke(app, ["simulate", "stale-inventory", *SMALL, "--requests", "60", "--warmup-hours", "2",
                              "--ages", "0,3600,21600", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert [s["age_s"] for s in data["snapshots"]] == [0, 3600, 21600]
    assert all(s["mitigated"]["oos_shown_share"] == 0.0 for s in data["snapshots"])
    for name in ("stale_inventory.json", "stale_inventory.md", "stale_inventory.html"):
        assert (tmp_path / name).is_file()
    assert json.loads((tmp_path / "stale_inventory.json").read_text())["kind"] == "simulate_stale_inventory"


def test_stale_inventory_table():
    res = runner.invoke(app, ["simulate", "stale-inventory", *SMALL, "--requests", "30", "--warmup-hours", "1",
                              "--ages", "0,900"])
    assert res.exit_code == 0, res.output
    assert "stale inventory" in res.stdout and "15m" in res.stdout


def test_bad_input_is_one_line_exit_2(tmp_path):
    for args, msg in ((["stale-inventory", "--ages", "0,100"], "multiple of step_s"),
                      (["stale-inventory", "--ages", "a,b"], "comma-separated integers"),
                      (["drift", "--kind", "weather"], "kind must be one of"),
                      (["drift", "--onset-day", "20"], "onset_day"),
                      (["delayed-feedback", "--dataset", str(tmp_path)], "not a simulated dataset"),
                      (["delayed-feedback", "--days", "3"], "must exceed"),
                      (["cold-start", "--explore", "2"], "explore must be in")):
        res = runner.invoke(app, ["simulate", *args])
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.output and "Traceback" not in res.output
