"""Read a tabular input given on the command line: a Parquet/CSV/JSONL file, or a folder of them."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl

_READERS = {
    ".parquet": pl.scan_parquet,
    ".pq": pl.scan_parquet,
    ".csv": lambda p: pl.scan_csv(p, try_parse_dates=True),
    ".jsonl": pl.scan_ndjson,
    ".ndjson": pl.scan_ndjson,
}


def _files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in _READERS:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r} (parquet, csv, jsonl)")
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    for suffix in _READERS:  # the first kind of file found in the folder wins
        found = sorted(p for p in path.rglob(f"*{suffix}") if not p.name.startswith("."))
        if found:
            return found
    raise ValueError(f"{path}: folder holds no parquet, csv or jsonl files")


def read_tabular(path: str | Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Read one file, or every file of the first supported type under a folder (concatenated, schemas relaxed).

    `columns`: read only these (a missing one is an error naming the file and the column).
    Raises FileNotFoundError / ValueError with a one-line message naming the file.
    """
    path = Path(path)
    frames = []
    for f in _files(path):
        try:
            lf = _READERS[f.suffix.lower()](f)
            names = lf.collect_schema().names()
            if columns is not None:
                missing = [c for c in columns if c not in names]
                if missing:
                    raise ValueError(f"{f}: no column {missing[0]!r} (has {', '.join(names[:12])})")
                lf = lf.select(list(columns))
            frames.append(lf.collect())
        except ValueError:
            raise
        except Exception as exc:  # polars raises many error types for unreadable files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{f}: cannot read: {first}") from exc
    if len(frames) == 1:
        return frames[0]
    return pl.concat(frames, how="diagonal_relaxed")
