"""Buffered Parquet part writer and the atomic commit of new parts into a dataset.

New rows are first written as parts under the run's staging folder (same file system as the dataset). The commit
then builds the table's next version beside it (hard links to the existing parts plus the new ones) and swaps it
in with renames, so a run interrupted at any point before the swap leaves the previous table intact and readable.
"""
from __future__ import annotations

import os
import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from recs.datasets.ingest.config import IngestError
from recs.datasets.schemas import TABLES, validate


def _fill_columns(df: pl.DataFrame, table: str, columns: list[str]) -> pl.DataFrame:
    dtypes = TABLES[table].dtypes
    missing = [pl.lit(None, dtypes.get(c, pl.Utf8)).alias(c) for c in columns if c not in df.columns]
    return df.with_columns(missing).select(columns)


def compact(df: pl.DataFrame) -> pl.DataFrame:
    """A copy of `df` that owns its strings: a filtered or sliced frame shares the string buffers of the frame it
    came from (polars' string views), so keeping a few of its rows would otherwise keep all of that memory.
    (`tests/test_ingest_memory.py` fails if it stops doing so.)"""
    text = [c for c, t in df.schema.items() if t == pl.Utf8]
    return df.with_columns(pl.concat_str(pl.col(c), pl.lit("")).alias(c) for c in text) if text else df


def frame_bytes(df: pl.DataFrame) -> int:
    """Memory of `df`: polars' estimate plus the 16-byte view of every string value, which it leaves out."""
    n_str = sum(1 for t in df.schema.values() if t == pl.Utf8)
    return df.estimated_size() + 16 * df.height * n_str


class Spool:
    """Small frames (bad rows, suspects) gathered and written as one Parquet file per `rows` rows."""

    def __init__(self, folder: Path, prefix: str, rows: int) -> None:
        self.folder, self.prefix, self.rows = folder, prefix, rows
        self._frames: list[pl.DataFrame] = []
        self._n = 0
        self._seq = 0

    def add(self, df: pl.DataFrame) -> None:
        self._frames.append(compact(df))
        self._n += df.height
        if self._n >= self.rows:
            self.flush()

    def flush(self) -> None:
        if self._frames:
            path = self.folder / f"{self.prefix}-{self._seq:05d}.parquet"
            try:
                pl.concat(self._frames, how="diagonal_relaxed").write_parquet(path, compression="lz4")
            except (OSError, pl.exceptions.PolarsError) as e:
                raise IngestError(f"{path}: cannot write staged rows ({e})") from None
            self._seq += 1
            self._frames, self._n = [], 0


class PartWriter:
    """Buffers accepted rows and writes parts of at most `part_rows` rows (per date partition when partitioned).

    Every part is checked with the pandera schema (`validate`) before it is written: the final guard. Parts are
    checked and written by one background thread while the caller goes on reading (polars and pandera's polars
    backend release the GIL); at most one part is in flight, so memory stays bounded. `close()` waits for it.
    """

    def __init__(self, root: Path, table: str, columns: list[str], run_id: str, part_rows: int,
                 partitioned: bool, buffer_bytes: int | None = None) -> None:
        self.root, self.table, self.columns = root, table, columns
        self.run_id, self.part_rows, self.partitioned = run_id, part_rows, partitioned
        self.buffer_bytes = buffer_bytes
        self.ts = TABLES[table].ts_column
        self._buf: dict[str | None, list[pl.DataFrame]] = {}
        self._rows: dict[str | None, int] = {}
        self._bytes: dict[str | None, int] = {}
        self._n = 0
        self.written_rows = 0
        self.parts: list[Path] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def add(self, df: pl.DataFrame) -> None:
        """Buffer `df`; flush a partition's part at `part_rows` rows, or the largest when the buffer is full."""
        if df.height == 0:
            return
        if self.partitioned:
            day = df[self.ts].dt.date()
            lo, hi = day.min(), day.max()
            if lo == hi:
                items = [(str(lo), df)]
            else:
                items = [(str(d), g) for (d,), g in df.group_by(day.alias("_day"), maintain_order=True)]
        else:
            items = [(None, df)]
        # a slice of `df` keeps all of `df`'s strings alive (polars' string views), so each is charged all of it
        size = frame_bytes(df)
        for key, g in items:
            self._buf.setdefault(key, []).append(g)
            self._rows[key] = self._rows.get(key, 0) + g.height
            self._bytes[key] = self._bytes.get(key, 0) + size
            if self._rows[key] >= self.part_rows:
                self._flush(key)
        while self._rows and (sum(self._rows.values()) > 2 * self.part_rows
                              or (self.buffer_bytes is not None and sum(self._bytes.values()) > self.buffer_bytes)):
            self._flush(max(self._rows, key=self._rows.get))

    def _flush(self, key: str | None) -> None:
        frames = self._buf.pop(key, [])
        self._rows.pop(key, None)
        self._bytes.pop(key, None)
        if not frames:
            return
        folder = self.root / f"date={key}" if key is not None else self.root
        path = folder / f"part-{self.run_id}-{self._n:05d}.parquet"
        self._n += 1
        self._wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-writer")
        self._pending = self._pool.submit(self._write, frames, path)

    def _write(self, frames: list[pl.DataFrame], path: Path) -> None:
        df = _fill_columns(pl.concat(frames, how="diagonal_relaxed"), self.table, self.columns)
        del frames[:]
        try:
            validate(self.table, df)
        except (SchemaError, SchemaErrors) as e:
            raise IngestError(f"accepted rows failed the {self.table} schema (a bug in validation): "
                              f"{str(e).splitlines()[0]}") from None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            df.write_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as e:   # a write failure, not an unreadable input
            raise IngestError(f"{path}: cannot write staged part ({e})") from None
        self.written_rows += df.height
        self.parts.append(path)

    def _wait(self) -> None:
        """Wait for the part in flight; its error, if any, is raised here."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def abort(self) -> None:
        """Drop the buffer and wait for the part in flight, ignoring its error (the run is being abandoned)."""
        self._buf.clear()
        self._rows.clear()
        self._bytes.clear()
        try:
            self._wait()
        except Exception:  # noqa: BLE001 - the run already failed for another reason
            pass
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def close(self) -> list[Path]:
        """Write every buffered row and wait until all parts are on disk (the writer can still be added to)."""
        try:
            for key in list(self._buf):
                self._flush(key)
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
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


def existing_files(dataset: Path, table: str) -> list[Path]:
    """The Parquet files that hold `table` in `dataset` (none when it has no such table)."""
    kind, path = existing_location(dataset, table)
    if kind == "none":
        return []
    return [path] if kind == "file" else sorted(path.rglob("*.parquet"))


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
    rewritten as the union of the old file and the new parts (streamed, never loaded whole). A new part whose
    name the table already holds raises `IngestError` and leaves the table as it was.
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
            if dst.exists():  # `nxt` is this run's own folder: nothing else can create `dst` meanwhile
                raise IngestError(f"{target / rel}: already in the table; a commit never replaces a part "
                                  "(was this run id used before?)")
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
