"""One hour of simulated traffic under the logging policy, vectorised over sessions and their requests."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recs.sim import choice
from recs.sim.catalog import sample_price_sens, sample_user_vectors
from recs.sim.logging_policy import LoggingCore


@dataclass
class HourLog:
    """Arrays of one hour's traffic: one entry per request (`req_*`) and per impression (`imp_*`)."""

    req_seq: list = field(default_factory=list)
    req_ts: list = field(default_factory=list)
    req_user: list = field(default_factory=list)
    req_session: list = field(default_factory=list)
    req_search: list = field(default_factory=list)
    req_prefix: list = field(default_factory=list)
    req_intent: list = field(default_factory=list)
    req_slate_prop: list = field(default_factory=list)
    req_vec: list = field(default_factory=list)
    req_price_sens: list = field(default_factory=list)
    imp_req: list = field(default_factory=list)      # request seq of each impression
    imp_item: list = field(default_factory=list)
    imp_pos: list = field(default_factory=list)
    imp_prop: list = field(default_factory=list)
    imp_click: list = field(default_factory=list)
    imp_cart: list = field(default_factory=list)
    imp_buy: list = field(default_factory=list)
    imp_p_click: list = field(default_factory=list)
    imp_p_buy: list = field(default_factory=list)
    imp_price: list = field(default_factory=list)    # live price when shown (what a purchase pays)
    sold: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if isinstance(v, list):
                out[name] = np.concatenate(v) if v else np.zeros(0)
        return out


DIURNAL = np.array([0.5, 0.3, 0.2, 0.2, 0.3, 0.5, 0.8, 1.0, 1.1, 1.1, 1.1, 1.2, 1.3, 1.2, 1.1, 1.1, 1.2, 1.3,
                    1.5, 1.7, 1.8, 1.6, 1.2, 0.8])
DIURNAL = DIURNAL / DIURNAL.sum()


def simulate_hour(world, core: LoggingCore, t0_us: int, n_requests: int, counters: dict,
                  rng: np.random.Generator) -> HourLog:
    """Sessions starting in the hour from `t0_us`; each request served by the logging policy and clicked on."""
    cfg, cat, users = world.cfg, world.catalog, world.users
    log = HourLog()
    elig = world.eligible(t0_us)
    lists = core.candidate_lists(elig)
    n_sess = max(1, int(round(n_requests / cfg.session_mean_requests)))
    length = np.minimum(rng.geometric(1.0 / cfg.session_mean_requests, n_sess), 8)
    anon = rng.random(n_sess) < cfg.anonymous_share
    user = np.where(anon, -1, rng.choice(users.n, size=n_sess, p=users.activity))
    vec = np.where(anon[:, None], sample_user_vectors(cat, n_sess, cfg.dim, rng), users.vec[np.maximum(user, 0)])
    ps = np.where(anon, sample_price_sens(rng, n_sess), users.price_sens[np.maximum(user, 0)])
    sess = counters["session"] + np.arange(n_sess)
    counters["session"] += n_sess
    ts = t0_us + rng.integers(0, 3_600 * 10**6, n_sess)
    recent: list[list[int]] = [[] for _ in range(n_sess)]
    sold = np.zeros(cat.n, dtype=np.int64)
    for r in range(int(length.max())):
        if r:  # sessions end at the end of their hour: eligibility is evaluated per hour (docs/SIM.md)
            nxt = np.flatnonzero(length > r)
            ts[nxt] += rng.integers(30, 300, len(nxt)) * 10**6
            over = nxt[ts[nxt] >= t0_us + 3_600 * 10**6]
            length[over] = r
        act = np.flatnonzero(length > r)
        R = len(act)
        if R == 0:
            break
        search = rng.random(R) < cfg.search_share
        intent = np.full(R, -1)
        prefixes: list[str | None] = [None] * R
        if search.any():
            s_idx = np.flatnonzero(search)
            it, pf = world.draw_intent(vec[act[s_idx]], rng)
            intent[s_idx] = it
            for j, p in zip(s_idx, pf):
                prefixes[j] = p
        recent_rows = [np.array(recent[a][-10:], dtype=np.int64) for a in act]
        est = core.user_estimate(user[act], recent_rows)
        pools = core.pools(est, prefixes, elig, lists)
        k = np.where(search, cfg.k_search, cfg.k_home)
        slates = core.sample(pools, k, elig, rng)
        prop = core.propensity(pools, slates, k, elig)
        slate_prop = core.slate_propensity(pools, slates, k, elig)
        shown = slates >= 0
        safe = np.maximum(slates, 0)
        rel = np.log(world.state.price[safe]) - world.log_ref_price[cat.subcat[safe]]
        match = np.where(intent[:, None] >= 0, cat.subcat[safe] == intent[:, None], False)
        logit = choice.attraction_logit(vec[act], cat.vec[safe], cat.quality[safe], rel, ps[act], None, cfg)
        logit += np.where(search[:, None], np.where(match, cfg.search_intent_boost, -cfg.search_intent_boost), 0.0)
        p_click = choice.examination(slates.shape[1], cfg)[None, :] * choice.sigmoid(logit) * shown
        p_cart = choice.p_cart_given_click(cat.quality[safe], rel, ps[act])
        click = rng.random(slates.shape) < p_click
        cart = click & (rng.random(slates.shape) < p_cart)
        buy = cart & (rng.random(slates.shape) < cfg.purchase_given_cart) & (world.state.stock[safe] > 0)
        np.add.at(sold, safe[buy], 1)
        for j in np.flatnonzero(click.any(axis=1)):
            recent[act[j]].extend(slates[j][click[j]].tolist())
        seq = counters["request"] + np.arange(R)
        counters["request"] += R
        log.req_seq.append(seq)
        log.req_ts.append(ts[act].copy())
        log.req_user.append(user[act])
        log.req_session.append(sess[act])
        log.req_search.append(search)
        log.req_prefix.append(np.array(prefixes, dtype=object))
        log.req_intent.append(intent)
        log.req_slate_prop.append(slate_prop)
        log.req_vec.append(vec[act])
        log.req_price_sens.append(ps[act])
        rr, pp = np.nonzero(shown)
        log.imp_req.append(seq[rr])
        log.imp_item.append(slates[rr, pp])
        log.imp_pos.append(pp)
        log.imp_prop.append(prop[rr, pp])
        log.imp_click.append(click[rr, pp])
        log.imp_cart.append(cart[rr, pp])
        log.imp_buy.append(buy[rr, pp])
        log.imp_p_click.append(p_click[rr, pp])
        log.imp_price.append(world.state.price[slates[rr, pp]])
        log.imp_p_buy.append((p_click * p_cart * cfg.purchase_given_cart * (world.state.stock[safe] > 0))[rr, pp])
    log.sold = sold
    return log
