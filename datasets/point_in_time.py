"""Point-in-time item attributes: the value of an item attribute as of each row's timestamp.

The catalog holds each item's initial attributes; `inventory_events` holds every later change (`price`, `stock`,
`new_item` (sets stock), `restricted`). For a row at time t the attribute is the value of the last event for that
item with `ts <= t` (a backward as-of join per item), else the catalog value. An event after t can never reach
the row, which is what keeps labels and training features free of leakage.
"""
from __future__ import annotations

import polars as pl

# output column -> (event kinds that set it, catalog column, dtype)
ATTRIBUTES: dict[str, tuple[tuple[str, ...], str, pl.DataType]] = {
    "price_at_ts": (("price",), "price", pl.Float64),
    "stock_at_ts": (("stock", "new_item"), "stock", pl.Int64),
    "restricted_at_ts": (("restricted",), "restricted", pl.Boolean),
}


def attributes_as_of(rows: pl.DataFrame, catalog: pl.DataFrame, events: pl.DataFrame | None,
                     ts: str = "ts", attributes: dict | None = None) -> pl.DataFrame:
    """`rows` (with `item_id` and `ts`) plus one column per attribute, each as of the row's own timestamp.

    Row order is kept. Items missing from the catalog and without events get nulls.
    """
    attributes = attributes or ATTRIBUTES
    order = "__pit_order"
    out = rows.with_row_index(order).sort(ts)
    cat_cols = [spec[1] for spec in attributes.values()]
    base = catalog.select("item_id", *(pl.col(c).alias(f"__cat_{c}") for c in cat_cols)).unique("item_id")
    out = out.join(base, on="item_id", how="left")
    for name, (kinds, cat_col, dtype) in attributes.items():
        fallback = pl.col(f"__cat_{cat_col}").cast(dtype)
        if events is not None and events.height:
            ev = (events.filter(pl.col("kind").is_in(list(kinds)))
                  .select("item_id", pl.col("ts").alias("__ev_ts"), pl.col("value").alias("__ev_value"))
                  .sort("__ev_ts"))
            out = out.join_asof(ev, left_on=ts, right_on="__ev_ts", by="item_id", strategy="backward",
                                allow_exact_matches=True, check_sortedness=False)
            if dtype == pl.Boolean:
                value = pl.col("__ev_value") != 0
            elif dtype == pl.Int64:
                value = pl.col("__ev_value").clip(lower_bound=0).round(0).cast(pl.Int64)
            else:
                value = pl.col("__ev_value").cast(dtype)
            out = out.with_columns(pl.coalesce(value, fallback).alias(name)).drop("__ev_ts", "__ev_value")
        else:
            out = out.with_columns(fallback.alias(name))
    return out.sort(order).drop(order, *(f"__cat_{c}" for c in cat_cols))
