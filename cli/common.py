"""Shared helpers for CLI commands: one-line errors, JSON output, atomic output folders."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
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


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time or date given to `option`; without a zone it is UTC."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option}: cannot parse {text!r} as an ISO 8601 time (e.g. 2026-01-09 or 2026-01-09T00:00:00Z)")
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
