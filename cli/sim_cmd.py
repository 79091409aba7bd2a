"""`recs sim ...`: generate a simulated marketplace."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recs.cli.common import check_output_dir, console, fail, out, print_json

sim_app = typer.Typer(help="The simulated marketplace (known ground truth).", no_args_is_help=True)


def summary_table(summary: dict) -> Table:
    t = Table(title=f"simulated marketplace (seed {summary['seed']})", show_header=False)
    for key in ("users", "items", "days", "start", "end", "requests", "sessions", "impressions", "clicks"):
        v = summary[key]
        t.add_row(key, f"{v:,}" if isinstance(v, int) else str(v))
    t.add_row("logged CTR", f"{summary['ctr']:.4f}")
    t.add_row("purchases (eventually)", f"{summary['purchases_eventually']:,}")
    for table, n in summary["rows"].items():
        t.add_row(f"rows: {table}", f"{n:,}")
    t.add_row("seconds", f"{summary['seconds']:.1f}")
    t.add_row("impression rows/s", f"{summary['impressions'] / max(summary['seconds'], 1e-9):,.0f}")
    return t


@sim_app.command("generate")
def generate(
    out_dir: Path = typer.Option(..., "--out", help="Output dataset folder."),
    users: int = typer.Option(None, "--users", help="Logged-in users (default: from --scale)."),
    items: int = typer.Option(None, "--items", help="Catalog size (default: from --scale)."),
    days: int = typer.Option(None, "--days", help="Days of traffic (default: from --scale)."),
    requests_per_day: int = typer.Option(None, "--requests-per-day", help="Requests a day (default: from --scale)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same data."),
    anonymous_share: float = typer.Option(0.35, "--anonymous-share", help="Share of sessions with no user id."),
    scale: str = typer.Option("small", "--scale", help="Preset: small | medium | large."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate catalog, users, sellers, impressions, interactions, queries, inventory events and truth/."""
    from recs.sim import SimConfig, generate_dataset

    for name, v in (("--users", users), ("--items", items), ("--days", days), ("--requests-per-day", requests_per_day)):
        if v is not None and v <= 0:
            fail(f"{name} must be a positive number, got {v}")
    if seed < 0:
        fail(f"--seed must be >= 0, got {seed}")
    if not 0.0 <= anonymous_share <= 1.0:
        fail(f"--anonymous-share must be in [0, 1], got {anonymous_share}")
    check_output_dir(out_dir, overwrite)
    try:
        cfg = SimConfig.for_scale(scale, n_users=users, n_items=items, days=days, requests_per_day=requests_per_day,
                                  seed=seed, anonymous_share=anonymous_share)
    except ValueError as e:
        fail(str(e))
    with Progress(TextColumn("generating"), BarColumn(), TextColumn("{task.completed}/{task.total} h"),
                  TimeElapsedColumn(), console=console, disable=as_json) as progress:
        task = progress.add_task("sim", total=cfg.days * 24)
        summary = generate_dataset(cfg, out_dir, overwrite=overwrite,
                                   progress=lambda done, total: progress.update(task, completed=done))
    if as_json:
        print_json(summary)
    else:
        out.print(summary_table(summary))
        out.print(f"written to [bold]{out_dir}[/]")


@sim_app.command("abtest")
def abtest(
    out_dir: Path = typer.Option(..., "--out", help="Output folder: units.parquet (or .csv) + truth.json."),
    control: str = typer.Option("logging", "--control", help="logging | uniform | oracle | a model folder."),
    treatment: str = typer.Option("oracle", "--treatment", help="logging | uniform | oracle | a model folder."),
    model: Path = typer.Option(None, "--model", help="A trained pipeline as the treatment (= --treatment DIR)."),
    dataset: Path = typer.Option(None, "--dataset", help="Simulated dataset: run in its world (World.load)."),
    days: int = typer.Option(7, "--days", help="Experiment days."),
    pre_days: int = typer.Option(7, "--pre-days", help="Pre-period days (control for all; CUPED covariates)."),
    requests_per_day: int = typer.Option(2000, "--requests-per-day"),
    split: float = typer.Option(0.5, "--split", help="Planned treatment share."),
    actual_split: float = typer.Option(None, "--actual-split", help="Assigned share (break it to test SRM)."),
    error_rate: float = typer.Option(0.0, "--treatment-error-rate", help="Injected treatment error rate."),
    truth_requests: int = typer.Option(5000, "--truth-requests", help="Requests per arm for the true effect."),
    salt: str = typer.Option("exp", "--salt", help="Assignment hash salt."),
    seed: int = typer.Option(0, "--seed"),
    users: int = typer.Option(None, "--users", help="Without --dataset: world size (default: --scale)."),
    items: int = typer.Option(None, "--items"),
    scale: str = typer.Option("small", "--scale"),
    fmt: str = typer.Option("parquet", "--format", help="parquet | csv."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    as_json: bool = typer.Option(False, "--json", help="Print the truth JSON."),
) -> None:
    """Simulated online A/B test on fresh traffic; writes the table `recs abtest-analyze` reads + the true effect."""
    from recs.scenarios.sim_abtest import SimABTestConfig, run_sim_abtest, write_sim_abtest
    from recs.sim import SimConfig, World

    if model is not None:
        if treatment != "oracle":
            fail("give either --model or --treatment, not both")
        treatment = str(model)
    if fmt not in ("parquet", "csv"):
        fail(f"--format must be parquet or csv, got {fmt!r}")
    check_output_dir(out_dir, overwrite)
    try:
        cfg = SimABTestConfig(control=control, treatment=treatment, days=days, pre_days=pre_days,
                              requests_per_day=requests_per_day, split=split, actual_split=actual_split,
                              salt=salt, seed=seed, truth_requests=truth_requests, error_rate=(0.0, error_rate))
        if dataset is not None:
            world = World.load(dataset)
        else:
            world = World.build(SimConfig.for_scale(scale, n_users=users, n_items=items, seed=seed))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    try:
        with Progress(TextColumn("experiment"), BarColumn(), TextColumn("{task.completed}/{task.total} days"),
                      TimeElapsedColumn(), console=console, disable=as_json) as progress:
            task = progress.add_task("abtest", total=days)
            result = run_sim_abtest(world, cfg, progress=lambda d, n: progress.update(task, completed=d))
    except (FileNotFoundError, ValueError) as e:  # e.g. an unreadable model folder
        fail(f"{e}")
    paths = write_sim_abtest(result, out_dir, fmt=fmt, overwrite=overwrite)
    if as_json:
        print_json(result.truth)
        return
    s = result.summary
    t = Table(title=f"simulated A/B test: {control} vs {treatment}", title_justify="left")
    for c in ("metric", "true control", "true treatment", "true diff", "true lift"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for name, m in result.truth["metrics"].items():
        t.add_row(name, f"{m['control']:.4g}", f"{m['treatment']:.4g}", f"{m['diff']:+.4g}",
                  "-" if m["lift"] is None else f"{m['lift']:+.2%}")
    out.print(t)
    out.print(f"{s['units']:,} units ({s['anonymous_units']:,} anonymous sessions), {s['requests']:,} requests; "
              f"per arm {s['units_per_arm']}")
    out.print(f"written {paths['units']} and {paths['truth']}; analyse with: recs abtest-analyze --data "
              f"{paths['units']} --unit unit_id --metrics clicks/impressions,revenue/requests "
              "--pre-period-covariate auto --guardrails 'latency_ms<=+10%'")


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
