"""Simulator throughput and memory: `generate_dataset` at the `small` and `medium` presets.

Each scale is generated in its own subprocess (into a temporary folder that is removed afterwards), so the peak
resident memory reported is that process's alone (`os.wait4` returns the child's own rusage). Printed per scale:
impressions and other rows written, Parquet bytes on disk, generation seconds (inside `generate_dataset`, world
build to last file), wall seconds of the whole subprocess (interpreter start and imports included), impression
rows/s on both clocks, and peak RSS. The 1-minute load average before and after each run is printed too, because
other processes on the machine share its cores.

    .venv/bin/python -m benchmarks.run sim                 # small, then medium
    .venv/bin/python -m benchmarks.bench_sim small         # one scale
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks._child import run_measured

SCALES = ("small", "medium")
_CHILD_FLAG = "--child"


def _child(scale: str, out_dir: str, result_file: str) -> None:
    """Runs inside the subprocess: generate one preset and write its summary as JSON."""
    from recs.sim import SimConfig, generate_dataset

    summary = generate_dataset(SimConfig.for_scale(scale), out_dir)
    Path(result_file).write_text(json.dumps(summary))


def _dir_bytes(path: Path) -> tuple[int, int]:
    """(total bytes, number of files) of the Parquet files under `path`."""
    files = list(path.rglob("*.parquet"))
    return sum(f.stat().st_size for f in files), len(files)


def run_scale(scale: str) -> dict:
    """Generate `scale` in a fresh subprocess and measure it; returns the figures."""
    with tempfile.TemporaryDirectory(prefix=f"bench-sim-{scale}-") as tmp:
        out_dir = Path(tmp) / "ds"
        result_file = Path(tmp) / "summary.json"
        m = run_measured([sys.executable, "-m", "benchmarks.bench_sim", _CHILD_FLAG, scale, str(out_dir),
                          str(result_file)])
        if m["returncode"] != 0:
            raise RuntimeError(f"bench_sim: generating scale {scale!r} failed with exit code {m['returncode']}")
        summary = json.loads(result_file.read_text())
        parquet_bytes, n_files = _dir_bytes(out_dir)
        truth_bytes, _ = _dir_bytes(out_dir / "truth")
    return {
        "scale": scale, "summary": summary, "wall_s": m["wall"], "gen_s": summary["seconds"],
        "cpu_s": m["user"] + m["sys"], "peak_rss": m["peak_rss"],
        "parquet_bytes": parquet_bytes, "truth_bytes": truth_bytes, "files": n_files,
        "load_before": m["load_before"], "load_after": m["load_after"],
    }


def report(m: dict) -> None:
    s = m["summary"]
    imp = s["impressions"]
    mb = 1024 ** 2
    print(f"scale={m['scale']}: {s['users']:,} users, {s['items']:,} items, {s['days']} days, "
          f"{s['requests']:,} requests, {s['sessions']:,} sessions")
    rows = ", ".join(f"{t}={n:,}" for t, n in sorted(s["rows"].items()))
    print(f"  rows written:          {rows}")
    print(f"  parquet on disk:       {m['parquet_bytes'] / mb:,.1f} MiB in {m['files']} files "
          f"({m['truth_bytes'] / mb:,.1f} MiB of it truth/)")
    print(f"  generation time:       {m['gen_s']:,.1f} s (generate_dataset); wall {m['wall_s']:,.1f} s incl. "
          f"interpreter start; CPU {m['cpu_s']:,.1f} s")
    print(f"  impression rows/s:     {imp / max(m['gen_s'], 1e-9):,.0f} (generation), "
          f"{imp / max(m['wall_s'], 1e-9):,.0f} (wall)")
    print(f"  requests/s:            {s['requests'] / max(m['gen_s'], 1e-9):,.0f}")
    print(f"  peak RSS (child):      {m['peak_rss'] / mb:,.0f} MiB")
    print(f"  logged CTR:            {s['ctr']:.4f}; purchases (eventually) {s['purchases_eventually']:,}")
    print(f"  load avg (1 min):      {m['load_before']:.2f} before, {m['load_after']:.2f} after "
          f"on {os.cpu_count()} CPUs", flush=True)


def main(argv: list[str] | None = None) -> None:
    scales = [a for a in (argv or []) if a in SCALES] or list(SCALES)
    for scale in scales:
        report(run_scale(scale))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == _CHILD_FLAG:
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        unknown = [a for a in sys.argv[1:] if a not in SCALES]
        if unknown:
            sys.exit(f"bench_sim: unknown scale(s) {', '.join(unknown)}; choose from {', '.join(SCALES)}")
        main(sys.argv[1:])
