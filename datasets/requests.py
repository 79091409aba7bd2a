"""Rebuild the `Request` objects of logged traffic: what the system knew when each request arrived."""
from __future__ import annotations

import polars as pl

from recs.datasets.policy import Request

MAX_RECENT = 20


def requests_from_logs(impressions: pl.DataFrame, interactions: pl.DataFrame | None = None,
                       request_ids: list[str] | None = None) -> dict[str, Request]:
    """One `Request` per logged request; `recent_items` are the session's clicks strictly before its time."""
    req = impressions.group_by("request_id").agg(pl.col("ts").first(), pl.col("surface").first(),
                                                 pl.col("user_id").first(), pl.col("session_id").first(),
                                                 pl.col("query").first())
    if request_ids is not None:
        req = req.filter(pl.col("request_id").is_in(request_ids))
    recent: dict[str, tuple[str, ...]] = {}
    if interactions is not None and interactions.height:
        clicks = (interactions.filter(pl.col("kind") == "click")
                  .join(req.select("session_id").unique(), on="session_id", how="semi")
                  .select("session_id", pl.col("ts").alias("c_ts"), "item_id"))
        pairs = (req.select("request_id", "session_id", "ts").join(clicks, on="session_id", how="inner")
                 .filter(pl.col("c_ts") < pl.col("ts")).sort("c_ts")
                 .group_by("request_id", maintain_order=True).agg(pl.col("item_id").unique(maintain_order=True)))
        recent = {r: tuple(items[-MAX_RECENT:]) for r, items in pairs.iter_rows()}
    return {rid: Request(rid, ts, surface, uid, sid, q, recent.get(rid, ()))
            for rid, ts, surface, uid, sid, q in req.select("request_id", "ts", "surface", "user_id", "session_id",
                                                          "query").iter_rows()}
