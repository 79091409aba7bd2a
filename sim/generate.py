"""`generate_dataset`: write a simulated marketplace as canonical Parquet tables plus `truth/`, in chunks."""
from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from recs.datasets.io import atomic_dir
from recs.datasets.schemas import validate
from recs.sim import choice
from recs.sim.config import SimConfig
from recs.sim.inventory import HOUR_US, InventoryEvents, step_inventory
from recs.sim.logging_policy import LoggingCore, LoggingPolicy
from recs.sim.traffic import DIURNAL, HourLog, simulate_hour
from recs.sim.world import World

UTC_US = pl.Datetime("us", "UTC")
FLUSH_ROWS = 500_000


def _ids(prefix: str, seq: np.ndarray, width: int) -> pl.Expr:
    return pl.concat_str([pl.lit(prefix), pl.Series(seq).cast(pl.Utf8).str.zfill(width)])


class _Writer:
    """Writes frames into `<root>/<table>/date=YYYY-MM-DD/part-NNNNN.parquet` by the date of `ts_col`."""

    def __init__(self, root: Path) -> None:
        self.root, self.part, self.rows = root, 0, {}

    def write(self, table: str, df: pl.DataFrame, ts_col: str = "ts") -> None:
        if df.height == 0:
            return
        self.rows[table] = self.rows.get(table, 0) + df.height
        df = df.with_columns(pl.col(ts_col).dt.date().alias("_date"))
        for (day,), part in df.partition_by("_date", as_dict=True, maintain_order=True).items():
            d = self.root / table / f"date={day}"
            d.mkdir(parents=True, exist_ok=True)
            part.drop("_date").write_parquet(d / f"part-{self.part:05d}.parquet", statistics=False,
                                             compression="lz4")
        self.part += 1


def _frames(world: World, log: dict[str, np.ndarray], end_us: int, rng: np.random.Generator) -> dict[str, pl.DataFrame]:
    cfg = world.cfg
    n_req = len(log["req_seq"])
    user_ids = pl.Series(world.user_ids)
    item_ids = pl.Series(world.item_ids)
    req_user = log["req_user"].astype(np.int64)
    uid = user_ids.gather(np.maximum(req_user, 0)).to_frame("u").select(
        pl.when(pl.Series(req_user >= 0)).then(pl.col("u")).otherwise(None)).to_series()
    req = pl.DataFrame({
        "seq": log["req_seq"].astype(np.int64),
        "ts": pl.Series(log["req_ts"].astype(np.int64)).cast(UTC_US),
        "user_id": uid,
        "session_id": pl.select(_ids("ses", log["req_session"].astype(np.int64), 9)).to_series(),
        "surface": np.where(log["req_search"].astype(bool), "search", "home"),
        "query": pl.Series(log["req_prefix"].tolist(), dtype=pl.Utf8),
        "slate_propensity": log["req_slate_prop"].astype(np.float64),
    }).with_columns(_ids("r", log["req_seq"].astype(np.int64), 10).alias("request_id"))
    pos = req.select("seq", "request_id", "ts", "user_id", "session_id", "surface", "query", "slate_propensity")
    item = log["imp_item"].astype(np.int64)
    imp = pl.DataFrame({"seq": log["imp_req"].astype(np.int64), "item_row": item,
                        "position": log["imp_pos"].astype(np.int64), "propensity": log["imp_prop"].astype(np.float64),
                        "clicked": log["imp_click"].astype(bool)})
    imp = imp.join(pos, on="seq", how="left").with_columns(
        item_ids.gather(item).alias("item_id"), pl.lit(LoggingPolicy.policy_id).alias("policy_id"))
    impressions = imp.select("request_id", "ts", "user_id", "session_id", "surface", "query", "item_id", "position",
                             "propensity", "policy_id", "clicked", "slate_propensity")
    # interactions with true timestamps: click, add-to-cart a few minutes later, purchase after a heavy-tailed delay
    click = log["imp_click"].astype(bool)
    cart = log["imp_cart"].astype(bool)
    buy = log["imp_buy"].astype(bool)
    ts_imp = impressions["ts"].dt.epoch("us").to_numpy()
    t_click = ts_imp + rng.integers(1, 30, len(ts_imp)) * 10**6
    t_cart = t_click + (rng.exponential(180.0, len(ts_imp)) * 1e6).astype(np.int64)
    t_buy = t_cart + (choice.conversion_delay_seconds(len(ts_imp), cfg, rng) * 1e6).astype(np.int64)
    price = log["imp_price"].astype(np.float64)
    base = impressions.select("request_id", "user_id", "session_id", "item_id", "position")
    parts = []
    for kind, mask, tcol in (("click", click, t_click), ("add_to_cart", cart, t_cart), ("purchase", buy, t_buy)):
        sel = np.flatnonzero(mask)
        parts.append(base[sel].with_columns(
            pl.Series("ts", tcol[sel]).cast(UTC_US), pl.lit(kind).alias("kind"),
            pl.Series("value", np.where(kind == "purchase", price[sel], np.nan)).fill_nan(None),
        ))
    inter = pl.concat(parts).with_columns(
        pl.concat_str([pl.lit("e"), pl.col("request_id").str.slice(1), pl.col("position").cast(pl.Utf8).str.zfill(2),
                       pl.col("kind").str.slice(0, 1)]).alias("event_id"))
    conversions = inter.filter(pl.col("kind") == "purchase").select("request_id", "item_id", "position", "ts", "value")
    interactions = inter.filter(pl.col("ts").dt.epoch("us") <= end_us).select(
        "event_id", "ts", "user_id", "session_id", "kind", "item_id", "request_id", "value")
    # search-bar keystroke log
    first_click = (imp.filter(pl.col("clicked")).sort("position").group_by("seq").first()
                   .select("seq", pl.col("item_id").alias("chosen_suggestion"), "item_row"))
    names = world.catalog.subcat_names
    brands = world.catalog.brand_names
    q = req.filter(pl.col("surface") == "search").join(first_click, on="seq", how="left")
    intent = pl.Series(log["req_intent"].astype(np.int64)).to_frame("intent").with_columns(
        pl.Series("seq", log["req_seq"].astype(np.int64)))
    q = q.join(intent, on="seq", how="left")
    brand_of = world.catalog.brand
    final = [names[i] + (f" {brands[brand_of[r]]}" if r is not None else "")
             for i, r in zip(q["intent"].to_list(), q["item_row"].to_list())]
    queries = q.select("request_id", "ts", "user_id", "session_id", pl.col("query").alias("prefix"),
                       "chosen_suggestion").with_columns(pl.Series("final_query", final, dtype=pl.Utf8))
    vecs = log["req_vec"].reshape(n_req, -1) if n_req else np.zeros((0, cfg.dim))
    truth_req = req.select("request_id", "ts").with_columns(
        pl.Series("user_row", req_user), pl.Series("intent", log["req_intent"].astype(np.int64)),
        pl.Series("price_sens", log["req_price_sens"].astype(np.float64)),
        *[pl.Series(f"v{j}", vecs[:, j]) for j in range(cfg.dim)])
    truth_imp = impressions.select("request_id", "ts", "position", "item_id").with_columns(
        pl.Series("p_click", log["imp_p_click"].astype(np.float64)),
        pl.Series("p_purchase", log["imp_p_buy"].astype(np.float64)))
    return {"impressions": impressions, "interactions": interactions, "queries": queries,
            "truth/conversions": conversions, "truth/requests": truth_req, "truth/impressions": truth_imp}


