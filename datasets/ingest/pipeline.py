"""`ingest()`: read, validate, quarantine, deduplicate, write atomically and reconcile one table's inputs.

Each input file is read once, in streaming batches: a batch's invalid rows go to a staged quarantine part, its
valid rows whose key hash is new go straight to the part writer, and the rest (suspected duplicates) are staged
and settled on their exact keys after the pass (`dedup.py`). The rejected rows are then moved into the quarantine
and the new parts committed, each atomically, in that order: a failure in between loses no rejected row.
A run id is used once per dataset: a run whose id already has a report, a quarantine file or parts is refused.
"""
from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from recs.datasets.ingest.config import IngestConfig, IngestError, StrictViolation
from recs.datasets.ingest.dedup import HASH, KeyIndex, hashes_of, key_hash, resolve_suspects
from recs.datasets.ingest.readers import ROW, Source, expand_inputs, open_source
from recs.datasets.ingest.reconcile import FileCounts, IngestReport, check
from recs.datasets.ingest.scan import Scanned, scan_source
from recs.datasets.ingest.sink import FILE, BatchSink
from recs.datasets.ingest.validate import (FIELD, REASON, bad_rows, quarantine_schema, revalidate, typed_name,
                                           with_validation)
from recs.datasets.ingest.writer import PartWriter, Spool, commit_parts, existing_columns, existing_files
from recs.datasets.io import atomic_write_json
from recs.datasets.schemas import TABLES

# The streaming CSV reader of polars reads ahead in chunks whose default size grows its memory with the file
# size; 1 MiB chunks keep it flat at no cost in speed (measured; see docs/INGEST.md). A value set by the user wins.
CSV_CHUNK_BYTES = 1 << 20


