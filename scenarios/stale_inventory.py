"""`simulate stale-inventory`: serve from feature/candidate snapshots of growing age while stock and prices move.

The ranker is the simulator's oracle (true preferences) reading item state from a snapshot: the cached list of
a request is its best `cache_n` items by true attraction computed with the snapshot's eligibility and prices.
It is served at time S while the live inventory has moved on for `age` seconds (sales by the logging policy's
traffic deplete stock, restocks, price changes, restrictions). The truth (`World.expected_reward`, live state)
scores what is shown: unavailable items attract less and are never bought.

Mitigations: (1) serve-time policy filter on live stock / restricted / blocked sellers (`models.rerank`),
(2) price re-read at serve time (cached items re-scored and displayed with the live price), (3) a short TTL on
cached lists (the list used is at most `ttl_s` old).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from recs.models.rerank import RerankConfig, rerank
from recs.scenarios.common import Clock, InventorySnapshot, attraction_logits, fmt_age, from_us, small_sim, top_n, us
from recs.sim import SimConfig, World

DEFAULT_AGES = (0, 900, 3_600, 21_600, 86_400)
NO_CAP = RerankConfig(max_per_category=0, exclude_purchased=False)


@dataclass(frozen=True)
class StaleInventoryConfig:
    """Snapshot ages (seconds, multiples of `step_s`), traffic and mitigation settings."""

    sim: SimConfig = field(default_factory=small_sim)
    ages_s: tuple[int, ...] = DEFAULT_AGES
    warmup_h: int = 24
    n_requests: int = 1_000
    cache_n: int = 50
    ttl_s: int = 900
    step_s: int = 900
    demand: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
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
        ids = world.item_ids[rows]
        r = world.expected_reward(req, ids)
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


def run_stale_inventory(cfg: StaleInventoryConfig = StaleInventoryConfig(), progress=None) -> dict:
    """Measure shown out-of-stock / changed-price shares and true click and purchase loss per snapshot age."""
    world = World.build(cfg.sim)
    clock = Clock(world, cfg.step_s, cfg.seed, cfg.demand)
    start = us(cfg.sim.start)
    ages = sorted(set(cfg.ages_s))
    t_serve = start + (cfg.warmup_h * 3600 + max(ages)) * 1_000_000
    need = {t_serve - a * 1_000_000 for a in ages} | {t_serve - min(a, cfg.ttl_s) * 1_000_000 for a in ages}
    snaps: dict[int, InventorySnapshot] = {}
    if start in need:
        snaps[start] = InventorySnapshot.take(world, start)

    def on_step(t: int) -> None:
        if t in need:
            snaps[t] = InventorySnapshot.take(world, t)

    clock.advance_to(t_serve, on_step)
    if progress:
        progress("inventory simulated")
    requests = world.sample_requests(cfg.n_requests, cfg.seed, ts=from_us(t_serve))
    live_elig = world.eligible(t_serve)
    live_price = world.state.price
    cached: dict[int, list[np.ndarray]] = {}
    for t, snap in snaps.items():  # each snapshot's cached list per request (computed once, reused by variants)
        rows = np.flatnonzero(snap.eligible(world))
        cached[t] = [top_n(rows, attraction_logits(world, q.request_id, rows, snap.price), cfg.cache_n)[0]
                     for q in requests]
    out = []
    for a in ages:
        t_stale, t_ttl = t_serve - a * 1_000_000, t_serve - min(a, cfg.ttl_s) * 1_000_000
        stale, filt, mitig = _Acc(), _Acc(), _Acc()
        for i, q in enumerate(requests):
            k = world.k_for(q)
            rows = cached[t_stale][i]
            stale.add(world, q, rows[:k], snaps[t_stale].price[rows[:k]], live_elig, k)
            for acc, src in ((filt, cached[t_stale][i]), (mitig, cached[t_ttl][i])):
                sc = attraction_logits(world, q.request_id, src, live_price)  # price re-read at serve time
                ids, _ = rerank(world.item_ids[src], sc, world.state, q.ts, k, NO_CAP)
                r = world.state.indices(ids)
                acc.add(world, q, r, live_price[r], live_elig, k)
        out.append({"age_s": a, "age": fmt_age(a), **stale.result(), "filter_only": filt.result(),
                    "mitigated": mitig.result()})
        if progress:
            progress(f"age {fmt_age(a)} served")
    ref = next((s for s in out if s["age_s"] == 0), out[0])
    for s in out:
        for d, r in ((s, ref), (s["filter_only"], ref), (s["mitigated"], ref)):
            d["click_loss"] = _loss(d["clicks_per_request"], r["clicks_per_request"])
            d["purchase_loss"] = _loss(d["purchases_per_request"], r["purchases_per_request"])
    return {"kind": "simulate_stale_inventory", "config": _cfg_json(cfg), "serve_time": from_us(t_serve).isoformat(),
            "n_requests": cfg.n_requests, "live_oos_share": float((world.state.stock == 0).mean()),
            "snapshots": out}


def _cfg_json(cfg: StaleInventoryConfig) -> dict:
    d = asdict(cfg)
    d["sim"] = cfg.sim.to_json()
    d["ages_s"] = list(cfg.ages_s)
    return d


def stale_inventory_report(result: dict):
    """A `Report` with the per-age table and charts of true CTR, purchases and shown out-of-stock share."""
    from recs.reports import Report

    snaps = result["snapshots"]
    hours = [s["age_s"] / 3600 for s in snaps]
    rep = Report("Stale inventory: serving from snapshots of growing age",
                 f"{result['n_requests']} requests served at {result['serve_time']}")
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
    rep.line_chart("True CTR against snapshot age", {
        "stale": (hours, [s["true_ctr"] for s in snaps]),
        "serve-time filter + price re-read": (hours, [s["filter_only"]["true_ctr"] for s in snaps]),
        "all mitigations (+ TTL)": (hours, [s["mitigated"]["true_ctr"] for s in snaps])},
        x_label="snapshot age (hours)", y_label="true CTR")
    rep.line_chart("Expected purchases per request against snapshot age", {
        "stale": (hours, [s["purchases_per_request"] for s in snaps]),
        "serve-time filter + price re-read": (hours, [s["filter_only"]["purchases_per_request"] for s in snaps]),
        "all mitigations (+ TTL)": (hours, [s["mitigated"]["purchases_per_request"] for s in snaps])},
        x_label="snapshot age (hours)", y_label="purchases / request", y_zero=True)
    rep.line_chart("Shown items out of stock at serve time", {
        "stale": (hours, [s["oos_shown_share"] for s in snaps]),
        "mitigated": (hours, [s["mitigated"]["oos_shown_share"] for s in snaps])},
        x_label="snapshot age (hours)", y_label="share of shown items", y_zero=True)
    rep.paragraph("Ranker: the simulator's oracle reading eligibility and prices from the snapshot (so every loss "
                  "here is caused by staleness alone). The live state moves by the logging policy's traffic (sales), "
                  "restocks, price changes and restrictions in 15-minute steps. `price changed`: shown items whose "
                  "cached price differs from the live one. With the price re-read the displayed price is the live "
                  "one by construction.")
    rep.kv(result["config"], title="Configuration", flatten=1)
    return rep
