"""Deduplication in the same streaming pass as validation: a 64-bit key-hash index plus exact checks of suspects.

Every valid row's key is hashed. A row whose hash was never seen (not in DATASET, not earlier in the run, not
earlier in its batch) is certainly new and goes straight to the writer. A row whose hash was seen is a *suspect*:
it is staged on disk and, after the pass, compared on its exact key with the earlier rows of the same hash
(`resolve_suspects`); a suspect whose key matches none of them (a hash collision) is rescued, so a collision can
never drop a row. The hash index keeps its large runs in memory-mapped files, so the memory it takes does not grow
with the number of rows (its filter is a fixed 16 MiB).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.ingest.config import IngestError
from recs.datasets.schemas import TABLES

HASH = "_h"
MMAP_MIN = 1 << 18  # runs of at least this many hashes live in a memory-mapped file
MERGE_BLOCK = 1 << 18  # hashes merged at a time into such a file
FILTER_BITS = 24  # the filter has 2**24 one-byte slots (16 MiB): with 2M keys in the index, 11% false alarms


def key_hash(table: str) -> pl.Expr:
    """The 64-bit hash of `table`'s key, over the canonical dtypes (so old and new rows hash alike)."""
    spec = TABLES[table]
    return pl.struct([pl.col(k).cast(spec.dtypes[k]) for k in spec.key]).hash().alias(HASH)


