"""Atomic writes: every output is written to a temporary path beside its target, then renamed into place."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import polars as pl


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path` in one rename, on error it is removed.

    An interrupted run leaves any previous `path` intact and no half-written folder under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path}: exists and is not empty")
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = _tmp_sibling(path)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_parquet(df: pl.DataFrame, path: str | Path) -> None:
    """Write a Parquet file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_table(path: str | Path, table: str | None = None) -> pl.DataFrame:
    """Read a canonical table: a Parquet file, or a dataset folder holding `<table>.parquet` or `<table>/**.parquet`."""
    path = Path(path)
    if path.is_file():
        return pl.read_parquet(path)
    if table is None:
        raise ValueError(f"{path}: a folder needs a table name")
    single = path / f"{table}.parquet"
    if single.is_file():
        return pl.read_parquet(single)
    part = path / table
    if part.is_dir():
        return pl.read_parquet(str(part / "**" / "*.parquet"), hive_partitioning=False)
    raise FileNotFoundError(f"{path}: no table {table!r} (looked for {single} and {part}/)")


def scan_table(path: str | Path, table: str | None = None) -> pl.LazyFrame:
    """Lazy counterpart of `read_table`."""
    path = Path(path)
    if path.is_file():
        return pl.scan_parquet(path)
    single = path / f"{table}.parquet"
    if single.is_file():
        return pl.scan_parquet(single)
    part = path / str(table)
    if part.is_dir():
        return pl.scan_parquet(str(part / "**" / "*.parquet"), hive_partitioning=False)
    raise FileNotFoundError(f"{path}: no table {table!r} (looked for {single} and {part}/)")
