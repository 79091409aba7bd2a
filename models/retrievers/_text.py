"""Text helpers of the search-bar retrievers: query normalisation, word tokens and prefix expansion."""
from __future__ import annotations

import re

import polars as pl

WORD = r"[^\W_]+"
_WORD = re.compile(WORD, re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalize_query(text: str | None) -> str:
    """Lower-case, trim and collapse whitespace (a trailing space is kept: it ends the last word)."""
    if not text:
        return ""
    t = _SPACE.sub(" ", text.lower().lstrip())
    return t


def words(text: str) -> list[str]:
    """Lower-cased word tokens of `text`, in order."""
    return _WORD.findall(text.lower())


def normalize_expr(col: str) -> pl.Expr:
    """Polars counterpart of `normalize_query` (whitespace fully trimmed: logged queries are complete)."""
    return pl.col(col).fill_null("").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def explode_prefixes(df: pl.DataFrame, col: str, max_len: int, out: str = "key") -> pl.DataFrame:
    """One row per prefix (1..`max_len` characters) of `df[col]`, in column `out`."""
    return (df.with_columns(pl.int_ranges(1, pl.col(col).str.len_chars().clip(upper_bound=max_len) + 1).alias("_n"))
            .explode("_n").drop_nulls("_n")
            .with_columns(pl.col(col).str.slice(0, pl.col("_n")).alias(out)).drop("_n"))
