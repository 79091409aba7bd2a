"""The simulated world: catalog, users, live inventory and the hidden truth that scores any slate."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.online_state import OnlineState, to_us
from recs.datasets.policy import Request
from recs.sim import choice
from recs.sim.catalog import (
    Catalog, Users, build_catalog, build_users, intent_probs, sample_price_sens, sample_user_vectors,
)
from recs.sim.config import SimConfig

NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Context:
    """A request plus what only the simulator knows about it."""

    request: Request
    user_row: int            # -1 for anonymous
    vec: np.ndarray          # (dim,) true preference vector
    price_sens: float
    intent: int              # search intent subcategory, -1 on home


@dataclass(frozen=True)
class SlateReward:
    """Expected outcome of showing a slate: clicks, purchases and revenue per request; violations shown."""

    clicks: float
    purchases: float
    revenue: float
    violations: int


def slate_reward(world: "World", idx: np.ndarray, p_click: np.ndarray, p_buy: np.ndarray,
                 avail: np.ndarray) -> SlateReward:
    """The slate's totals from `World.slot_rewards`' per-slot arrays (revenue at the live prices)."""
    if len(idx) == 0:
        return SlateReward(0.0, 0.0, 0.0, 0)
    revenue = float((p_buy * world.state.price[idx]).sum())
    return SlateReward(float(p_click.sum()), float(p_buy.sum()), revenue, int((~avail).sum()))


class World:
    """Catalog, users, live inventory (`state`) and the ground-truth oracle."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 1])
        self.catalog: Catalog = build_catalog(cfg, rng)
        self.users: Users = build_users(cfg, self.catalog, rng)
        self.item_ids = self.catalog.item_ids()
        self.user_ids = self.users.user_ids()
        n_sel = self.catalog.n_sellers
        self.seller_ids = np.array([f"sel{j:05d}" for j in range(n_sel)], dtype=object)
        self.seller_blocked_us = np.full(n_sel, NEVER, dtype=np.int64)
        n_blocked = max(1, round(cfg.blocked_seller_share * n_sel)) if cfg.blocked_seller_share > 0 else 0
        blocked = rng.choice(n_sel, size=min(n_blocked, n_sel), replace=False)
        span = cfg.days * 86_400 * 10**6
        self.seller_blocked_us[blocked] = to_us(cfg.start) + rng.integers(0, span, len(blocked))
        self.logger_item_vec = self.catalog.vec + rng.normal(0, 0.6, self.catalog.vec.shape) / (np.sqrt(cfg.dim) / 1.6)
        sub = self.catalog.subcat
        n_sub = len(self.catalog.subcat_names)
        ref = np.array([np.median(self.catalog.price[sub == s]) if np.any(sub == s) else 1.0 for s in range(n_sub)])
        self.log_ref_price = np.log(ref)
        self.logger_centroids = np.stack([
            self.logger_item_vec[sub == s].mean(axis=0) if np.any(sub == s) else np.zeros(cfg.dim)
            for s in range(n_sub)])
        self.subcat_popularity = np.bincount(sub, weights=np.exp(self.catalog.prior), minlength=n_sub)
        self.prefix_subcats = self._prefix_map()
        self.state = OnlineState(self.catalog_frame(), self.sellers_frame())
        self.now = cfg.start
        self.contexts: dict[str, Context] = {}
        self._ctx_seq = 0

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: SimConfig) -> "World":
        """A fresh world at the start of its period (no traffic yet)."""
        return cls(cfg)

    @classmethod
    def load(cls, dataset_dir: str | Path) -> "World":
        """The world of a generated dataset, with its inventory as at the end of the log."""
        d = Path(dataset_dir)
        cfg_file = d / "truth" / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file}: not a simulated dataset (no truth/config.json)")
        cfg = SimConfig.from_json(json.loads(cfg_file.read_text()))
        world = cls(cfg)
        final = pl.read_parquet(d / "truth" / "final_state.parquet").sort("item_id")
        if final.height != len(world.item_ids):
            raise ValueError(f"{d}: truth/final_state.parquet does not match the configured catalog")
        world.state.price[:] = final["price"].to_numpy()
        world.state.stock[:] = final["stock"].to_numpy()
        world.state.restricted[:] = final["restricted"].to_numpy()
        world.state.version += 1
        world.now = cfg.start + timedelta(days=cfg.days)
        return world

    def _prefix_map(self) -> dict[str, np.ndarray]:
        out: dict[str, list[int]] = {}
        for s, name in enumerate(self.catalog.subcat_names):
            for n in range(1, len(name) + 1):
                out.setdefault(name[:n], []).append(s)
        return {p: np.array(v) for p, v in out.items()}

    def catalog_frame(self) -> pl.DataFrame:
        c = self.catalog
        return pl.DataFrame({
            "item_id": self.item_ids.tolist(),
            "category": [c.category_names[k] for k in c.category],
            "subcategory": [c.subcat_names[s] for s in c.subcat],
            "seller_id": self.seller_ids[c.seller].tolist(),
            "brand": [c.brand_names[b] for b in c.brand],
            "title": c.titles(),
            "price": c.price.astype(np.float64),
            "stock": c.stock.astype(np.int64),
            "restricted": c.restricted.astype(bool),
            "created_at": pl.Series(c.created_us).cast(pl.Datetime("us", "UTC")),
        })

    def sellers_frame(self) -> pl.DataFrame:
        b = np.where(self.seller_blocked_us == NEVER, None, self.seller_blocked_us)
        return pl.DataFrame({
            "seller_id": self.seller_ids.tolist(),
            "blocked_from": pl.Series(b.tolist(), dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        })

    def users_frame(self) -> pl.DataFrame:
        return pl.DataFrame({
            "user_id": self.user_ids.tolist(),
            "created_at": pl.Series(self.users.created_us).cast(pl.Datetime("us", "UTC")),
        })

    # ---- live state ---------------------------------------------------------------------------------------
    def eligible(self, ts: datetime | int) -> np.ndarray:
        """(M,) items that may be shown at `ts`: in stock, not restricted, seller not blocked, already created."""
        t = ts if isinstance(ts, (int, np.integer)) else to_us(ts)
        s = self.state
        return ((s.stock > 0) & ~s.restricted & (s.created_us <= t)
                & (self.seller_blocked_us[self.catalog.seller] > t))

    def rel_price(self, idx: np.ndarray) -> np.ndarray:
        """Log price relative to the subcategory's reference price, at the live price."""
        return np.log(self.state.price[idx]) - self.log_ref_price[self.catalog.subcat[idx]]

    # ---- truth --------------------------------------------------------------------------------------------
    def new_context(self, ts: datetime, surface: str, rng: np.random.Generator, session_id: str | None = None,
                    user_row: int | None = None, recent_items: tuple[str, ...] = ()) -> Context:
        """Draw a fresh request (user or anonymous visitor, intent and typed prefix on search) and register it."""
        cfg = self.cfg
        if user_row is None:
            anon = rng.random() < cfg.anonymous_share
            user_row = -1 if anon else int(rng.choice(self.users.n, p=self.users.activity))
        if user_row >= 0:
            vec, ps, uid = self.users.vec[user_row], float(self.users.price_sens[user_row]), self.user_ids[user_row]
        else:
            vec = sample_user_vectors(self.catalog, 1, cfg.dim, rng)[0]
            ps, uid = float(sample_price_sens(rng)), None
        intent, query = -1, None
        if surface == "search":
            intent, query = self.draw_intent(vec[None, :], rng)
            intent, query = int(intent[0]), query[0]
        self._ctx_seq += 1
        rid = f"q{cfg.seed:03d}-{self._ctx_seq:09d}"
        req = Request(rid, ts, surface, uid, session_id or f"qs{self._ctx_seq:09d}", query, recent_items)
        ctx = Context(req, user_row, vec, ps, intent)
        self.contexts[rid] = ctx
        return ctx

    def draw_intent(self, vecs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        """Search intent subcategory ~ softmax(2 u.centroid) and a typed prefix of 2-4 characters of its name."""
        p = intent_probs(self.catalog, vecs)
        u = rng.random((len(vecs), 1))
        intent = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)
        lengths = rng.integers(2, 5, len(vecs))
        names = self.catalog.subcat_names
        return intent, [names[s][:n] for s, n in zip(intent, lengths)]

    def click_probs(self, ctx: Context, idx: np.ndarray, ts: datetime | None = None) -> tuple[np.ndarray, ...]:
        """Per-position P(click), P(purchase) and availability for item rows `idx` shown in order to `ctx`."""
        cfg, c = self.cfg, self.catalog
        k = len(idx)
        exam = choice.examination(k, cfg)
        rel = self.rel_price(idx)[None, :]
        intent = (c.subcat[idx] == ctx.intent)[None, :] if ctx.intent >= 0 else None
        logit = choice.attraction_logit(ctx.vec[None, :], c.vec[idx][None, :, :], c.quality[idx][None, :], rel,
                                        np.array([ctx.price_sens]), intent, cfg)[0]
        avail = self.eligible(ts or ctx.request.ts)[idx]
        attr = choice.sigmoid(logit) * np.where(avail, 1.0, cfg.unavailable_attraction)
        p_click = exam * attr
        p_buy = p_click * choice.p_cart_given_click(c.quality[idx][None, :], rel, np.array([ctx.price_sens]))[0] \
            * cfg.purchase_given_cart * avail
        return p_click, p_buy, avail

    def slot_rewards(self, request: Request, item_ids) -> tuple[np.ndarray, ...]:
        """Per slot of `item_ids` (in order) for `request`: the item rows, P(click), P(purchase), availability."""
        ctx = self.contexts.get(request.request_id)
        if ctx is None:
            raise KeyError(f"request {request.request_id!r} was not drawn by this world")
        idx = self.state.indices(list(item_ids))
        if np.any(idx < 0):
            raise KeyError(f"unknown item ids in slate: {[i for i, j in zip(item_ids, idx) if j < 0][:3]}")
        if len(idx) == 0:
            return idx, np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
        return (idx, *self.click_probs(ctx, idx))

    def expected_reward(self, request: Request, item_ids) -> SlateReward:
        """Ground-truth expected clicks, purchases and revenue of showing `item_ids` (in order) for `request`."""
        return slate_reward(self, *self.slot_rewards(request, item_ids))

    def sample_requests(self, n: int, seed: int, ts: datetime | None = None) -> list[Request]:
        """`n` fresh requests (first requests of new sessions) at `ts` (default: the world's current time)."""
        rng = np.random.default_rng([self.cfg.seed, 7, seed])
        ts = ts or self.now
        out = []
        for _ in range(n):
            surface = "search" if rng.random() < self.cfg.search_share else "home"
            out.append(self.new_context(ts, surface, rng).request)
        return out

    def k_for(self, request: Request) -> int:
        return self.cfg.k_search if request.surface == "search" else self.cfg.k_home

    # policies -------------------------------------------------------------------------------------------------
    def logging_policy(self):
        from recs.sim.logging_policy import LoggingPolicy
        return LoggingPolicy(self)

    def oracle_policy(self):
        from recs.sim.policies import OraclePolicy
        return OraclePolicy(self)

    def informed_policy(self):
        from recs.sim.policies import InformedPolicy
        return InformedPolicy(self)

    def uniform_policy(self):
        from recs.sim.policies import UniformPolicy
        return UniformPolicy(self)

    def log_policy(self, policy, n_requests: int, seed: int):
        from recs.sim.run import log_policy
        return log_policy(policy, n_requests, seed, self)