@contextmanager
def _reader_settings():
    """Set polars' CSV chunk size for the duration of a run (unless the environment already sets it)."""
    key = "POLARS_CSV_CHUNK_SIZE"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(CSV_CHUNK_BYTES)
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_run_id(dataset: Path, cfg: IngestConfig) -> None:
    """Refuse a run id already used in `dataset`: its report, quarantine file or parts would be overwritten."""
    used = [dataset / "_ingest" / f"{cfg.run_id}.json", dataset / "quarantine" / cfg.table / f"{cfg.run_id}.parquet"]
    part = re.compile(rf"part-{re.escape(cfg.run_id)}-\d+\.parquet")
    hit = next((p for p in used if p.exists()), None)
    hit = hit or next((p for p in existing_files(dataset, cfg.table) if part.fullmatch(p.name)), None)
    if hit is not None:
        raise IngestError(f"{hit}: run id {cfg.run_id!r} was already used in this dataset; nothing was written "
                          "(choose another --run-id)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class _ReadAgain(Exception):
    """File `index` must be read again with the reader `mode`: `lines` when polars' fast JSON Lines reader met
    blank lines (its row numbers would be off), `repair` when polars cannot read a line of a JSON Lines or CSV
    file (not JSON, a number beyond the float range, a CSV record with too many fields...): `repair.py`."""

    def __init__(self, index: int, mode: str) -> None:
        super().__init__(index, mode)
        self.index, self.mode = index, mode


class _Run:
    """State of one run: its staging folder, sources, counts, key index and part writer."""

    def __init__(self, files: list[Path], dataset: Path, cfg: IngestConfig, skipped: dict[str, str]) -> None:
        self.files, self.dataset, self.cfg = files, dataset, cfg
        self.staging = dataset / f".ingest-{cfg.run_id}"
        self.columns = TABLES[cfg.table].columns
        self.report = IngestReport(cfg.run_id, cfg.table, cfg.format, str(dataset), _now(), skipped_files=skipped)
        self.writer: PartWriter | None = None
        self.modes: dict[int, str] = {}  # how each JSON Lines file is read (default `fast`)

    # ---- reading a file ----------------------------------------------------------------------------------------
    def _attempt(self, src: Source, i: int, fn, fast: bool = False):
        """Run `fn(scanned, validated)` on file `i`; polars failures become one-line errors naming the file.

        `fast`: validate with `fast` timestamps (`fn` must then `revalidate` each batch).
        """
        mode = self.modes.get(i, "fast")
        try:
            sc = scan_source(src, self.cfg, self.staging, i, mode)
            v = with_validation(sc.lf, self.cfg.table, self.columns, self.cfg.assume_timezone, fast=fast,
                                epochs=self.cfg.epoch_bounds_us)
            return fn(sc, v)
        except IngestError:
            raise
        except pl.exceptions.PolarsError as e:
            if src.kind in ("jsonl", "csv") and mode != "repair":
                raise _ReadAgain(i, "repair") from None
            raise IngestError(f"{src.path}: unreadable {src.kind} input ({_first_line(e)})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise IngestError(f"{src.path}: unreadable {src.kind} input ({_first_line(e)})") from None

    def _strict_check(self, src: Source, i: int) -> None:
        def first_bad(sc: Scanned, v: pl.LazyFrame):
            bad = v.filter(pl.col(REASON).is_not_null()).select(ROW, FIELD, REASON).head(1)
            return sc, bad.collect(engine="streaming")

        if src.kind == "jsonl":
            self.modes.setdefault(i, "lines")  # line numbers must be right even with blank lines
        try:
            sc, bad = self._attempt(src, i, first_bad)
        except _ReadAgain as e:
            self.modes[i] = e.mode
            sc, bad = self._attempt(src, i, first_bad)
        first = [(r[ROW], r[FIELD], r["_reason"]) for r in (sc.bad_lines.head(1).to_dicts()
                                                            if sc.bad_lines is not None else [])]
        first += [(r[ROW], r[FIELD], r[REASON]) for r in bad.to_dicts()]
        if first:
            row, fld, why = min(first, key=lambda t: t[0])
            raise StrictViolation(f"{src.path}:{row}: {fld}: {why}")

    # ---- the pass: validate, quarantine, find new rows, write --------------------------------------------------
    def _reset(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        for sub in ("bad", "suspect", "out", "index"):
            shutil.rmtree(self.staging / sub, ignore_errors=True)
            (self.staging / sub).mkdir()
        out_cols = existing_columns(self.dataset, self.cfg.table) or self.columns
        self.writer = PartWriter(self.staging / "out", self.cfg.table, out_cols, self.cfg.run_id,
                                 self.cfg.part_rows, self.cfg.partitioned, self.cfg.writer_buffer_bytes)
        self.index = KeyIndex(self.staging / "index")
        for path in existing_files(self.dataset, self.cfg.table):  # one file at a time: bounded memory
            have = pl.scan_parquet(path).select(key_hash(self.cfg.table))
            for batch in have.collect_batches(chunk_size=4 * self.cfg.batch_rows, engine="streaming"):
                self.index.add(batch[HASH].to_numpy())

    def _stage(self, src: Source, i: int) -> FileCounts:
        """One streaming pass over file `i`: bad rows to quarantine parts, new rows to the writer, suspects staged."""
        table = self.cfg.table
        typed_sel = [pl.col(typed_name(c)).alias(c) for c in self.columns]
        key_sel = [pl.col(typed_name(k)).alias(k) for k in TABLES[table].key]

        def go(sc: Scanned, v: pl.LazyFrame):
            n_bad = n_streamed = 0
            bad_spool = Spool(self.staging / "bad", f"{i:06d}", self.cfg.batch_rows)
            sink = BatchSink(self.index, self.writer, typed_sel, i, self.staging / "suspect", self.cfg.batch_rows)
            try:
                for batch in v.collect_batches(chunk_size=self.cfg.batch_rows, engine="streaming"):
                    batch = revalidate(batch, table, self.columns, self.cfg.assume_timezone, self.cfg.epoch_bounds_us)
                    n_streamed += batch.height
                    ok = batch[REASON].is_null().to_numpy()
                    n_ok = int(ok.sum())
                    if n_ok < batch.height:
                        bad = bad_rows(batch.lazy(), self.columns, str(src.path)).collect()  # it filters
                        bad_spool.add(bad)
                        n_bad += bad.height
                    if n_ok:
                        sink.submit(batch, ok, hashes_of(batch.select(key_sel), table)[ok])
                n_new = sink.finish()
            except BaseException:
                sink.abort()
                raise
            bad_spool.flush()
            n_read = int(sc.count.collect(engine="streaming").item())
            if src.kind == "jsonl" and self.modes.get(i, "fast") == "fast" and n_streamed != n_read:
                raise _ReadAgain(i, "lines")  # blank lines: polars' fast reader skipped them in its numbering
            return sc, n_read, n_bad, n_new

        sc, n_read, n_bad, n_new = self._attempt(src, i, go, fast=True)
        if sc.bad_lines is not None and sc.bad_lines.height:
            have = sc.bad_lines.columns
            sc.bad_lines.select(
                *(pl.col(c) if c in have else pl.lit(None, pl.Utf8).alias(c) for c in self.columns),
                pl.lit(str(src.path)).alias("_source_file"), pl.col(ROW), pl.col(FIELD),
                pl.col("_reason").alias(REASON),
            ).write_parquet(self.staging / "bad" / f"{i:06d}-99999.parquet")
            n_bad += sc.bad_lines.height
        return FileCounts(str(src.path), src.kind, src.compression, read=n_read, quarantined=n_bad,
                          accepted=n_new, ignored_columns=sc.ignored_columns)

    def _stage_all(self, sources: list[Source]) -> list[FileCounts]:
        """Stage every file; a JSON Lines file its fast reader cannot number or decode, or a CSV file polars cannot
        parse, restarts the pass with that file on a slower reader (`_ReadAgain`), so no row is counted twice."""
        restarts = 0
        while True:
            self._reset()
            try:
                return [self._stage(src, i) for i, src in enumerate(sources)]
            except _ReadAgain as e:
                restarts += 1
                self.modes[e.index] = e.mode
                if restarts >= 3:  # several odd files: read every later JSON Lines file the careful way
                    self.modes.update({j: "repair" for j in range(e.index, len(sources))
                                       if sources[j].kind == "jsonl"})

    def _settle_suspects(self, counts: list[FileCounts]) -> None:
        """Compare staged suspects with the earlier rows on their exact keys; write the few that are new."""
        self.writer.close()
        files = sorted((self.staging / "suspect").glob("*.parquet"))
        if not files:
            return
        sus = pl.scan_parquet(files)
        n = sus.select(pl.len()).collect().item()
        buckets = max(1, -(-n // self.cfg.resolve_rows))
        earlier = [pl.scan_parquet(p) for p in [*self.writer.parts, *existing_files(self.dataset, self.cfg.table)]]
        dup, rescued = Counter(), Counter()
        for b in range(buckets):
            part = sus if buckets == 1 else sus.filter(pl.col(HASH) % buckets == b)
            part = part.collect().sort(FILE, ROW)
            d, r = resolve_suspects(part, self.cfg.table, earlier)
            dup.update(d[FILE].to_list())
            rescued.update(r[FILE].to_list())
            if r.height:
                self.writer.add(r.drop(ROW, FILE, HASH))
        self.writer.close()
        for i, c in enumerate(counts):
            c.accepted += rescued[i]
            c.duplicates = dup[i]

    def _quarantine(self) -> Path | None:
        """Gather the staged bad rows into `quarantine/<table>/<run>.parquet` (written in staging, then renamed)."""
        files = sorted((self.staging / "bad").glob("*.parquet"))
        if not files:
            return None
        bad = pl.scan_parquet(files)
        reasons = (bad.group_by(pl.col(FIELD) + ": " + pl.col(REASON)).len().sort("len", descending=True)
                   .collect())
        self.report.reasons = {r: int(k) for r, k in reasons.iter_rows()}
        staged = self.staging / "quarantine.parquet"
        bad.select(list(quarantine_schema(self.columns))).sink_parquet(staged)
        target = self.dataset / "quarantine" / self.cfg.table / f"{self.cfg.run_id}.parquet"
        if target.exists():
            raise IngestError(f"{target}: already exists and is never written over (was this run id used before?)")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.replace(target)  # one rename: the file is whole or absent
        except OSError as e:
            raise IngestError(f"{target}: cannot set the rejected rows aside ({e}); nothing was committed") from None
        return target

    def run(self) -> IngestReport:
        cfg = self.cfg
        _check_run_id(self.dataset, cfg)
        self.dataset.mkdir(parents=True, exist_ok=True)
        try:
            self.staging.mkdir()
        except FileExistsError:
            raise IngestError(f"{self.staging}: a run with id {cfg.run_id!r} is in progress or was killed "
                              "(remove this folder if none is running)") from None
        try:
            sources = [open_source(p, self.staging, i) for i, p in enumerate(self.files)]
            if cfg.strict:
                for i, src in enumerate(sources):
                    self._strict_check(src, i)
            counts = self._stage_all(sources)
            self._settle_suspects(counts)
            self.report.files = counts
            self.report.written_rows = self.writer.written_rows
            check(self.report)
            q = self._quarantine()  # before the table: a failure in between must not lose the rejected rows
            self.report.quarantine_file = str(q) if q is not None else None
            parts = self.writer.parts
            self.report.partitions = sorted({p.parent.name for p in parts if p.parent.name.startswith("date=")})
            self.report.new_files = commit_parts(self.dataset, cfg.table, self.staging / "out", parts,
                                                 as_folder=cfg.partitioned)
            self.report.finished_at = _now()
            path = self.dataset / "_ingest" / f"{cfg.run_id}.json"
            self.report.report_file = str(path)
            atomic_write_json(path, self.report.to_dict())
            return self.report
        finally:
            if self.writer is not None:
                self.writer.abort()
            shutil.rmtree(self.staging, ignore_errors=True)


def ingest(inputs: list[str | Path], dataset: str | Path, config: IngestConfig,
           skipped: dict[str, str] | None = None) -> IngestReport:
    """Ingest the files named by `inputs` (paths, globs, folders) into `config.table` of `dataset`.

    `skipped`: files the caller left out of `inputs` and why (an adapter's unrecognised files), listed in the report.
    Raises `IngestError` (unreadable input, reconciliation failure, a run id used before) or `StrictViolation`
    (`strict` and a bad row); in both cases nothing is written to the dataset. (A failure while committing the
    table, such as a full disk, leaves the run's quarantine file in place: it is written first, so no rejected
    row is lost.)
    """
    files = expand_inputs([str(p) for p in inputs])
    dataset = Path(dataset)
    if dataset.exists() and not dataset.is_dir():
        raise IngestError(f"{dataset}: exists and is not a folder")
    with _reader_settings():
        return _Run(files, dataset, config, dict(skipped or {})).run()
