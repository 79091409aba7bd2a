"""The second half of a file's pass, on a worker thread: find each batch's new rows, stage its suspects, write.

The reading thread validates batch k+1 while this thread deduplicates batch k (numpy and polars release the GIL,
so the two overlap on two cores). Batches are handled one at a time, in order, so the result is exactly that of
doing both halves in turn; at most one batch waits, so memory stays bounded.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.ingest.dedup import HASH, KeyIndex
from recs.datasets.ingest.readers import ROW
from recs.datasets.ingest.writer import PartWriter, Spool

FILE = "_file"


class BatchSink:
    """Deduplicates and writes the valid rows of one file's batches (typed columns `typed_sel` of each batch)."""

    def __init__(self, index: KeyIndex, writer: PartWriter, typed_sel: list[pl.Expr], file_index: int,
                 suspect_dir: Path, spool_rows: int) -> None:
        self.index, self.writer, self.typed_sel, self.i = index, writer, typed_sel, file_index
        self.suspects = Spool(suspect_dir, f"{file_index:06d}", spool_rows)
        self.new_rows = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-dedup")
        self._pending: deque[Future] = deque()

    def submit(self, batch: pl.DataFrame, ok: np.ndarray, h: np.ndarray) -> None:
        """Queue a batch: `ok` marks its valid rows, `h` holds their key hashes (in order)."""
        while self._pending:   # at most one batch waits
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._handle, batch, ok, h))

    def _handle(self, batch: pl.DataFrame, ok: np.ndarray, h: np.ndarray) -> None:
        suspect = self.index.check_add(h)
        n_s = int(suspect.sum())
        new = ok.copy()
        new[ok] = ~suspect
        if n_s:
            sus = ok.copy()
            sus[ok] = suspect
            self.suspects.add(batch.filter(pl.Series(sus)).select(
                *self.typed_sel, ROW, pl.lit(self.i, pl.Int64).alias(FILE), pl.Series(HASH, h[suspect])))
        out = batch.select(self.typed_sel)
        n_new = int(new.sum())
        self.writer.add(out if n_new == batch.height else out.filter(pl.Series(new)))
        self.new_rows += n_new

    def finish(self) -> int:
        """Wait for every queued batch (raising the first error), stage the last suspects; the new rows' count."""
        try:
            while self._pending:
                self._pending.popleft().result()
            self.suspects.flush()
        finally:
            self._pool.shutdown(wait=True)
        return self.new_rows

    def abort(self) -> None:
        """Wait for the queued batches, ignoring their errors (the pass is being abandoned)."""
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True)
        self._pending.clear()