class KeyIndex:
    """A set of 64-bit hashes held as a few sorted runs (merged two by two as they grow, like an LSM tree), with a
    one-byte-a-slot filter in front (indexed by the top bits of the hash) so that most new hashes, the common case,
    are told apart without searching the runs."""

    def __init__(self, folder: Path, filter_bits: int = FILTER_BITS) -> None:
        self.folder = folder
        self.runs: list[np.ndarray] = []
        self._files: list[Path | None] = []
        self._seq = 0
        self._shift = np.uint64(64 - filter_bits)
        self._filter = np.zeros(1 << filter_bits, dtype=np.uint8)

    def __len__(self) -> int:
        return sum(r.size for r in self.runs)

    def _found(self, hs: np.ndarray) -> np.ndarray:
        """Which of the sorted hashes `hs` are in the runs."""
        found = np.zeros(hs.size, dtype=bool)
        for run in self.runs:
            idx = np.minimum(np.searchsorted(run, hs), run.size - 1)
            found |= np.asarray(run[idx]) == hs
        return found

    def _known(self, hs: np.ndarray) -> np.ndarray:
        """Which of the sorted hashes `hs` are in the index (the filter first, the runs only for its hits)."""
        found = np.zeros(hs.size, dtype=bool)
        maybe = np.flatnonzero(self._filter[hs >> self._shift])  # a 0 in the filter: certainly absent
        if maybe.size and self.runs:
            found[maybe] = self._found(hs[maybe])
        return found

    def contains(self, h: np.ndarray) -> np.ndarray:
        """A boolean mask: which of `h` are in the index."""
        hs = _sorted(h)
        return _member(h, hs[self._known(hs)])

    def check_add(self, h: np.ndarray) -> np.ndarray:
        """Suspect mask of a batch's hashes (in the index, or repeating an earlier hash of the batch); adds the rest.

        One sort of the batch serves the lookups (sorted probes), the in-batch repeats (neighbours) and the
        insertion (a sorted run); the mask is mapped back to input order through the few suspect values.
        """
        if not h.size:
            return np.zeros(0, dtype=bool)
        hs = _sorted(h)
        known = self._known(hs)
        repeat = np.zeros(hs.size, dtype=bool)
        repeat[1:] = hs[1:] == hs[:-1]
        fresh = hs[~known & ~repeat]  # sorted, distinct
        self._filter[fresh >> self._shift] = 1
        self._insert(fresh)
        suspect = _member(h, hs[known])  # every row of a known value
        twice = np.unique(hs[repeat & ~known])  # values new to the index seen twice or more in the batch
        if twice.size:  # all their rows but the first are suspects
            rows = np.flatnonzero(_member(h, twice))
            _, first = np.unique(h[rows], return_index=True)
            later = np.ones(rows.size, dtype=bool)
            later[first] = False
            suspect[rows[later]] = True
        return suspect

    def add(self, h: np.ndarray) -> None:
        """Add hashes (any order; repeats and known ones allowed)."""
        self.check_add(h)

    def _insert(self, run: np.ndarray) -> None:
        """Add a sorted run of distinct hashes, then merge runs of similar size."""
        if not run.size:
            return
        self._push(run)
        while len(self.runs) > 1 and self.runs[-2].size <= 2 * self.runs[-1].size:
            b, fb = self.runs.pop(), self._files.pop()
            a, fa = self.runs.pop(), self._files.pop()
            n = a.size + b.size
            if n < MMAP_MIN:
                merged = np.concatenate([a, b])
                merged.sort(kind="stable")  # two sorted runs: a linear merge
                self._push(merged)
            else:
                path = self._new_path()
                out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint64, shape=(n,))
                _merge_into(out, a, b)
                del out  # no flush: the file's pages are shared, the load below sees them
                self.runs.append(np.load(path, mmap_mode="r"))
                self._files.append(path)
            del a, b
            for f in (fa, fb):
                if f is not None:
                    f.unlink(missing_ok=True)

    def _new_path(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        return self.folder / f"run-{self._seq:05d}.npy"

    def _push(self, run: np.ndarray) -> None:
        path = None
        if run.size >= MMAP_MIN:
            path = self._new_path()
            try:
                np.save(path, run)
                run = np.load(path, mmap_mode="r")
            except OSError as e:   # a write failure, not an unreadable input
                raise IngestError(f"{path}: cannot write the de-duplication index ({e})") from None
        self.runs.append(run)
        self._files.append(path)


def _merge_into(out: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = MERGE_BLOCK) -> None:
    """Merge sorted `a` and `b` into `out` (a memory-mapped file) a block at a time: small temporaries only."""
    i = j = k = 0
    while i < a.size or j < b.size:
        ai, bj = min(i + block, a.size), min(j + block, b.size)
        ends = [x[e - 1] for x, e, s in ((a, ai, i), (b, bj, j)) if e > s and e < x.size]
        if ends:  # take everything up to the smaller of the two blocks' last values
            cut = min(ends)
            ia = i + int(np.searchsorted(a[i:ai], cut, side="right"))
            jb = j + int(np.searchsorted(b[j:bj], cut, side="right"))
        else:
            ia, jb = ai, bj
        chunk = np.concatenate([a[i:ia], b[j:jb]])
        chunk.sort(kind="stable")
        out[k:k + chunk.size] = chunk
        k, i, j = k + chunk.size, ia, jb


def _sorted(h: np.ndarray) -> np.ndarray:
    """`h` sorted (polars' radix sort: about three times numpy's for 64-bit integers)."""
    return pl.Series(h).sort(multithreaded=False).to_numpy()


def _member(h: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which of `h` are among the sorted `values` (few, so the search stays in cache)."""
    if not values.size:
        return np.zeros(h.size, dtype=bool)
    return values[np.minimum(np.searchsorted(values, h), values.size - 1)] == h


def hashes_of(df: pl.DataFrame, table: str) -> np.ndarray:
    """The key hashes of `df`'s rows as a uint64 array."""
    return df.select(key_hash(table)).to_series().to_numpy()


def resolve_suspects(suspects: pl.DataFrame, table: str, earlier: list[pl.LazyFrame]) -> tuple[pl.DataFrame,
                                                                                             pl.DataFrame]:
    """Split suspects (sorted by input order, with `_h`) into (duplicates, rescued).

    `earlier`: one frame per file holding every row that precedes all suspects (the parts the run wrote and the
    files of DATASET). A suspect is a duplicate when an earlier row or an earlier suspect has its exact key. The
    files are read one at a time, key columns only, so memory stays that of one file's keys.
    """
    key = list(TABLES[table].key)
    wanted = suspects[HASH].unique().implode()
    keys = suspects.select(key)
    found = [lf.select(key).with_columns(key_hash(table)).filter(pl.col(HASH).is_in(wanted)).select(key)
             .collect(engine="streaming") for lf in earlier]
    known = pl.concat([keys.clear(), *(f.select(pl.col(k).cast(keys.schema[k]) for k in key) for f in found)])
    seen = keys.with_row_index("_i").join(known.unique(), on=key, how="semi")["_i"]
    is_dup = pl.Series(np.zeros(suspects.height, dtype=bool))
    if seen.len():
        is_dup = is_dup.scatter(seen, True)
    first = suspects.select(pl.struct(key).is_first_distinct()).to_series()
    is_dup = is_dup | ~first
    return suspects.filter(is_dup), suspects.filter(~is_dup)
