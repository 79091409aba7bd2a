"""`ingest()`: read, validate, quarantine, deduplicate, write atomically and reconcile one table's inputs."""
from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from recs.datasets.ingest.config import IngestConfig, IngestError, StrictViolation
from recs.datasets.ingest.readers import ROW, Source, expand_inputs, open_source
from recs.datasets.ingest.reconcile import FileCounts, IngestReport, check
from recs.datasets.ingest.scan import Scanned, scan_source
from recs.datasets.ingest.validate import (FIELD, REASON, bad_rows, quarantine_schema, typed_name,
                                           with_validation)
from recs.datasets.ingest.writer import PartWriter, commit_parts, existing_columns, existing_location
from recs.datasets.io import atomic_write_json, scan_table
from recs.datasets.schemas import TABLES

FILE, ORD = "_file", "_ord"
STAGE_BATCH_ROWS = 100_000


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class _Run:
    """State of one run: its staging folder, sources and counts."""

    def __init__(self, files: list[Path], dataset: Path, cfg: IngestConfig) -> None:
        self.files, self.dataset, self.cfg = files, dataset, cfg
        self.staging = dataset / f".ingest-{cfg.run_id}"
        self.columns = TABLES[cfg.table].columns
        self.report = IngestReport(cfg.run_id, cfg.table, cfg.format, str(dataset), _now())

    # ---- stage 1: per file, validate and split into staged good / bad rows ---------------------------------
    def _scan(self, src: Source, i: int, repair: bool) -> tuple[Scanned, pl.LazyFrame]:
        sc = scan_source(src, self.cfg, self.staging, i, repair)
        return sc, with_validation(sc.lf, self.cfg.table, self.columns, self.cfg.assume_timezone)

    def _strict_check(self, src: Source, i: int) -> None:
        def first_bad(s: Scanned, v: pl.LazyFrame):
            bad = v.filter(pl.col(REASON).is_not_null()).select(ROW, FIELD, REASON).head(1)
            return s, bad.collect(engine="streaming")

        sc, lf = self._run_polars(src, i, first_bad)
        first = [(r[ROW], "(line)", r["_reason"]) for r in (sc.bad_lines.head(1).to_dicts()
                                                             if sc.bad_lines is not None else [])]
        first += [(r[ROW], r[FIELD], r[REASON]) for r in lf.to_dicts()]
        if first:
            row, fld, why = min(first, key=lambda t: t[0])
            raise StrictViolation(f"{src.path}:{row}: {fld}: {why}")

    def _run_polars(self, src: Source, i: int, fn):
        """Run `fn(scanned, validated)`; a broken JSON line triggers one repair pass; other failures name the file."""
        repair = False
        while True:
            try:
                sc, v = self._scan(src, i, repair)
                return fn(sc, v)
            except IngestError:
                raise
            except pl.exceptions.PolarsError as e:
                if src.kind == "jsonl" and self.cfg.format == "canonical" and not repair:
                    repair = True
                    continue
                raise IngestError(f"{src.path}: unreadable {src.kind} input ({_first_line(e)})") from None
            except (OSError, UnicodeDecodeError) as e:
                raise IngestError(f"{src.path}: unreadable {src.kind} input ({_first_line(e)})") from None

    def _stage(self, src: Source, i: int) -> FileCounts:
        """One streaming pass over the file: each batch's valid rows and bad rows go to their own staged part."""
        good_dir, bad_dir = self.staging / "good", self.staging / "bad"
        bad_path = bad_dir / f"{i:06d}-99999.parquet"

        def go(sc: Scanned, v: pl.LazyFrame):
            for old in [*good_dir.glob(f"{i:06d}-*"), *bad_dir.glob(f"{i:06d}-*")]:
                old.unlink()  # a retried (repaired JSON) pass starts clean
            good_sel = [*(pl.col(typed_name(c)).alias(c) for c in self.columns), pl.col(ROW),
                        pl.lit(i, pl.Int64).alias(FILE)]
            bad_sel = bad_rows(pl.LazyFrame(schema=v.collect_schema()), self.columns, str(src.path)).collect_schema()
            n_bad = n_good = 0
            for b, batch in enumerate(v.collect_batches(chunk_size=STAGE_BATCH_ROWS, engine="streaming")):
                ok = batch[REASON].is_null()
                n_ok = int(ok.sum())
                n_good += n_ok
                if n_ok:
                    batch.filter(ok).select(good_sel).write_parquet(good_dir / f"{i:06d}-{b:05d}.parquet",
                                                                    compression="uncompressed")
                if n_ok < batch.height:
                    bad = bad_rows(batch.filter(~ok).lazy(), self.columns, str(src.path)).collect()
                    bad.write_parquet(bad_dir / f"{i:06d}-{b:05d}.parquet")
                    n_bad += bad.height
            if not n_bad:
                pl.DataFrame(schema=bad_sel).write_parquet(bad_path)
            if not n_good:
                dtypes = TABLES[self.cfg.table].dtypes
                pl.DataFrame(schema={**{c: dtypes[c] for c in self.columns}, ROW: pl.Int64, FILE: pl.Int64}
                             ).write_parquet(good_dir / f"{i:06d}-99999.parquet")
            return sc, int(sc.count.collect(engine="streaming").item())

        sc, n_read = self._run_polars(src, i, go)
        if sc.bad_lines is not None and sc.bad_lines.height:
            sc.bad_lines.select(
                *(pl.lit(None, pl.Utf8).alias(c) for c in self.columns), pl.lit(str(src.path)).alias("_source_file"),
                pl.col(ROW), pl.lit("(line)").alias(FIELD), pl.col("_reason").alias(REASON),
            ).write_parquet(bad_dir / f"{i:06d}-99998.parquet")
        n_bad = pl.scan_parquet(bad_dir / f"{i:06d}-*.parquet").select(pl.len()).collect().item()
        return FileCounts(str(src.path), src.kind, src.compression, read=n_read, quarantined=n_bad,
                          ignored_columns=sc.ignored_columns)

    # ---- stage 2: deduplicate (within the run and against the dataset), write parts -------------------------
    def _good(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.staging / "good" / "*.parquet").with_columns(
            ((pl.col(FILE) * (1 << 40)) + pl.col(ROW)).alias(ORD))

    def _duplicate_ords(self) -> pl.Series:
        """Ordinals (file << 40 | row) of the valid rows whose key was seen before: earlier in the run or in DATASET.

        Only a 64-bit hash of the key and the ordinal (16 bytes a row) are held in memory; rows whose hash
        collides are then compared on their exact key, so a hash collision can never drop a row.
        """
        key = list(TABLES[self.cfg.table].key)
        khash = pl.struct(key).hash().alias("_h")
        good = self._good()
        h = good.select(ORD, khash).collect(engine="streaming")  # the scan keeps (file, row) order ...
        if not h[ORD].is_sorted():
            h = h.sort(ORD)  # ... and this makes sure of it ("first" must mean first in the input)
        first = h["_h"].is_first_distinct()
        dup = pl.Series(ORD, [], pl.Int64)
        repeated = h.filter(~first)["_h"].unique()
        if repeated.len():
            sub = (good.filter(khash.is_in(repeated.implode())).select(ORD, *key).collect(engine="streaming")
                   .sort(ORD))
            dup = sub.filter(~pl.struct(key).is_first_distinct())[ORD]
        if existing_location(self.dataset, self.cfg.table)[0] != "none":
            have = scan_table(self.dataset, self.cfg.table).select(khash).unique().collect(engine="streaming")["_h"]
            cand = h.filter(first & pl.col("_h").is_in(have.implode()))[ORD]
            if cand.len():
                sub = good.filter(pl.col(ORD).is_in(cand.implode())).select(ORD, *key)
                exact = scan_table(self.dataset, self.cfg.table).select(key).unique()
                seen = sub.join(exact, on=key, how="semi").collect(engine="streaming")[ORD]
                dup = pl.concat([dup, seen])
        return dup

    def _write(self, counts: list[FileCounts]) -> PartWriter:
        out_cols = existing_columns(self.dataset, self.cfg.table) or self.columns
        writer = PartWriter(self.staging / "out", self.cfg.table, out_cols, self.cfg.run_id, self.cfg.part_rows,
                            self.cfg.partitioned)
        dup_ords = self._duplicate_ords()
        dup = Counter((dup_ords // (1 << 40)).to_list()) if dup_ords.len() else Counter()
        acc = Counter()
        keep = self._good().filter(~pl.col(ORD).is_in(dup_ords.implode())).drop(ORD, ROW)
        for batch in keep.collect_batches(engine="streaming"):
            for f, n in batch.group_by(FILE).len().iter_rows():
                acc[f] += n
            writer.add(batch.drop(FILE))
        writer.close()
        for i, c in enumerate(counts):
            c.accepted, c.duplicates = acc[i], dup[i]
        return writer

    def _quarantine(self) -> Path | None:
        bad = pl.scan_parquet(self.staging / "bad" / "*.parquet")
        n = bad.select(pl.len()).collect().item()
        if n == 0:
            return None
        reasons = (bad.group_by(pl.col(FIELD) + ": " + pl.col(REASON)).len().sort("len", descending=True)
                   .collect())
        self.report.reasons = {r: int(k) for r, k in reasons.iter_rows()}
        staged = self.staging / "quarantine.parquet"
        bad.select(list(quarantine_schema(self.columns))).sink_parquet(staged)
        return staged

    def run(self) -> IngestReport:
        cfg = self.cfg
        self.dataset.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir()
        (self.staging / "good").mkdir()
        (self.staging / "bad").mkdir()
        try:
            sources = [open_source(p, self.staging, i) for i, p in enumerate(self.files)]
            if cfg.strict:
                for i, src in enumerate(sources):
                    self._strict_check(src, i)
            counts = [self._stage(src, i) for i, src in enumerate(sources)]
            writer = self._write(counts)
            self.report.files = counts
            self.report.written_rows = writer.written_rows
            check(self.report)
            q = self._quarantine()
            self.report.partitions = sorted({p.parent.name for p in writer.parts if p.parent.name.startswith("date=")})
            self.report.new_files = commit_parts(self.dataset, cfg.table, self.staging / "out", writer.parts,
                                                 as_folder=cfg.partitioned)
            if q is not None:
                target = self.dataset / "quarantine" / cfg.table / f"{cfg.run_id}.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                q.replace(target)
                self.report.quarantine_file = str(target)
            self.report.finished_at = _now()
            path = self.dataset / "_ingest" / f"{cfg.run_id}.json"
            self.report.report_file = str(path)
            atomic_write_json(path, self.report.to_dict())
            return self.report
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)


def ingest(inputs: list[str | Path], dataset: str | Path, config: IngestConfig) -> IngestReport:
    """Ingest the files named by `inputs` (paths, globs, folders) into `config.table` of `dataset`.

    Raises `IngestError` (unreadable input, reconciliation failure) or `StrictViolation` (`strict` and a bad row);
    in both cases nothing is written to the dataset.
    """
    files = expand_inputs([str(p) for p in inputs])
    dataset = Path(dataset)
    if dataset.exists() and not dataset.is_dir():
        raise IngestError(f"{dataset}: exists and is not a folder")
    return _Run(files, dataset, config).run()
