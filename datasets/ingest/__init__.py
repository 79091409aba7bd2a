"""`recs ingest`: raw logs (JSON Lines, CSV, Parquet; gzip/zstd; globs) into a canonical, partitioned dataset.

Public surface: `ingest(inputs, dataset, IngestConfig(...)) -> IngestReport`, `IngestError`, `StrictViolation`.
"""
from recs.datasets.ingest.config import FORMATS, PARTITIONED_TABLES, IngestConfig, IngestError, StrictViolation
from recs.datasets.ingest.pipeline import ingest
from recs.datasets.ingest.reconcile import FileCounts, IngestReport

__all__ = ["FORMATS", "PARTITIONED_TABLES", "FileCounts", "IngestConfig", "IngestError", "IngestReport",
           "StrictViolation", "ingest"]
