"""The `recs` command line: thin Typer commands that parse, call the library and render."""
from __future__ import annotations

import importlib
from importlib.metadata import version as _dist_version

import typer

app = typer.Typer(
    name="recs",
    help="Design, train, test and ship personalised search suggestions and home-page recommendations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module below defines `register(app)`; add a module here to add its commands.
COMMAND_MODULES = [
    "recs.cli.sim_cmd",
    "recs.cli.train_cmd",
    "recs.cli.drift_cmd",
    "recs.cli.report_cmd",
    "recs.cli.bundle_cmd",
    "recs.cli.loadtest_cmd",
    "recs.cli.abtest_cmd",
    "recs.cli.ingest_cmd",
    "recs.cli.labels_cmd",
    "recs.cli.replay_cmd",
    "recs.cli.serve_cmd",
    "recs.cli.gate_cmd",
    "recs.cli.simulate_cmd",
    "recs.cli.demo_cmd",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"recs {_dist_version('shopnow-recs')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """recs: a toolkit for personalised suggestions and recommendations."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)
