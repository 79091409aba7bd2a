"""Typed configuration and the error type of `recs ingest`."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from recs.datasets.schemas import TABLES

FORMATS = ("canonical", "obd", "recbole", "sessions")
# Tables written as `DATASET/<table>/date=YYYY-MM-DD/part-*.parquet`; the others as `DATASET/<table>.parquet`.
PARTITIONED_TABLES = ("impressions", "interactions", "queries", "inventory_events")

# Memory an ingest process takes whatever its buffers (interpreter, polars, pandera, the CLI's imports, polars'
# streaming reader), and what one streamed row takes while it is validated (raw text, typed values, reasons):
# both measured with `benchmarks/bench_ingest.py` (see docs/INGEST.md). `max_memory` must exceed the first.
BASE_MEMORY = 320 << 20
MIN_MEMORY = 384 << 20
ROW_BYTES = 1200

# Epoch numbers are read as timestamps only when they fall in `IngestConfig.epoch_range` (else quarantined). The
# range may not leave [1e14, 1e16) microseconds (1973-03-03T09:46:40Z .. 2286-11-20T17:46:40Z): inside it the
# unit read off the magnitude (< 1e11 seconds, < 1e14 ms, else us) is the only one that lands in range, and no
# all-digit 8- or 14-character text (a compact `YYYYMMDD[HHMMSS]` date) can be a plausible epoch number.
EPOCH_RANGE = ("1990-01-01", "2100-01-01")
EPOCH_LIMITS_US = (10**14, 10**16)


def _sizes(budget: int | None, batch_rows: int | None, writer_bytes: int | None, resolve_rows: int | None
           ) -> tuple[int, int, int]:
    """Rows per read batch, writer buffer bytes and suspects settled at a time, from a memory allowance.

    What the allowance leaves above `BASE_MEMORY` goes a third to the read batch and a third to the writer (whose
    buffer is held twice while a part is written), the rest is slack for the allocator; settling suspects comes
    after the pass and may use half of it.
    """
    if budget is None:
        sizes = (100_000, 64 << 20, 2_000_000)
    else:
        free = budget - BASE_MEMORY
        sizes = (int(min(50_000, max(10_000, free // 3 // ROW_BYTES))),
                 int(min(32 << 20, max(4 << 20, free // 6))),
                 int(max(10_000, free // (2 * ROW_BYTES))))
    return (batch_rows or sizes[0], writer_bytes or sizes[1], resolve_rows or sizes[2])


def epoch_bounds(span: tuple[str, str]) -> tuple[int, int]:
    """[start, end) microseconds of an `epoch_range`; a ValueError naming the field if it is not usable."""
    try:
        lo, hi = (datetime.fromisoformat(str(t).replace("Z", "+00:00")) for t in span)
    except (TypeError, ValueError):
        raise ValueError(f"epoch_range must be two ISO dates or times, got {span!r}") from None
    lo, hi = ((t if t.tzinfo else t.replace(tzinfo=timezone.utc)) for t in (lo, hi))
    zero = datetime(1970, 1, 1, tzinfo=timezone.utc)
    us = tuple((t - zero) // timedelta(microseconds=1) for t in (lo, hi))
    first, last = EPOCH_LIMITS_US
    if not first <= us[0] < us[1] <= last:
        raise ValueError(f"epoch_range must be a non-empty span within 1973-03-04 .. 2286-11-20, got {span!r} "
                         "(outside it an epoch number's unit, or a compact YYYYMMDD date, would be ambiguous)")
    return us


class IngestError(Exception):
    """Unreadable or inconsistent input: a one-line message naming the file (CLI exit code 2)."""

    exit_code = 2


class StrictViolation(IngestError):
    """`--strict` met a bad row: `file:line: field: reason` (CLI exit code 1)."""

    exit_code = 1


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """`512M`, `1.5G`, `2GiB`, `300MB` or a number of bytes -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"not a memory size: {text!r} (e.g. 512M, 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def new_run_id() -> str:
    """A sortable, unique run id such as `20261126T163000Z-1a2b3c`."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class IngestConfig:
    """Options of one ingest run.

    `assume_timezone`: zone given to timestamps written without an offset (None: such rows are quarantined).
    `part_rows`: rows buffered before a Parquet part is written (bounds memory of the writer).
    `max_memory`: a memory allowance in bytes (None: the defaults below). It sizes the read batches, the writer's
    buffer and the suspect batches so that the process's anonymous memory stays within it (measured, not
    enforced: see docs/INGEST.md).
    `batch_rows`, `writer_buffer_bytes`, `resolve_rows`: rows per streamed batch, bytes the writer may buffer
    before it flushes its largest part, suspected duplicates settled at a time (None: from `max_memory`).
    `source_name`: prefix for ids the adapters derive (default: the file stem).
    `obd_policy_id`: policy id given to Open Bandit rows (default: `obd:<behavior policy from the path>`).
    `obd_request_grouping`: `row` (each row its own request) or `timestamp` (rows sharing a timestamp are one slate).
    `interaction_kind`: kind given to RecBole / session interactions (`click`, `add_to_cart` or `purchase`).
    `epoch_range`: [start, end) of the times an epoch number may denote (ISO dates or times, UTC unless they carry
    an offset); a number outside it in seconds, ms and us alike is quarantined (`EPOCH_RANGE`, `EPOCH_LIMITS_US`).
    `side_tables`: with `--format recbole --table interactions`, also ingest sibling `.item` / `.user` files.
    """

    table: str
    format: str = "canonical"
    strict: bool = False
    assume_timezone: str | None = "UTC"
    part_rows: int = 1_000_000
    max_memory: int | None = None
    batch_rows: int | None = None
    writer_buffer_bytes: int | None = None
    resolve_rows: int | None = None
    run_id: str = field(default_factory=new_run_id)
    source_name: str | None = None
    obd_policy_id: str | None = None
    obd_request_grouping: str = "row"
    interaction_kind: str = "click"
    side_tables: bool = True
    epoch_range: tuple[str, str] = EPOCH_RANGE

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
        if self.max_memory is not None and self.max_memory < MIN_MEMORY:
            raise ValueError(f"max_memory (--max-memory) must be at least {MIN_MEMORY >> 20} MiB "
                             f"(got {self.max_memory >> 20} MiB): "
                             f"the interpreter and libraries alone take about {BASE_MEMORY >> 20} MiB")
        for name in ("batch_rows", "writer_buffer_bytes", "resolve_rows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        epoch_bounds(self.epoch_range)
        self.batch_rows, self.writer_buffer_bytes, self.resolve_rows = _sizes(
            self.max_memory, self.batch_rows, self.writer_buffer_bytes, self.resolve_rows)

    @property
    def epoch_bounds_us(self) -> tuple[int, int]:
        """`epoch_range` as [start, end) microseconds since 1970-01-01 UTC."""
        return epoch_bounds(self.epoch_range)

    @property
    def partitioned(self) -> bool:
        return self.table in PARTITIONED_TABLES
