"""Does more data lift the pipeline? Simulated worlds that differ only in how much the logs hold per user or per
item, each generated, trained with `recs train all`'s defaults and evaluated like `recs evaluate` (true CTR).

Traffic per day stays the demo's; a world with a quarter of the users gives each user four times the history, one
with a quarter of the items gives each item four times the impressions, and more days give both. For each world:
the pipeline's true CTR next to the logging policy's, the oracle's and the informed ceiling's, overall and for
anonymous and logged-in requests, and the learnability diagnostic (`scenarios.learnability`: the users' tastes
fitted from clicks given the TRUE item parameters), which bounds what clicks reveal about the users.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import polars as pl

# name: SimConfig overrides of the `small` (demo) scale
WORLDS: dict[str, dict] = {
    "demo": {},
    "days_14": {"days": 14},
    "users_500": {"n_users": 500},
    "items_1250": {"n_items": 1_250},
    "users_500_items_1250": {"n_users": 500, "n_items": 1_250},
}


def _volume(impressions: pl.DataFrame, train_end) -> dict:
    """Median impressions (and clicks) per registered user and per item in the training window."""
    imp = impressions.filter(pl.col("ts") < train_end)
    per_user = imp.filter(pl.col("user_id").is_not_null()).group_by("user_id").agg(
        pl.len().alias("n"), pl.col("clicked").sum().alias("c"))
    per_item = imp.group_by("item_id").agg(pl.len().alias("n"), pl.col("clicked").sum().alias("c"))
    return {"user_impressions": float(per_user["n"].median()), "user_clicks": float(per_user["c"].median()),
            "item_impressions": float(per_item["n"].median()), "item_clicks": float(per_item["c"].median()),
            "items_shown": per_item.height}


def world_volume_run(name: str, overrides: dict, workdir: Path, seed: int = 0,
                     log: Callable[[str], None] = lambda _: None) -> dict:
    """Generate, train and evaluate one world; returns its volume, true CTRs and learnability."""
    from recs.datasets.io import read_table
    from recs.models.train import TrainConfig, time_split, train_all
    from recs.scenarios.evaluate import EvaluateConfig, true_ctr
    from recs.scenarios.learnability import user_learnability
    from recs.sim import SimConfig, generate_dataset

    cfg = SimConfig.for_scale("small", seed=seed, **overrides)
    ds, model = workdir / name / "dataset", workdir / name / "model"
    t0 = time.perf_counter()
    generate_dataset(cfg, ds)
    log(f"{name}: generated ({cfg.n_users} users, {cfg.n_items} items, {cfg.days} days)")
    train_all(ds, model)
    log(f"{name}: trained")
    overall, segments, _ = true_ctr(model, ds, EvaluateConfig())
    learn = user_learnability(ds)
    imp = read_table(ds, "impressions")
    return {"world": {"n_users": cfg.n_users, "n_items": cfg.n_items, "days": cfg.days,
                      "requests_per_day": cfg.requests_per_day, "seed": seed},
            "volume": _volume(imp, time_split(imp, TrainConfig())["train_end"]),
            "true_ctr": {k: v for k, v in overall.items() if not k.endswith(("_stderr", "_violations"))},
            "true_ctr_segments": {s: segments[s] for s in ("anonymous", "logged_in")},
            "learnability_vs_logging": {k: v / learn["ctr"]["logging"] for k, v in learn["ctr"].items()},
            "seconds": time.perf_counter() - t0}


def data_volume(workdir: Path, worlds: dict[str, dict] | None = None, seed: int = 0,
                log: Callable[[str], None] = lambda _: None) -> dict:
    """`world_volume_run` for each world (default `WORLDS`), in order."""
    worlds = WORLDS if worlds is None else worlds
    return {name: world_volume_run(name, over, Path(workdir), seed, log) for name, over in worlds.items()}
