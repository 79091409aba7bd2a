"""Run a benchmark step in a fresh process and measure it (wall time, the child's own CPU and peak RSS, load)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]


def load1() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_measured(cmd: list[str], stdout: IO | None = None, stderr: IO | None = None) -> dict:
    """Run `cmd` from the repository root; returncode, wall, user, sys (s), peak RSS (bytes) and load around it."""
    load = load1()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, cwd=REPO)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # interrupted: do not leave the child running
        proc.kill()
        proc.wait()
        raise
    wall = time.perf_counter() - t0
    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"returncode": os.waitstatus_to_exitcode(status), "wall": wall, "user": usage.ru_utime,
            "sys": usage.ru_stime, "peak_rss": peak, "load_before": load, "load_after": load1()}
