"""`simulate cold-start`: new items, new users and anonymous visitors after the training cut-off.

A dataset is simulated and a pipeline trained on it with a one-day holdout (`models.train`); the cut-off is the
end of the training window. Segments: requests of anonymous visitors, of new users (no history at the cut-off)
and of known users; and new items (created after the cut-off). Measured:

* offline, on the held-out day's clicks: Recall@K and NDCG@K of each retriever and of the pipeline per request
  segment, and Recall@K restricted to clicks on new items;
* online, against the simulator's truth (`run_policy` on fresh requests of each segment at the end of the log):
  true CTR of the pipeline without mitigations (content and popularity retrievers off, no popular-by-category
  fallback), with them (the trained blend), and with them plus exploration (the last slot replaced by a random
  eligible new item with probability `explore`), with the exploration's cost and the new items' share of slots.
"""
from __future__ import annotations

import copy
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.io import scan_table
from recs.datasets.policy import Ranking, Request, deterministic_slot_probabilities
from recs.models.base import RetrievalQuery
from recs.sim import SimConfig, World, generate_dataset, run_policy

SEGMENTS = ("anonymous", "new_user", "known_user")
MITIGATED_SOURCES = ("content", "popularity")


def _default_sim() -> SimConfig:
    return SimConfig(n_users=400, n_items=1_500, days=7, requests_per_day=2_000, seed=1)


@dataclass(frozen=True)
class ColdStartConfig:
    """Dataset, training, evaluation sizes and the exploration share."""

    sim: SimConfig = field(default_factory=_default_sim)
    dataset: Path | None = None
    k: int = 10
    n_requests: int = 300
    max_eval_requests: int = 1_500
    explore: float = 0.1
    retrievers: tuple[str, ...] = ("popularity", "covisit", "content", "suggest")
    max_ranker_requests: int = 1_500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_requests < 1 or self.max_eval_requests < 1:
            raise ValueError("k, n_requests and max_eval_requests must be >= 1")
        if not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"explore must be in [0, 1], got {self.explore}")
        if self.dataset is None and self.sim.days < 5:
            raise ValueError("cold start needs at least 5 simulated days (holdout 1 day, ranker 2 days)")


class ExplorePolicy:
    """Wraps a policy: with probability `epsilon` per request the last slot shows a random eligible new item."""

    def __init__(self, inner, state, new_items: np.ndarray, epsilon: float, seed: int = 0) -> None:
        self.inner, self.state, self.new_items, self.epsilon, self.seed = inner, state, new_items, epsilon, seed
        self.policy_id = f"{inner.policy_id}+explore{epsilon:g}"

    def rank(self, request: Request, k: int) -> Ranking:
        r = self.inner.rank(request, k)
        rng = np.random.default_rng([self.seed, zlib.crc32(request.request_id.encode())])
        if not r.item_ids or rng.random() >= self.epsilon or not len(self.new_items):
            return r
        ok = self.new_items[self.state.is_eligible(list(self.new_items), request.ts)]
        ok = ok[~np.isin(ok, np.array(r.item_ids, dtype=object))]
        if not len(ok):
            return r
        ids = list(r.item_ids)
        ids[min(len(ids), k) - 1] = ok[rng.integers(len(ok))]
        return Ranking(tuple(ids), r.scores, r.stages + ("explore",), r.fallback, r.meta)

    def slot_probabilities(self, request: Request, k: int, include=()):
        return deterministic_slot_probabilities(self.rank(request, k), k)


class _Counting:
    """Counts the slots a policy fills and how many of them hold new items."""

    def __init__(self, inner, new_items: set[str]) -> None:
        self.inner, self.new_items, self.slots, self.new_slots = inner, new_items, 0, 0
        self.policy_id = inner.policy_id

    def rank(self, request: Request, k: int) -> Ranking:
        r = self.inner.rank(request, k)
        self.slots += len(r.item_ids)
        self.new_slots += sum(i in self.new_items for i in r.item_ids)
        return r

    def slot_probabilities(self, request: Request, k: int, include=()):
        return self.inner.slot_probabilities(request, k)


def _metrics(ranked: list[str], relevant: set[str], k: int) -> tuple[float, float]:
    top = ranked[:k]
    hits = [1.0 if i in relevant else 0.0 for i in top]
    dcg = sum(h / np.log2(p + 2) for p, h in enumerate(hits))
    idcg = sum(1.0 / np.log2(p + 2) for p in range(min(len(relevant), k)))
    return float(sum(hits) / len(relevant)), float(dcg / idcg) if idcg else 0.0


