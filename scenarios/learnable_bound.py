"""A generous upper bound on what a policy learnt from a dataset's logs can reach, over every kind of request.

A diagnostic on the simulator (it cheats on purpose: never a product). The informed policy
(`sim.World.informed_policy`) knows every item's true parameters and every registered user's true taste. This
bound keeps all it knows except the registered users' tastes, which it replaces by what the training days reveal
about them given the TRUE items (`scenarios.learnability`): the taste fitted on the user's clicks, the mean true
vector of what the logging policy showed them, or the sum of the two. Users without a training impression get the
population prior, like anonymous visitors. Everything else stays generous: the users' true price sensitivities,
the true item parameters, the exact population prior for anonymous visitors and the exact intent posterior on the
search bar; and the best of the three estimates is chosen on the very requests it is measured on. A pipeline has to
learn the items from the same logs as well, so if this bound stays under a target, nothing trained on these logs
reaches it. Measured on the requests `recs evaluate` uses (`scenarios.evaluate.true_ctr_requests`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recs.scenarios.evaluate import EvaluateConfig, true_ctr_requests
from recs.scenarios.learnability import LearnabilityConfig, registered_training_impressions, taste_estimates
from recs.sim.policies import InformedPolicy

ESTIMATES = ("learnt_from_clicks", "shown_centroid", "clicks_plus_shown")


class LearntTastePolicy(InformedPolicy):
    """The informed policy with registered users' true tastes replaced by `taste` rows (`known` False: the prior)."""

    policy_id = "sim-learnt-taste"

    def __init__(self, world, taste: np.ndarray, known: np.ndarray) -> None:
        super().__init__(world)
        self.taste, self.known = taste, known

    def visitor(self, ctx) -> tuple[np.ndarray, np.ndarray]:
        if ctx.user_row >= 0 and self.known[ctx.user_row]:
            return self.taste[ctx.user_row][None, :], np.array([ctx.price_sens])
        return self.prior_vec, self.prior_beta


def learnable_bound(dataset: str | Path, cfg: LearnabilityConfig = LearnabilityConfig(),
                    eval_cfg: EvaluateConfig = EvaluateConfig()) -> dict:
    """True CTR, overall and per segment, of logging, oracle, informed and the bound under each estimate, on the
    requests `recs evaluate` measures; `best` names the estimate with the highest overall CTR."""
    from recs.sim import World, request_rewards

    world = World.load(dataset)
    estimates, known = taste_estimates(world, registered_training_impressions(dataset, cfg), cfg)
    reqs = true_ctr_requests(world, eval_cfg)
    policies = {"logging": world.logging_policy(), "oracle": world.oracle_policy(),
                "informed": world.informed_policy(),
                **{f"bound_{k}": LearntTastePolicy(world, v, known) for k, v in estimates.items()}}
    masks = {"all": np.ones(len(reqs), dtype=bool), "anonymous": np.array([r.user_id is None for r in reqs]),
             "logged_in": np.array([r.user_id is not None for r in reqs]),
             "home": np.array([r.surface == "home" for r in reqs]),
             "search": np.array([r.surface == "search" for r in reqs])}
    ctr: dict[str, dict[str, float]] = {}
    for name, pol in policies.items():
        rewards = request_rewards(pol, reqs, world)
        ctr[name] = {seg: float(rewards.value(m).ctr) for seg, m in masks.items() if m.any()}
    best = max(ESTIMATES, key=lambda k: ctr[f"bound_{k}"]["all"])
    return {"n_requests": len(reqs), "users_with_impressions": int(known.sum()), "ctr": ctr, "best": best,
            "best_vs_logging": ctr[f"bound_{best}"]["all"] / ctr["logging"]["all"],
            "best_vs_oracle": ctr[f"bound_{best}"]["all"] / ctr["oracle"]["all"]}
