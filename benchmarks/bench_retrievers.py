"""Classic retrievers and blending: fit time, per-request latency and held-out recall on simulated data.

A simulated marketplace is generated into a temporary folder (default: 100K items, 20K users, 4 days of 40K
requests; `--items`/`--users`/`--days`/`--rpd`/`--seed` change it). Retrievers are fitted on all but the last day
and replayed on up to `--requests` requests of the last day that had a click. A request's session items are the
session's clicks before it; its history is the user's clicked/carted/purchased items before the cut (last 50).
Eligibility uses the catalog's initial inventory (an `OnlineState`), so retrieve times include the filtering.
Each retriever is asked for 300 candidates (so any one source could fill the blend); printed per retriever: fit
seconds, retrieve p50/p99 milliseconds (300 candidates, eligibility filtering included), recall@K = share of the
request's clicked items among its first K candidates (K = 100 per retriever, the blend's 300), overall and for
anonymous requests, and the share of requests with at least one candidate;
for query completions, the share of search requests whose final query is in the top 5 for its typed prefix
(with and without personalisation) and the mean reciprocal rank.

    .venv/bin/python -m benchmarks.run retrievers
    .venv/bin/python -m benchmarks.bench_retrievers --items 5000 --users 2000 --days 4 --rpd 8000
"""
from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.io import read_table
from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Request
from recs.models.base import RetrievalQuery, TrainingData
from recs.models.blend import BlendConfig, blend
from recs.models.retrievers import RETRIEVERS
from recs.models.retrievers._text import normalize_query

K = 100
TOTAL = 300


def _requests(ds: Path, as_of, n: int, seed: int) -> list[tuple[RetrievalQuery, set[str], str | None]]:
    """Held-out requests with a click: (query without state, clicked items, final query)."""
    imp = read_table(ds, "impressions").filter(pl.col("ts") >= as_of)
    inter = read_table(ds, "interactions")
    clicks = imp.filter(pl.col("clicked")).group_by("request_id").agg(pl.col("item_id"))
    reqs = (imp.group_by("request_id").agg(pl.col("ts", "user_id", "session_id", "surface", "query").first())
            .join(clicks, on="request_id").sort("request_id"))
    rng = np.random.default_rng(seed)
    reqs = reqs[np.sort(rng.choice(reqs.height, size=min(n, reqs.height), replace=False))]
    hist = (inter.filter(pl.col("ts") < as_of).drop_nulls("user_id").sort("ts")
            .group_by("user_id").agg(pl.col("item_id").unique(maintain_order=True).tail(50)))
    hist_of = dict(zip(hist["user_id"].to_list(), hist["item_id"].to_list()))
    sess = (inter.filter(pl.col("kind") == "click").filter(pl.col("session_id").is_in(reqs["session_id"].implode()))
            .sort("ts").group_by("session_id").agg("ts", "item_id"))
    sess_of = {s: (t, i) for s, t, i in sess.iter_rows()}
    finals = dict(read_table(ds, "queries").select("request_id", "final_query").iter_rows())
    out = []
    for rid, ts, uid, sid, surface, q, items in reqs.iter_rows():
        t, i = sess_of.get(sid, ([], []))
        recent = tuple(dict.fromkeys(x for tt, x in zip(t, i) if tt < ts))
        req = Request(rid, ts, surface, uid, sid, q, recent)
        out.append((RetrievalQuery(req, tuple(hist_of.get(uid, ())) if uid else ()), set(items), finals.get(rid)))
    return out


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p)) if xs else float("nan")


