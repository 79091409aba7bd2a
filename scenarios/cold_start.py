"""`simulate cold-start`: new items, new users and anonymous visitors after the training cut-off.

A dataset is simulated and a pipeline trained on it with a one-day holdout (`scenarios.trained`, or a given
`--model` with its `--dataset`); the cut-off is the end of the training window. Segments: requests of anonymous
visitors, of new users (no history at the cut-off) and of known users; and new items (created after the cut-off).

Serving variants of the trained pipeline (each its own loaded copy):

* `no_mitigation`: the content and popularity retrievers' quotas at 0, no popular-by-category fallback, no new-item
  slot (`RerankConfig.new_item_share`; the other variants keep the model's setting, on by default);
* `content`: plus the content retriever, with the items created after the cut-off indexed (`index_new_items`:
  content vectors need no interactions);
* `popularity`: plus popularity by category (the popularity retriever, personalised by category affinity, and the
  popular-by-category fallback lists);
* `mitigated`: both; `mitigated_explore`: plus exploration, the last slot replaced by a random eligible new item
  on a share `explore` of requests (its cost: relative loss of true clicks per request against `mitigated`); where
  it fires it overrides the new-item slot's choice.

Measured per segment, for each retriever alone (its top K, policy-filtered) and each pipeline variant:

* offline, on the held-out day's clicks: Recall@K, NDCG@K, and Recall@K on clicks of new items; each logged
  request rebuilt with its session's earlier clicks (`datasets.requests.requests_from_logs`) and ranked, in time
  order, by pipelines loaded on a state replayed to each request's time (`scenarios.evaluate.holdout_replay`; until
  the ninth session the requests had no session items and saw the inventory as at the end of the log);
* online, against the simulator's truth on fresh requests of each segment at the end of the log: true CTR,
  purchases, new items' share of the shown slots and the true CTR of those slots.
"""
from __future__ import annotations

import tempfile
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl

from recs.datasets.io import scan_table
from recs.datasets.policy import Policy, Ranking, Request, deterministic_slot_probabilities
from recs.datasets.requests import requests_from_logs
from recs.models.base import RetrievalQuery
from recs.models.rerank import RerankConfig, rerank
from recs.scenarios.trained import ModelSettings, prepare
from recs.sim import SimConfig, World

if TYPE_CHECKING:
    from recs.datasets.online_state import OnlineState
    from recs.models.pipeline import Pipeline

SEGMENTS = ("anonymous", "new_user", "known_user")
MITIGATED_SOURCES = ("content", "popularity")
VARIANTS = ("no_mitigation", "content", "popularity", "mitigated", "mitigated_explore")


def _default_sim() -> SimConfig:
    return SimConfig(n_users=400, n_items=1_500, days=5, requests_per_day=2_000, seed=1)


@dataclass(frozen=True)
class ColdStartConfig:
    """Dataset, model, evaluation sizes and the exploration share."""

    sim: SimConfig = field(default_factory=_default_sim)
    model: ModelSettings = field(default_factory=lambda: ModelSettings(holdout_days=1, ranker_days=1))
    dataset: Path | None = None
    model_dir: Path | None = None
    k: int = 10
    n_requests: int = 300
    max_eval_requests: int = 1_000
    explore: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_requests < 1 or self.max_eval_requests < 1:
            raise ValueError("k, n_requests and max_eval_requests must be >= 1")
        if not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"explore must be in [0, 1], got {self.explore}")
        if self.model.holdout_days < 1:
            raise ValueError("cold start needs a holdout day (model.holdout_days >= 1)")
        if self.dataset is None and self.sim.days < self.model.min_days():
            raise ValueError(f"cold start needs at least {self.model.min_days()} simulated days (retrievers, ranker "
                             f"and holdout), got {self.sim.days}")


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


class RetrieverPolicy:
    """One retriever alone as a policy: its top k for the request, through the serve-time policy filter."""

    def __init__(self, kind: str, pipe: "Pipeline") -> None:
        self.kind, self.pipe, self.policy_id = kind, pipe, f"retriever:{kind}"

    def rank(self, request: Request, k: int) -> Ranking:
        p = self.pipe
        c = p.retrievers[self.kind].retrieve(RetrievalQuery(request, p.history(request.user_id), p.state), 3 * k)
        ids, sc = rerank(c.item_ids, c.scores, p.state, request.ts, k, RerankConfig(0, False))
        return Ranking(tuple(ids), tuple(sc), (self.kind,))

    def slot_probabilities(self, request: Request, k: int, include=()):
        return deterministic_slot_probabilities(self.rank(request, k), k)


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


