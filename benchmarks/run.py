"""Run every benchmark module (`benchmarks/bench_*.py`, each with a `main()` that prints figures).

`python -m benchmarks.run [NAME ...]` runs all, or those whose name contains one of NAME. A module that sets
`RUN_BY_DEFAULT = False` (the 15-30 minute data-volume benchmark) runs only when named.
Benchmarks print figures and ratios; nothing here asserts on wall time.
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        if not argv and not getattr(module, "RUN_BY_DEFAULT", True):
            print(f"\n=== {name}: skipped (runs only when named: make bench BENCH={name[6:]}) ===", flush=True)
            continue
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        module.main()
        print(f"({name} took {time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
