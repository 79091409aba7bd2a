"""`recs ingest`: raw logs into a canonical dataset (parse, call `recs.datasets.ingest`, render)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from recs.cli.common import fail, out, print_json


def _render(reports) -> None:
    for rep in reports:
        t = Table(title=f"ingest {rep.table} ({rep.format}) run {rep.run_id}", title_justify="left")
        for col in ("file", "read", "accepted", "quarantined", "duplicates"):
            t.add_column(col, justify="left" if col == "file" else "right")
        for f in rep.files:
            t.add_row(f.file, str(f.read), str(f.accepted), str(f.quarantined), str(f.duplicates))
        tot = rep.totals
        t.add_row("[bold]total[/]", *(str(tot[k]) for k in ("read", "accepted", "quarantined", "duplicates")))
        out.print(t)
        for f in rep.files:
            if f.ignored_columns:
                out.print(f"ignored columns: {', '.join(f.ignored_columns)} ({f.file})", markup=False,
                          highlight=False, soft_wrap=True)
        for path, why in rep.skipped_files.items():
            out.print(f"skipped: {path} ({why})", markup=False, highlight=False, soft_wrap=True)
        for reason, n in list(rep.reasons.items())[:10]:
            out.print(f"  quarantined {n:>8}  {reason}", highlight=False, soft_wrap=True)
        if rep.quarantine_file:
            out.print(f"quarantine: {rep.quarantine_file}", highlight=False, soft_wrap=True)
        out.print(f"report: {rep.report_file}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        inputs: list[str] = typer.Argument(..., metavar="FILE_OR_GLOB...", help="Input files, globs or folders."),
        table: str = typer.Option(..., "--table", help="impressions|interactions|catalog|inventory_events|queries"
                                                          "|users|sellers"),
        out_dir: Path = typer.Option(..., "--out", help="Dataset folder (created if absent)."),
        fmt: str = typer.Option("canonical", "--format", help="canonical|obd|recbole|sessions"),
        strict: bool = typer.Option(False, "--strict", help="Stop at the first bad row (exit 1), write nothing."),
        as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON on stdout."),
        assume_timezone: str = typer.Option("UTC", "--assume-timezone",
                                            help="Zone of timestamps without an offset; 'none' rejects them."),
        part_rows: int = typer.Option(1_000_000, "--part-rows", help="Rows per written Parquet part (memory bound)."),
        max_memory: str = typer.Option(None, "--max-memory",
                                       help="Memory allowance, e.g. 512M: read batches, writer buffer and "
                                            "duplicate checks are sized to stay within it."),
        run_id: str = typer.Option(None, "--run-id", help="Run id (default: UTC time + random suffix)."),
        policy_id: str = typer.Option(None, "--policy-id", help="obd: policy id of the logged rows."),
        obd_grouping: str = typer.Option("row", "--obd-grouping", help="obd: 'row' or 'timestamp' slates."),
        kind: str = typer.Option("click", "--kind", help="recbole/sessions: interaction kind of each row."),
        side_tables: bool = typer.Option(True, "--side-tables/--no-side-tables",
                                         help="recbole: also ingest sibling .item/.user files."),
    ) -> None:
        """Validate, quarantine, deduplicate and write raw logs into DATASET (partitioned Parquet, atomic)."""
        from recs.datasets.ingest import IngestConfig, IngestError, ingest
        from recs.datasets.ingest.config import parse_size

        try:
            budget = parse_size(max_memory) if max_memory else None
        except ValueError as e:
            fail(f"--max-memory: {e}")
        kwargs = dict(table=table, format=fmt, strict=strict, part_rows=part_rows, obd_policy_id=policy_id,
                      obd_request_grouping=obd_grouping, interaction_kind=kind, side_tables=side_tables,
                      assume_timezone=None if assume_timezone.lower() == "none" else assume_timezone,
                      max_memory=budget)
        if run_id:
            kwargs["run_id"] = run_id
        try:
            cfg = IngestConfig(**kwargs)
        except ValueError as e:
            fail(str(e))
        try:
            if fmt == "recbole":
                from recs.datasets.adapters.recbole_atomic import ingest_recbole

                reports = ingest_recbole(inputs, out_dir, cfg)
            else:
                reports = [ingest(inputs, out_dir, cfg)]
        except IngestError as e:
            fail(str(e), code=e.exit_code)

        if as_json:
            print_json(reports[0].to_dict() if len(reports) == 1 else [r.to_dict() for r in reports])
        else:
            _render(reports)