def offline_eval(policies: dict[str, Policy], histories: dict, holdout: pl.DataFrame, new_items: set[str],
                 cfg: ColdStartConfig, interactions: pl.DataFrame | None = None,
                 at: Callable[[datetime], object] | None = None) -> list[dict]:
    """Recall@K / NDCG@K of each policy per request segment on the held-out clicks, and recall on new items.

    The first `max_eval_requests` clicked requests, each rebuilt with its session's clicks before it (from
    `interactions`), are ranked in time order; `at(ts)`, when given, first moves the serving state to the request's
    time (`datasets.state_replay.StateReplay.at`: the state the policies rank on)."""
    clicks = holdout.filter(pl.col("clicked"))
    rel = dict(clicks.group_by("request_id", maintain_order=True).agg(pl.col("item_id"))
               .head(cfg.max_eval_requests).iter_rows())
    reqs = requests_from_logs(holdout, interactions, request_ids=list(rel))
    acc: dict[tuple[str, str], list] = {}
    for rid in sorted(rel, key=lambda r: (reqs[r].ts, r)):
        req = reqs[rid]
        if at is not None:
            at(req.ts)
        rel_all = set(rel[rid])
        rel_new = rel_all & new_items
        seg = _segment(req.user_id, histories)
        for name, pol in policies.items():
            ranked = [str(i) for i in pol.rank(req, cfg.k).item_ids]
            rc, nd = _metrics(ranked, rel_all, cfg.k)
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


def segment_requests(world: World, histories: dict, segment: str, n: int, seed: int) -> list[Request]:
    """`n` fresh requests of one segment at the world's current time (empty if the segment has no users)."""
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


def online_eval(policy: Policy, requests: list[Request], world: World, new_rows: np.ndarray) -> dict:
    """True value of `policy` on `requests`: CTR (with its standard error), purchases, new items' slots and CTR."""
    clicks, shown, buys = np.zeros(len(requests)), np.zeros(len(requests)), 0.0
    new_slots, new_clicks, violations = 0, 0.0, 0
    is_new = np.zeros(len(world.item_ids), dtype=bool)
    is_new[new_rows] = True
    for i, q in enumerate(requests):
        r = policy.rank(q, world.k_for(q))
        if not r.item_ids:
            continue
        idx = world.state.indices(list(r.item_ids))
        p_click, p_buy, avail = world.click_probs(world.contexts[q.request_id], idx)
        clicks[i], shown[i] = p_click.sum(), len(idx)
        buys += float(p_buy.sum())
        violations += int((~avail).sum())
        new_slots += int(is_new[idx].sum())
        new_clicks += float(p_click[is_new[idx]].sum())
    total = max(shown.sum(), 1.0)
    ctr = clicks.sum() / total
    return {"true_ctr": float(ctr), "ctr_stderr": float(np.sqrt(((clicks - ctr * shown) ** 2).sum()) / total),
            "clicks_per_request": float(clicks.mean()), "purchase_rate": float(buys / total),
            "empty_share": float((shown == 0).mean()), "violations": violations,
            "new_item_slot_share": float(new_slots / total),
            "new_item_ctr": float(new_clicks / new_slots) if new_slots else None}


def run_cold_start(cfg: ColdStartConfig = ColdStartConfig(), progress: Callable[[str], None] | None = None) -> dict:
    """Train (or load) a pipeline and measure cold-start quality offline and against the truth."""
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="recs-coldstart-") as tmp:
        trained = prepare(Path(tmp), cfg.sim, cfg.model, cfg.dataset, cfg.model_dir, say)
        return _run(trained, cfg, say)


