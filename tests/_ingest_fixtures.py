"""Helpers for the ingest tests: canonical rows written as CSV / JSON Lines / Parquet."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl

IMP_COLS = ["request_id", "ts", "user_id", "session_id", "surface", "query", "item_id", "position", "propensity",
            "policy_id", "clicked"]


def imp_row(i: int, **over) -> dict:
    row = {"request_id": f"r{i // 3}", "ts": f"2024-01-0{1 + (i % 3)}T10:00:00Z", "user_id": f"u{i % 5}",
           "session_id": f"s{i // 6}", "surface": "home", "query": "", "item_id": f"i{i}", "position": i % 3,
           "propensity": 0.5, "policy_id": "p0", "clicked": "false"}
    row.update(over)
    return row


def write_csv(path: Path, rows: list[dict], cols: list[str] | None = None) -> Path:
    cols = cols or IMP_COLS
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pl.DataFrame(rows, schema={c: pl.Utf8 for c in IMP_COLS}).write_parquet(path)
    return path
