"""Run any policy on fresh simulated traffic: its true value (`run_policy`) or a logged sample (`log_policy`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recs.datasets.policy import Policy, Request
from recs.sim.world import slate_reward


@dataclass(frozen=True)
class PolicyValue:
    """True expected value of a policy per request and per impression, with the standard error of its CTR."""

    ctr: float
    ctr_stderr: float
    clicks_per_request: float
    purchase_rate: float
    revenue_per_request: float
    n_requests: int
    violations: int = 0
    empty_share: float = 0.0

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class RequestRewards:
    """Per-request true expected rewards of one policy (arrays aligned with the requests it ran on)."""

    clicks: np.ndarray
    purchases: np.ndarray
    revenue: np.ndarray
    shown: np.ndarray
    violations: np.ndarray
    subset_clicks: np.ndarray | None = None   # expected clicks on the slots of `request_rewards`' `item_subset`
    subset_shown: np.ndarray | None = None    # how many of the shown items were in it

    def subset_value(self, mask: np.ndarray | None = None) -> dict:
        """The item subset's share of shown slots, the true CTR of those slots (None without one) and its expected
        clicks per request, on all requests or on those where `mask` is true."""
        if self.subset_clicks is None or self.subset_shown is None:
            raise ValueError("no item subset: pass item_subset to request_rewards")
        m = np.ones(len(self.clicks), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if not m.any():
            raise ValueError("no requests in the segment")
        slots, clicks = float(self.subset_shown[m].sum()), float(self.subset_clicks[m].sum())
        return {"slot_share": slots / max(float(self.shown[m].sum()), 1.0),
                "ctr": clicks / slots if slots else None,
                "clicks_per_request": clicks / int(m.sum())}

    def value(self, mask: np.ndarray | None = None) -> PolicyValue:
        """The policy's value on all requests, or on those where `mask` is true (a segment)."""
        m = np.ones(len(self.clicks), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if not m.any():
            raise ValueError("no requests in the segment")
        clicks, shown = self.clicks[m], self.shown[m]
        total_shown = max(shown.sum(), 1.0)
        ctr = clicks.sum() / total_shown
        # ratio estimator's standard error across requests (delta method)
        se = float(np.sqrt(((clicks - ctr * shown) ** 2).sum()) / total_shown)
        return PolicyValue(float(ctr), se, float(clicks.mean()), float(self.purchases[m].sum() / total_shown),
                           float(self.revenue[m].mean()), int(m.sum()), int(self.violations[m].sum()),
                           float((shown == 0).mean()))


def request_rewards(policy: Policy, requests: list[Request], world, item_subset: np.ndarray | None = None
                    ) -> RequestRewards:
    """Each request ranked by `policy` and scored by the simulator's truth (expected, not sampled, rewards).

    `item_subset` (a boolean mask over the world's item rows, e.g. the items created after a model's training
    window) also records, per request, how many shown slots held such items and their expected clicks."""
    if not requests:
        raise ValueError("no requests to run the policy on")
    n = len(requests)
    clicks, buys, rev, shown = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    violations = np.zeros(n, dtype=np.int64)
    sub_clicks, sub_shown = (np.zeros(n), np.zeros(n)) if item_subset is not None else (None, None)
    for i, req in enumerate(requests):
        ranking = policy.rank(req, world.k_for(req))
        slots = world.slot_rewards(req, ranking.item_ids)      # (rows, P(click), P(purchase), availability)
        r = slate_reward(world, *slots)
        clicks[i], buys[i], rev[i], shown[i] = r.clicks, r.purchases, r.revenue, len(ranking.item_ids)
        violations[i] = r.violations
        if item_subset is not None and len(slots[0]):
            inside = item_subset[slots[0]]
            sub_clicks[i], sub_shown[i] = float(slots[1][inside].sum()), float(inside.sum())
    return RequestRewards(clicks, buys, rev, shown, violations, sub_clicks, sub_shown)


def run_policy(policy: Policy, n_requests: int, seed: int, world, requests: list[Request] | None = None
               ) -> PolicyValue:
    """The policy's true value on `n_requests` fresh requests (same seed, same requests for every policy)."""
    if n_requests <= 0:
        raise ValueError("n_requests must be positive")
    requests = world.sample_requests(n_requests, seed) if requests is None else requests
    return request_rewards(policy, requests, world).value()


def log_policy(policy: Policy, n_requests: int, seed: int, world) -> tuple[pl.DataFrame, dict[str, Request]]:
    """Logged traffic under `policy`: canonical impressions (+ `purchase`, `revenue`, `p_click`) and the requests."""
    rng = np.random.default_rng([world.cfg.seed, 11, seed])
    requests = world.sample_requests(n_requests, seed + 1_000_003)
    rows: dict[str, list] = {c: [] for c in ("request_id", "ts", "user_id", "session_id", "surface", "query",
                                             "item_id", "position", "propensity", "clicked", "purchase",
                                             "revenue", "p_click")}
    for req in requests:
        k = world.k_for(req)
        ranking = policy.rank(req, k)
        if not ranking.item_ids:
            continue
        sp = policy.slot_probabilities(req, k, include=ranking.item_ids) \
            if _accepts_include(policy) else policy.slot_probabilities(req, k)
        col = {iid: j for j, iid in enumerate(sp.item_ids)}
        ctx = world.contexts[req.request_id]
        idx = world.state.indices(list(ranking.item_ids))
        p_click, p_buy, _ = world.click_probs(ctx, idx)
        clicked = rng.random(len(idx)) < p_click
        bought = clicked & (rng.random(len(idx)) < np.divide(p_buy, p_click, out=np.zeros_like(p_buy),
                                                               where=p_click > 0))
        for p, iid in enumerate(ranking.item_ids):
            j = col.get(iid)
            prop = float(sp.probs[p, j]) if j is not None and p < sp.probs.shape[0] else 0.0
            rows["request_id"].append(req.request_id)
            rows["ts"].append(req.ts)
            rows["user_id"].append(req.user_id)
            rows["session_id"].append(req.session_id)
            rows["surface"].append(req.surface)
            rows["query"].append(req.query)
            rows["item_id"].append(iid)
            rows["position"].append(p)
            rows["propensity"].append(prop)
            rows["clicked"].append(bool(clicked[p]))
            rows["purchase"].append(bool(bought[p]))
            rows["revenue"].append(float(world.state.price[idx[p]]) if bought[p] else 0.0)
            rows["p_click"].append(float(p_click[p]))
    df = pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us", "UTC"), "user_id": pl.Utf8,
                                              "query": pl.Utf8, "position": pl.Int64})
    df = df.with_columns(pl.lit(policy.policy_id).alias("policy_id"))
    return df, {r.request_id: r for r in requests}


def _accepts_include(policy) -> bool:
    import inspect

    try:
        return "include" in inspect.signature(policy.slot_probabilities).parameters
    except (TypeError, ValueError):
        return False
