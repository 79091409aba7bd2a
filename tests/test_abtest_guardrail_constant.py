"""A guardrail constant in both arms (e.g. no errors at all) passes instead of crashing."""
from __future__ import annotations

import numpy as np
import polars as pl
from typer.testing import CliRunner

from recs.cli.main import app


def test_constant_guardrail_passes(tmp_path):
    n = 2000
    rng = np.random.default_rng(0)
    pl.DataFrame({"user_id": [f"u{i}" for i in range(n)],
                  "variant": np.where(np.arange(n) % 2 == 0, "control", "treatment"),
                  "conversion": rng.random(n) < 0.1, "error_rate": np.zeros(n)}).write_parquet(tmp_path / "e.parquet")
    r = CliRunner().invoke(app, ["abtest-analyze", "--data", str(tmp_path / "e.parquet"), "--unit", "user_id",
                                 "--variant", "variant", "--metrics", "conversion",
                                 "--guardrails", "error_rate<=+0.1pp", "--json"])
    assert r.exit_code == 0, r.output
    assert '"pass"' in r.output
