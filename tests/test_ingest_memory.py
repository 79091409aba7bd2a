"""Bounded memory: an ingest with `--max-memory` on a CSV and on one four times larger takes about the same memory.

The peak is the anonymous resident memory of the `recs ingest` process (what it allocates; file pages such as
polars' memory map of the input are left out), sampled every 10 ms. Polars' allocator (jemalloc) is told to hand
freed pages back at once, so the peak is what the process holds, not what the allocator kept from the last
seconds (that slack is measured by `benchmarks/bench_ingest.py`). Figures, not wall time, are compared.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

# The library call `recs ingest --max-memory 384M` makes, in a child process that imports only the ingest package.
CHILD = """
import json, sys
from recs.datasets.ingest import IngestConfig, ingest
rep = ingest([sys.argv[1]], sys.argv[2], IngestConfig(table="impressions", max_memory=384 << 20))
print(json.dumps(rep.to_dict()))
"""


def _impressions_csv(path: Path, n: int) -> Path:
    """`n` impressions over 5 days, 0.5% of them with a bad propensity, plus 0.5% duplicated rows (so quarantine
    and suspected duplicates are exercised too)."""
    rng = np.random.default_rng(n)
    t0 = np.datetime64("2024-03-01T00:00:00", "us")
    i = pl.int_range(n, eager=True)
    df = pl.DataFrame({
        "request_id": "r" + (i // 10).cast(pl.Utf8),
        "ts": pl.Series(t0 + np.sort(rng.integers(0, 5 * 86_400_000_000, n)).astype("timedelta64[us]")),
        "user_id": pl.Series(rng.integers(0, 50_000, n)).cast(pl.Utf8),
        "session_id": "s" + (i // 30).cast(pl.Utf8),
        "surface": np.where(rng.random(n) < 0.7, "home", "search"),
        "query": pl.Series([None] * n, dtype=pl.Utf8),
        "item_id": "i" + pl.Series(rng.integers(0, 100_000, n)).cast(pl.Utf8),
        "position": i % 10,
        "propensity": np.where(rng.random(n) < 0.005, 1.5, rng.uniform(0.01, 1.0, n)),
        "policy_id": "p0",
        "clicked": rng.random(n) < 0.1,
    }).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    dups = df.gather(np.sort(rng.choice(n, n // 200, replace=False)))
    pl.concat([df.head(n // 2), dups, df.tail(n - n // 2)]).write_csv(path)
    return path


def _peak_anon(cmd: list[str]) -> tuple[int, dict]:
    """Run `cmd`; return its peak anonymous resident memory in bytes and its JSON output."""
    env = dict(os.environ, _RJEM_MALLOC_CONF="dirty_decay_ms:0,muzzy_decay_ms:0")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        try:
            m = proc.memory_info()
            peak = max(peak, m.rss - m.shared)
        except psutil.Error:
            pass
        time.sleep(0.01)
    out, err = p.communicate()
    assert p.returncode == 0, err.decode()[-500:]
    return peak, json.loads(out)


N = 400_000  # enough rows for the memory of the run to reach its plateau (about 200,000)


def test_peak_memory_does_not_grow_with_the_input(tmp_path):
    peaks = {}
    for mult in (1, 4):
        src = _impressions_csv(tmp_path / f"in-{mult}x.csv", N * mult)
        peak, rep = _peak_anon([sys.executable, "-c", CHILD, str(src), str(tmp_path / f"ds-{mult}")])
        tot = rep["totals"]
        assert rep["reconciled"] and tot["read"] == N * mult + N * mult // 200
        assert tot["quarantined"] > 0 and tot["duplicates"] > 0
        peaks[mult] = peak
    # 4x the rows (and 4x the file) may cost a little more memory, not anything like 4x
    assert peaks[4] <= 1.25 * peaks[1], {k: v >> 20 for k, v in peaks.items()}
