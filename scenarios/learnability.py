"""How much of a registered user's taste the logs reveal, even to a learner that knows every item's true parameters.

A diagnostic on the simulator (it cheats on purpose: never a product). On the training days of a dataset, each
registered user's taste vector is fitted by full-batch L-BFGS under the simulator's own choice model with the TRUE
item vectors and qualities (only the user vectors, a global offset, a quality weight and the examination curve are
learnt). Logged-in home requests are then ranked over all eligible items by

- `learnt_from_clicks`: the fitted vectors;
- `shown_centroid`: the mean true vector of the items the logging policy showed the user (what it believed);
- `clicks_plus_shown`: the sum of the two;
- `logger_belief`: the logging policy's own noisy vector for the user (information the logs never hold);
- `true_taste`: the user's true vector (the informed ceiling without the price term);
- `items_from_clicks`: the other way round: the TRUE user vectors, with item vectors and qualities fitted on the
  same impressions (each item's own part shrunk towards its subcategory's; items never shown get their
  subcategory's): what the logs reveal about the items, given perfect knowledge of the users;

and each ranking's true CTR is computed from the simulator. If even these stay below a target, no pipeline learnt
from the same logs can reach it by better item modelling alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl


@dataclass(frozen=True)
class LearnabilityConfig:
    n_requests: int = 2_000     # fresh requests drawn; the logged-in home ones are ranked
    seed: int = 29
    l2: float = 1.0             # Gaussian prior on the user vectors (per parameter)
    item_l2: float = 3.0        # Gaussian prior on item and subcategory vectors and biases (click model's default)
    max_iter: int = 300
    holdout_days: int = 1       # training days end where `recs train all` ends them


def _impression_tensors(world, imp: pl.DataFrame):
    """(item row, user row, position, surface 1 = search, clicked) of each logged impression, as torch tensors."""
    import torch

    iidx = {i: j for j, i in enumerate(world.item_ids)}
    uidx = {u: j for j, u in enumerate(world.user_ids)}
    return (torch.tensor([iidx[i] for i in imp["item_id"].to_list()]),
            torch.tensor([uidx[u] for u in imp["user_id"].to_list()]),
            torch.tensor(imp["position"].to_numpy().clip(0, 19).astype(np.int64)),
            torch.tensor((imp["surface"] == "search").to_numpy().astype(np.int64)),
            torch.tensor(imp["clicked"].to_numpy().astype(np.float32)))


def _minimise(P: dict, loss, max_iter: int) -> None:
    """Full-batch L-BFGS of `loss()` over the tensors of `P`, on one thread (bit-reproducible, as the click model)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for t in P.values():
            t.requires_grad_(True)
        opt = torch.optim.LBFGS(list(P.values()), lr=1, max_iter=max_iter, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            value = loss()
            value.backward()
            return value

        opt.step(closure)
    finally:
        torch.set_num_threads(threads)


def fit_users(world, imp: pl.DataFrame, cfg: LearnabilityConfig) -> np.ndarray:
    """User vectors (n_users, dim) fitted on logged impressions with the true item parameters held fixed."""
    import torch

    from recs.models.retrievers.click_model_fit import position_based_nll

    c = world.catalog
    it, us, pos, surf, y = _impression_tensors(world, imp)
    V, Q = torch.tensor(c.vec, dtype=torch.float32), torch.tensor(c.quality, dtype=torch.float32)
    P = {"U": torch.zeros(len(world.user_ids), V.shape[1]), "g": torch.full((1,), -1.0), "a": torch.ones(1),
         "theta": torch.zeros(2, 20)}
    n = len(y)

    def loss():
        z = P["g"] + P["a"] * Q[it] + (P["U"][us] * V[it]).sum(1)
        return position_based_nll(P["theta"][surf, pos], z, y).sum() / n + cfg.l2 * (P["U"] ** 2).sum() / n

    _minimise(P, loss, cfg.max_iter)
    return P["U"].detach().numpy().astype(np.float64)


def _fit_items(world, imp: pl.DataFrame, cfg: LearnabilityConfig) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors and qualities fitted on logged impressions with the TRUE user vectors held fixed: each
    item's = its subcategory's part + its own part, both under the prior `item_l2` (a rarely shown item stays near
    its subcategory's, and with few users the subcategory parts cannot run away)."""
    import torch

    from recs.models.retrievers.click_model_fit import position_based_nll

    c = world.catalog
    it, us, pos, surf, y = _impression_tensors(world, imp)
    U = torch.tensor(world.users.vec, dtype=torch.float32)
    sub = torch.tensor(c.subcat)
    n_sub, d = int(sub.max()) + 1, c.vec.shape[1]
    names = c.subcat_names
    # on the search bar, whether the item's subcategory fits the typed prefix (the click model's match term)
    match = torch.tensor([q is not None and s == "search" and names[c.subcat[j]].startswith(q.lower())
                          for q, s, j in zip(imp["query"].to_list(), imp["surface"].to_list(), it.tolist())],
                         dtype=torch.float32)
    P = {"E": torch.zeros(len(c.subcat), d), "C": torch.zeros(n_sub, d), "b": torch.zeros(len(c.subcat)),
         "bs": torch.zeros(n_sub), "g": torch.full((1,), -1.0), "theta": torch.zeros(2, 20), "w": torch.zeros(1)}
    n = len(y)

    def loss():
        V, q = P["E"] + P["C"][sub], P["b"] + P["bs"][sub]
        z = P["g"] + q[it] + (U[us] * V[it]).sum(1) + P["w"] * match
        prior = cfg.item_l2 * sum((P[k] ** 2).sum() for k in ("E", "b", "C", "bs"))
        return position_based_nll(P["theta"][surf, pos], z, y).sum() / n + prior / n

    _minimise(P, loss, cfg.max_iter)
    with torch.no_grad():
        V, q = P["E"] + P["C"][sub], P["b"] + P["bs"][sub]
    return V.numpy().astype(np.float64), q.numpy().astype(np.float64)


class _TasteRanking:
    """Ranks every eligible item by quality + item vector . the user's taste (true item parameters unless given)."""

    def __init__(self, world, taste: np.ndarray, user_index: dict[str, int], item_vec: np.ndarray | None = None,
                 quality: np.ndarray | None = None) -> None:
        self.world, self.taste, self.user_index = world, taste, user_index
        self.vec = world.catalog.vec if item_vec is None else item_vec
        self.quality = world.catalog.quality if quality is None else quality

    def rank(self, request, k: int):
        from recs.sim.policies import top_k_ranking

        w = self.world
        rows = np.flatnonzero(w.eligible(request.ts))
        score = self.quality[rows] + self.vec[rows] @ self.taste[self.user_index[request.user_id]]
        return top_k_ranking(w, rows, score, k, "learnability")


def registered_training_impressions(dataset: str | Path, cfg: LearnabilityConfig) -> pl.DataFrame:
    """Registered users' impressions of the days `recs train all` trains on (its hold-out left out)."""
    from recs.datasets.io import read_table
    from recs.models.train import TrainConfig, time_split

    imp = read_table(Path(dataset), "impressions")
    # where `recs train all` ends its training window (ranker_days does not move it)
    train_end = time_split(imp, TrainConfig(holdout_days=cfg.holdout_days, ranker_days=1))["train_end"]
    return imp.filter((pl.col("ts") < train_end) & pl.col("user_id").is_not_null())


def taste_estimates(world, imp: pl.DataFrame, cfg: LearnabilityConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Registered users' tastes (n_users, dim) from their logged impressions, given the true items: fitted on the
    clicks, the mean true vector of what the logger showed them, and the sum; and which users have impressions."""
    fitted = fit_users(world, imp, cfg)
    uidx = {u: j for j, u in enumerate(world.user_ids)}
    iidx = {i: j for j, i in enumerate(world.item_ids)}
    users = np.array([uidx[u] for u in imp["user_id"].to_list()], dtype=np.int64)
    items = np.array([iidx[i] for i in imp["item_id"].to_list()], dtype=np.int64)
    counts = np.bincount(users, minlength=len(world.user_ids))
    shown = np.zeros_like(fitted)
    np.add.at(shown, users, world.catalog.vec[items])
    shown /= np.maximum(counts, 1)[:, None]
    return {"learnt_from_clicks": fitted, "shown_centroid": shown, "clicks_plus_shown": fitted + shown}, counts > 0


def user_learnability(dataset: str | Path, cfg: LearnabilityConfig = LearnabilityConfig()) -> dict:
    """True CTR of logged-in home requests ranked by each taste estimate (see the module docstring)."""
    from recs.sim import World, run_policy

    world = World.load(dataset)
    imp = registered_training_impressions(dataset, cfg)
    estimates, _ = taste_estimates(world, imp, cfg)
    estimates.update({"logger_belief": world.users.logger_vec, "true_taste": world.users.vec})
    uidx = {u: j for j, u in enumerate(world.user_ids)}
    reqs = [r for r in world.sample_requests(cfg.n_requests, cfg.seed)
            if r.user_id is not None and r.surface == "home"]
    per_user = imp.group_by("user_id").agg(pl.len().alias("impressions"), pl.col("clicked").sum().alias("clicks"))
    out: dict = {"n_requests": len(reqs), "n_impressions": imp.height, "n_users": per_user.height,
                 "per_user": {f"{stat}_{col}": float(getattr(per_user[col], stat)())
                              for stat in ("mean", "median") for col in ("impressions", "clicks")}, "ctr": {}}
    for name, est in estimates.items():
        out["ctr"][name] = run_policy(_TasteRanking(world, est, uidx), len(reqs), 0, world, requests=reqs).ctr
    V, q = _fit_items(world, imp, cfg)
    out["ctr"]["items_from_clicks"] = run_policy(_TasteRanking(world, world.users.vec, uidx, V, q), len(reqs), 0,
                                                 world, requests=reqs).ctr
    out["ctr"]["logging"] = run_policy(world.logging_policy(), len(reqs), 0, world, requests=reqs).ctr
    out["ctr"]["oracle"] = run_policy(world.oracle_policy(), len(reqs), 0, world, requests=reqs).ctr
    return out
