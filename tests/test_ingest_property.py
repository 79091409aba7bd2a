"""Property-based ingest checks (hypothesis): random clean and corrupted rows, any input format."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings, strategies as st

from recs.datasets.ingest import IngestConfig, ingest
from recs.datasets.io import read_table

from _ingest_fixtures import imp_row, write_csv, write_jsonl, write_parquet

# field -> corrupt values (text as it would appear in a raw log)
CORRUPTIONS = {
    "propensity": ["0", "-0.1", "1.0001", "x", "1e400"],
    "position": ["-3", "1.5", "two"],
    "surface": ["Home", "email", "x"],
    "clicked": ["2", "yes please"],
    "ts": ["2024-13-01T00:00:00Z", "soon", "2024-01-01T25:00:00Z"],
    "session_id": [None],
    "request_id": [None],
}

row_spec = st.tuples(st.booleans(), st.sampled_from(sorted(CORRUPTIONS)), st.integers(0, 4))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(row_spec, min_size=1, max_size=40), fmt=st.sampled_from(["csv", "jsonl", "parquet"]),
       n_dup=st.integers(0, 5))
def test_random_rows_reconcile_and_quarantine_the_corrupted_field(specs, fmt, n_dup):
    tmp = Path(tempfile.mkdtemp())
    try:
        rows, expected_bad = [], {}
        for i, (corrupt, field, k) in enumerate(specs):
            row = imp_row(i, request_id=f"r{i}", position=i % 7)
            if corrupt:
                values = CORRUPTIONS[field]
                row[field] = values[k % len(values)]
                expected_bad[i] = field
            rows.append(row)
        rows += rows[:n_dup]  # exact duplicates of the first rows
        maker = {"csv": write_csv, "jsonl": write_jsonl, "parquet": write_parquet}[fmt]
        src = maker(tmp / f"in.{fmt}", rows)
        rep = ingest([src], tmp / "ds", IngestConfig(table="impressions"))
        f = rep.files[0]
        n_clean = len(specs) - len(expected_bad)
        dup_of_clean = sum(1 for j in range(min(n_dup, len(specs))) if j not in expected_bad)
        assert f.read == len(rows)
        assert f.read == f.accepted + f.quarantined + f.duplicates
        assert f.accepted == n_clean
        assert f.duplicates == dup_of_clean
        assert f.quarantined == len(expected_bad) + (min(n_dup, len(specs)) - dup_of_clean)
        if rep.quarantine_file:
            q = pl.read_parquet(rep.quarantine_file)
            offset = 2 if fmt == "csv" else 1
            got = {r - offset: fld for r, fld in q.select("_row", "_field").iter_rows() if r - offset < len(specs)}
            assert got == expected_bad
        if n_clean:
            out = read_table(tmp / "ds", "impressions")
            assert sorted(out["item_id"].to_list()) == sorted(f"i{i}" for i in range(len(specs))
                                                             if i not in expected_bad)
        again = ingest([src], tmp / "ds", IngestConfig(table="impressions"))
        assert again.totals["accepted"] == 0
        assert again.totals["duplicates"] == n_clean + dup_of_clean
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