def _segment(user_id: str | None, histories: dict) -> str:
    if user_id is None:
        return "anonymous"
    return "known_user" if histories.get(user_id) else "new_user"


def offline_eval(pipe, holdout: pl.DataFrame, new_items: set[str], cfg: ColdStartConfig) -> list[dict]:
    """Recall@K / NDCG@K per retriever and for the pipeline, per request segment, on the held-out clicks."""
    clicks = holdout.filter(pl.col("clicked"))
    reqs = (clicks.group_by("request_id", maintain_order=True)
            .agg(pl.col("ts").first(), pl.col("surface").first(), pl.col("user_id").first(),
                 pl.col("session_id").first(), pl.col("query").first(), pl.col("item_id").alias("items"))
            .head(cfg.max_eval_requests))
    acc: dict[tuple[str, str], list] = {}
    for row in reqs.iter_rows(named=True):
        req = Request(row["request_id"], row["ts"], row["surface"], row["user_id"], row["session_id"], row["query"])
        rel = set(row["items"])
        seg = _segment(row["user_id"], pipe.histories)
        q = RetrievalQuery(req, pipe.history(req.user_id), pipe.state)
        lists = {kind: [str(i) for i in r.retrieve(q, cfg.k).item_ids] for kind, r in pipe.retrievers.items()}
        lists["pipeline"] = list(pipe.rank(req, cfg.k).item_ids)
        rel_new = rel & new_items
        for name, ranked in lists.items():
            rc, nd = _metrics(ranked, rel, cfg.k)
            for s in (seg, "all"):
                a = acc.setdefault((name, s), [0, 0.0, 0.0, 0, 0.0])
                a[0] += 1
                a[1] += rc
                a[2] += nd
                if rel_new:
                    a[3] += 1
                    a[4] += _metrics(ranked, rel_new, cfg.k)[0]
    return [{"source": n, "segment": s, "requests": a[0], "recall": a[1] / a[0], "ndcg": a[2] / a[0],
             "new_item_requests": a[3], "new_item_recall": (a[4] / a[3]) if a[3] else None}
            for (n, s), a in sorted(acc.items())]


def _segment_requests(world: World, histories: dict, segment: str, n: int, seed: int) -> list[Request]:
    rng = np.random.default_rng([world.cfg.seed, 53, seed, SEGMENTS.index(segment)])
    if segment == "anonymous":
        rows = np.full(n, -1)
    else:
        has = np.array([bool(histories.get(u)) for u in world.user_ids])
        pool = np.flatnonzero(has if segment == "known_user" else ~has)
        if not len(pool):
            return []
        rows = rng.choice(pool, size=n)
    out = []
    for r in rows:
        surface = "search" if rng.random() < world.cfg.search_share else "home"
        out.append(world.new_context(world.now, surface, rng, user_row=int(r)).request)
    return out


def run_cold_start(cfg: ColdStartConfig = ColdStartConfig(), progress=None) -> dict:
    """Train on a simulated dataset and measure cold-start quality offline and against the truth."""
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="recs-coldstart-") as tmp:
        ds = Path(cfg.dataset) if cfg.dataset else Path(tmp) / "ds"
        if cfg.dataset is None:
            generate_dataset(cfg.sim, ds)
            say("dataset simulated")
        return _run(ds, Path(tmp) / "model", cfg, say)


