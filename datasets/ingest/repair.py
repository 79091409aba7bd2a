"""Record-by-record readers for the files polars cannot read whole: bad records are set aside, the rest staged.

polars' CSV and JSON readers stop at the first record they cannot parse, and say neither its line nor its field.
When that happens the pipeline reads the file again in `repair` mode: Python's `csv` / `json` modules walk it one
record at a time, write what polars can read to a staged copy, and name every other record with its row number
and reason, so the run quarantines those and ingests the rest. Slower than polars, so used only then.
"""
from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import BinaryIO

import polars as pl

LINE = "(line)"  # the field of a record rejected whole
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as read with errors="surrogateescape"
_CHECK_LINES = 10_000  # JSON lines handed to polars' decoder at a time (see `_undecodable`)


def repair_csv(local: Path, dest: Path, separator: str, width: int) -> None:
    """Write the data records of the CSV file `local` (its header skipped) to `dest` as `row, field, reason,
    values...` (comma-separated, no header): `row` numbers records as polars does (the header is 1, a blank line
    is a record of empty fields); `field` / `reason` are empty for a good record, `(line)` and why for a record
    with more than `width` fields (its first `width` are kept), malformed quoting or bytes that are not UTF-8.
    """
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # polars has no field size limit either
    try:
        with (open(local, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh,
              open(dest, "w", newline="", encoding="utf-8") as out):
            reader = csv.reader(fh, delimiter=separator, strict=True)
            writer = csv.writer(out, lineterminator="\n")
            row = 1
            try:
                next(reader)  # the header (`readers.read_header` has read it)
            except (StopIteration, csv.Error):
                pass
            while True:
                row += 1
                try:
                    rec = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:  # the reader goes on with the next line
                    writer.writerow([row, LINE, f"malformed CSV record ({e})"])
                    continue
                why = ""
                if len(rec) > width:
                    why = f"row has {len(rec)} fields, the header {width}"
                    rec = rec[:width]
                if any(_SURROGATE.search(v) for v in rec):
                    why = why or "not UTF-8 text"
                    rec = [v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in rec]
                writer.writerow([row, LINE if why else "", why, *rec])
    finally:
        csv.field_size_limit(limit)


class _Num:
    """A JSON number polars' decoder rejects (beyond the float range, NaN, Infinity), kept as its text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _holds(v: object) -> bool:
    if isinstance(v, _Num):
        return True
    if isinstance(v, dict):
        return any(_holds(x) for x in v.values())
    return isinstance(v, list) and any(_holds(x) for x in v)


def _text(v: object) -> str | None:
    """A JSON value as the raw text kept in quarantine."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, _Num):
        return v.text
    return json.dumps(v, default=lambda n: n.text)


def _undecodable(texts: list[str], dtype: pl.Struct) -> dict[int, str]:
    """Indexes of the `texts` polars' JSON decoder fails on, with its message (a failing chunk is halved)."""
    try:
        pl.Series(texts, dtype=pl.Utf8).str.json_decode(dtype)
        return {}
    except pl.exceptions.PolarsError as e:
        if len(texts) == 1:
            return {0: (str(e).strip().splitlines() or [type(e).__name__])[0]}
    mid = len(texts) // 2
    right = _undecodable(texts[mid:], dtype)
    return {**_undecodable(texts[:mid], dtype), **{k + mid: v for k, v in right.items()}}


def repair_jsonl(local: Path, dest: Path, columns: list[str]) -> pl.DataFrame:
    """Copy the JSON Lines file `local` to `dest` with every line polars cannot decode as an object blanked, and
    return those lines: `_row` (line number), `_field` (the top-level key holding a number beyond the float range,
    NaN or Infinity; else `(line)`), `_reason` (`invalid JSON: ...`) and, for a line that is JSON, the values of
    `columns` as text (so quarantine keeps the record)."""
    dtype = pl.Struct({c: pl.Utf8 for c in columns})
    bad: dict[str, list] = {"_row": [], "_field": [], "_reason": [], **{c: [] for c in columns}}
    hits: list[str] = []

    def number(text: str) -> float | _Num:
        v = float(text)
        if math.isfinite(v):
            return v
        hits.append(text)
        return _Num(text)

    def constant(text: str) -> _Num:
        hits.append(text)
        return _Num(text)

    def reject(n: int, field: str, reason: str, obj: dict | None = None) -> None:
        for k, v in (("_row", n), ("_field", field), ("_reason", f"invalid JSON: {reason}")):
            bad[k].append(v)
        for c in columns:
            bad[c].append(_text(obj.get(c)) if obj is not None else None)

    def flush(buf: list[tuple[int, bytes, bool]], out: BinaryIO) -> None:
        """Write `buf` (line number, line, read by Python), blanking the lines polars' decoder fails on."""
        todo = [k for k, (_, _, ok) in enumerate(buf) if ok]
        failed = _undecodable([buf[k][1].strip().decode("utf-8", "replace") for k in todo], dtype) if todo else {}
        blank = set()
        for j, msg in failed.items():
            n, raw, _ = buf[todo[j]]
            reject(n, LINE, msg, json.loads(raw, parse_float=number, parse_constant=constant))
            blank.add(todo[j])
        for k, (_, raw, _) in enumerate(buf):
            raw = b"\n" if k in blank else raw
            out.write(raw if raw.endswith(b"\n") else raw + b"\n")
        buf.clear()

    buf: list[tuple[int, bytes, bool]] = []
    with open(local, "rb") as fh, open(dest, "wb") as out:
        for n, raw in enumerate(fh, start=1):
            text = raw.strip()
            ok = False
            if text:
                hits.clear()
                try:
                    obj = json.loads(text, parse_float=number, parse_constant=constant)
                    if not isinstance(obj, dict):
                        raise ValueError(f"line is a JSON {type(obj).__name__}, not an object")
                except ValueError as e:  # (UnicodeDecodeError is a ValueError too)
                    reject(n, LINE, str(e).splitlines()[0])
                    raw = b"\n"
                else:
                    if hits:
                        key = next((k for k, v in obj.items() if _holds(v)), LINE)
                        why = ("number beyond the float range" if hits[0] not in ("NaN", "Infinity", "-Infinity")
                               else "NaN and Infinity are not JSON numbers")
                        reject(n, key, why, obj)
                        raw = b"\n"
                    else:
                        ok = True
            buf.append((n, raw, ok))
            if len(buf) >= _CHECK_LINES:
                flush(buf, out)
        flush(buf, out)
    schema = {"_row": pl.Int64, "_field": pl.Utf8, "_reason": pl.Utf8, **{c: pl.Utf8 for c in columns}}
    return pl.DataFrame(bad, schema=schema).sort("_row")
