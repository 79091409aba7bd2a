"""Ingest throughput (CSV, JSON Lines, Parquet) next to a plain polars read + write-Parquet copy, and peak memory.

`python -m benchmarks.run ingest`; rows via RECS_BENCH_INGEST_ROWS (default 2,000,000). Prints; asserts nothing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def make_impressions(n: int, seed: int = 0) -> pl.DataFrame:
    """`n` canonical impressions (slates of 10 over 7 days), 0.5% of rows corrupted, 0.5% duplicated."""
    rng = np.random.default_rng(seed)
    req = np.arange(n) // 10
    t0 = 1_767_571_200_000_000  # 2026-01-05 UTC, in us
    ts = t0 + np.sort(rng.integers(0, 7 * 86_400_000_000, n // 10 + 1))[req]
    df = pl.DataFrame({
        "request_id": "r" + pl.Series(req).cast(pl.Utf8).str.zfill(10),
        "ts": pl.Series(ts).cast(pl.Datetime("us", "UTC")),
        "user_id": pl.Series(rng.integers(0, 200_000, n)).cast(pl.Utf8),
        "session_id": "s" + pl.Series(req // 3).cast(pl.Utf8),
        "surface": pl.Series(np.where(rng.random(n) < 0.7, "home", "search")),
        "query": pl.Series([None] * n, dtype=pl.Utf8),
        "item_id": "i" + pl.Series(rng.integers(0, 1_000_000, n)).cast(pl.Utf8),
        "position": pl.Series(np.arange(n) % 10, dtype=pl.Int64),
        "propensity": pl.Series(rng.uniform(0.01, 1.0, n)),
        "policy_id": pl.Series(["logging-v1"] * n),
        "clicked": pl.Series(rng.random(n) < 0.1),
    })
    bad = rng.random(n) < 0.005
    df = df.with_columns(pl.when(pl.Series(bad)).then(pl.lit(1.5)).otherwise(pl.col("propensity")).alias("propensity"))
    dups = df.sample(n // 200, seed=seed)
    return pl.concat([df, dups])


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _peak_rss_of(cmd: list[str]) -> tuple[float, int, int]:
    """Run `cmd`; return (seconds, peak RSS, peak anonymous RSS) in bytes, sampled every 20 ms."""
    import psutil

    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = psutil.Process(p.pid)
    peak = anon = 0
    while p.poll() is None:
        try:
            m = proc.memory_info()
            peak, anon = max(peak, m.rss), max(anon, m.rss - m.shared)
        except psutil.Error:
            pass
        time.sleep(0.02)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.read().decode()[-500:])
    return time.perf_counter() - t, peak, anon


def main() -> None:
    from recs.datasets.ingest import IngestConfig, ingest

    n = int(os.environ.get("RECS_BENCH_INGEST_ROWS", "2000000"))
    recs_bin = str(Path(sys.executable).with_name("recs"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        df = make_impressions(n)
        rows = df.height
        files = {"parquet": tmp / "in.parquet", "csv": tmp / "in.csv", "jsonl": tmp / "in.jsonl"}
        df.write_parquet(files["parquet"])
        df.write_csv(files["csv"])
        df.write_ndjson(files["jsonl"])
        size = df.estimated_size() / 2**20
        print(f"rows: {rows:,} (0.5% bad propensity, 0.5% duplicates); in-memory size {size:.0f} MiB")
        readers = {"parquet": pl.read_parquet, "csv": pl.read_csv, "jsonl": pl.read_ndjson}
        print(f"{'format':8} {'file MiB':>9} {'copy s':>7} {'ingest s':>9} {'rows/s':>11} {'ratio':>6}")
        for fmt, path in files.items():
            out = tmp / f"copy-{fmt}.parquet"
            copy_s = _time(lambda: readers[fmt](path).write_parquet(out))
            ds = tmp / f"ds-{fmt}"
            rep = {}
            ingest_s = _time(lambda: rep.setdefault("r", ingest([path], ds, IngestConfig(table="impressions"))))
            tot = rep["r"].totals
            assert tot["read"] == tot["accepted"] + tot["quarantined"] + tot["duplicates"]
            print(f"{fmt:8} {path.stat().st_size / 2**20:9.0f} {copy_s:7.2f} {ingest_s:9.2f} "
                  f"{rows / ingest_s:11,.0f} {ingest_s / copy_s:6.2f}x")
            shutil.rmtree(ds)
            out.unlink()
        # peak memory: the same ingest of 1x, 4x and 12x a 1M-row CSV, each in a child process
        base = make_impressions(1_000_000, seed=1)
        print(f"peak memory of `recs ingest --part-rows 250000` (anon = RSS less file-backed pages such as the "
              f"mmap of the input; in-memory size of 1x as a frame: {base.estimated_size() / 2**20:.0f} MiB)")
        print(f"{'input':6} {'rows':>11} {'file MiB':>9} {'seconds':>8} {'peak RSS MiB':>13} {'peak anon MiB':>14}")
        for mult in (1, 4, 12):
            path = tmp / f"mem-{mult}x.csv"
            copies = [base.with_columns((pl.lit(f"x{k}") + pl.col("request_id").str.slice(1)).alias("request_id"))
                      for k in range(mult)]  # new request ids, so the copies are not duplicates
            pl.concat(copies).write_csv(path)
            del copies
            ds = tmp / f"mem-{mult}x"
            cmd = [recs_bin, "ingest", "--table", "impressions", "--out", str(ds),
                   "--part-rows", "250000", "--json", str(path)]
            secs, peak, anon = _peak_rss_of(cmd)
            print(f"{mult:>2}x    {mult * base.height:11,} {path.stat().st_size / 2**20:9.0f} {secs:8.1f} "
                  f"{peak / 2**20:13.0f} {anon / 2**20:14.0f}", flush=True)
            shutil.rmtree(ds, ignore_errors=True)
            path.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