def _run(ds: Path, model_dir: Path, cfg: ColdStartConfig, say) -> dict:
    from recs.models.candidates import BlendConfig
    from recs.models.pipeline import Pipeline
    from recs.models.train import TrainConfig, train_all

    meta = train_all(ds, model_dir, TrainConfig(retrievers=cfg.retrievers, max_ranker_requests=cfg.max_ranker_requests,
                                                seed=cfg.seed))
    say("pipeline trained")
    cutoff = datetime.fromisoformat(meta["training_window"]["end"])
    world = World.load(ds)
    pipe = Pipeline.load(model_dir, state=world.state)
    catalog = pl.read_parquet(ds / "catalog.parquet")
    new_arr = np.array(catalog.filter(pl.col("created_at") > pl.lit(cutoff))["item_id"].to_list(), dtype=object)
    new_items = set(new_arr.tolist())
    holdout = scan_table(ds, "impressions").filter(pl.col("ts") > pl.lit(cutoff)).collect()
    offline = offline_eval(pipe, holdout, new_items, cfg)
    say("offline evaluation done")
    bare = copy.copy(pipe)
    bare.blend = BlendConfig(home={k: (0 if k in MITIGATED_SOURCES else v) for k, v in pipe.blend.home.items()},
                             search={k: (0 if k in MITIGATED_SOURCES else v) for k, v in pipe.blend.search.items()},
                             total=pipe.blend.total)
    bare.fallback = {}
    bare.policy_id = pipe.policy_id + "-no-mitigation"
    variants = {"no_mitigation": bare, "mitigated": pipe,
                "mitigated_explore": ExplorePolicy(pipe, world.state, new_arr, cfg.explore, cfg.seed)}
    online = []
    for seg in SEGMENTS:
        reqs = _segment_requests(world, pipe.histories, seg, cfg.n_requests, cfg.seed)
        if not reqs:
            continue
        for name, pol in variants.items():
            counted = _Counting(pol, new_items)
            v = run_policy(counted, len(reqs), cfg.seed, world, requests=reqs)
            online.append({"segment": seg, "variant": name, "true_ctr": v.ctr, "ctr_stderr": v.ctr_stderr,
                           "clicks_per_request": v.clicks_per_request, "purchase_rate": v.purchase_rate,
                           "empty_share": v.empty_share, "violations": v.violations,
                           "new_item_slot_share": counted.new_slots / max(counted.slots, 1)})
        say(f"{seg}: true CTR measured")
    for seg in SEGMENTS:
        rows = {r["variant"]: r for r in online if r["segment"] == seg}
        if "mitigated" in rows:
            m = rows["mitigated"]["clicks_per_request"]
            rows["mitigated_explore"]["explore_cost"] = (m - rows["mitigated_explore"]["clicks_per_request"]) / m \
                if m > 0 else 0.0
            rows["mitigated"]["gain_vs_no_mitigation"] = rows["mitigated"]["clicks_per_request"] \
                - rows["no_mitigation"]["clicks_per_request"]
    return {"kind": "simulate_cold_start", "config": _cfg_json(cfg), "cutoff": cutoff.isoformat(),
            "new_items": len(new_items), "holdout_impressions": holdout.height,
            "holdout_new_item_clicks": int(holdout.filter(pl.col("clicked") & pl.col("item_id").is_in(list(new_items)))
                                           .height),
            "offline": offline, "online": online}


def _cfg_json(cfg: ColdStartConfig) -> dict:
    d = asdict(cfg)
    d["sim"] = cfg.sim.to_json()
    d["dataset"] = str(cfg.dataset) if cfg.dataset else None
    d["retrievers"] = list(cfg.retrievers)
    return d


def cold_start_report(result: dict):
    """A `Report`: per-segment offline metrics per source and true CTR with and without mitigations."""
    from recs.reports import Report

    rep = Report("Cold start: new items, new users and anonymous visitors",
                 f"cut-off {result['cutoff']}; {result['new_items']} new items")
    off = [r for r in result["offline"]]
    rep.table([{"source": r["source"], "segment": r["segment"], "requests": r["requests"],
                f"Recall@{result['config']['k']}": r["recall"], f"NDCG@{result['config']['k']}": r["ndcg"],
                "new-item recall": r["new_item_recall"]} for r in off], title="Offline, held-out clicks")
    sources = sorted({r["source"] for r in off})
    segs = [s for s in SEGMENTS if any(r["segment"] == s for r in off)]
    by = {(r["source"], r["segment"]): r for r in off}
    rep.bar_chart("Recall@K per source and segment", sources,
                  {s: [by.get((src, s), {}).get("recall", 0.0) for src in sources] for s in segs})
    on = result["online"]
    rep.table([{k: v for k, v in r.items()} for r in on], title="Online (simulator truth), per segment")
    osegs = [s for s in SEGMENTS if any(r["segment"] == s for r in on)]
    ob = {(r["segment"], r["variant"]): r for r in on}
    rep.bar_chart("True CTR per segment", osegs,
                  {v: [ob[(s, v)]["true_ctr"] for s in osegs] for v in ("no_mitigation", "mitigated",
                                                                         "mitigated_explore")})
    rep.paragraph("no_mitigation: the trained pipeline with the content and popularity retrievers' quotas at 0 and "
                  "no popular-by-category fallback; mitigated: the trained blend; mitigated_explore: plus the last "
                  "slot replaced by a random eligible new item with probability `explore`. explore_cost: relative "
                  "loss of clicks per request against mitigated.")
    rep.kv(result["config"], title="Configuration", flatten=1)
    return rep
