"""Offline path: feature inputs for many logged (request, item) rows, point-in-time as of each request."""
from __future__ import annotations

import numpy as np
import polars as pl

from recs.datasets.point_in_time import attributes_as_of
from recs.datasets.policy import Request
from recs.features.compute import ItemAttrs, RowInputs


def attrs_from_catalog(catalog: pl.DataFrame) -> ItemAttrs:
    return ItemAttrs.from_arrays(catalog["item_id"].to_list(), catalog["category"].to_list(),
                                 catalog["subcategory"].to_list())


def offline_inputs(rows: pl.DataFrame, requests: dict[str, Request], catalog: pl.DataFrame,
                   inventory_events: pl.DataFrame | None,
                   retrieval: dict[str, np.ndarray] | None = None) -> RowInputs:
    """`rows` has `request_id` and `item_id` (row order kept); live attributes are joined as of the request time."""
    reqs = list(dict.fromkeys(rows["request_id"].to_list()))
    pos = {r: j for j, r in enumerate(reqs)}
    req_frame = pl.DataFrame({
        "request_id": reqs,
        "ts": pl.Series([requests[r].ts for r in reqs]).cast(pl.Datetime("us", "UTC")),
        "user_id": pl.Series([requests[r].user_id for r in reqs], dtype=pl.Utf8),
        "surface": [requests[r].surface for r in reqs],
        "query": pl.Series([requests[r].query for r in reqs], dtype=pl.Utf8),
    })
    df = rows.select("request_id", "item_id").join(req_frame, on="request_id", how="left", maintain_order="left")
    df = attributes_as_of(df, catalog, inventory_events)
    static = catalog.select("item_id", "category", "subcategory", "brand", "title",
                            pl.col("created_at").dt.epoch("us").alias("created_us"))
    df = df.join(static, on="item_id", how="left", maintain_order="left")
    if df["category"].null_count():
        missing = df.filter(pl.col("category").is_null())["item_id"].head(3).to_list()
        raise KeyError(f"items missing from the catalog: {missing}")
    search = (df["surface"] == "search").to_numpy()
    return RowInputs(
        item_ids=np.asarray(df["item_id"].to_list(), dtype=object),
        ts_us=df["ts"].dt.epoch("us").to_numpy(),
        created_us=df["created_us"].to_numpy(),
        price=df["price_at_ts"].to_numpy().astype(np.float64),
        stock=df["stock_at_ts"].to_numpy().astype(np.float64),
        category=np.asarray(df["category"].to_list(), dtype=object),
        subcategory=np.asarray(df["subcategory"].to_list(), dtype=object),
        brand=np.asarray(df["brand"].to_list(), dtype=object),
        title=np.asarray(df["title"].to_list(), dtype=object),
        user_ids=np.asarray(df["user_id"].to_list(), dtype=object),
        is_search=search,
        prefix=np.where(search, np.asarray(df["query"].to_list(), dtype=object), None),
        request_of_row=np.array([pos[r] for r in df["request_id"].to_list()], dtype=np.int64),
        session_items=[tuple(requests[r].recent_items) for r in reqs],
        retrieval=retrieval or {},
    )
