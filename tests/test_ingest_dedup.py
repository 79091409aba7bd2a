"""Deduplication of `recs ingest`: the key-hash index, exact settling of suspects, hash collisions, restarts."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

import recs.datasets.ingest.dedup as dedup
import recs.datasets.ingest.pipeline as pipeline
from recs.datasets.ingest import IngestConfig, ingest
from recs.datasets.io import read_table

from _ingest_fixtures import imp_row, write_csv, write_jsonl


def test_key_index_agrees_with_a_python_set(tmp_path, monkeypatch):
    monkeypatch.setattr(dedup, "MMAP_MIN", 500)  # exercise the memory-mapped runs and the blockwise merge
    monkeypatch.setattr(dedup, "MERGE_BLOCK", 37)
    rng = np.random.default_rng(3)
    index, seen = dedup.KeyIndex(tmp_path / "idx"), set()
    for _ in range(40):
        h = rng.integers(0, 20_000, int(rng.integers(0, 900))).astype(np.uint64)
        expected = []
        for x in h.tolist():
            expected.append(x in seen)
            seen.add(x)
        assert index.check_add(h).tolist() == expected
    assert len(index) == len(seen)
    assert any(isinstance(r, np.memmap) for r in index.runs)
    probe = rng.integers(0, 25_000, 3000).astype(np.uint64)
    assert index.contains(probe).tolist() == [x in seen for x in probe.tolist()]


@pytest.mark.parametrize("block", [1, 3, 1000])
def test_blockwise_merge_equals_a_sort(block):
    rng = np.random.default_rng(block)
    for _ in range(30):
        a = np.sort(rng.integers(0, 50, int(rng.integers(0, 60))).astype(np.uint64))
        b = np.sort(rng.integers(0, 50, int(rng.integers(0, 60))).astype(np.uint64))
        out = np.empty(a.size + b.size, dtype=np.uint64)
        dedup._merge_into(out, a, b, block=block)
        assert out.tolist() == sorted(a.tolist() + b.tolist())


_REAL_KEY_HASH = dedup.key_hash


def _colliding_hash(table: str) -> pl.Expr:
    """A 'hash' with 3 values: nearly every row collides with an earlier one of a different key."""
    return (_REAL_KEY_HASH(table) % 3).alias(dedup.HASH)


@pytest.mark.parametrize("resolve_rows", [2, 1_000])
def test_hash_collisions_never_drop_a_row(tmp_path, monkeypatch, resolve_rows):
    monkeypatch.setattr(dedup, "key_hash", _colliding_hash)
    monkeypatch.setattr(pipeline, "key_hash", _colliding_hash)
    cfg = dict(table="impressions", resolve_rows=resolve_rows, batch_rows=7)
    first = [imp_row(i) for i in range(20)]
    a = write_csv(tmp_path / "a.csv", first + [imp_row(3, item_id="again"), imp_row(11)])
    rep = ingest([a], tmp_path / "ds", IngestConfig(**cfg))
    assert (rep.files[0].accepted, rep.files[0].duplicates) == (20, 2)
    second = [imp_row(i) for i in range(15, 30)]  # 15..19 are already in the dataset
    b = write_jsonl(tmp_path / "b.jsonl", second + [imp_row(25)])
    rep = ingest([b], tmp_path / "ds", IngestConfig(**cfg))
    assert (rep.files[0].accepted, rep.files[0].duplicates) == (10, 6)
    out = read_table(tmp_path / "ds", "impressions")
    assert sorted(out["item_id"].to_list()) == sorted(f"i{i}" for i in range(30))  # first occurrences kept
    again = ingest([a, b], tmp_path / "ds", IngestConfig(**cfg))
    assert again.totals["accepted"] == 0 and again.totals["duplicates"] == 22 + 16


def test_small_batches_and_writer_buffer_give_the_same_dataset(tmp_path):
    rows = [imp_row(i, ts=f"2024-01-0{1 + i % 5}T10:00:00Z") for i in range(300)] + [imp_row(7)] * 3
    src = write_csv(tmp_path / "a.csv", rows)
    big = ingest([src], tmp_path / "big", IngestConfig(table="impressions"))
    small = ingest([src], tmp_path / "small", IngestConfig(table="impressions", batch_rows=13,
                                                           writer_buffer_bytes=2_000, part_rows=40))
    assert big.totals == small.totals == {"read": 303, "accepted": 300, "quarantined": 0, "duplicates": 3}
    assert len(small.new_files) > len(big.new_files)
    key = ["request_id", "position"]
    assert read_table(tmp_path / "big", "impressions").sort(key).equals(
        read_table(tmp_path / "small", "impressions").sort(key))


def test_broken_json_in_a_later_file_restarts_without_double_counting(tmp_path):
    good = write_csv(tmp_path / "a.csv", [imp_row(i) for i in range(5)])
    lines = [json.dumps(imp_row(i)) for i in range(5, 9)] + ["{broken"] + [json.dumps(imp_row(2))]
    broken = tmp_path / "b.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    rep = ingest([good, broken], tmp_path / "ds", IngestConfig(table="impressions", batch_rows=2))
    assert [(f.read, f.accepted, f.quarantined, f.duplicates) for f in rep.files] == [(5, 5, 0, 0), (6, 4, 1, 1)]
    out = read_table(tmp_path / "ds", "impressions")
    assert out.height == 9 and out.select("request_id", "position").is_unique().all()