def _variants(trained, state: "OnlineState", new_arr: np.ndarray, cfg: ColdStartConfig,
              names: tuple[str, ...] = VARIANTS) -> dict:
    """The serving variants `names`, each a separately loaded pipeline on `state` (mitigations switched per
    variant)."""
    from recs.models.candidates import BlendConfig
    from recs.models.pipeline import Pipeline

    out = {}
    for name, keep in (("no_mitigation", ()), ("content", ("content",)), ("popularity", ("popularity",)),
                       ("mitigated", MITIGATED_SOURCES)):
        if name not in names and not (name == "mitigated" and "mitigated_explore" in names):
            continue
        p = Pipeline.load(trained.model, state=state)
        off = [s for s in MITIGATED_SOURCES if s not in keep]
        p.blend = BlendConfig(home={k: (0 if k in off else v) for k, v in p.blend.home.items()},
                              search={k: (0 if k in off else v) for k, v in p.blend.search.items()},
                              total=p.blend.total)
        if "popularity" not in keep:
            p.fallback = {}
        if "content" in keep:
            p.index_new_items()
        if name == "no_mitigation":       # the new-item slot is a mitigation too; the other variants keep the model's
            p.rerank_cfg = replace(p.rerank_cfg, new_item_share=0.0)
        p.policy_id = f"{p.policy_id}-{name}"
        out[name] = p
    if "mitigated_explore" in names:
        out["mitigated_explore"] = ExplorePolicy(out["mitigated"], state, new_arr, cfg.explore, cfg.seed)
    return {name: out[name] for name in names}


def _run(trained, cfg: ColdStartConfig, say) -> dict:
    from recs.scenarios.evaluate import holdout_replay

    cutoff = trained.cutoff
    world = World.load(trained.dataset)
    catalog = pl.read_parquet(trained.dataset / "catalog.parquet")
    new_arr = np.array(catalog.filter(pl.col("created_at") > pl.lit(cutoff))["item_id"].to_list(), dtype=object)
    new_items = set(new_arr.tolist())
    variants = _variants(trained, world.state, new_arr, cfg)
    full = variants["mitigated"]
    retrievers = {f"retriever:{k}": RetrieverPolicy(k, full) for k in full.retrievers}
    holdout = scan_table(trained.dataset, "impressions").filter(pl.col("ts") > pl.lit(cutoff)).collect()
    if holdout.height == 0:
        raise ValueError(f"{trained.model}: no impressions after its training cut-off {cutoff:%Y-%m-%d %H:%M} in "
                         f"{trained.dataset}; train it with --holdout-days >= 1")
    # offline: the held-out requests on the inventory as logged at their time (the world's state is the log's end)
    replay = holdout_replay(trained.dataset, holdout["ts"].max())
    replay.at(cutoff)                   # the new items' content indexed with their first values, as a server would
    logged = _variants(trained, replay.state, new_arr, cfg, ("no_mitigation", "mitigated"))
    clicks = scan_table(trained.dataset, "interactions").filter(pl.col("kind") == "click").collect()
    offline = offline_eval({**{f"retriever:{k}": RetrieverPolicy(k, logged["mitigated"]) for k in full.retrievers},
                            **{f"pipeline:{v}": p for v, p in logged.items()}},
                           full.histories, holdout, new_items, cfg, clicks, replay.at)
    say("offline evaluation done")
    new_rows = world.state.indices(list(new_arr))
    online = []
    for seg in SEGMENTS:
        reqs = segment_requests(world, full.histories, seg, cfg.n_requests, cfg.seed)
        if not reqs:
            continue
        for name, pol in {**retrievers, **{f"pipeline:{v}": p for v, p in variants.items()}}.items():
            online.append({"segment": seg, "policy": name, **online_eval(pol, reqs, world, new_rows)})
        say(f"{seg}: true CTR measured")
    for seg in SEGMENTS:
        rows = {r["policy"]: r for r in online if r["segment"] == seg}
        if "pipeline:mitigated" in rows:
            m = rows["pipeline:mitigated"]["clicks_per_request"]
            b = rows["pipeline:no_mitigation"]["clicks_per_request"]
            rows["pipeline:mitigated_explore"]["explore_cost"] = \
                (m - rows["pipeline:mitigated_explore"]["clicks_per_request"]) / m if m > 0 else 0.0
            for v in ("content", "popularity", "mitigated"):
                rows[f"pipeline:{v}"]["gain_vs_no_mitigation"] = \
                    (rows[f"pipeline:{v}"]["clicks_per_request"] - b) / b if b > 0 else 0.0
    return {"kind": "simulate_cold_start", "config": _cfg_json(cfg), "cutoff": cutoff.isoformat(),
            "model": trained.describe(),
            "new_items": len(new_items), "holdout_impressions": holdout.height,
            "holdout_new_item_clicks": int(holdout.filter(pl.col("clicked") & pl.col("item_id").is_in(list(new_items)))
                                           .height),
            "offline": offline, "online": online}


