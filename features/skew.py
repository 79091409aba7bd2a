"""Training-serving skew check: the offline (dataset, point-in-time) and online (replayed live state) paths must
give identical feature values for the same logged requests."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

import numpy as np
import polars as pl

from recs.datasets.state_replay import StateReplay
from recs.datasets.policy import Request
from recs.features.compute import compute_features
from recs.features.offline import attrs_from_catalog, offline_inputs
from recs.features.online import attrs_from_state, online_inputs
from recs.features.snapshot import Snapshot
from recs.features.spec import FEATURE_NAMES


def skew_check(rows: pl.DataFrame, requests: dict[str, Request], catalog: pl.DataFrame,
               sellers: pl.DataFrame | None, events: pl.DataFrame | None,
               snapshot_for: Callable[[datetime], Snapshot]) -> dict:
    """Compare both paths on `rows` (request_id, item_id); returns `{"kind": "skew", "rows", "mismatches", ...}`."""
    offline = offline_inputs(rows, requests, catalog, events)
    attrs_off = attrs_from_catalog(catalog)
    replay = StateReplay(catalog, sellers, events)    # the live inventory replayed up to each request's time
    attrs_on = attrs_from_state(replay.state)
    mismatches = 0
    per_feature = {n: 0 for n in FEATURE_NAMES}
    order = sorted(set(rows["request_id"].to_list()), key=lambda r: requests[r].ts)
    row_req = np.asarray(rows["request_id"].to_list(), dtype=object)
    row_items = np.asarray(rows["item_id"].to_list(), dtype=object)
    for rid in order:
        req = requests[rid]
        state = replay.at(req.ts)
        mask = row_req == rid
        snap = snapshot_for(req.ts)
        on = compute_features(online_inputs(req, row_items[mask].tolist(), state), snap, attrs_on)
        off = compute_features(offline.take(mask), snap, attrs_off)
        bad = ~((on == off) | (np.isnan(on) & np.isnan(off)))
        mismatches += int(bad.any(axis=1).sum())
        for j in np.flatnonzero(bad.any(axis=0)):
            per_feature[FEATURE_NAMES[j]] += int(bad[:, j].sum())
    return {"kind": "skew", "rows": int(rows.height), "requests": len(order), "mismatches": mismatches,
            "mismatches_by_feature": {k: v for k, v in per_feature.items() if v}}


def skew_check_dataset(dataset, n_requests: int = 200, seed: int = 0) -> dict:
    """`skew_check` on `n_requests` logged requests of a canonical dataset (after its first day)."""
    from datetime import timedelta

    from recs.datasets.io import read_table
    from recs.datasets.requests import requests_from_logs
    from recs.features.snapshot import Vocab, build_snapshot

    imp = read_table(dataset, "impressions")
    inter = read_table(dataset, "interactions")
    catalog = read_table(dataset, "catalog")
    events = read_table(dataset, "inventory_events")
    sellers = read_table(dataset, "sellers")
    first_day = imp["ts"].min().replace(hour=0, minute=0, second=0, microsecond=0)
    later = imp.filter(pl.col("ts") >= first_day + timedelta(days=1))
    pool = later["request_id"].unique().sort().to_numpy()
    if len(pool) == 0:
        raise ValueError(f"{dataset}: needs more than one day of impressions")
    rids = np.random.default_rng(seed).choice(pool, min(n_requests, len(pool)), replace=False).tolist()
    rows = later.filter(pl.col("request_id").is_in(rids)).select("request_id", "item_id")
    requests = requests_from_logs(imp.filter(pl.col("request_id").is_in(rids)), inter)
    vocab = Vocab.from_catalog(catalog)
    cache: dict = {}

    def snapshot_for(ts):
        d = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        if d not in cache:
            cache[d] = build_snapshot(catalog, inter, imp, events, d, vocab)
        return cache[d]

    return skew_check(rows, requests, catalog, sellers, events, snapshot_for)