def _inventory_frame(world: World, ev: tuple[np.ndarray, ...], counter: dict) -> pl.DataFrame:
    ts, item, kind, value = ev
    seq = counter["inventory"] + np.arange(len(ts))
    counter["inventory"] += len(ts)
    return pl.DataFrame({
        "event_id": pl.select(_ids("v", seq, 11)).to_series(),
        "ts": pl.Series(ts).cast(UTC_US),
        "item_id": pl.Series(world.item_ids).gather(item),
        "kind": pl.Series(np.array(InventoryEvents.KINDS)[kind]),
        "value": value,
    })


def generate_dataset(cfg: SimConfig, out_dir: str | Path, overwrite: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate `cfg.days` of traffic into `out_dir` atomically; returns a summary (also in `summary.json`)."""
    t_start = time.perf_counter()
    world = World.build(cfg)
    core = LoggingCore(world)
    rng = np.random.default_rng([cfg.seed, 2])
    counters = {"request": 0, "session": 0, "inventory": 0}
    start_us = int(cfg.start.timestamp() * 1e6)
    end_us = start_us + cfg.days * 24 * HOUR_US
    hours = cfg.days * 24
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        writer = _Writer(tmp)
        validate("catalog", world.catalog_frame()).write_parquet(tmp / "catalog.parquet")
        validate("sellers", world.sellers_frame()).write_parquet(tmp / "sellers.parquet")
        validate("users", world.users_frame()).write_parquet(tmp / "users.parquet")
        events = InventoryEvents()
        pending: list[HourLog] = []
        pending_rows = 0
        clicks = impressions = purchases = 0
        for h in range(hours):
            t0 = start_us + h * HOUR_US
            n_req = int(round(cfg.requests_per_day * DIURNAL[h % 24]))
            log = simulate_hour(world, core, t0, n_req, counters, rng)
            step_inventory(world, t0 + HOUR_US, log.sold, rng, events)
            pending.append(log)
            pending_rows += sum(len(x) for x in log.imp_item)
            if pending_rows >= FLUSH_ROWS or h == hours - 1:
                arrays = _merge(pending)
                frames = _frames(world, arrays, end_us, rng)
                for name, df in frames.items():
                    writer.write(name, df)
                ev = events.take()
                if ev is not None:
                    writer.write("inventory_events", _inventory_frame(world, ev, counters))
                impressions += frames["impressions"].height
                clicks += int(frames["impressions"]["clicked"].sum())
                purchases += frames["truth/conversions"].height
                pending, pending_rows = [], 0
            if progress:
                progress(h + 1, hours)
        truth = tmp / "truth"
        truth.mkdir(exist_ok=True)
        (truth / "config.json").write_text(json.dumps(cfg.to_json(), indent=2))
        pl.DataFrame({"item_id": world.item_ids.tolist(), "price": world.state.price, "stock": world.state.stock,
                      "restricted": world.state.restricted}).write_parquet(truth / "final_state.parquet")
        summary = {
            "kind": "sim", "seed": cfg.seed, "users": cfg.n_users, "items": cfg.n_items, "days": cfg.days,
            "start": cfg.start.isoformat(), "end": (cfg.start + timedelta(days=cfg.days)).isoformat(),
            "requests": counters["request"], "sessions": counters["session"], "impressions": impressions,
            "clicks": clicks, "ctr": clicks / max(impressions, 1), "purchases_eventually": purchases,
            "rows": writer.rows, "seconds": round(time.perf_counter() - t_start, 3),
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _merge(logs: list[HourLog]) -> dict[str, np.ndarray]:
    merged = HourLog()
    for log in logs:
        for name in merged.__dataclass_fields__:
            v = getattr(log, name)
            if isinstance(v, list):
                getattr(merged, name).extend(v)
    return merged.arrays()
