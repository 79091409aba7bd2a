"""`recs simulate ...`: what-if scenarios on the simulated marketplace (stale inventory, delayed feedback, drift,
cold start). Each prints a rich table, `--json` prints the result, `--out DIR` writes `<name>.json` + a report."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer
from rich.table import Table

from recs.cli.common import console, fail, out, print_json

simulate_app = typer.Typer(help="Scenarios on the simulated marketplace (known ground truth).", no_args_is_help=True)


def _pct(v: float) -> str:
    return f"{v:.2%}"


def _parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        fail(f"{what}: expected comma-separated integers, got {text!r}")
    if not vals:
        fail(f"{what}: expected at least one value")
    return vals


def _sim(users: int, items: int, seed: int, **extra):
    from recs.scenarios.common import small_sim

    if users <= 0 or items <= 0:
        fail("--users and --items must be positive")
    if seed < 0:
        fail(f"--seed must be >= 0, got {seed}")
    try:
        return small_sim(seed=seed, n_users=users, n_items=items, **extra)
    except ValueError as e:
        fail(str(e))


def _make(factory: Callable, **kw):
    try:
        return factory(**kw)
    except ValueError as e:
        fail(str(e))


def _finish(result: dict, name: str, out_dir: Optional[Path], as_json: bool, table: Table,
            report_fn: Callable[[dict], object]) -> None:
    if out_dir is not None:
        from recs.datasets.io import atomic_write_json

        if out_dir.exists() and not out_dir.is_dir():
            fail(f"{out_dir}: exists and is not a folder")
        atomic_write_json(out_dir / f"{name}.json", result)
        md, html = report_fn(result).write(out_dir, name)
        console.print(f"written {out_dir / (name + '.json')}, {md}, {html}", highlight=False)
    if as_json:
        print_json(result)
    else:
        out.print(table)


def _progress(quiet: bool):
    return None if quiet else (lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))


OUT_OPT = typer.Option(None, "--out", help="Folder for <name>.json, <name>.md and <name>.html.")
JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON.")


@simulate_app.command("stale-inventory")
def stale_inventory(
    ranker: str = typer.Option("pipeline", "--ranker", help="pipeline (trained; default) or oracle (true tastes)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A simulated dataset (default: simulate one)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A model trained on --dataset (default: train one)."),
    days: int = typer.Option(2, "--days", help="Days to simulate for training (when no --dataset)."),
    ages: str = typer.Option("0,900,3600,21600,86400", "--ages", help="Snapshot ages in seconds, comma-separated."),
    requests: int = typer.Option(600, "--requests", help="Requests served per snapshot age."),
    ttl: int = typer.Option(900, "--ttl", help="Mitigation: TTL of cached lists in seconds."),
    warmup: int = typer.Option(24, "--warmup-hours", help="Hours of traffic before the oldest snapshot."),
    demand: float = typer.Option(1.0, "--demand", help="Traffic multiplier (more sales, faster stock-outs)."),
    users: int = typer.Option(1000, "--users"), items: int = typer.Option(3000, "--items"),
    seed: int = typer.Option(0, "--seed"),
    out_dir: Optional[Path] = OUT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Serve from snapshots of age 0..24 h while stock and prices change; then with serve-time mitigations."""
    from recs.scenarios.stale_inventory import StaleInventoryConfig, run_stale_inventory, stale_inventory_report
    from recs.scenarios.trained import ModelSettings

    if days <= 0:
        fail("--days must be positive")
    cfg = _make(StaleInventoryConfig, sim=_sim(users, items, seed, days=days), ranker=ranker,
                model=_make(ModelSettings, seed=seed), dataset=dataset, model_dir=model,
                ages_s=_parse_ints(ages, "--ages"), n_requests=requests, ttl_s=ttl, warmup_h=warmup, demand=demand,
                seed=seed)
    try:
        result = run_stale_inventory(cfg, progress=_progress(as_json))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    t = Table(title=f"stale inventory ({result['ranker']} ranker, {requests} requests, TTL {ttl}s)",
              title_justify="left")
    for c in ("age", "OOS shown", "price changed", "true CTR", "click loss", "purchase loss",
              "mitigated OOS", "mitigated CTR", "mitigated purchase loss"):
        t.add_column(c, justify="left" if c == "age" else "right")
    for s in result["snapshots"]:
        m = s["mitigated"]
        t.add_row(s["age"], _pct(s["oos_shown_share"]), _pct(s["price_changed_share"]), f"{s['true_ctr']:.4f}",
                  _pct(s["click_loss"]), _pct(s["purchase_loss"]), _pct(m["oos_shown_share"]),
                  f"{m['true_ctr']:.4f}", _pct(m["purchase_loss"]))
    _finish(result, "stale_inventory", out_dir, as_json, t, stale_inventory_report)


