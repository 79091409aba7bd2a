"""How well the click model's scores track the simulator's true attraction (`make demo` dataset and model).

Per home request of `world.sample_requests(400, seed=17)`, the Pearson correlation over every eligible item between
the model's score and the truth, averaged: `cm_score` (z) against the true attraction logit for registered users;
`cm_score` and `cm_pop_score` against the informed policy's expected attraction for anonymous visitors (the
population average, the best anything can know about them). Also the fitted examination curve.
`RECS_CEILING_DATASET` / `RECS_CEILING_MODEL` point elsewhere (the same variables as the ceilings benchmark).

    .venv/bin/python -m benchmarks.run click_model
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def main() -> None:
    from recs.models.pipeline import Pipeline
    from recs.sim import World

    ds = Path(os.environ.get("RECS_CEILING_DATASET", "demo_out/dataset"))
    model = Path(os.environ.get("RECS_CEILING_MODEL", "demo_out/model"))
    if not (ds / "truth").is_dir() or not (model / "model.json").is_file():
        print(f"needs a simulated dataset and its model ({ds}, {model}): run `make demo` first")
        return
    world = World.load(ds)
    pipe = Pipeline.load(model, state=world.state)
    cm = pipe.retrievers.get("clickmodel")
    if cm is None:
        print(f"{model} has no click model")
        return
    state = world.state
    oracle, informed = world.oracle_policy(), world.informed_policy()
    corr: dict[str, list[float]] = {"registered: z vs true logit": [], "anonymous: z vs expected attraction": [],
                                    "anonymous: population score vs expected attraction": []}
    for r in world.sample_requests(400, 17):
        if r.surface != "home":
            continue
        if r.user_id is not None:
            rows, truth = oracle.scores(r)
            srow = state.indices(list(world.item_ids[rows]))
            pairs = {"registered: z vs true logit": cm.score_rows(r, pipe.history(r.user_id), state, srow)}
        else:
            rows, truth = informed.scores(r)
            srow = state.indices(list(world.item_ids[rows]))
            pairs = {"anonymous: z vs expected attraction": cm.score_rows(r, (), state, srow),
                     "anonymous: population score vs expected attraction": cm.population_scores(r, state, srow)}
        for name, s in pairs.items():
            ok = np.isfinite(s)
            corr[name].append(float(np.corrcoef(s[ok], truth[ok])[0, 1]))
    print(f"click model of {model} on {ds}")
    for name, v in corr.items():
        print(f"  {name:<52} {np.mean(v):.3f}  ({len(v)} home requests)")
    print("  examination, home, positions 0-4: " + ", ".join(f"{x:.2f}" for x in cm.p.examination[0][:5]))


if __name__ == "__main__":
    main()
