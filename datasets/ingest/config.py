"""Typed configuration and the error type of `recs ingest`."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from recs.datasets.schemas import TABLES

FORMATS = ("canonical", "obd", "recbole", "sessions")
# Tables written as `DATASET/<table>/date=YYYY-MM-DD/part-*.parquet`; the others as `DATASET/<table>.parquet`.
PARTITIONED_TABLES = ("impressions", "interactions", "queries", "inventory_events")


class IngestError(Exception):
    """Unreadable or inconsistent input: a one-line message naming the file (CLI exit code 2)."""

    exit_code = 2


class StrictViolation(IngestError):
    """`--strict` met a bad row: `file:line: field: reason` (CLI exit code 1)."""

    exit_code = 1


def new_run_id() -> str:
    """A sortable, unique run id such as `20261126T163000Z-1a2b3c`."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class IngestConfig:
    """Options of one ingest run.

    `assume_timezone`: zone given to timestamps written without an offset (None: such rows are quarantined).
    `part_rows`: rows buffered before a Parquet part is written (bounds memory of the writer).
    `source_name`: prefix for ids the adapters derive (default: the file stem).
    `obd_policy_id`: policy id given to Open Bandit rows (default: `obd:<behavior policy from the path>`).
    `obd_request_grouping`: `row` (each row its own request) or `timestamp` (rows sharing a timestamp are one slate).
    `interaction_kind`: kind given to RecBole / session interactions (`click`, `add_to_cart` or `purchase`).
    `side_tables`: with `--format recbole --table interactions`, also ingest sibling `.item` / `.user` files.
    """

    table: str
    format: str = "canonical"
    strict: bool = False
    assume_timezone: str | None = "UTC"
    part_rows: int = 1_000_000
    run_id: str = field(default_factory=new_run_id)
    source_name: str | None = None
    obd_policy_id: str | None = None
    obd_request_grouping: str = "row"
    interaction_kind: str = "click"
    side_tables: bool = True

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ValueError(f"unknown table {self.table!r} (one of {', '.join(TABLES)})")
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r} (one of {', '.join(FORMATS)})")
        if self.assume_timezone is not None:
            try:
                ZoneInfo(self.assume_timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.assume_timezone!r}") from None
        if self.part_rows < 1:
            raise ValueError("part_rows must be >= 1")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.run_id):
            raise ValueError(f"run_id {self.run_id!r} may hold only letters, digits, '_', '.', '-'")
        if self.obd_request_grouping not in ("row", "timestamp"):
            raise ValueError("obd_request_grouping must be 'row' or 'timestamp'")
        if self.interaction_kind not in ("click", "add_to_cart", "purchase"):
            raise ValueError(f"interaction_kind must be click, add_to_cart or purchase, got {self.interaction_kind!r}")

    @property
    def partitioned(self) -> bool:
        return self.table in PARTITIONED_TABLES
