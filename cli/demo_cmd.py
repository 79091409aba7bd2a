"""`recs demo`: run the whole pipeline on the embedded default, with progress."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recs.cli.common import console, fail, out


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(out_dir: Path = typer.Option(Path("demo_out"), "--out", help="Where everything is written."),
             seed: int = typer.Option(0, "--seed")) -> None:
        """Generate, ingest, label, train, evaluate, replay, simulate failures, sign, serve, load-test, gate, report."""
        from recs.scenarios.demo import Demo, DemoConfig

        cfg = DemoConfig(out=out_dir, seed=seed)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("demo", total=1)

            def on_step(title: str, j: int, n: int) -> None:
                progress.update(task, description=title, completed=j, total=n)
                if j:
                    progress.console.log(f"done: {cfg.steps[-1].name} ({cfg.steps[-1].seconds:.1f} s)")

            try:
                steps = Demo(cfg, on_step).run()
            except RuntimeError as e:
                fail(str(e), code=1)
        t = Table(title="recs demo")
        t.add_column("step")
        t.add_column("seconds", justify="right")
        for s in steps:
            t.add_row(s.name, f"{s.seconds:.1f}")
        t.add_row("total", f"{sum(s.seconds for s in steps):.1f}")
        out.print(t)
        out.print(f"report: [bold]{(out_dir / 'report' / 'report.html').resolve()}[/]")
        out.print(f"gates: [bold]{(out_dir / 'gates.md').resolve()}[/]")
