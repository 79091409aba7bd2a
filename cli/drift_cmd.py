"""`recs drift`: compare feature / score distributions of a reference and a current sample."""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from recs.cli.common import console, fail, out, print_json

if TYPE_CHECKING:
    from recs.evaluators.drift import DayVerdict, DriftReport

_STYLE = {"ok": "green", "warn": "yellow", "drift": "bold red", "skipped": "dim"}


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def _fmt(v: object, spec: str = ".4g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if v != v else format(v, spec)
    return str(v)


def _render(rep: DriftReport, reference: Path, current: Path) -> None:
    t = Table(title=f"drift: {reference} -> {current}", title_justify="left")
    show_missing = any(f.missing_reference or f.missing_current for f in rep.features)
    cols = [("column", "left"), ("status", "left"), ("PSI", "right"), ("test", "right"), ("p adj", "right"),
            ("ref", "right"), ("cur", "right")] + ([("missing ref/cur", "right")] if show_missing else [])
    for name, just in cols:
        t.add_column(name, justify=just, no_wrap=name != "column", overflow="fold")  # type: ignore[arg-type]
    for f in rep.worst_first():
        test = f"{'KS' if f.test == 'ks' else 'chi2'} {_fmt(f.statistic, '.3g')}"
        row = [f.column, f"[{_STYLE[f.status]}]{f.status}[/]", _fmt(f.psi, ".3f"), test, _fmt(f.p_adjusted, ".2g"),
               _fmt(f.reference_center, ".4g"), _fmt(f.current_center, ".4g")]
        if show_missing:
            row.append(f"{f.missing_reference:.1%}/{f.missing_current:.1%}")
        t.add_row(*row)
    out.print(t)
    cfg = rep.config
    clustered = (f"; clustered by {cfg.cluster_column} (design effect {rep.design_effect:.2f})"
                 if cfg.cluster_column else "")
    out.print(f"rows: reference {rep.n_reference:,}, current {rep.n_current:,}; PSI bands {cfg.psi_warn} / "
              f"{cfg.psi_drift}; {cfg.correction} correction at alpha {cfg.alpha}{clustered}", highlight=False)
    for c, why in rep.skipped_columns:
        out.print(f"[dim]skipped {c}: {why}[/]")
    if rep.only_in_reference:
        out.print(f"[yellow]absent from current:[/] {', '.join(rep.only_in_reference)}")
    if rep.only_in_current:
        out.print(f"[dim]new in current (not compared): {', '.join(rep.only_in_current)}[/]")
    out.print(f"verdict: [{_STYLE[rep.verdict]}]{rep.verdict}[/]")


def _render_monitor(verdicts: list[DayVerdict], result: dict) -> None:
    t = Table(title="drift by day", title_justify="left")
    for name, just in [("day", "left"), ("verdict", "left"), ("alarm", "left"), ("rows", "right"),
                       ("max PSI", "right"), ("flagged", "left")]:
        t.add_column(name, justify=just)  # type: ignore[arg-type]
    for v in verdicts:
        t.add_row(str(v.day), f"[{_STYLE[v.verdict]}]{v.verdict}[/]", "[bold red]ALARM[/]" if v.alarm else "",
                  f"{v.n_rows:,}", _fmt(v.max_psi, ".3f"), ", ".join(v.flagged))
    out.print(t)
    line = f"days {result['n_days']}, alarms {result['n_alarms']}"
    if result["onset_day"] is not None:
        delay = result["detection_delay_days"]
        line += f"; onset {result['onset_day']}: detection delay {'never' if delay is None else f'{delay:g} days'}"
    fa = result["false_alarm_rate"]
    line += f"; false-alarm rate {'n/a' if fa is None else f'{fa:.3f}'} (days before onset, or all days)"
    out.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("drift")
    def drift(
        reference: Path = typer.Option(
            ..., "--reference", "-r", help="Reference data: Parquet/CSV/JSONL file or folder."),
        current: Path = typer.Option(..., "--current", "-c", help="Current data, same layout as the reference."),
        columns: Optional[list[str]] = typer.Option(
            None, "--columns",
            help="Columns to compare (comma-separated; default: all shared, identifiers and datetimes skipped)."),
        categorical: Optional[list[str]] = typer.Option(
            None, "--categorical", help="Treat these columns as categorical whatever their dtype."),
        bins: int = typer.Option(10, help="Reference-quantile bins for numeric PSI."),
        alpha: float = typer.Option(0.01, help="Family-wise significance level across columns."),
        correction: str = typer.Option("holm", help="Multiple-testing correction: holm, bonferroni or none."),
        psi_warn: float = typer.Option(0.1, help="PSI at or above this: warn."),
        psi_drift: float = typer.Option(0.25, help="PSI at or above this: drift."),
        cluster: Optional[str] = typer.Option(
            None, "--cluster",
            help="Rows are clustered by this column (e.g. request_id for slates): tests use n / mean cluster size."),
        by_day: Optional[str] = typer.Option(
            None, "--by-day", help="Monitor: split the current data by the calendar day of this timestamp column and "
                                   "compare each day with the reference."),
        onset: Optional[str] = typer.Option(
            None, "--onset",
            help="Monitor: known drift onset day (YYYY-MM-DD) for detection delay and false-alarm rate."),
        alarm_on: str = typer.Option(
            "drift", "--alarm-on", help="Monitor: a day alarms at this verdict: drift or warn."),
        consecutive: int = typer.Option(
            1, "--consecutive", help="Monitor: days in a row the verdict must hold to alarm."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        out_file: Optional[Path] = typer.Option(
            None, "--out", help="Also write the JSON result here (for `recs report`)."),
        fail_on_drift: bool = typer.Option(
            False, "--fail-on-drift", help="Exit 1 when the verdict is drift (monitor: when any day alarms)."),
    ) -> None:
        """Compare feature and score distributions (PSI, KS, chi-square; Holm-corrected) and give a verdict."""
        # imported here: scipy.stats alone takes ~0.7 s, paid by every `recs` command if imported at the top
        from recs.datasets.io import atomic_write_json
        from recs.evaluators.drift import (
            DriftConfig, MonitorConfig, compare, monitor_to_dict, monitor_windows, split_by_day,
        )
        from recs.evaluators.tabular import read_tabular

        try:
            cfg = DriftConfig(bins=bins, alpha=alpha, correction=correction,  # type: ignore[arg-type]
                              psi_warn=psi_warn, psi_drift=psi_drift, cluster_column=cluster)
            mcfg = MonitorConfig(cfg, alarm_on, consecutive)  # type: ignore[arg-type]
            onset_day = date.fromisoformat(onset) if onset else None
        except ValueError as exc:
            fail(f"--onset {onset}: {exc}" if "isoformat" in str(exc) else str(exc))
        if onset_day is not None and by_day is None:
            fail("--onset needs --by-day")
        cols, cats = _split(columns), _split(categorical) or []
        wanted = None if cols is None else list(dict.fromkeys(cols + cats))
        extra = [c for c in (cluster, by_day) if c]
        frames = []
        for path, more in ((reference, [cluster] if cluster else []), (current, extra)):
            try:
                frames.append(read_tabular(path, None if wanted is None else list(dict.fromkeys(wanted + more))))
            except (OSError, ValueError) as exc:
                fail(str(exc))
        try:
            if by_day is not None:
                verdicts = monitor_windows(split_by_day(frames[1], by_day), frames[0], wanted, cats, mcfg)
                result = monitor_to_dict(verdicts, onset_day, mcfg)
                alarmed = any(v.alarm for v in verdicts)
            else:
                rep = compare(frames[0], frames[1], wanted, cats, cfg)
                result = rep.to_dict()
                alarmed = rep.verdict == "drift"
        except ValueError as exc:
            fail(f"{reference} vs {current}: {exc}")
        result |= {"reference": str(reference), "current": str(current)}
        if out_file is not None:
            atomic_write_json(out_file, result)
        if as_json:
            print_json(result)
        else:
            if by_day is not None:
                _render_monitor(verdicts, result)
            else:
                _render(rep, reference, current)
            if out_file is not None:
                console.print(f"wrote {out_file}")
        if fail_on_drift and alarmed:
            raise typer.Exit(1)
