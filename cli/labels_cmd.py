"""`recs labels`: delayed-feedback, point-in-time labels for every impression of a dataset."""
from __future__ import annotations

from pathlib import Path

import typer

from recs.cli.common import check_output_dir, fail, out, parse_time, print_json


def register(app: typer.Typer) -> None:
    @app.command("labels")
    def labels_cmd(
        dataset: Path = typer.Option(..., "--dataset", help="Dataset folder (impressions, interactions, ...)."),
        as_of: str = typer.Option(..., "--as-of", help="Cut time: only what is known by then is used."),
        window: str = typer.Option("7d", "--attribution-window", help="Attribution window, e.g. 7d, 36h."),
        out_path: Path = typer.Option(..., "--out", help="Output: a folder, or a file ending in .parquet."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
        no_fallback: bool = typer.Option(False, "--no-fallback-attribution",
                                         help="Credit only interactions that carry a request_id."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        """Join impressions with later interactions into graded labels (matured / pending, point in time)."""
        from recs.datasets.io import atomic_dir, atomic_write_json, atomic_write_parquet
        from recs.datasets.labels import LabelConfig, label_files, labels_from_dataset, parse_duration

        if not dataset.is_dir():
            fail(f"{dataset}: no such dataset folder")
        try:
            cfg = LabelConfig(as_of=parse_time(as_of, "--as-of"), window=parse_duration(window),
                              fallback_attribution=not no_fallback)
        except ValueError as e:
            fail(str(e))
        try:
            res = labels_from_dataset(dataset, cfg)
        except FileNotFoundError as e:
            fail(str(e))
        data, summary = label_files(out_path)
        if out_path.suffix == ".parquet":
            if out_path.exists() and not overwrite:
                fail(f"{out_path}: exists (pass --overwrite to replace it)")
            atomic_write_parquet(res.frame, data)
            atomic_write_json(summary, res.summary)
        else:
            check_output_dir(out_path, overwrite)
            with atomic_dir(out_path, overwrite=True) as tmp:
                res.frame.write_parquet(tmp / data.name)
                atomic_write_json(tmp / summary.name, res.summary)
        if as_json:
            print_json(res.summary)
        else:
            s = res.summary
            out.print(f"labels: {s['impressions']} impressions ({s['matured']} matured, {s['pending']} pending), "
                      f"{s['clicks']} clicks, {s['purchases_observed']} purchases observed, "
                      f"{s['purchases_expected_pending']:.1f} expected still to come -> {out_path}", highlight=False)
