"""Where the pipeline loses true clicks: its true CTR next to ceilings that each remove one limitation.

On the simulator, on the same fresh requests (true expected CTR from `sim.run_policy`):

- `logging`, `pipeline`, `pipeline_no_ranker` (retrieval order), `embedding_only` (candidates by emb_score),
  `pipeline_no_category_cap` (the pipeline without the per-category diversity cap: what the cap costs);
- `feature_ceiling`: a LightGBM regressor fitted on the TRUE attraction logits of other fresh requests' candidates,
  over exactly the pipeline's features: the best any ranker on these features could do (a diagnostic that cheats
  on purpose; never a product);
- `candidate_oracle`: the pipeline's candidates ranked by true attraction: the retrieval ceiling;
- `informed`: true item parameters and registered users' tastes, population prior for anonymous visitors, intent
  posterior given the prefix on search (`sim.policies.InformedPolicy`): the ceiling of anything learnt from logs;
- `oracle`: knows every visitor's hidden taste and search intent.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from recs.datasets.policy import Ranking, Request
from recs.features.compute import compute_features
from recs.features.online import online_inputs
from recs.models.pipeline import Pipeline
from recs.models.rerank import RerankConfig, rerank


@dataclass(frozen=True)
class CeilingConfig:
    n_requests: int = 800        # evaluation requests
    n_fit_requests: int = 600    # requests whose true logits fit the feature ceiling
    seed: int = 17


class _CandidatePolicy:
    """Ranks the pipeline's candidates by a score function, then applies the same re-ranking and filters."""

    def __init__(self, pipe: Pipeline, score) -> None:
        self.pipe, self.score = pipe, score

    def rank(self, request: Request, k: int) -> Ranking:
        ids, feats = self.pipe.candidates(request)
        if not len(ids):
            return self.pipe.rank(request, k)
        s = self.score(request, ids, feats)
        cfg = self.pipe.rerank_cfg.for_surface(request.surface)
        out, sc = rerank(ids, s, self.pipe.state, request.ts, k, cfg, frozenset())
        out, sc, _ = self.pipe.new_item_slot(request, ids, s, out, sc, cfg, frozenset())   # as `Pipeline.rank`
        return Ranking(tuple(out), tuple(sc), ("diagnostic",))


class _WithRerank:
    """The pipeline with another re-ranking configuration (same candidates, features and ranker)."""

    def __init__(self, pipe: Pipeline, cfg: RerankConfig) -> None:
        self.pipe, self.cfg = pipe, cfg

    def rank(self, request: Request, k: int) -> Ranking:
        saved, self.pipe.rerank_cfg = self.pipe.rerank_cfg, self.cfg
        try:
            return self.pipe.rank(request, k)
        finally:
            self.pipe.rerank_cfg = saved


def _features(pipe: Pipeline, request: Request, ids: np.ndarray, feats: dict) -> np.ndarray:
    return compute_features(online_inputs(request, ids, pipe.state, feats), pipe.snapshot, pipe.attrs)


def _true_logits(oracle, request: Request, ids: np.ndarray, world) -> np.ndarray:
    rows, logit = oracle.scores(request)
    pos = np.full(len(world.item_ids), -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    idx = world.state.indices(list(ids))
    j = np.where(idx >= 0, pos[np.maximum(idx, 0)], -1)
    return np.where(j >= 0, logit[np.maximum(j, 0)], -20.0)


def fit_feature_ceiling(pipe: Pipeline, world, n_requests: int, seed: int):
    """LightGBM regression of the true attraction logit (centred per request) on the pipeline's features."""
    import lightgbm as lgb

    oracle = world.oracle_policy()
    X, y = [], []
    for req in world.sample_requests(n_requests, seed):
        ids, feats = pipe.candidates(req)
        if not len(ids):
            continue
        t = _true_logits(oracle, req, ids, world)
        X.append(_features(pipe, req, ids, feats))
        y.append(t - t.mean())
    params = {"objective": "regression", "verbosity": -1, "num_threads": 2, "num_leaves": 31, "seed": 0,
              "deterministic": True}
    return lgb.train(params, lgb.Dataset(np.vstack(X), np.concatenate(y)), 200)


def ceilings(model_dir: str | Path, dataset: str | Path, cfg: CeilingConfig = CeilingConfig(),
             log=lambda _: None) -> dict:
    """True CTR of the pipeline and of each ceiling, overall and for anonymous / logged-in requests."""
    from recs.sim import World, request_rewards

    world = World.load(dataset)
    pipe = Pipeline.load(model_dir, state=world.state)
    pipe.index_new_items()
    oracle = world.oracle_policy()
    log("fitting the feature ceiling on true logits")
    booster = fit_feature_ceiling(pipe, world, cfg.n_fit_requests, cfg.seed + 1000)
    policies = {
        "logging": world.logging_policy(),
        "pipeline": pipe,
        "pipeline_no_category_cap": _WithRerank(pipe, replace(pipe.rerank_cfg, max_per_category=0)),
        "pipeline_no_ranker": _CandidatePolicy(pipe, lambda r, i, f: -f["best_source_rank"].astype(float)),
        "embedding_only": _CandidatePolicy(pipe, lambda r, i, f: np.nan_to_num(f["emb_score"], nan=-1e9)),
        "feature_ceiling": _CandidatePolicy(pipe, lambda r, i, f: booster.predict(_features(pipe, r, i, f))),
        "candidate_oracle": _CandidatePolicy(pipe, lambda r, i, f: _true_logits(oracle, r, i, world)),
        "informed": world.informed_policy(),
        "oracle": oracle,
    }
    reqs = world.sample_requests(cfg.n_requests, cfg.seed)
    anon = np.array([r.user_id is None for r in reqs])
    segments = {"all": np.ones(len(reqs), dtype=bool), "anonymous": anon, "logged_in": ~anon}
    out: dict = {"n_requests": len(reqs), "ctr": {}}
    for name, pol in policies.items():
        log(f"running {name}")
        rewards = request_rewards(pol, reqs, world)   # each request once; segments are subsets
        out["ctr"][name] = {seg: rewards.value(m).ctr for seg, m in segments.items() if m.any()}
    base = out["ctr"]["logging"]["all"]
    out["vs_logging"] = {name: v["all"] / base for name, v in out["ctr"].items()}
    return out
