"""The benchmark runner: a benchmark marked RUN_BY_DEFAULT = False runs only when named."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_long_benchmarks_run_only_when_named(tmp_path):
    pkg = tmp_path / "benchmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "run.py").write_text((ROOT / "benchmarks" / "run.py").read_text())
    (pkg / "bench_quick.py").write_text("def main():\n    print('QUICK RAN')\n")
    (pkg / "bench_long.py").write_text("RUN_BY_DEFAULT = False\n\ndef main():\n    print('LONG RAN')\n")

    def run(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "benchmarks.run", *args], cwd=tmp_path, capture_output=True,
                              text=True, check=True).stdout

    everything = run()
    assert "QUICK RAN" in everything and "LONG RAN" not in everything and "bench_long: skipped" in everything
    assert "LONG RAN" in run("long") and "QUICK RAN" not in run("long")