@simulate_app.command("delayed-feedback")
def delayed_feedback(
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A simulated dataset (default: simulate one)."),
    days: int = typer.Option(8, "--days", help="Days to simulate (when no --dataset)."),
    requests_per_day: int = typer.Option(3000, "--requests-per-day"),
    window: float = typer.Option(96.0, "--window-hours", help="Label attribution window in hours."),
    test_days: int = typer.Option(1, "--test-days", help="Days after T scored against the truth."),
    rounds: int = typer.Option(120, "--rounds", help="LightGBM boosting rounds."),
    users: int = typer.Option(600, "--users"), items: int = typer.Option(1500, "--items"),
    seed: int = typer.Option(0, "--seed"),
    out_dir: Optional[Path] = OUT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Retrain a pCVR model at T with naive, matured-only and delay-corrected labels; bias and ranking vs truth."""
    from recs.scenarios.delayed_feedback import DelayedFeedbackConfig, delayed_feedback_report, run_delayed_feedback
    from recs.scenarios.trained import check_dataset

    if dataset is not None:
        _make(check_dataset, dataset=dataset)
    if days <= 0 or requests_per_day <= 0:
        fail("--days and --requests-per-day must be positive")
    sim = _sim(users, items, seed, days=days, requests_per_day=requests_per_day, delay_median_hours=6.0,
               delay_sigma=1.5)
    cfg = _make(DelayedFeedbackConfig, sim=sim, dataset=dataset, test_days=test_days, window_h=window,
                num_rounds=rounds, seed=seed)
    try:
        result = run_delayed_feedback(cfg, progress=_progress(as_json))
    except ValueError as e:
        fail(str(e))
    t = Table(title=f"delayed feedback (trained at {result['trained_at']}, true test CVR "
                    f"{result['test']['true_rate']:.4f})", title_justify="left")
    for c in ("labels", "train rows", "train label rate", "mean predicted CVR", "relative bias", "AUC", "NDCG@10"):
        t.add_column(c, justify="left" if c == "labels" else "right")
    for v in result["variants"]:
        t.add_row(v["variant"], f"{v['train_rows']:,}", f"{v['train_label_rate']:.4f}", f"{v['mean_pred']:.4f}",
                  f"{v['rel_bias']:+.1%}", f"{v['auc']:.4f}", f"{v['ndcg']:.4f}")
    _finish(result, "delayed_feedback", out_dir, as_json, t, delayed_feedback_report)


@simulate_app.command("drift")
def drift(
    kind: str = typer.Option("preference", "--kind", help="What shifts: preference | catalog_mix | price."),
    onset: int = typer.Option(6, "--onset-day", help="Day (0-based, from the start of the log) the drift starts."),
    magnitude: Optional[float] = typer.Option(
        None, "--magnitude", help="preference: x 90 degrees rotation (0.5); catalog_mix: share of the items of half "
                                  "the categories delisted (0.8); price: +share on half the categories (0.5)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A simulated dataset to continue (default: "
                                                                   "simulate one per seed)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A model trained on --dataset (default: train one)."),
    days: int = typer.Option(9, "--days", help="Days in all: training, reference and monitored days."),
    ref_days: int = typer.Option(2, "--ref-days", help="Days of log the pipeline is trained on (with --dataset: "
                                                       "its days)."),
    baseline: int = typer.Option(2, "--baseline-days", help="First days in production: the monitors' reference."),
    requests_per_day: int = typer.Option(400, "--requests-per-day", help="Requests a day served by the pipeline."),
    traffic: int = typer.Option(4000, "--traffic-per-day", help="Logging-policy requests a day (training log, sales)."),
    maturity: int = typer.Option(1, "--maturity-days", help="Days until a day's labels count as matured."),
    window: int = typer.Option(1, "--window-days", help="Rolling window of the label monitors, in days."),
    seeds: int = typer.Option(2, "--seeds", help="Seeds (each: a trained pipeline, a drifted and a drift-free run)."),
    users: int = typer.Option(1000, "--users"), items: int = typer.Option(3000, "--items"),
    seed: int = typer.Option(0, "--seed"),
    out_dir: Optional[Path] = OUT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Shift preferences, catalog mix or prices from a day; detection delay and false-alarm rate of four monitors."""
    from recs.scenarios.drift import DEFAULT_MAGNITUDE, DriftScenarioConfig, run_drift
    from recs.scenarios.drift_monitors import drift_report
    from recs.scenarios.trained import ModelSettings, check_dataset

    kind = kind.replace("-", "_")
    if traffic <= 0:
        fail("--traffic-per-day must be positive")
    if dataset is not None:
        ref_days = _make(check_dataset, dataset=dataset).days
    cfg = _make(DriftScenarioConfig, sim=_sim(users, items, seed, requests_per_day=traffic),
                model=_make(ModelSettings, seed=seed), dataset=dataset, model_dir=model, kind=kind, onset_day=onset,
                magnitude=DEFAULT_MAGNITUDE.get(kind, 0.5) if magnitude is None else magnitude, days=days,
                ref_days=ref_days, baseline_days=baseline, requests_per_day=requests_per_day, maturity_days=maturity,
                window_days=window, seeds=seeds)
    try:
        result = run_drift(cfg, progress=_progress(as_json))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    t = Table(title=f"drift: {kind} from day {onset} (magnitude {cfg.magnitude}, {seeds} seed(s))",
              title_justify="left")
    for c in ("monitor", "detected", "mean delay (days)", "false-alarm rate (days)", "runs with false alarm"):
        t.add_column(c, justify="left" if c == "monitor" else "right")
    for m, v in result["monitors"].items():
        d = v["mean_detection_delay_days"]
        t.add_row(m, _pct(v["detected_share"]), "-" if d is None else f"{d:.1f}",
                  "-" if v["false_alarm_rate"] is None else _pct(v["false_alarm_rate"]),
                  _pct(v["runs_with_false_alarm"]))
    _finish(result, "drift", out_dir, as_json, t, drift_report)


@simulate_app.command("cold-start")
def cold_start(
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A simulated dataset (default: simulate one)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A model trained on --dataset with a holdout day."),
    days: int = typer.Option(5, "--days", help="Days to simulate (when no --dataset)."),
    requests_per_day: int = typer.Option(2000, "--requests-per-day"),
    k: int = typer.Option(10, "--k", help="Cut-off K of Recall@K / NDCG@K and the slate size offline."),
    requests: int = typer.Option(300, "--requests", help="Fresh requests per segment for the true CTR."),
    explore: float = typer.Option(0.1, "--explore", help="Share of requests whose last slot explores a new item."),
    users: int = typer.Option(400, "--users"), items: int = typer.Option(1500, "--items"),
    seed: int = typer.Option(1, "--seed"),
    out_dir: Optional[Path] = OUT_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Recall/NDCG per retriever and segment on held-out clicks; true CTR with and without mitigations."""
    from recs.scenarios.cold_start import ColdStartConfig, cold_start_report, run_cold_start
    from recs.scenarios.trained import ModelSettings

    if days <= 0 or requests_per_day <= 0:
        fail("--days and --requests-per-day must be positive")
    sim = _sim(users, items, seed, days=days, requests_per_day=requests_per_day)
    cfg = _make(ColdStartConfig, sim=sim, model=_make(ModelSettings, holdout_days=1, ranker_days=1, seed=seed),
                dataset=dataset, model_dir=model, k=k, n_requests=requests, explore=explore, seed=seed)
    try:
        result = run_cold_start(cfg, progress=_progress(as_json))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    t = Table(title=f"cold start: true CTR per segment ({result['new_items']} new items after "
                    f"{result['cutoff']})", title_justify="left")
    for c in ("segment", "policy", "true CTR", "± se", "purchase rate", "new-item slots", "new-item CTR",
              "gain vs none", "explore cost"):
        t.add_column(c, justify="left" if c in ("segment", "policy") else "right")
    for r in result["online"]:
        gain, cost, nctr = r.get("gain_vs_no_mitigation"), r.get("explore_cost"), r["new_item_ctr"]
        t.add_row(r["segment"], r["policy"], f"{r['true_ctr']:.4f}", f"{r['ctr_stderr']:.4f}",
                  f"{r['purchase_rate']:.4f}", _pct(r["new_item_slot_share"]), "-" if nctr is None else f"{nctr:.4f}",
                  "-" if gain is None else f"{gain:+.2%}", "-" if cost is None else _pct(cost))
    _finish(result, "cold_start", out_dir, as_json, t, cold_start_report)


def register(app: typer.Typer) -> None:
    app.add_typer(simulate_app, name="simulate")
