"""OPE inputs: the aligned arrays (`OPEInputs`), reading files, and the row checks behind one-line errors.

Logged impressions: one row per shown (request, position) with the item shown, the logger's marginal
probability `propensity` = P_logger(item at position | request) and a reward column. Target probabilities: rows
`request_id, position, item_id, prob` = P_target(item at position | request); absent rows mean 0. The alignment
itself is in `align.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.io import read_table, scan_table

LOG_COLUMNS = ("request_id", "position", "item_id", "propensity")
TARGET_COLUMNS = ("request_id", "position", "item_id", "prob")
REWARDS = ("clicked", "purchase", "revenue")
MASS_TOL = 1e-6
MAX_POSITION = 1 << 20  # positions are slot indices; larger values are input errors
SURFACE_CODES = {"home": 0, "search": 1}


class OPEInputError(ValueError):
    """Bad logs or target probabilities; the message names the file, row and field."""


@dataclass(frozen=True)
class OPEInputs:
    """Logged impressions aligned with target probabilities.

    Impression arrays have shape (N,) in the order of the logs; `req_idx` indexes the (R,) request arrays
    (requests in order of first appearance). Target arrays (prefix `t_`) have shape (M,): the target's non-zero
    probabilities on logged requests, sorted by (request, position, item), used by the direct method. Item codes
    index the vocabulary of logged items (-1: never logged).
    """

    request_ids: np.ndarray     # (R,) str
    req_surface: np.ndarray     # (R,) int8: 0 home, 1 search, -1 unknown
    req_anonymous: np.ndarray   # (R,) bool
    req_idx: np.ndarray         # (N,) int64 in [0, R)
    position: np.ndarray        # (N,) int32
    item_code: np.ndarray       # (N,) int32
    pscore: np.ndarray          # (N,) logger P(item at position), in (0, 1]
    target_prob: np.ndarray     # (N,) target P(item at position), in [0, 1]
    target_mass: np.ndarray     # (N,) target's total probability at (request, position), in [0, 1]
    reward: np.ndarray          # (N,) float
    t_req_idx: np.ndarray       # (M,)
    t_position: np.ndarray      # (M,)
    t_item_code: np.ndarray     # (M,)
    t_prob: np.ndarray          # (M,) (from `dm_target` when given)
    slate_pscore: np.ndarray | None = None   # (R,) logger P(whole slate), when logged
    reward_name: str = "clicked"
    n_items: int = 0
    target_mass_total: float = 0.0          # sum of all target probability on logged requests
    unlogged_position_mass: float = 0.0     # ... at (request, position) cells with no logged impression
    unseen_pair_mass: float = 0.0           # ... on (item, position) pairs never logged anywhere
    unseen_item_mass: float = 0.0           # ... on items never logged anywhere
    zero_propensity_mass: float | None = None  # ... where the logger's probability is 0 (only when known)
    dropped_target_rows: int = 0            # target rows of requests absent from the logs
    req_unit: np.ndarray | None = None      # (R,) dense codes of the independent units: the user, else the
    #                                         session, else the request (None: every request its own unit)

    def __post_init__(self) -> None:
        n = len(self.req_idx)
        for name in ("position", "item_code", "pscore", "target_prob", "target_mass", "reward"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have shape ({n},)")
        m = len(self.t_req_idx)
        for name in ("t_position", "t_item_code", "t_prob"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"{name} must have shape ({m},)")
        if self.slate_pscore is not None and len(self.slate_pscore) != self.n_requests:
            raise ValueError(f"slate_pscore must have shape ({self.n_requests},)")
        if self.req_unit is not None and len(self.req_unit) != self.n_requests:
            raise ValueError(f"req_unit must have shape ({self.n_requests},)")

    @property
    def n_requests(self) -> int:
        return len(self.request_ids)

    @property
    def n_impressions(self) -> int:
        return len(self.req_idx)

    @cached_property
    def weights(self) -> np.ndarray:
        """Importance weights target_prob / pscore (N,), computed once."""
        return self.target_prob / self.pscore


# ---- reading ------------------------------------------------------------------------------------------------
def _wrap_read(path: Path, fn):
    if not path.exists():
        raise OPEInputError(f"{path}: no such file or folder")
    try:
        return fn()
    except OPEInputError:
        raise
    except Exception as exc:  # polars / arrow errors: one line naming the file
        raise OPEInputError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from exc


def read_frame(path: str | Path, table: str | None = None) -> pl.DataFrame:
    """A Parquet or CSV file, or (with `table`) a dataset folder."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _wrap_read(path, lambda: pl.read_csv(path, infer_schema_length=10_000))
    return _wrap_read(path, lambda: read_table(path, table))


def open_frame(path: str | Path, table: str | None = None) -> pl.LazyFrame | pl.DataFrame:
    """Like `read_frame`, but Parquet (a file or a dataset folder) stays a LazyFrame (schema checked now), which
    the alignment reads slice by slice in bounded memory; CSV is read whole (use Parquet for large inputs)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_frame(path, table)

    def scan() -> pl.LazyFrame:
        lf = scan_table(path, table)
        lf.collect_schema()
        return lf
    return _wrap_read(path, scan)


# ---- row checks ----------------------------------------------------------------------------------------------
def require_columns(schema, cols, source: str) -> None:
    missing = [c for c in cols if c not in schema]
    if missing:
        raise OPEInputError(f"{source}: missing column(s) {', '.join(missing)} (has {', '.join(schema)})")


def _first_bad(df: pl.DataFrame, mask: pl.Expr) -> int | None:
    hit = df.select(pl.arg_where(mask).first()).item()
    return None if hit is None else int(hit)


def _check_numeric(df: pl.DataFrame, col: str, source: str, lo: float, hi: float, lo_open: bool,
                   offset: int) -> None:
    if not df.schema[col].is_numeric() and df.schema[col] != pl.Boolean:
        raise OPEInputError(f"{source}: field {col}: must be numeric, got {df.schema[col]}")
    x = pl.col(col).cast(pl.Float64)
    low = (x <= lo) if lo_open else (x < lo)
    bad = x.is_null() | x.is_nan() | low | (x > hi)
    row = _first_bad(df, bad)
    if row is not None:
        val = df[col][row]
        rng = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise OPEInputError(f"{source}: row {offset + row + 1}: field {col}: {val!r} is not in {rng}")


def check_rows(df: pl.DataFrame, offset: int, source: str, keys, ranges: dict) -> None:
    """Row-level checks of one chunk (rows numbered from `offset` + 1): keys present, `position` an integer slot
    index, numeric fields within `ranges` ({column: (lo, hi, lo_open)})."""
    for c in keys:
        row = _first_bad(df, pl.col(c).is_null())
        if row is not None:
            raise OPEInputError(f"{source}: row {offset + row + 1}: field {c}: is empty")
    if not df.schema["position"].is_integer():
        raise OPEInputError(f"{source}: field position: must be an integer, got {df.schema['position']}")
    _check_numeric(df, "position", source, 0, MAX_POSITION - 1, False, offset)
    for col, (lo, hi, lo_open) in ranges.items():
        _check_numeric(df, col, source, lo, hi, lo_open, offset)
