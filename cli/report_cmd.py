"""`recs report`: combine run folders of JSON results into one HTML + Markdown report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from recs.cli.common import console, fail
from recs.reports.runs import build_report, load_runs


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        runs: list[Path] = typer.Option(
            ..., "--runs", help="Run folder holding *.json results (repeat, or list more after it)."),
        more: Optional[list[Path]] = typer.Argument(None, help="More run folders.", show_default=False),
        out: Path = typer.Option(..., "--out", help="Folder to write report.html and report.md into."),
        title: str = typer.Option("recs report", help="Report title."),
        name: str = typer.Option("report", help="File name stem of the outputs."),
    ) -> None:
        """Render every result (evaluate, replay, simulate, loadtest, abtest, drift, ...) of the run folders."""
        dirs = list(dict.fromkeys([*runs, *(more or [])]))
        try:
            results, skipped = load_runs(dirs)
        except (OSError, ValueError) as exc:
            fail(str(exc))
        if not results:
            fail(f"no result files (*.json with a top-level \"kind\") under {', '.join(map(str, dirs))}")
        if out.exists() and not out.is_dir():
            fail(f"{out}: exists and is not a folder")
        try:
            md, html = build_report(results, skipped, title).write(out, name)
        except ValueError as exc:
            fail(str(exc))
        console.print(f"wrote {html} and {md} ({len(results)} results, {len(skipped)} files skipped)")
