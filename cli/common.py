"""Shared helpers for CLI commands: one-line errors, JSON output, atomic output folders."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit with `code` (2: bad input or usage)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    """Print `obj` as JSON on stdout (no rich markup)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse an output folder that exists and is not empty unless `overwrite`."""
    if path.exists() and not path.is_dir():
        fail(f"{path}: exists and is not a folder")
    if path.exists() and any(path.iterdir()) and not overwrite:
        fail(f"{path}: exists and is not empty (pass --overwrite to replace it)")
