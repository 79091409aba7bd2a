"""Parsing and validation of experiment tables, metric specs and guardrail specs for `abtest-analyze`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl


class ExperimentInputError(ValueError):
    """Bad experiment input; the message names the file, row and field."""


@dataclass(frozen=True)
class MetricSpec:
    """`conversion`, `-bounce_rate` (lower is better) or `clicks/impressions` (ratio of two per-unit columns)."""

    text: str
    numerator: str
    denominator: str | None = None
    lower_is_better: bool = False

    @property
    def name(self) -> str:
        return self.numerator if self.denominator is None else f"{self.numerator}/{self.denominator}"

    @property
    def columns(self) -> list[str]:
        return [self.numerator] + ([self.denominator] if self.denominator else [])

    @classmethod
    def parse(cls, text: str) -> MetricSpec:
        t = text.strip()
        lower = t.startswith("-")
        body = t[1:].strip() if lower else t
        parts = [p.strip() for p in body.split("/")]
        if not body or len(parts) > 2 or any(not p for p in parts):
            raise ExperimentInputError(f"metric {text!r}: expected COLUMN, -COLUMN or NUMERATOR/DENOMINATOR")
        return cls(t, parts[0], parts[1] if len(parts) == 2 else None, lower)


_GUARD = re.compile(r"^\s*([^<>=\s][^<>=]*?)\s*(<=|>=)\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(%|pp)?\s*$")


@dataclass(frozen=True)
class Guardrail:
    """`p99_latency_ms<=+2%`: the treatment may be at most 2% higher; `revenue>=-1%`: at most 1% lower.

    The margin is relative (`%`, on the lift), in percentage points (`pp`, absolute on a proportion) or absolute
    in the metric's units (no suffix).
    """

    text: str
    metric: MetricSpec
    op: str  # "<=" (higher is worse) or ">="
    margin: float  # signed bound on the difference (absolute) or on the lift (relative)
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Guardrail:
        m = _GUARD.match(text)
        if not m:
            raise ExperimentInputError(
                f"guardrail {text!r}: expected METRIC<=+X% , METRIC>=-X% , METRIC<=+Xpp or METRIC<=X")
        name, op, value, unit = m.groups()
        v = float(value)
        if unit == "%":
            margin, rel = v / 100.0, True
        elif unit == "pp":
            margin, rel = v / 100.0, False
        else:
            margin, rel = v, False
        if (op == "<=" and margin < 0) or (op == ">=" and margin > 0):
            raise ExperimentInputError(
                f"guardrail {text!r}: a non-inferiority margin allows some harm: use <=+X or >=-X")
        return cls(text.strip(), MetricSpec.parse(name), op, margin, rel)


def split_list(text: str | None) -> list[str]:
    """Comma-separated items (commas inside nothing else are allowed), stripped, empty ones dropped."""
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def load_experiment(path: str | Path) -> pl.DataFrame:
    """Read a Parquet or CSV experiment table (one row per unit)."""
    path = Path(path)
    if not path.is_file():
        raise ExperimentInputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10_000)
    except Exception as exc:  # noqa: BLE001 - turn any reader failure into a one-line error
        raise ExperimentInputError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    raise ExperimentInputError(f"{path}: expected a .parquet or .csv file")


def validate_experiment(df: pl.DataFrame, unit: str, variant: str, columns: list[str], source: str) -> pl.DataFrame:
    """Check columns, types, nulls and one row per unit; returns the frame with metric columns as Float64."""
    for col in [unit, variant] + columns:
        if col not in df.columns:
            raise ExperimentInputError(f"{source}: no column {col!r} (columns: {', '.join(df.columns)})")
    for col in (unit, variant):
        nulls = df[col].is_null()
        if nulls.any():
            row = int(nulls.arg_max())
            raise ExperimentInputError(f"{source}: row {row + 1}: field {col!r} is empty")
    dup = ~df[unit].is_first_distinct()
    if dup.any():
        row = int(dup.arg_max())
        raise ExperimentInputError(
            f"{source}: row {row + 1}: field {unit!r}: unit {df[unit][row]!r} appears more than once "
            "(the table needs one row per unit)")
    casts = []
    for col in dict.fromkeys(columns):
        dt = df[col].dtype
        if not (dt.is_numeric() or dt == pl.Boolean):
            raise ExperimentInputError(f"{source}: field {col!r} is {dt}, expected numbers or booleans")
        s = df[col].cast(pl.Float64)
        bad = s.is_null() | s.is_nan() | s.is_infinite()
        if bad.any():
            row = int(bad.arg_max())
            raise ExperimentInputError(f"{source}: row {row + 1}: field {col!r} is empty or not finite")
        casts.append(s.alias(col))
    return df.with_columns(casts).with_columns(pl.col(variant).cast(pl.Utf8))


def metric_kind(df: pl.DataFrame, spec: MetricSpec) -> str:
    """`ratio` for y/x, `proportion` when the column holds only 0 and 1, else `mean`."""
    if spec.denominator is not None:
        return "ratio"
    col = df[spec.numerator]
    if col.dtype == pl.Boolean or bool(col.is_in([0.0, 1.0]).all()):
        return "proportion"
    return "mean"


def parse_covariates(text: str | None, metrics: list[MetricSpec], df: pl.DataFrame, source: str) -> dict[str, str]:
    """`COL` (every metric), `metric=COL,...` (per metric) or `auto` (`pre_<numerator>` where present)."""
    if not text:
        return {}
    names = [m.name for m in metrics]
    out: dict[str, str] = {}
    if text.strip() == "auto":
        for m in metrics:
            if f"pre_{m.numerator}" in df.columns:
                out[m.name] = f"pre_{m.numerator}"
        return out
    items = split_list(text)
    if len(items) == 1 and "=" not in items[0]:
        return {n: items[0] for n in names}
    for item in items:
        if "=" not in item:
            raise ExperimentInputError(f"covariate {item!r}: expected METRIC=COLUMN (or one bare COLUMN for all)")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in names:
            raise ExperimentInputError(f"covariate {item!r}: {k!r} is not one of the metrics ({', '.join(names)})")
        out[k] = v
    for col in out.values():
        if col not in df.columns:
            raise ExperimentInputError(f"{source}: no covariate column {col!r}")
    return out


def parse_split(text: str | None, arms: list[str]) -> list[float]:
    """Planned shares in `arms` order: `0.5,0.5` (positional) or `control=0.5,treatment=0.5`; default equal."""
    if not text:
        return [1.0 / len(arms)] * len(arms)
    items = split_list(text)
    try:
        if all("=" in i for i in items):
            named = {k.strip(): float(v) for k, v in (i.split("=", 1) for i in items)}
            if set(named) != set(arms):
                raise ExperimentInputError(f"--split names {sorted(named)} but the arms are {arms}")
            shares = [named[a] for a in arms]
        else:
            shares = [float(i) for i in items]
    except ValueError as exc:
        if isinstance(exc, ExperimentInputError):
            raise
        raise ExperimentInputError(f"--split {text!r}: expected numbers such as 0.5,0.5") from None
    if len(shares) != len(arms):
        raise ExperimentInputError(f"--split gives {len(shares)} shares but there are {len(arms)} arms ({arms})")
    if min(shares) <= 0:
        raise ExperimentInputError("--split shares must be positive")
    total = sum(shares)
    return [s / total for s in shares]
