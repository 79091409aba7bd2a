"""Vectorised row validation derived from the canonical pandera schemas.

For every column of `TABLES[table]` the raw value (a string, or a typed Parquet value) is cast with polars
(`strict=False`, so a failed cast is a null), and the nullability, the type and every pandera check of the
column become polars expressions giving a reason or null. A row's `_field` / `_reason` are those of its first
failing column, in schema order. The pandera schema stays the source of truth: `validate()` is run again on the
accepted rows before they are written.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pandera.polars as pa

from recs.datasets.ingest.config import EPOCH_RANGE, epoch_bounds
from recs.datasets.ingest.readers import ROW, SRC_FIELD, SRC_REASON
from recs.datasets.schemas import TABLES

FIELD, REASON = "_field", "_reason"
_INT_LIMIT = 2.0**53
EPOCH_US = epoch_bounds(EPOCH_RANGE)  # [start, end) microseconds an epoch number may denote (the default)


def typed_name(col: str) -> str:
    return f"_t_{col}"


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _strip(raw: pl.Expr) -> pl.Expr:
    return raw.str.strip_chars()


def _to_int(raw: pl.Expr, src: pl.DataType) -> pl.Expr:
    """Integers; integral floats ("3.0", 3.0) are accepted, anything else is null."""
    if src == pl.Utf8:
        f = raw.cast(pl.Float64, strict=False)
        integral = f.is_finite() & (f == f.floor()) & (f.abs() < _INT_LIMIT)
        return pl.coalesce(raw.cast(pl.Int64, strict=False), pl.when(integral).then(f).cast(pl.Int64))
    if src.is_float():
        integral = raw.is_finite() & (raw == raw.floor()) & (raw.abs() < _INT_LIMIT)
        return pl.when(integral).then(raw).cast(pl.Int64)
    return raw.cast(pl.Int64, strict=False)


def _to_float(raw: pl.Expr, src: pl.DataType) -> pl.Expr:
    return raw.cast(pl.Float64, strict=False)


_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")
_TRUE_TEXT = [v for w in _TRUE for v in dict.fromkeys((w, w.upper(), w.capitalize()))]
_FALSE_TEXT = [v for w in _FALSE for v in dict.fromkeys((w, w.upper(), w.capitalize()))]


def _to_bool(raw: pl.Expr, src: pl.DataType) -> pl.Expr:
    if src == pl.Boolean:
        return raw
    if src == pl.Utf8:
        # (is_in, not replace_strict: the latter is not streamed and holds the whole column)
        return pl.when(raw.is_in(_TRUE_TEXT)).then(True).when(raw.is_in(_FALSE_TEXT)).then(False).otherwise(None)
    if src.is_numeric():
        return pl.when(raw == 1).then(True).when(raw == 0).then(False).otherwise(None)
    return pl.lit(None, pl.Boolean)


def _epoch(f: pl.Expr, epochs: tuple[int, int]) -> pl.Expr:
    """Epoch number to UTC datetime; the unit (s, ms, us) is read off the magnitude, and a time outside
    `epochs` ([start, end) microseconds) is null: `20240301` would be 1970-08-23 in seconds, `20240301100000`
    2611-05-23 in ms (`config.EPOCH_LIMITS_US` keeps the unit unambiguous)."""
    a = f.abs()
    us = pl.when(a < 1e11).then(f * 1e6).when(a < 1e14).then(f * 1e3).otherwise(f).round(0)
    ok = f.is_finite() & (us >= epochs[0]) & (us < epochs[1])
    return pl.when(ok).then(us).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))


def _day(us: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)
    return t.strftime("%Y-%m-%d") if t.time() == datetime.min.time() else t.isoformat()


_NUMBER = r"^-?\d+(\.\d+)?$"
_COMPACT = r"^(\d{8}|\d{14})$"  # YYYYMMDD or YYYYMMDDHHMMSS: never a plausible epoch number (see `_epoch`)


_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f")


def _localize(naive: pl.Expr, tz: str | None) -> pl.Expr:
    if tz is None:
        return pl.lit(None, pl.Datetime("us", "UTC"))
    if tz == "UTC":
        return naive.dt.replace_time_zone("UTC")
    return naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")


def _compact(s: pl.Expr) -> pl.Expr:
    """All-digit `YYYYMMDD` / `YYYYMMDDHHMMSS` text (no zone) to a naive datetime; null for anything else."""
    iso = pl.concat_str(s.str.slice(0, 4), pl.lit("-"), s.str.slice(4, 2), pl.lit("-"), s.str.slice(6, 2),
                        pl.when(s.str.len_bytes() == 14).then(pl.concat_str(
                            pl.lit("T"), s.str.slice(8, 2), pl.lit(":"), s.str.slice(10, 2), pl.lit(":"),
                            s.str.slice(12, 2))).otherwise(pl.lit("T00:00:00")))
    return pl.when(s.str.contains(_COMPACT)).then(iso.str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="us",
                                                                       strict=False))


def _naive_string(s: pl.Expr) -> pl.Expr:
    parts = [s.str.to_datetime(f, time_unit="us", strict=False) for f in _NAIVE_FORMATS]
    parts.append(s.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")))
    parts.append(_compact(s))
    return pl.coalesce(parts)


_FAST_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"  # ISO 8601 with T, optional fraction, offset or Z
_FAST_FORMATS = (_FAST_FORMAT, "%Y-%m-%d %H:%M:%S%.f%#z")  # ... or with a space
TS_RETRY = "_ts_retry"  # (fast validation) rows whose text timestamps the common forms did not parse


def _ts_any_format(s: pl.Expr, tz: str | None, epochs: tuple[int, int]) -> pl.Expr:
    """Every accepted text form: ISO with offset or Z (T or space), naive ISO, date or compact `YYYYMMDD[HHMMSS]`
    (zone `tz`), epoch s/ms/us within `epochs`."""
    s = s.str.strip_chars().str.replace(r"(?i)z$", "+00:00")
    aware = [s.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in _AWARE_FORMATS]
    numeric = pl.when(s.str.contains(_NUMBER)).then(s.cast(pl.Float64, strict=False))
    return pl.coalesce([*aware, _localize(_naive_string(s), tz), _epoch(numeric, epochs)])


def parse_timestamps(s: pl.Series, tz: str | None, epochs: tuple[int, int] = EPOCH_US) -> pl.Series:
    """Text to UTC datetimes: the common ISO form in one vectorised pass, every other form only on the rest."""
    utc = pl.Datetime("us", "UTC")
    out = s.str.to_datetime(_FAST_FORMAT, time_unit="us", time_zone="UTC", strict=False)
    miss = out.is_null() & s.is_not_null()
    if miss.any():
        idx = miss.arg_true()
        fixed = (pl.DataFrame({"v": s.gather(idx)}).select(_ts_any_format(pl.col("v"), tz, epochs).cast(utc))
                 .to_series())
        out = out.scatter(idx, fixed)
    return out.cast(utc)


def _fast_ts(raw: pl.Expr) -> pl.Expr:
    """Text in the common ISO forms (with an offset or Z) to UTC; null for anything else."""
    utc = pl.Datetime("us", "UTC")
    return pl.coalesce([raw.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False).cast(utc)
                        for f in _FAST_FORMATS])


def _to_ts(raw: pl.Expr, src: pl.DataType, tz: str | None, fast: bool, epochs: tuple[int, int]) -> pl.Expr:
    utc = pl.Datetime("us", "UTC")
    if src == pl.Utf8:
        if fast:
            return _fast_ts(raw)
        return raw.map_batches(lambda s: parse_timestamps(s, tz, epochs), return_dtype=utc, is_elementwise=True)
    if isinstance(src, pl.Datetime):
        if src.time_zone is None:
            return _localize(raw.dt.cast_time_unit("us"), tz).cast(utc)
        return raw.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if src == pl.Date:
        return _localize(raw.cast(pl.Datetime("us")), tz).cast(utc)
    if src.is_numeric():
        return _epoch(raw.cast(pl.Float64), epochs)
    return pl.lit(None, utc)


def _naive_only(raw: pl.Expr, src: pl.DataType) -> pl.Expr:
    """True where a timestamp parses only without a zone (used to explain rejections when no zone is assumed)."""
    if src == pl.Utf8:
        return _naive_string(_strip(raw)).is_not_null()
    if isinstance(src, pl.Datetime):
        return pl.lit(src.time_zone is None)
    return pl.lit(src == pl.Date)


def cast_expr(raw: pl.Expr, src: pl.DataType, dst: pl.DataType, tz: str | None, fast: bool = False,
              epochs: tuple[int, int] = EPOCH_US) -> pl.Expr:
    """`raw` (of polars type `src`) cast to the canonical type `dst`; null where it does not parse.

    `fast`: text timestamps in the common ISO forms only (see `with_validation`). `epochs`: [start, end)
    microseconds an epoch number may denote.
    """
    if dst == pl.Utf8:
        return raw if src == pl.Utf8 else raw.cast(pl.Utf8, strict=False)
    if dst == pl.Int64:
        return _to_int(raw, src)
    if dst == pl.Float64:
        return _to_float(raw, src)
    if dst == pl.Boolean:
        return _to_bool(raw, src)
    if isinstance(dst, pl.Datetime):
        return _to_ts(raw, src, tz, fast, epochs)
    raise NotImplementedError(f"no cast to {dst}")


_TYPE_NAMES = {pl.Utf8: "text", pl.Int64: "an integer", pl.Float64: "a number", pl.Boolean: "a boolean"}


def _check_failures(check: pa.Check, v: pl.Expr) -> list[tuple[pl.Expr, str]]:
    """(condition that marks a failure, reason) pairs for one pandera check; `v` is the typed, non-null value."""
    st = check.statistics or {}
    name = check.name
    if name == "greater_than":
        return [(~(v > st["min_value"]), f"must be > {_num(st['min_value'])}")]
    if name == "greater_than_or_equal_to":
        return [(~(v >= st["min_value"]), f"must be >= {_num(st['min_value'])}")]
    if name == "less_than":
        return [(~(v < st["max_value"]), f"must be < {_num(st['max_value'])}")]
    if name == "less_than_or_equal_to":
        return [(~(v <= st["max_value"]), f"must be <= {_num(st['max_value'])}")]
    if name == "in_range":
        lo, hi = st["min_value"], st["max_value"]
        lo_ok = v >= lo if st.get("include_min", True) else v > lo
        hi_ok = v <= hi if st.get("include_max", True) else v < hi
        return [(~(lo_ok & hi_ok), f"must be in range [{_num(lo)}, {_num(hi)}]")]
    if name == "equal_to":
        return [(v != st["value"], f"must equal {st['value']}")]
    if name == "not_equal_to":
        return [(v == st["value"], f"must not equal {st['value']}")]
    if name == "isin":
        allowed = list(st["allowed_values"])
        return [(~v.is_in(allowed), "must be one of: " + ", ".join(map(str, allowed)))]
    if name == "notin":
        forbidden = list(st["forbidden_values"])
        return [(v.is_in(forbidden), "must not be one of: " + ", ".join(map(str, forbidden)))]
    if name == "str_length":
        n = v.str.len_chars()
        out = []
        if st.get("exact_value") is not None:
            out.append((n != st["exact_value"], f"length must be {st['exact_value']}"))
        if st.get("min_value") is not None:
            msg = "must not be empty" if st["min_value"] == 1 else f"length must be >= {st['min_value']}"
            out.append((n < st["min_value"], msg))
        if st.get("max_value") is not None:
            out.append((n > st["max_value"], f"length must be <= {st['max_value']}"))
        return out
    if name == "str_matches":
        return [(~v.str.contains(st["pattern"]), f"must match {st['pattern']}")]
    if name == "str_startswith":
        return [(~v.str.starts_with(st["string"]), f"must start with {st['string']!r}")]
    if name == "str_endswith":
        return [(~v.str.ends_with(st["string"]), f"must end with {st['string']!r}")]
    raise NotImplementedError(f"pandera check {name!r} has no vectorised translation in recs.datasets.ingest")


def _epoch_like(raw: pl.Expr, src: pl.DataType) -> pl.Expr:
    """True where a timestamp that did not parse is an epoch number (so the range rejected it)."""
    if src == pl.Utf8:
        s = _strip(raw)
        return s.str.contains(_NUMBER) & ~s.str.contains(_COMPACT)
    if src.is_float():
        return raw.is_finite()
    return pl.lit(src.is_numeric())


def column_reason(col: str, src: pl.DataType, table: str, tz: str | None, fast: bool = False,
                  epochs: tuple[int, int] = EPOCH_US) -> tuple[pl.Expr, pl.Expr]:
    """(typed value, reason-or-null) expressions for column `col` of `table`."""
    column = TABLES[table].schema.columns[col]
    dst = TABLES[table].dtypes[col]
    raw = pl.col(col)
    typed = cast_expr(raw, src, dst, tz, fast, epochs)
    t = pl.col(typed_name(col))
    when = pl.when(raw.is_null() & (not column.nullable)).then(pl.lit("required value is missing"))
    if isinstance(dst, pl.Datetime):
        no_zone = "timestamp has no time zone (pass --assume-timezone)"
        failed = raw.is_not_null() & t.is_null()
        if tz is None:
            when = when.when(failed & _naive_only(raw, src)).then(pl.lit(no_zone))
        if src == pl.Utf8 and not fast:  # (`fast`: the text rows that did not parse are validated again in full)
            bad_day = "8 or 14 digits but not a valid YYYYMMDD / YYYYMMDDHHMMSS date"
            when = when.when(failed & _strip(raw).str.contains(_COMPACT)).then(pl.lit(bad_day))
        if (src == pl.Utf8 and not fast) or (src != pl.Utf8 and src.is_numeric()):
            out = f"epoch number outside {_day(epochs[0])} .. {_day(epochs[1])} as seconds, ms and us (epoch_range)"
            when = when.when(failed & _epoch_like(raw, src)).then(pl.lit(out))
        expected = "a timestamp (ISO 8601 with offset, YYYYMMDD[HHMMSS], or epoch seconds/ms/us)"
    else:
        expected = _TYPE_NAMES.get(dst, str(dst))
    when = when.when(raw.is_not_null() & t.is_null()).then(pl.lit(f"expected {expected}"))
    if dst == pl.Float64:
        when = when.when(t.is_not_null() & ~t.is_finite()).then(pl.lit("must be a finite number"))
    for check in column.checks:
        for cond, msg in _check_failures(check, t):
            when = when.when(t.is_not_null() & cond).then(pl.lit(msg))
    return typed.alias(typed_name(col)), when.otherwise(pl.lit(None, pl.Utf8))


def table_columns(table: str, present: list[str]) -> list[str]:
    """Canonical columns of `table` to carry: the required ones and the optional ones present in the input."""
    spec = TABLES[table]
    return [c for c in spec.columns if c in spec.required_columns or c in present]


def with_validation(lf: pl.LazyFrame, table: str, columns: list[str], tz: str | None, fast: bool = False,
                    epochs: tuple[int, int] = EPOCH_US) -> pl.LazyFrame:
    """Add `_t_<col>` typed columns, `_field` and `_reason` (null for a valid row) to a raw frame.

    `lf` holds the raw canonical columns (missing ones are added as nulls) and `_row`, and may hold `_src_field`
    / `_src_reason`: a row a reader or adapter rejected already (a ragged CSV line, a missing source column of a
    derived key), whose field and reason then come first. `epochs`: [start, end) microseconds an epoch number
    may denote (`IngestConfig.epoch_bounds_us`). `fast`: text timestamps
    are parsed in the common ISO forms only, by pure polars expressions (no Python call per batch), and a boolean
    `_ts_retry` column marks the rows holding a text timestamp those forms did not read: the caller validates
    those rows again without `fast` (`revalidate`), which gives the same result as validating all rows so.
    """
    schema = lf.collect_schema()
    lf = lf.with_columns(pl.lit(None, pl.Utf8).alias(c) for c in columns if c not in schema)
    schema = lf.collect_schema()
    typed, reasons = zip(*(column_reason(c, schema[c], table, tz, fast, epochs) for c in columns))
    rnames = [f"_r_{c}" for c in columns]
    lf = lf.with_columns(typed).with_columns(r.alias(n) for r, n in zip(reasons, rnames))
    field = pl.coalesce([pl.when(pl.col(n).is_not_null()).then(pl.lit(c)) for c, n in zip(columns, rnames)])
    reason = pl.coalesce(pl.col(rnames))
    if SRC_REASON in schema:
        field = pl.when(pl.col(SRC_REASON).is_not_null()).then(pl.col(SRC_FIELD)).otherwise(field)
        reason = pl.coalesce(pl.col(SRC_REASON), reason)
    lf = lf.with_columns(reason.alias(REASON), field.alias(FIELD)).drop(rnames)
    if fast:
        dtypes = TABLES[table].dtypes
        text_ts = [c for c in columns if isinstance(dtypes[c], pl.Datetime) and schema[c] == pl.Utf8]
        retry = pl.any_horizontal([pl.col(c).is_not_null() & pl.col(typed_name(c)).is_null() for c in text_ts]
                                  or [pl.lit(False)])
        lf = lf.with_columns(retry.alias(TS_RETRY))
    return lf


def revalidate(batch: pl.DataFrame, table: str, columns: list[str], tz: str | None,
               epochs: tuple[int, int] = EPOCH_US) -> pl.DataFrame:
    """A batch validated with `fast`, its `_ts_retry` rows validated again in full; same columns, same order."""
    if TS_RETRY not in batch.columns:
        return batch
    retry = batch[TS_RETRY]
    batch = batch.drop(TS_RETRY)
    if not retry.any():
        return batch
    raw = batch.filter(retry).select(*columns, ROW, *(c for c in (SRC_FIELD, SRC_REASON) if c in batch.columns))
    again = with_validation(raw.lazy(), table, columns, tz, epochs=epochs).collect().select(batch.columns)
    return pl.concat([batch.filter(~retry), again]).sort(ROW)


def good_rows(lf: pl.LazyFrame, columns: list[str]) -> pl.LazyFrame:
    """Valid rows: the typed canonical columns and `_row`."""
    return lf.filter(pl.col(REASON).is_null()).select(
        *(pl.col(typed_name(c)).alias(c) for c in columns), pl.col(ROW))


def bad_rows(lf: pl.LazyFrame, columns: list[str], source_file: str) -> pl.LazyFrame:
    """Invalid rows: the raw values as strings, `_source_file`, `_row`, `_field`, `_reason`."""
    return lf.filter(pl.col(REASON).is_not_null()).select(
        *(pl.col(c).cast(pl.Utf8, strict=False) for c in columns),
        pl.lit(source_file).alias("_source_file"), pl.col(ROW), pl.col(FIELD), pl.col(REASON))


def quarantine_schema(columns: list[str]) -> dict[str, pl.DataType]:
    return {**{c: pl.Utf8 for c in columns}, "_source_file": pl.Utf8, ROW: pl.Int64, FIELD: pl.Utf8,
            REASON: pl.Utf8}
