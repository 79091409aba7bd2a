"""Ingest throughput (CSV, JSON Lines, Parquet) next to a plain polars read + write-Parquet copy, and peak memory.

`python -m benchmarks.run ingest`; rows via RECS_BENCH_INGEST_ROWS (default 2,000,000; 0 skips the throughput
part), runs per figure via RECS_BENCH_INGEST_REPEATS (default 3; the best is kept), memory allowance via
RECS_BENCH_INGEST_MEMORY (default 384M), input sizes via RECS_BENCH_INGEST_MULTS (default 1,4,12 times a 1M-row
CSV; empty skips the memory part). Prints; asserts nothing (an ingest whose counts do not reconcile raises).
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


def _peak_rss_of(cmd: list[str], env: dict | None = None) -> tuple[float, int, int]:
    """Run `cmd`; return (seconds, peak RSS, peak anonymous RSS) in bytes, sampled every 20 ms."""
    import psutil

    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
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


def throughput(tmp: Path, n: int, repeats: int) -> None:
    """Ingest of the same `n`-row table as Parquet, CSV and JSON Lines next to a plain polars copy of each."""
    from recs.datasets.ingest import IngestConfig, ingest

    df = make_impressions(n)
    rows = df.height
    files = {"parquet": tmp / "in.parquet", "csv": tmp / "in.csv", "jsonl": tmp / "in.jsonl"}
    df.write_parquet(files["parquet"])
    df.write_csv(files["csv"])
    df.write_ndjson(files["jsonl"])
    print(f"rows: {rows:,} (0.5% bad propensity, 0.5% duplicates); polars threads: {pl.thread_pool_size()}")
    warm = tmp / "warm.csv"  # one small run first: imports and first-call set-up are not throughput
    df.head(1000).write_csv(warm)
    ingest([warm], tmp / "ds-warm", IngestConfig(table="impressions"))
    del df
    readers = {"parquet": pl.read_parquet, "csv": pl.read_csv, "jsonl": pl.read_ndjson}
    print(f"best of {repeats} runs each, copy and ingest alternating (the shortest run is the least disturbed one)")
    print(f"{'format':8} {'file MiB':>9} {'copy s':>7} {'ingest s':>9} {'rows/s':>11} {'ratio':>6}")
    for fmt, path in files.items():
        out, ds = tmp / f"copy-{fmt}.parquet", tmp / f"ds-{fmt}"
        copies, ingests = [], []
        for _ in range(repeats):
            copies.append(_time(lambda: readers[fmt](path).write_parquet(out)))
            out.unlink()
            ingests.append(_time(lambda: ingest([path], ds, IngestConfig(table="impressions"))))
            shutil.rmtree(ds)
        copy_s, ingest_s = min(copies), min(ingests)
        print(f"{fmt:8} {path.stat().st_size / 2**20:9.0f} {copy_s:7.2f} {ingest_s:9.2f} "
              f"{rows / ingest_s:11,.0f} {ingest_s / copy_s:6.2f}x", flush=True)
        path.unlink()


BARE_SCAN = "import sys, polars as pl\nfor _ in pl.scan_csv(sys.argv[1], infer_schema=False).collect_batches(" \
            "engine='streaming'): pass"


def memory(tmp: Path, allowance: str, mults: tuple[int, ...]) -> None:
    """Peak memory of `recs ingest --max-memory` on CSVs of 1x, 4x, ... a 1M-row table (in a child process).

    Also of a bare polars streaming read of the same CSV, with polars' default CSV chunk size and with the 1 MiB
    chunks an ingest run sets (`POLARS_CSV_CHUNK_SIZE`), to show why it sets them.
    """
    recs_bin = str(Path(sys.executable).with_name("recs"))
    base = make_impressions(1_000_000, seed=1)
    allocators = {"default": None,
                  "decay 0": dict(os.environ, _RJEM_MALLOC_CONF="dirty_decay_ms:0,muzzy_decay_ms:0")}  # see doc
    print(f"peak memory of `recs ingest --max-memory {allowance}` (anon = RSS less file-backed pages such as the "
          f"memory map of the input; 'decay 0' = polars' allocator returns freed pages at once)")
    print(f"{'input':6} {'rows':>11} {'file MiB':>9} {'run':>20} {'seconds':>8} {'peak RSS MiB':>13} "
          f"{'peak anon MiB':>14}")
    for mult in mults:
        path = tmp / f"mem-{mult}x.csv"
        copies = [base.with_columns((pl.lit(f"x{k}") + pl.col("request_id").str.slice(1)).alias("request_id"))
                  for k in range(mult)]  # new request ids, so the copies are not duplicates
        pl.concat(copies).write_csv(path)
        del copies
        for name, chunk in (("scan, default chunks", None), ("scan, 1 MiB chunks", str(1 << 20))):
            env = {k: v for k, v in os.environ.items() if k != "POLARS_CSV_CHUNK_SIZE"}
            env.update({"POLARS_CSV_CHUNK_SIZE": chunk} if chunk else {})
            secs, peak, anon = _peak_rss_of([sys.executable, "-c", BARE_SCAN, str(path)], env)
            print(f"{mult:>2}x    {mult * base.height:11,} {path.stat().st_size / 2**20:9.0f} {name:>20} {secs:8.1f} "
                  f"{peak / 2**20:13.0f} {anon / 2**20:14.0f}", flush=True)
        for name, env in allocators.items():
            ds = tmp / f"mem-{mult}x"
            cmd = [recs_bin, "ingest", "--table", "impressions", "--out", str(ds), "--max-memory", allowance,
                   "--json", str(path)]
            secs, peak, anon = _peak_rss_of(cmd, env)
            print(f"{mult:>2}x    {mult * base.height:11,} {path.stat().st_size / 2**20:9.0f} {'ingest, ' + name:>20} "
                  f"{secs:8.1f} {peak / 2**20:13.0f} {anon / 2**20:14.0f}", flush=True)
            shutil.rmtree(ds, ignore_errors=True)
        path.unlink()


def main() -> None:
    n = int(os.environ.get("RECS_BENCH_INGEST_ROWS", "2000000"))
    allowance = os.environ.get("RECS_BENCH_INGEST_MEMORY", "384M")
    mults = tuple(int(m) for m in os.environ.get("RECS_BENCH_INGEST_MULTS", "1,4,12").split(",") if m)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        if n:
            throughput(tmp, n, int(os.environ.get("RECS_BENCH_INGEST_REPEATS", "3")))
        if mults:
            memory(tmp, allowance, mults)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