def _cfg_json(cfg: ColdStartConfig) -> dict:
    d = asdict(cfg)
    d["sim"] = cfg.sim.to_json()
    d["model"]["retrievers"] = list(cfg.model.retrievers)
    d["dataset"] = str(cfg.dataset) if cfg.dataset else None
    d["model_dir"] = str(cfg.model_dir) if cfg.model_dir else None
    if cfg.dataset:      # the dataset's own world was used: the simulator settings here were not
        d.pop("sim")
    if cfg.model_dir:    # a trained model was loaded: the training settings here were not used
        d.pop("model")
    return d


def cold_start_report(result: dict):
    """A `Report`: offline metrics per source and segment; true CTR per segment with and without mitigations."""
    from recs.reports import Report

    k = result["config"]["k"]
    rep = Report("Cold start: new items, new users and anonymous visitors",
                 f"cut-off {result['cutoff']}; {result['new_items']} new items")
    off, on = result["offline"], result["online"]
    rep.table([{"source": r["source"], "segment": r["segment"], "requests": r["requests"], f"Recall@{k}": r["recall"],
                f"NDCG@{k}": r["ndcg"], "new-item recall": r["new_item_recall"]} for r in off],
              title="Offline, held-out clicks")
    sources = sorted({r["source"] for r in off})
    segs = [s for s in SEGMENTS if any(r["segment"] == s for r in off)]
    by = {(r["source"], r["segment"]): r for r in off}
    rep.bar_chart(f"Recall@{k} per source and segment (held-out clicks)", sources,
                  {s: [by.get((src, s), {}).get("recall", 0.0) for src in sources] for s in segs})
    rep.table([{"segment": r["segment"], "policy": r["policy"], "true CTR": r["true_ctr"], "± se": r["ctr_stderr"],
                "clicks/req": r["clicks_per_request"], "purchase rate": r["purchase_rate"],
                "new-item slots": r["new_item_slot_share"], "new-item CTR": r["new_item_ctr"],
                "gain vs none": r.get("gain_vs_no_mitigation"), "explore cost": r.get("explore_cost")} for r in on],
              title="Online (simulator truth), per segment")
    osegs = [s for s in SEGMENTS if any(r["segment"] == s for r in on)]
    ob = {(r["segment"], r["policy"]): r for r in on}
    rep.bar_chart("True CTR per segment, pipeline variants", osegs,
                  {v: [ob[(s, f"pipeline:{v}")]["true_ctr"] for s in osegs] for v in VARIANTS})
    pols = sorted({r["policy"] for r in on})
    rep.bar_chart("True CTR per segment, each retriever alone and the pipeline", pols,
                  {s: [ob.get((s, p), {}).get("true_ctr", 0.0) for p in pols] for s in osegs})
    rep.bar_chart("New items' share of shown slots", [f"pipeline:{v}" for v in VARIANTS],
                  {s: [ob[(s, f"pipeline:{v}")]["new_item_slot_share"] for v in VARIANTS] for s in osegs})
    rep.paragraph("no_mitigation: the trained pipeline with the content and popularity retrievers' quotas at 0, "
                  "no popular-by-category fallback and no new-item slot; content: plus the content retriever with the "
                  "items created after the cut-off indexed; popularity: plus popularity by category (retriever and "
                  "fallback); mitigated: both; the last three with the model's new-item slot; mitigated_explore: plus "
                  "the last slot replaced by a random eligible new item with probability `explore`. explore_cost: "
                  "relative loss of true clicks per request against mitigated. Retrievers alone: each one's top K "
                  "through the serve-time policy filter (content with new items indexed).")
    rep.kv(result["config"], title="Configuration", flatten=1)
    return rep
