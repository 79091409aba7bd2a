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


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
