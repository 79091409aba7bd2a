"""Buffered Parquet part writer and the atomic commit of new parts into a dataset.

New rows are first written as parts under the run's staging folder (same file system as the dataset). The commit
then builds the table's next version beside it (hard links to the existing parts plus the new ones) and swaps it
in with renames, so a run interrupted at any point before the swap leaves the previous table intact and readable.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from recs.datasets.ingest.config import IngestError
from recs.datasets.schemas import TABLES, validate



def _fill_columns(df: pl.DataFrame, table: str, columns: list[str]) -> pl.DataFrame:
    dtypes = TABLES[table].dtypes
    missing = [pl.lit(None, dtypes.get(c, pl.Utf8)).alias(c) for c in columns if c not in df.columns]
    return df.with_columns(missing).select(columns)


class PartWriter:
    """Buffers accepted rows and writes parts of at most `part_rows` rows (per date partition when partitioned).

    Every part is checked with the pandera schema (`validate`) before it is written: the final guard.
    """

    def __init__(self, root: Path, table: str, columns: list[str], run_id: str, part_rows: int,
                 partitioned: bool) -> None:
        self.root, self.table, self.columns = root, table, columns
        self.run_id, self.part_rows, self.partitioned = run_id, part_rows, partitioned
        self.ts = TABLES[table].ts_column
        self._buf: dict[str | None, list[pl.DataFrame]] = {}
        self._rows: dict[str | None, int] = {}
        self._n = 0
        self.written_rows = 0
        self.parts: list[Path] = []

    def add(self, df: pl.DataFrame) -> None:
        if df.height == 0:
            return
        if self.partitioned:
            day = df[self.ts].dt.date()
            days = day.unique().sort()
            if days.len() == 1:
                items = [(str(days[0]), df)]
            else:
                items = [(str(d), df.filter(day == d)) for d in days]
        else:
            items = [(None, df)]
        for key, g in items:
            self._buf.setdefault(key, []).append(g)
            self._rows[key] = self._rows.get(key, 0) + g.height
            if self._rows[key] >= self.part_rows:
                self._flush(key)
        while sum(self._rows.values()) > 2 * self.part_rows:
            self._flush(max(self._rows, key=self._rows.get))

    def _flush(self, key: str | None) -> None:
        frames = self._buf.pop(key, [])
        self._rows.pop(key, None)
        if not frames:
            return
        df = _fill_columns(pl.concat(frames, how="diagonal_relaxed"), self.table, self.columns)
        try:
            validate(self.table, df)
        except (SchemaError, SchemaErrors) as e:
            raise IngestError(f"accepted rows failed the {self.table} schema (a bug in validation): "
                              f"{str(e).splitlines()[0]}") from None
        folder = self.root / f"date={key}" if key is not None else self.root
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{self.run_id}-{self._n:05d}.parquet"
        self._n += 1
        df.write_parquet(path)
        self.written_rows += df.height
        self.parts.append(path)

    def close(self) -> list[Path]:
        for key in list(self._buf):
            self._flush(key)
        return self.parts


def existing_location(dataset: Path, table: str) -> tuple[str, Path | None]:
    """Where `table` lives in `dataset`: ("file", path), ("folder", path) or ("none", None)."""
    single = dataset / f"{table}.parquet"
    if single.is_file():
        return "file", single
    folder = dataset / table
    if folder.is_dir() and any(folder.rglob("*.parquet")):
        return "folder", folder
    return "none", None


def existing_columns(dataset: Path, table: str) -> list[str] | None:
    kind, path = existing_location(dataset, table)
    if kind == "none":
        return None
    first = path if kind == "file" else sorted(path.rglob("*.parquet"))[0]
    return list(pl.read_parquet_schema(first))


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def commit_parts(dataset: Path, table: str, staged: Path, parts: list[Path], as_folder: bool) -> list[str]:
    """Make `parts` (written under `staged`) part of `table` in `dataset` atomically; returns the new files' paths.

    `as_folder`: the table is (or becomes) `dataset/<table>/...parquet`; otherwise `dataset/<table>.parquet`,
    rewritten as the union of the old file and the new parts (streamed, never loaded whole).
    """
    if not parts:
        return []
    kind, current = existing_location(dataset, table)
    if not as_folder or kind == "file":
        target = dataset / f"{table}.parquet"
        tmp = _sibling(target, "tmp")
        sources = ([pl.scan_parquet(current)] if kind == "file" else []) + [pl.scan_parquet(p) for p in parts]
        try:
            pl.concat(sources, how="diagonal_relaxed").sink_parquet(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return [str(target)]
    target = dataset / table
    nxt = _sibling(target, "next")
    try:
        if target.is_dir():
            for f in target.rglob("*"):
                if f.is_file():
                    _link_or_copy(f, nxt / f.relative_to(target))
        nxt.mkdir(parents=True, exist_ok=True)
        added = []
        for p in parts:
            rel = p.relative_to(staged)
            dst = nxt / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dst)
            added.append(str(target / rel))
    except BaseException:
        shutil.rmtree(nxt, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = _sibling(target, "old")
        os.replace(target, old)
    os.replace(nxt, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return added
