"""`recs gate`: config validation, pass/fail/skip, baseline-relative gates, JUnit XML and Markdown output."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recs.cli.main import app
from recs.evaluators.gates import (MISSING, GateConfigError, GateInputError, evaluate_gates, load_gate_config,
                                   lookup, parse_gate_config)
from recs.evaluators.gates_output import to_junit, to_markdown

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def evaluate_json(ndcg=0.12, recall=0.2, anon_recall=0.1, new_items_recall=0.05, violations=0, coverage=0.3,
                  revenue=30.0, new_item_share=0.0135):
    seg = lambda n, r: {"ndcg": n, "recall": r, "mrr": 0.1, "hit_rate": 0.3, "n": 100}  # noqa: E731
    return {"kind": "evaluate", "k": 10,
            "segments": {"all": seg(ndcg, recall), "anonymous": seg(ndcg * 0.8, anon_recall),
                         "logged_in": seg(ndcg, recall), "new_users": seg(ndcg, recall),
                         "new_items": seg(0.01, new_items_recall)},
            "coverage": coverage, "policy_violations": violations,
            "true_ctr": {"pipeline": 0.05, "logging": 0.045, "oracle": 0.09, "pipeline_revenue_per_request": revenue},
            "true_ctr_new_items": {"pipeline": {"slot_share": new_item_share, "ctr": 0.15, "clicks_per_request": 0.02}},
            "retrievers": {}}


def replay_json(ci_low=1.01):  # the shape of `recs replay --counterfactual --json` (no "kind" key)
    lift = {"value": 1.05, "stderr": 0.01, "ci_low": ci_low, "ci_high": 1.1}
    return {"n": 1000, "n_impressions": 9000, "reward": "clicked", "level": 0.95,
            "estimates": {"snips": {"value": 0.5, "stderr": 0.01, "ci_low": 0.48, "ci_high": 0.52, "lift": lift}},
            "logging_value": 0.47, "logging": {"value": 0.47}, "diagnostics": {"ess_ratio": 0.2}, "warnings": []}


def write_run(d: Path, **files) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / f"{name}.json").write_text(json.dumps(data))
    return d


def good_run(d: Path, **overrides) -> Path:
    files = {"evaluate": evaluate_json(), "replay": replay_json(),
             "loadtest": {"kind": "loadtest", "p50_ms": 8.0, "p99_ms": 41.5, "errors": 0,
                          "latency_ms": {"p99": 41.5, "p99.9": 80.0}},
             "drift": {"kind": "drift", "verdict": "ok", "features": []},
             "bundle": {"kind": "bundle", "size_bytes": 12_000_000},
             "skew": {"kind": "skew", "rows": 5000, "mismatches": 0}}
    files.update(overrides)
    return write_run(d, **files)


def toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "g.toml"
    p.write_text(text)
    return p


def one_gate(**kw) -> dict:
    g = {"name": "g", "kind": "evaluate", "path": "segments.all.ndcg", "op": ">=", "threshold": 0.1}
    g.update(kw)
    return {"gate": [{k: v for k, v in g.items() if v is not None}]}


# ------------------------------------------------------------------------------------------------------ config
def test_example_config_at_repo_root_is_valid_and_covers_the_gate_families():
    cfg = load_gate_config(ROOT / "gates.toml")
    kinds = {g.kind for g in cfg.gates}
    assert {"evaluate", "replay", "loadtest", "drift", "bundle", "skew"} <= kinds
    paths = {g.path for g in cfg.gates}
    assert {"segments.anonymous.recall", "segments.new_items.recall", "estimates.snips.lift.ci_low",
            "policy_violations", "coverage", "p99_ms", "mismatches", "size_bytes", "verdict"} <= paths


@pytest.mark.parametrize("data,key", [
    ({"gate": [{"name": "g", "kind": "evaluate", "path": "a", "op": ">=", "threshold": 1, "treshold": 2}]},
     "'treshold'"),
    ({"gate": [{"name": "g", "kind": "evaluate", "path": "a", "op": "=>", "threshold": 1}]}, "'op'"),
    ({"gate": [{"name": "g", "kind": "evaluate", "op": ">=", "threshold": 1}]}, "'path'"),
    ({"gate": [{"name": "g", "kind": "evaluate", "path": "a", "op": ">="}]}, "threshold"),
    ({"gate": [{"name": "g", "kind": "evaluate", "path": "a", "op": ">=", "threshold": "high"}]}, "'threshold'"),
    ({"gate": [{"name": "g", "kind": "evaluate", "path": "a", "op": ">=", "relative_to_baseline": "x%"}]},
     "'relative_to_baseline'"),
    ({"gate": [{"name": "g", "kind": "evaluate", "path": "a", "op": ">=", "threshold": 1, "required": "yes"}]},
     "'required'"),
    ({"gate": [{"name": "g", "kind": "evaluate", "path": "a..b", "op": ">=", "threshold": 1}]}, "'path'"),
    ({"gates": []}, "'gates'"),
    ({"defaults": {"requird": True}, "gate": []}, "defaults.requird"),
    ({"gate": [{"name": "g", "kind": "e", "path": "a", "op": ">=", "threshold": 1},
               {"name": "g", "kind": "e", "path": "b", "op": ">=", "threshold": 1}]}, "duplicate"),
])
def test_bad_configs_name_the_key(data, key):
    with pytest.raises(GateConfigError) as e:
        parse_gate_config(data, "x.toml")
    assert key in str(e.value) and "x.toml" in str(e.value)


def test_relative_margin_parsing():
    cfg = parse_gate_config(one_gate(relative_to_baseline="5%"))
    g = cfg.gates[0]
    assert g.relative_to_baseline == pytest.approx(0.05) and g.relative_is_fraction
    assert parse_gate_config(one_gate(relative_to_baseline=0.01)).gates[0].relative_is_fraction is False


def test_lookup_dotted_paths_keys_with_dots_and_list_indices():
    d = {"a": {"b": [10, {"c": 3}]}, "latency_ms": {"p99": 1.0, "p99.9": 2.0}, "n": None}
    assert lookup(d, "a.b.0") == 10
    assert lookup(d, "a.b.1.c") == 3
    assert lookup(d, "latency_ms.p99.9") == 2.0
    assert lookup(d, "latency_ms.p99") == 1.0
    assert lookup(d, "a.x") is MISSING and lookup(d, "a.b.5") is MISSING and lookup(d, "n") is MISSING


# -------------------------------------------------------------------------------------------------- evaluation
def test_example_gates_pass_on_a_good_run_and_fail_on_a_worse_model(tmp_path):
    cfg = load_gate_config(ROOT / "gates.toml")
    base = good_run(tmp_path / "base")
    rep = evaluate_gates(cfg, good_run(tmp_path / "same"), base)
    assert rep.passed, [(r.gate.name, r.reason) for r in rep.failed]
    statuses = {r.gate.name: r.status for r in rep.results}
    assert statuses["ndcg_all"] == "pass" and statuses["serving_p99"] == "pass" and statuses["drift"] == "pass"
    worse = good_run(tmp_path / "worse", evaluate=evaluate_json(ndcg=0.09, anon_recall=0.05))
    rep = evaluate_gates(cfg, worse, base)
    failed = {r.gate.name for r in rep.failed}
    assert failed == {"ndcg_all", "recall_anonymous"}
    r = next(r for r in rep.results if r.gate.name == "ndcg_all")
    assert r.value == 0.09 and r.baseline == 0.12 and r.bound == pytest.approx(0.11)
    # a CTR-neutral model that loses 3% of the simulator's expected revenue per request fails the revenue gate alone
    poorer = good_run(tmp_path / "poorer", evaluate=evaluate_json(revenue=29.1))
    assert {r.gate.name for r in evaluate_gates(cfg, poorer, base).failed} == {"true_revenue_per_request"}
    assert evaluate_gates(cfg, good_run(tmp_path / "level", evaluate=evaluate_json(revenue=29.5)), base).passed
    # a model that starves new items again (the demo's pipeline without the new-item slot: 0.12% of its slots
    # against 1.35%) fails the exposure gate alone; half the baseline's share still passes
    starving = good_run(tmp_path / "starving", evaluate=evaluate_json(new_item_share=0.0012))
    assert {r.gate.name for r in evaluate_gates(cfg, starving, base).failed} == {"new_item_exposure"}
    assert evaluate_gates(cfg, good_run(tmp_path / "half", evaluate=evaluate_json(new_item_share=0.007)), base).passed


@pytest.mark.parametrize("override,gate", [
    ({"evaluate": evaluate_json(violations=3)}, "policy_violations"),
    ({"replay": replay_json(ci_low=0.9)}, "snips_lift_ci_low"),
    ({"loadtest": {"kind": "loadtest", "p99_ms": 180.0, "errors": 0}}, "serving_p99"),
    ({"skew": {"kind": "skew", "rows": 10, "mismatches": 1}}, "feature_skew"),
    ({"drift": {"kind": "drift", "verdict": "drift"}}, "drift"),
])
def test_each_guardrail_fails_on_its_own(tmp_path, override, gate):
    cfg = load_gate_config(ROOT / "gates.toml")
    rep = evaluate_gates(cfg, good_run(tmp_path / "c", **override))
    assert {r.gate.name for r in rep.failed} == {gate}


def test_baseline_relative_gate_with_absolute_and_percent_margins(tmp_path):
    base = write_run(tmp_path / "b", evaluate=evaluate_json(ndcg=0.20))
    for ndcg, ok in ((0.19, True), (0.1899, False), (0.25, True)):
        cand = write_run(tmp_path / f"c{ndcg}", evaluate=evaluate_json(ndcg=ndcg))
        absolute = evaluate_gates(parse_gate_config(one_gate(threshold=None, relative_to_baseline=0.01)), cand, base)
        percent = evaluate_gates(parse_gate_config(one_gate(threshold=None, relative_to_baseline="5%")), cand, base)
        assert absolute.passed is ok and percent.passed is ok
    # lower is better: latency may grow at most 10%
    lb = write_run(tmp_path / "lb", loadtest={"kind": "loadtest", "p99_ms": 50.0})
    lc = write_run(tmp_path / "lc", loadtest={"kind": "loadtest", "p99_ms": 56.0})
    cfg = parse_gate_config(one_gate(kind="loadtest", path="p99_ms", op="<=", threshold=120,
                                     relative_to_baseline="10%"))
    rep = evaluate_gates(cfg, lc, lb)
    assert not rep.passed and rep.results[0].bound == pytest.approx(55.0)
    assert evaluate_gates(cfg, lc).passed  # without a baseline only the absolute threshold applies


def test_missing_values_fail_required_gates_and_skip_optional_ones(tmp_path):
    cand = write_run(tmp_path / "c", evaluate={"kind": "evaluate", "segments": {"all": {"ndcg": 0.3}}})
    req = evaluate_gates(parse_gate_config(one_gate(path="segments.anonymous.ndcg")), cand)
    assert req.results[0].status == "fail" and "segments.anonymous.ndcg" in req.results[0].reason
    opt = evaluate_gates(parse_gate_config(one_gate(path="segments.anonymous.ndcg", required=False)), cand)
    assert opt.results[0].status == "skip" and opt.passed
    nofile = evaluate_gates(parse_gate_config(one_gate(kind="loadtest", path="p99_ms")), cand)
    assert nofile.results[0].status == "fail" and "loadtest" in nofile.results[0].reason
    # baseline-only gate: no baseline run -> skip; baseline run without the value -> fail when required
    rel = parse_gate_config(one_gate(threshold=None, relative_to_baseline=0.01))
    assert evaluate_gates(rel, cand).results[0].status == "skip"
    empty = write_run(tmp_path / "b", evaluate={"kind": "evaluate", "segments": {}})
    assert evaluate_gates(rel, cand, empty).results[0].status == "fail"


def test_non_numeric_value_fails_and_ambiguous_kind_is_an_input_error(tmp_path):
    cand = write_run(tmp_path / "c", evaluate=evaluate_json(), drift={"kind": "drift", "verdict": "ok"})
    rep = evaluate_gates(parse_gate_config(one_gate(kind="drift", path="verdict")), cand)
    assert rep.results[0].status == "fail" and "not a number" in rep.results[0].reason
    write_run(tmp_path / "c", evaluate2=evaluate_json())
    with pytest.raises(GateInputError, match="set `file`"):
        evaluate_gates(parse_gate_config(one_gate()), cand)
    assert evaluate_gates(parse_gate_config(one_gate(file="evaluate2.json")), cand).passed
    (tmp_path / "c" / "broken.json").write_text("{nope")
    with pytest.raises(GateInputError, match="broken.json"):
        evaluate_gates(parse_gate_config(one_gate(file="evaluate2.json")), cand)


# ----------------------------------------------------------------------------------------------------- outputs
def test_junit_xml_is_well_formed_and_counts_failures(tmp_path):
    cfg = load_gate_config(ROOT / "gates.toml")
    rep = evaluate_gates(cfg, good_run(tmp_path / "c", evaluate=evaluate_json(violations=2)),
                         good_run(tmp_path / "b"))
    root = ET.fromstring(to_junit(rep))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(cfg.gates) == int(suite.get("tests"))
    failures = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["policy_violations"] and suite.get("failures") == "1"
    assert "2" in failures[0].find("failure").get("message")
    assert int(suite.get("skipped")) == sum(c.find("skipped") is not None for c in cases)


def test_markdown_lists_failures_first_with_values_and_baselines(tmp_path):
    cfg = load_gate_config(ROOT / "gates.toml")
    rep = evaluate_gates(cfg, good_run(tmp_path / "c", evaluate=evaluate_json(ndcg=0.05)), good_run(tmp_path / "b"))
    md = to_markdown(rep)
    lines = md.splitlines()
    assert lines[0].startswith("## Release gates: ❌ 1 failed")
    rows = [ln for ln in lines if ln.startswith("| **")]
    assert len(rows) == len(cfg.gates) and rows[0].startswith("| **ndcg_all**")
    assert "0.05" in rows[0] and "0.12" in rows[0] and "-0.07" in rows[0]


# ---------------------------------------------------------------------------------------------------------- CLI
def test_cli_exit_codes_junit_markdown_and_json(tmp_path):
    cfg = str(ROOT / "gates.toml")
    base = good_run(tmp_path / "b")
    ok = runner.invoke(app, ["gate", "--config", cfg, "--candidate", str(good_run(tmp_path / "c")),
                             "--baseline", str(base), "--junit", str(tmp_path / "j.xml"),
                             "--markdown", str(tmp_path / "pr.md")])
    assert ok.exit_code == 0, ok.output
    ET.parse(tmp_path / "j.xml")
    assert (tmp_path / "pr.md").read_text().startswith("## Release gates: ✅")
    bad = runner.invoke(app, ["gate", "--config", cfg, "--json", "--baseline", str(base),
                              "--candidate", str(good_run(tmp_path / "w", evaluate=evaluate_json(coverage=0.01)))])
    assert bad.exit_code == 1
    data = json.loads(bad.stdout)
    assert data["passed"] is False and [g["name"] for g in data["gates"] if g["status"] == "fail"] == ["coverage"]


def test_cli_bad_config_and_bad_run_exit_2_with_one_line(tmp_path):
    bad = toml(tmp_path, '[[gate]]\nname = "g"\nkind = "evaluate"\npath = "coverage"\nop = "~"\nthreshold = 1\n')
    r = runner.invoke(app, ["gate", "--config", str(bad), "--candidate", str(tmp_path)])
    assert r.exit_code == 2 and "'op'" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["gate", "--config", str(toml(tmp_path, "[[gate]\n")), "--candidate", str(tmp_path)])
    assert r.exit_code == 2 and "not valid TOML" in r.output
    r = runner.invoke(app, ["gate", "--config", str(ROOT / "gates.toml"), "--candidate", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a run folder" in r.output