def run(items: int, users: int, days: int, rpd: int, seed: int, n_requests: int) -> None:
    from recs.sim import SimConfig, generate_dataset

    cfg = SimConfig(n_users=users, n_items=items, days=days, requests_per_day=rpd, seed=seed)
    with tempfile.TemporaryDirectory(prefix="bench-retr-") as tmp:
        ds = Path(tmp) / "ds"
        t0 = time.perf_counter()
        generate_dataset(cfg, ds)
        print(f"dataset: {items} items, {users} users, {days} days x {rpd} requests/day, seed {seed} "
              f"(generated in {time.perf_counter() - t0:.1f} s; load avg {os.getloadavg()[0]:.1f})")
        as_of = cfg.start + timedelta(days=days - 1)
        cat = read_table(ds, "catalog")
        inter = read_table(ds, "interactions")
        data = TrainingData(inter.filter(pl.col("ts") < as_of), cat, as_of,
                            queries=read_table(ds, "queries").filter(pl.col("ts") < as_of))
        state = OnlineState(cat, read_table(ds, "sellers"))
        reqs = _requests(ds, as_of, n_requests, seed)
        print(f"train: {data.interactions.height} interactions, {data.queries.height} searches before "
              f"{as_of:%Y-%m-%d}; eval: {len(reqs)} held-out requests with a click "
              f"({sum(q.request.anonymous for q, _, _ in reqs)} anonymous)")
        fitted = {}
        for kind, cls in RETRIEVERS.items():
            t0 = time.perf_counter()
            fitted[kind] = cls().fit(data)
            print(f"fit {kind:<11} {time.perf_counter() - t0:7.2f} s")
        lat: dict[str, list[float]] = {k: [] for k in [*fitted, "blend"]}
        hits: dict[str, list[float]] = {k: [] for k in lat}
        anon_hits: dict[str, list[float]] = {k: [] for k in lat}
        covered: dict[str, list[bool]] = {k: [] for k in lat}
        sizes: list[int] = []
        bcfg = BlendConfig(quotas={"covisit": 100, "content": 60, "popularity": 60, "suggest": 80}, total=TOTAL)
        for q0, clicked, _ in reqs:
            q = replace(q0, state=state)
            lists = []
            for kind, r in fitted.items():
                if kind == "suggest" and q.request.surface != "search":
                    continue
                t0 = time.perf_counter()
                c = r.retrieve(q, TOTAL)          # each source may fill the whole blend
                lat[kind].append((time.perf_counter() - t0) * 1e3)
                lists.append(c)
                rec = len(clicked & set(c.item_ids[:K].tolist())) / len(clicked)
                hits[kind].append(rec)
                covered[kind].append(len(c) > 0)
                if q.request.anonymous:
                    anon_hits[kind].append(rec)
            t0 = time.perf_counter()
            b = blend(lists, config=bcfg)
            lat["blend"].append((time.perf_counter() - t0) * 1e3)
            sizes.append(len(b))
            covered["blend"].append(len(b) > 0)
            rec = len(clicked & set(b.item_ids.tolist())) / len(clicked)
            hits["blend"].append(rec)
            if q.request.anonymous:
                anon_hits["blend"].append(rec)
        print(f"\n{'retriever':<11} {'p50 ms':>8} {'p99 ms':>8} {'recall':>8} {'anon recall':>12} {'non-empty':>10} "
              f"{'requests':>9}")
        for kind in lat:
            print(f"{kind:<11} {_pct(lat[kind], 50):8.2f} {_pct(lat[kind], 99):8.2f} {np.mean(hits[kind]):8.3f} "
                  f"{np.mean(anon_hits[kind]) if anon_hits[kind] else float('nan'):12.3f} "
                  f"{np.mean(covered[kind]):10.3f} {len(hits[kind]):9d}")
        print(f"(recall@{K} per retriever, @{TOTAL} for the blend; blend size mean {np.mean(sizes):.0f}, "
              f"min {min(sizes)}; suggest only on search requests)")
        _completions(fitted["suggest"], reqs)


def _completions(sug, reqs) -> None:
    """Top-5 hit rate and MRR of the final query among the completions of its typed prefix."""
    plain = replace(sug.config, subcategory_boost=0.0, category_boost=0.0, brand_boost=0.0)
    flat = copy.copy(sug)          # shares the fitted lookups; only the boosts differ
    flat.config = plain
    rows = [(q, f) for q, _, f in reqs if q.request.surface == "search" and f]
    for name, model in (("personalised", sug), ("popularity only", flat)):
        rr, top5, lat = [], [], []
        for q, final in rows:
            t0 = time.perf_counter()
            got = [c for c, _ in model.complete_for(q, 10)]
            lat.append((time.perf_counter() - t0) * 1e3)
            f = normalize_query(final).strip()
            rank = got.index(f) + 1 if f in got else None
            rr.append(1.0 / rank if rank else 0.0)
            top5.append(bool(rank and rank <= 5))
        print(f"completions {name:<16} hit@5 {np.mean(top5):.3f}  MRR@10 {np.mean(rr):.3f}  "
              f"p50 {_pct(lat, 50):.2f} ms  p99 {_pct(lat, 99):.2f} ms  ({len(rows)} searches)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--rpd", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2_000)
    a = ap.parse_args(argv if argv is not None else [])
    run(a.items, a.users, a.days, a.rpd, a.seed, a.requests)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
