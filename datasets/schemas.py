"""Canonical tables of the toolkit, as pandera (polars backend) schemas.

Every command reads and writes these tables; `docs/DATA.md` documents them column by column.
`TABLES` maps a table name to its schema, its de-duplication key and its timestamp column.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

UTC_DT = pl.Datetime("us", "UTC")

SURFACES = ("home", "search")
INTERACTION_KINDS = ("click", "add_to_cart", "purchase")
INVENTORY_KINDS = ("stock", "price", "restricted", "new_item")


def _col(dtype, nullable: bool = False, checks=None, required: bool = True) -> pa.Column:
    return pa.Column(dtype, nullable=nullable, checks=checks, required=required, coerce=False)


CATALOG = pa.DataFrameSchema(
    {
        "item_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "category": _col(pl.Utf8),
        "subcategory": _col(pl.Utf8),
        "seller_id": _col(pl.Utf8),
        "brand": _col(pl.Utf8),
        "title": _col(pl.Utf8),
        "price": _col(pl.Float64, checks=pa.Check.gt(0)),
        "stock": _col(pl.Int64, checks=pa.Check.ge(0)),
        "restricted": _col(pl.Boolean),
        "created_at": _col(UTC_DT),
    },
    name="catalog",
    unique=["item_id"],
)

SELLERS = pa.DataFrameSchema(
    {
        "seller_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "blocked_from": _col(UTC_DT, nullable=True),
    },
    name="sellers",
    unique=["seller_id"],
)

INVENTORY_EVENTS = pa.DataFrameSchema(
    {
        "event_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "ts": _col(UTC_DT),
        "item_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "kind": _col(pl.Utf8, checks=pa.Check.isin(list(INVENTORY_KINDS))),
        "value": _col(pl.Float64),
    },
    name="inventory_events",
)

USERS = pa.DataFrameSchema(
    {
        "user_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "created_at": _col(UTC_DT),
    },
    name="users",
    unique=["user_id"],
)

IMPRESSIONS = pa.DataFrameSchema(
    {
        "request_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "ts": _col(UTC_DT),
        "user_id": _col(pl.Utf8, nullable=True),
        "session_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "surface": _col(pl.Utf8, checks=pa.Check.isin(list(SURFACES))),
        "query": _col(pl.Utf8, nullable=True),
        "item_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "position": _col(pl.Int64, checks=pa.Check.ge(0)),
        "propensity": _col(pl.Float64, checks=[pa.Check.gt(0), pa.Check.le(1)]),
        "policy_id": _col(pl.Utf8),
        "clicked": _col(pl.Boolean),
        "slate_propensity": _col(
            pl.Float64, nullable=True, checks=[pa.Check.ge(0), pa.Check.le(1)], required=False
        ),
    },
    name="impressions",
)

INTERACTIONS = pa.DataFrameSchema(
    {
        "event_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "ts": _col(UTC_DT),
        "user_id": _col(pl.Utf8, nullable=True),
        "session_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "kind": _col(pl.Utf8, checks=pa.Check.isin(list(INTERACTION_KINDS))),
        "item_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "request_id": _col(pl.Utf8, nullable=True),
        "value": _col(pl.Float64, nullable=True, checks=pa.Check.ge(0)),
    },
    name="interactions",
)

QUERIES = pa.DataFrameSchema(
    {
        "request_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "ts": _col(UTC_DT),
        "user_id": _col(pl.Utf8, nullable=True),
        "session_id": _col(pl.Utf8, checks=pa.Check.str_length(min_value=1)),
        "prefix": _col(pl.Utf8),
        "chosen_suggestion": _col(pl.Utf8, nullable=True),
        "final_query": _col(pl.Utf8),
    },
    name="queries",
)


@dataclass(frozen=True)
class TableSpec:
    """A canonical table: its schema, its de-duplication key and its time column (None: no time)."""

    name: str
    schema: pa.DataFrameSchema
    key: tuple[str, ...]
    ts_column: str | None

    @property
    def columns(self) -> list[str]:
        return list(self.schema.columns)

    @property
    def required_columns(self) -> list[str]:
        return [n for n, c in self.schema.columns.items() if c.required]

    @property
    def dtypes(self) -> dict[str, pl.DataType]:
        return {n: c.dtype.type for n, c in self.schema.columns.items()}


TABLES: dict[str, TableSpec] = {
    "catalog": TableSpec("catalog", CATALOG, ("item_id",), "created_at"),
    "sellers": TableSpec("sellers", SELLERS, ("seller_id",), None),
    "inventory_events": TableSpec("inventory_events", INVENTORY_EVENTS, ("event_id",), "ts"),
    "users": TableSpec("users", USERS, ("user_id",), "created_at"),
    "impressions": TableSpec("impressions", IMPRESSIONS, ("request_id", "position"), "ts"),
    "interactions": TableSpec("interactions", INTERACTIONS, ("event_id",), "ts"),
    "queries": TableSpec("queries", QUERIES, ("request_id",), "ts"),
}


def empty_frame(table: str) -> pl.DataFrame:
    """An empty frame with the canonical columns and dtypes of `table`."""
    spec = TABLES[table]
    return pl.DataFrame(schema={n: spec.dtypes[n] for n in spec.required_columns})


def validate(table: str, df: pl.DataFrame) -> pl.DataFrame:
    """Validate `df` against the canonical schema of `table` (raises pandera's SchemaError)."""
    return TABLES[table].schema.validate(df)
