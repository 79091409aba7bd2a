"""`recs gate`: check a candidate run's results against release gates (exit 1 when any gate fails)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from recs.cli.common import console, fail, out, print_json

STYLE = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[yellow]skip[/]"}


def _table(report) -> Table:
    from recs.evaluators.gates_output import delta_text, fmt_value

    c = report.counts()
    t = Table(title=f"release gates: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped",
              title_justify="left")
    for col in ("gate", "status", "value", "threshold", "baseline", "Δ", "note"):
        t.add_column(col, justify="right" if col in ("value", "baseline", "Δ") else "left",
                     overflow="fold", no_wrap=col in ("gate", "status"))
    for r in report.results:
        t.add_row(escape(r.gate.name), STYLE[r.status], *(escape(x) for x in (
            fmt_value(r.value), r.threshold_text, fmt_value(r.baseline), delta_text(r), r.reason)))
    return t


def register(app: typer.Typer) -> None:
    @app.command("gate")
    def gate_cmd(
        config: Path = typer.Option(..., "--config", help="Gates TOML (see gates.toml, docs/GATES.md)."),
        candidate: Path = typer.Option(..., "--candidate", help="Run folder of the candidate's JSON results."),
        baseline: Optional[Path] = typer.Option(None, "--baseline", help="Run folder of the baseline's results."),
        junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML here (CI test report)."),
        markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write a Markdown summary (PR comment)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        """Pass/fail release gates on offline metrics, counterfactual lift, guardrails and drift."""
        from recs.datasets.io import atomic_write_text
        from recs.evaluators.gates import GateConfigError, GateInputError, evaluate_gates, load_gate_config
        from recs.evaluators.gates_output import to_junit, to_markdown

        try:
            cfg = load_gate_config(config)
        except GateConfigError as e:
            fail(str(e))
        try:
            report = evaluate_gates(cfg, candidate, baseline)
        except GateInputError as e:
            fail(str(e))
        for path, text in ((junit, to_junit), (markdown, to_markdown)):
            if path is not None:
                try:
                    atomic_write_text(path, text(report))
                except OSError as e:
                    fail(f"{path}: cannot write ({e.strerror or e})")
        if as_json:
            print_json(report.to_json())
        else:
            out.print(_table(report))
            verdict = "[bold green]all gates passed[/]" if report.passed else \
                (f"[bold red]{len(report.failed)} gate(s) failed:[/] "
                 + escape(", ".join(r.gate.name for r in report.failed)))
            console.print(verdict, highlight=False)
        if not report.passed:
            raise typer.Exit(1)
