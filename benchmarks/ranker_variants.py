"""True CTR of cheaper ranker stages on a simulated world, paired with the model as trained.

`trees=N` scores with the ranker's first N trees only; `cap=N` sends only the N best candidates by retrieval rank to
the ranker (the rest follow in retrieval order). Run through `python -m benchmarks.bench_serve ranker-variants
--model M --dataset D [--variants trees=150,cap=100] [--requests dev|eval] [--dev-seed 17]`: on development
requests by default (choices are made on these), or on `recs evaluate`'s own (to report, never to choose).
"""
from __future__ import annotations

from pathlib import Path


class _Truncated:
    """A booster that predicts with its first `n` trees."""

    def __init__(self, booster, n: int) -> None:
        self.booster, self.n = booster, n

    def predict(self, X, num_iteration=None, num_threads=1):
        return self.booster.predict(X, num_iteration=self.n, num_threads=num_threads)


def _variant_score(as_trained, kind: str, val: str):
    """A `Pipeline.score` that applies one variant and otherwise scores as trained."""
    import numpy as np

    def score(self, request, ids, feats, use_ranker=True):
        ranker = self.ranker_for(request)
        if ranker is None or not use_ranker or kind == "base":
            return as_trained(self, request, ids, feats, use_ranker)
        if kind == "trees":
            booster = ranker.booster
            ranker.booster = _Truncated(booster, int(val))
            try:
                return as_trained(self, request, ids, feats, use_ranker)
            finally:
                ranker.booster = booster
        if len(ids) <= int(val):
            return as_trained(self, request, ids, feats, use_ranker)
        top = np.sort(np.argsort(feats["best_source_rank"], kind="stable")[:int(val)])
        s = as_trained(self, request, ids[top], {k: x[top] for k, x in feats.items()}, use_ranker)
        out = s.min() - 1.0 - np.arange(len(ids)) * 1e-6     # the rest below, in retrieval order
        out[top] = s
        return out

    return score


def ranker_variants(model: Path, dataset: Path, variants: list[str], n: int = 2000, requests: str = "dev",
                    dev_seed: int = 17) -> None:
    """Print the paired true CTR (the simulator's expected clicks) of each variant against the model as trained.
    `requests`: "dev", the development requests `sample_requests(n, dev_seed)`, or "eval", `recs evaluate`'s own."""
    import numpy as np

    from recs.models.pipeline import Pipeline
    from recs.scenarios.evaluate import EvaluateConfig, true_ctr_requests
    from recs.sim import World, request_rewards

    if requests not in ("dev", "eval"):
        raise ValueError(f"requests must be 'dev' or 'eval', not {requests!r}")
    world = World.load(dataset)
    pipe = Pipeline.load(model, state=world.state)
    pipe.index_new_items()
    reqs = (world.sample_requests(n, dev_seed) if requests == "dev"
            else true_ctr_requests(world, EvaluateConfig(true_ctr_requests=n)))
    print(f"requests: {requests}" + (f" (sample_requests({n}, {dev_seed}))" if requests == "dev" else
                                     " (recs evaluate's)"))
    as_trained = Pipeline.score
    res = {}
    try:
        for v in ["base", *variants]:
            kind, _, val = v.partition("=")
            Pipeline.score = _variant_score(as_trained, kind, val)
            res[v] = request_rewards(pipe, reqs, world)
    finally:
        Pipeline.score = as_trained
    base = res["base"]
    base_ctr = base.clicks.sum() / base.shown.sum()
    print(f"base: true CTR {base_ctr:.5f} over {n} requests")
    for v in variants:
        r = res[v]
        ctr = r.clicks.sum() / r.shown.sum()
        print(f"{v}: true CTR {ctr:.5f}, {ctr - base_ctr:+.5f} "
              f"(paired stderr {np.std(r.clicks - base.clicks, ddof=1) * np.sqrt(n) / base.shown.sum():.5f})")
