"""Per-file counts of an ingest run and the reconciliation identity `read == accepted + quarantined + duplicates`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from recs.datasets.ingest.config import IngestError


@dataclass
class FileCounts:
    """Counts for one input file. `read` is counted straight from the file, independently of the others."""

    file: str
    kind: str
    compression: str | None
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.read == self.accepted + self.quarantined + self.duplicates


@dataclass
class IngestReport:
    """What one run did; written to `DATASET/_ingest/<run_id>.json` and printed by `recs ingest --json`."""

    run_id: str
    table: str
    format: str
    dataset: str
    started_at: str
    finished_at: str = ""
    files: list[FileCounts] = field(default_factory=list)
    written_rows: int = 0
    partitions: list[str] = field(default_factory=list)
    new_files: list[str] = field(default_factory=list)
    quarantine_file: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    skipped_files: dict[str, str] = field(default_factory=dict)  # input files left out, and why
    report_file: str | None = None

    @property
    def totals(self) -> dict[str, int]:
        keys = ("read", "accepted", "quarantined", "duplicates")
        return {k: sum(getattr(f, k) for f in self.files) for k in keys}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["totals"] = self.totals
        d["reconciled"] = all(f.balanced for f in self.files) and self.written_rows == self.totals["accepted"]
        return d


def check(report: IngestReport) -> None:
    """Raise `IngestError` unless every file balances and the rows written equal the rows accepted."""
    for f in report.files:
        if not f.balanced:
            raise IngestError(
                f"{f.file}: counts do not reconcile: read {f.read} != accepted {f.accepted} + quarantined "
                f"{f.quarantined} + duplicates {f.duplicates}")
    if report.written_rows != report.totals["accepted"]:
        raise IngestError(f"counts do not reconcile: wrote {report.written_rows} rows, accepted "
                          f"{report.totals['accepted']}")
