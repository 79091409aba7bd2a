"""`simulate stale-inventory`: serve from feature/candidate snapshots of growing age while stock and prices move.

Ranker (`ranker`):

* `pipeline` (default): the trained pipeline (`models.train.train_all` on a small simulated dataset, or a given
  `--model` with its `--dataset`). For each snapshot age it is loaded on a copy of the item state taken `age`
  seconds before serving (stock, prices, policy flags of that moment): retrieval, eligibility, features and
  ranking all see the snapshot. Its top `cache_n` list per request is the cached list.
* `oracle`: the simulator's true preferences reading eligibility and prices from the snapshot (every loss is then
  caused by staleness alone).

The cached list is served at time S while the live inventory has moved on for `age` seconds (sales by the logging
policy's traffic deplete stock, restocks, price changes, restrictions). The truth (`World.expected_reward`, live
state) scores what is shown: unavailable items attract less and are never bought.

Mitigations: (1) serve-time policy filter on live stock / restricted / blocked sellers (`models.rerank`),
(2) price re-read at serve time (the displayed price is the live one; the oracle also re-scores with it), (3) a
short TTL on cached lists (the list used is at most `ttl_s` old).

Limitation: the truth reads only the live price. `World.expected_reward` (through `click_probs` and `rel_price`)
and revenue use `world.state.price` whatever price the list displays, so the simulated users react to, and pay,
the live price even when a stale one is shown. A stale price therefore changes the truth only through the ranking
(items chosen and ordered on snapshot prices), never through the display: `price_changed_share` counts shown
items whose displayed price would be wrong, with no modelled cost, and the re-read makes it 0 by construction
(not a measured effect). For the pipeline the re-read changes nothing the truth sees (its cached order is kept),
so the `filter_only` and `mitigated` figures are the filter's (and TTL's) alone; for the oracle its only effect
is re-ranking the cached list by the live price.
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from recs.models.rerank import RerankConfig, rerank
from recs.scenarios.common import Clock, InventorySnapshot, attraction_logits, fmt_age, from_us, small_sim, top_n
from recs.scenarios.trained import ModelSettings, check_dataset, prepare
from recs.sim import SimConfig, World

DEFAULT_AGES = (0, 900, 3_600, 21_600, 86_400)
RANKERS = ("pipeline", "oracle")
NO_CAP = RerankConfig(max_per_category=0, exclude_purchased=False)


@dataclass(frozen=True)
class StaleInventoryConfig:
    """Snapshot ages (seconds, multiples of `step_s`), the ranker, traffic and mitigation settings."""

    sim: SimConfig = field(default_factory=small_sim)
    ranker: str = "pipeline"
    model: ModelSettings = field(default_factory=ModelSettings)
    dataset: Path | None = None
    model_dir: Path | None = None
    ages_s: tuple[int, ...] = DEFAULT_AGES
    warmup_h: int = 24
    n_requests: int = 600
    cache_n: int = 50
    ttl_s: int = 900
    step_s: int = 900
    demand: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ranker not in RANKERS:
            raise ValueError(f"ranker must be one of {', '.join(RANKERS)}, got {self.ranker!r}")
        if self.model_dir is not None and self.ranker != "pipeline":
            raise ValueError("--model needs --ranker pipeline")
        if not self.ages_s or any(a < 0 for a in self.ages_s):
            raise ValueError("ages_s must be a non-empty list of ages >= 0")
        if self.step_s <= 0 or 3600 % self.step_s:
            raise ValueError(f"step_s must divide 3600, got {self.step_s}")
        for a in (*self.ages_s, self.ttl_s):
            if a % self.step_s:
                raise ValueError(f"age {a}s is not a multiple of step_s={self.step_s}")
        if self.warmup_h < 0 or self.n_requests <= 0 or self.ttl_s < 0 or self.demand < 0:
            raise ValueError("warmup_h, ttl_s and demand must be >= 0 and n_requests > 0")
        if self.cache_n < max(self.sim.k_home, self.sim.k_search):
            raise ValueError(f"cache_n must be at least the slate size ({max(self.sim.k_home, self.sim.k_search)})")


@dataclass
class _Acc:
    """Sums over served slates of one serving variant."""

    shown: int = 0
    oos: int = 0
    ineligible: int = 0
    price_changed: int = 0
    clicks: float = 0.0
    purchases: float = 0.0
    revenue: float = 0.0
    short: int = 0
    n: int = 0

    def add(self, world: World, req, rows: np.ndarray, shown_price: np.ndarray, live_elig: np.ndarray, k: int) -> None:
        r = world.expected_reward(req, world.item_ids[rows])
        self.n += 1
        self.shown += len(rows)
        self.short += int(len(rows) < k)
        self.oos += int((world.state.stock[rows] == 0).sum())
        self.ineligible += int((~live_elig[rows]).sum())
        self.price_changed += int((shown_price != world.state.price[rows]).sum())
        self.clicks += r.clicks
        self.purchases += r.purchases
        self.revenue += r.revenue

    def result(self) -> dict:
        s = max(self.shown, 1)
        return {"oos_shown_share": self.oos / s, "ineligible_shown_share": self.ineligible / s,
                "price_changed_share": self.price_changed / s, "true_ctr": self.clicks / s,
                "clicks_per_request": self.clicks / max(self.n, 1),
                "purchases_per_request": self.purchases / max(self.n, 1),
                "revenue_per_request": self.revenue / max(self.n, 1), "short_slate_share": self.short / max(self.n, 1)}


def _loss(v: float, ref: float) -> float:
    return (ref - v) / ref if ref > 0 else 0.0


def run_stale_inventory(cfg: StaleInventoryConfig = StaleInventoryConfig(),
                        progress: Callable[[str], None] | None = None) -> dict:
    """Measure shown out-of-stock / changed-price shares and true click and purchase loss per snapshot age."""
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="recs-stale-") as tmp:
        trained = None
        if cfg.ranker == "pipeline":
            trained = prepare(Path(tmp), cfg.sim, cfg.model, cfg.dataset, cfg.model_dir, say)
            world = World.load(trained.dataset)
        elif cfg.dataset:   # the oracle on a given simulated dataset's world
            check_dataset(cfg.dataset)
            world = World.load(cfg.dataset)
        else:
            world = World.build(cfg.sim)
        return _run(world, trained, cfg, say)


def _snapshots(world: World, cfg: StaleInventoryConfig, ages: list[int]) -> tuple[int, dict[int, InventorySnapshot]]:
    """Step the world to the serve time S, keeping item-state snapshots at S - age and S - min(age, TTL)."""
    clock = Clock(world, cfg.step_s, cfg.seed, cfg.demand)
    start = clock.t_us
    t_serve = start + (cfg.warmup_h * 3600 + max(ages)) * 1_000_000
    need = {t_serve - a * 1_000_000 for a in ages} | {t_serve - min(a, cfg.ttl_s) * 1_000_000 for a in ages}
    snaps: dict[int, InventorySnapshot] = {}
    if start in need:
        snaps[start] = InventorySnapshot.take(world, start)

    def on_step(t: int) -> None:
        if t in need:
            snaps[t] = InventorySnapshot.take(world, t)

    clock.advance_to(t_serve, on_step)
    return t_serve, snaps


def _cached_lists(world: World, trained, snaps: dict[int, InventorySnapshot], requests, cfg: StaleInventoryConfig,
                  say) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """Per snapshot time, each request's cached (rows, scores): the ranker's top `cache_n` computed on the snapshot."""
    out: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for t, snap in sorted(snaps.items()):
        if trained is None:
            rows = np.flatnonzero(snap.eligible(world))
            out[t] = [top_n(rows, attraction_logits(world, q.request_id, rows, snap.price), cfg.cache_n)
                      for q in requests]
        else:
            from recs.models.pipeline import Pipeline

            pipe = Pipeline.load(trained.model, state=snap.state(world))
            ts = from_us(t)
            lists = []
            for q in requests:
                r = pipe.rank(replace(q, ts=ts), cfg.cache_n)
                lists.append((world.state.indices(list(r.item_ids)), np.asarray(r.scores, dtype=float)))
            out[t] = lists
        say(f"cached lists of the snapshot at {from_us(t).isoformat()} computed")
    return out


def _run(world: World, trained, cfg: StaleInventoryConfig, say) -> dict:
    ages = sorted(set(cfg.ages_s))
    t_serve, snaps = _snapshots(world, cfg, ages)
    say("inventory simulated")
    requests = world.sample_requests(cfg.n_requests, cfg.seed, ts=from_us(t_serve))
    live_elig = world.eligible(t_serve)
    live_price = world.state.price
    cached = _cached_lists(world, trained, snaps, requests, cfg, say)
    out = []
    for a in ages:
        t_stale, t_ttl = t_serve - a * 1_000_000, t_serve - min(a, cfg.ttl_s) * 1_000_000
        stale, filt, mitig = _Acc(), _Acc(), _Acc()
        for i, q in enumerate(requests):
            k = world.k_for(q)
            rows = cached[t_stale][i][0][:k]
            stale.add(world, q, rows, snaps[t_stale].price[rows], live_elig, k)
            for acc, (src, sc) in ((filt, cached[t_stale][i]), (mitig, cached[t_ttl][i])):
                if trained is None:  # the oracle re-scores with the re-read live price
                    sc = attraction_logits(world, q.request_id, src, live_price)
                else:  # the pipeline's cached order (its re-rank already applied) is kept
                    sc = -np.arange(len(src), dtype=float)
                ids, _ = rerank(world.item_ids[src], sc, world.state, q.ts, k, NO_CAP)
                r = world.state.indices(ids)
                acc.add(world, q, r, live_price[r], live_elig, k)
        out.append({"age_s": a, "age": fmt_age(a), **stale.result(), "filter_only": filt.result(),
                    "mitigated": mitig.result()})
        say(f"age {fmt_age(a)} served")
    ref = next((s for s in out if s["age_s"] == 0), out[0])
    for s in out:
        for d in (s, s["filter_only"], s["mitigated"]):
            d["click_loss"] = _loss(d["clicks_per_request"], ref["clicks_per_request"])
            d["purchase_loss"] = _loss(d["purchases_per_request"], ref["purchases_per_request"])
    model = None if trained is None else trained.describe()
    return {"kind": "simulate_stale_inventory", "config": _cfg_json(cfg), "ranker": cfg.ranker, "model": model,
            "serve_time": from_us(t_serve).isoformat(), "n_requests": cfg.n_requests,
            "live_oos_share": float((world.state.stock == 0).mean()), "snapshots": out}


def _cfg_json(cfg: StaleInventoryConfig) -> dict:
    d = asdict(cfg)
    d["sim"] = cfg.sim.to_json()
    d["ages_s"] = list(cfg.ages_s)
    d["model"]["retrievers"] = list(cfg.model.retrievers)
    d["dataset"] = str(cfg.dataset) if cfg.dataset else None
    d["model_dir"] = str(cfg.model_dir) if cfg.model_dir else None
    if cfg.dataset:      # the dataset's own world was used: the simulator settings here were not
        d.pop("sim")
    if cfg.model_dir:    # a trained model was loaded: the training settings here were not used
        d.pop("model")
    return d


def stale_inventory_report(result: dict):
    """A `Report` with the per-age table and charts of true CTR, purchases and shown out-of-stock share."""
    from recs.reports import Report

    snaps = result["snapshots"]
    hours = [s["age_s"] / 3600 for s in snaps]
    rep = Report("Stale inventory: serving from snapshots of growing age",
                 f"{result['ranker']} ranker; {result['n_requests']} requests served at {result['serve_time']}")
    worst = max(snaps, key=lambda s: s["age_s"])
    rep.callout(f"At age {worst['age']}: {worst['oos_shown_share']:.1%} of shown items out of stock, "
                f"{worst['click_loss']:.1%} click loss and {worst['purchase_loss']:.1%} purchase loss; with the "
                f"mitigations {worst['mitigated']['oos_shown_share']:.1%} out of stock shown.",
                "good" if all(s["mitigated"]["oos_shown_share"] == 0 for s in snaps) else "bad")
    rows = [{"age": s["age"], "oos shown": s["oos_shown_share"], "ineligible shown": s["ineligible_shown_share"],
             "price changed": s["price_changed_share"], "true CTR": s["true_ctr"],
             "purchases/req": s["purchases_per_request"], "click loss": s["click_loss"],
             "purchase loss": s["purchase_loss"], "filtered: oos": s["filter_only"]["oos_shown_share"],
             "filtered: CTR": s["filter_only"]["true_ctr"], "mitigated: oos": s["mitigated"]["oos_shown_share"],
             "mitigated: CTR": s["mitigated"]["true_ctr"],
             "mitigated: purchase loss": s["mitigated"]["purchase_loss"]} for s in snaps]
    rep.table(rows, title="Per snapshot age")
    variants = {"stale": lambda s: s, "serve-time filter + price re-read": lambda s: s["filter_only"],
                "all mitigations (+ TTL)": lambda s: s["mitigated"]}
    rep.line_chart("True CTR against snapshot age", {n: (hours, [f(s)["true_ctr"] for s in snaps])
                                                     for n, f in variants.items()},
                   x_label="snapshot age (hours)", y_label="true CTR")
    rep.line_chart("Expected purchases per request against snapshot age",
                   {n: (hours, [f(s)["purchases_per_request"] for s in snaps]) for n, f in variants.items()},
                   x_label="snapshot age (hours)", y_label="purchases / request", y_zero=True)
    rep.line_chart("Shown items out of stock at serve time", {
        "stale": (hours, [s["oos_shown_share"] for s in snaps]),
        "mitigated": (hours, [s["mitigated"]["oos_shown_share"] for s in snaps])},
        x_label="snapshot age (hours)", y_label="share of shown items", y_zero=True)
    who = ("the trained pipeline loaded on a copy of the item state of the snapshot time (retrieval, eligibility, "
           "features and ranking all see the snapshot)" if result["ranker"] == "pipeline" else
           "the simulator's oracle reading eligibility and prices from the snapshot (every loss is caused by "
           "staleness alone)")
    rep.paragraph(f"Ranker: {who}. The live state moves by the logging policy's traffic (sales), restocks, price "
                  "changes and restrictions in 15-minute steps. `price changed`: shown items whose cached price "
                  "differs from the live one. With the price re-read the displayed price is the live one by "
                  "construction. The truth always uses the live price (users react to and pay it whatever is "
                  "displayed), so a stale displayed price costs nothing here and the price re-read has no measured "
                  "effect of its own: for the pipeline the mitigated figures are the filter's and the TTL's; "
                  "for the oracle the re-read only re-ranks by the live price.")
    if result.get("model"):
        rep.kv(result["model"], title="Model")
    rep.kv(result["config"], title="Configuration", flatten=1)
    return rep
