"""The online state a model ships with: catalog, sellers, inventory and user histories at the training cut-off."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from recs.datasets.online_state import OnlineState
from recs.datasets.point_in_time import attributes_as_of

HISTORY_LEN = 50


def state_frames(catalog: pl.DataFrame, sellers: pl.DataFrame | None, events: pl.DataFrame | None,
                 as_of: datetime) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Catalog rows with price, stock and restricted flag as of `as_of` (items created later are left out)."""
    live = catalog.filter(pl.col("created_at") <= as_of)
    rows = live.select("item_id").with_columns(pl.lit(as_of).cast(pl.Datetime("us", "UTC")).alias("ts"))
    pit = attributes_as_of(rows, catalog, events.filter(pl.col("ts") <= as_of) if events is not None else None)
    cat = live.drop("price", "stock", "restricted").join(
        pit.select("item_id", pl.col("price_at_ts").alias("price"), pl.col("stock_at_ts").alias("stock"),
                   pl.col("restricted_at_ts").alias("restricted")), on="item_id")
    return cat.select(catalog.columns), sellers


def histories_frame(interactions: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Each logged-in user's last positive items before `as_of`, oldest first."""
    pos = interactions.filter((pl.col("ts") < as_of) & pl.col("user_id").is_not_null()).sort("ts")
    return pos.group_by("user_id", maintain_order=True).agg(pl.col("item_id").tail(HISTORY_LEN).alias("items"))


def purchases_frame(interactions: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Every item each logged-in user purchased before `as_of` (the "already purchased" filter's memory)."""
    buys = interactions.filter((pl.col("ts") < as_of) & pl.col("user_id").is_not_null()
                               & (pl.col("kind") == "purchase"))
    return buys.group_by("user_id").agg(pl.col("item_id").unique().sort().alias("items")).sort("user_id")


def repurchase_frame(interactions: pl.DataFrame, catalog: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Per category: logged-in purchases before `as_of` and the share that repeated an item the buyer had bought
    before (`category`, `purchases`, `repeat_share`)."""
    buys = (interactions.filter((pl.col("ts") < as_of) & pl.col("user_id").is_not_null()
                                & (pl.col("kind") == "purchase"))
            .join(catalog.select("item_id", "category"), on="item_id", how="inner").sort("ts", "item_id"))
    rep = buys.with_columns((pl.int_range(pl.len()).over("user_id", "item_id") > 0).alias("repeat"))
    return rep.group_by("category").agg(pl.len().alias("purchases"),
                                        pl.col("repeat").mean().alias("repeat_share")).sort("category")


def save_state(path: Path, catalog: pl.DataFrame, sellers: pl.DataFrame | None, histories: pl.DataFrame,
               purchases: pl.DataFrame | None = None, repurchase: pl.DataFrame | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    catalog.write_parquet(path / "catalog.parquet")
    if sellers is not None:
        sellers.write_parquet(path / "sellers.parquet")
    histories.write_parquet(path / "histories.parquet")
    if purchases is not None:
        purchases.write_parquet(path / "purchases.parquet")
    if repurchase is not None:
        repurchase.write_parquet(path / "repurchase.parquet")


def load_state(path: Path) -> OnlineState:
    sellers = pl.read_parquet(path / "sellers.parquet") if (path / "sellers.parquet").is_file() else None
    return OnlineState(pl.read_parquet(path / "catalog.parquet"), sellers)


def load_purchases(path: Path) -> dict[str, frozenset[str]]:
    """Each user's items purchased before the model's cut-off ({} for models saved without them)."""
    f = path / "purchases.parquet"
    if not f.is_file():
        return {}
    return {u: frozenset(items) for u, items in pl.read_parquet(f).iter_rows()}


def load_repurchase(path: Path) -> dict[str, tuple[int, float]]:
    """Per category: (purchases, share that were repeats) in the training logs ({} for older models)."""
    f = path / "repurchase.parquet"
    if not f.is_file():
        return {}
    return {c: (int(n), float(s)) for c, n, s in pl.read_parquet(f).iter_rows()}


def load_histories(path: Path) -> dict[str, tuple[str, ...]]:
    f = path / "histories.parquet"
    if not f.is_file():
        return {}
    return {u: tuple(items) for u, items in pl.read_parquet(f).iter_rows()}
