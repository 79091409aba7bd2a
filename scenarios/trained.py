"""A trained pipeline for the scenarios: simulate a small dataset and `train_all` on it, or use given ones.

The scenarios that serve "the model" (stale inventory, drift, cold start) need a simulated dataset (its world
holds the truth) and a model folder trained on exactly that dataset. `prepare` either trains one (a small,
fast ranker by default) or checks that a given `--model` was trained on the given `--dataset`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from recs.sim import SimConfig, generate_dataset

SCENARIO_RETRIEVERS = ("popularity", "covisit", "content", "suggest")


@dataclass(frozen=True)
class ModelSettings:
    """How a scenario trains its pipeline when no `--model` is given (small and fast by default)."""

    retrievers: tuple[str, ...] = SCENARIO_RETRIEVERS
    ranker_trees: int = 100
    max_ranker_requests: int = 1_500
    holdout_days: int = 0
    ranker_days: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ranker_trees < 1 or self.max_ranker_requests < 1 or self.ranker_days < 1 or self.holdout_days < 0:
            raise ValueError("ranker_trees, max_ranker_requests and ranker_days must be >= 1, holdout_days >= 0")

    def min_days(self) -> int:
        """Simulated days needed: retriever days (1) + ranker days + holdout days."""
        return 1 + self.ranker_days + self.holdout_days

    def train_config(self):
        from recs.models.ranker import RankerConfig
        from recs.models.train import TrainConfig

        return TrainConfig(retrievers=self.retrievers, holdout_days=self.holdout_days, ranker_days=self.ranker_days,
                           max_ranker_requests=self.max_ranker_requests, seed=self.seed,
                           ranker=RankerConfig(n_estimators=self.ranker_trees, num_threads=1, seed=self.seed))


@dataclass(frozen=True)
class Trained:
    """A simulated dataset and a model folder trained on it, with the model's `model.json`."""

    dataset: Path
    model: Path
    meta: dict
    model_made: bool = False     # trained by `prepare` in the caller's temporary folder (gone after the run)
    dataset_made: bool = False   # simulated by `prepare`, likewise

    def describe(self) -> dict:
        """For a result's JSON: where the model came from (paths only when they outlive the run)."""
        return {"model": None if self.model_made else str(self.model),
                "dataset": None if self.dataset_made else str(self.dataset),
                "policy_id": self.meta.get("policy_id"), "cutoff": self.meta["training_window"]["end"],
                "trained_here": self.model_made, "train_seconds": self.meta.get("stage_seconds", {}).get("total")}

    @property
    def cutoff(self):
        from datetime import datetime

        return datetime.fromisoformat(self.meta["training_window"]["end"])


def check_dataset(dataset: Path) -> SimConfig:
    """The `SimConfig` of a simulated dataset; a clear error when `dataset` is not one."""
    cfg_file = Path(dataset) / "truth" / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"{dataset}: not a simulated dataset (no truth/config.json)")
    return SimConfig.from_json(json.loads(cfg_file.read_text()))


def check_model(model: Path, dataset: Path) -> dict:
    """`model.json` of `model`, after checking it was trained on `dataset` (same table fingerprint)."""
    from recs.models.train import dataset_fingerprint

    meta_file = Path(model) / "model.json"
    if not meta_file.is_file():
        raise ValueError(f"{model}: not a trained model (no model.json)")
    meta = json.loads(meta_file.read_text())
    if meta.get("dataset_fingerprint") != dataset_fingerprint(Path(dataset)):
        raise ValueError(f"{model}: trained on {meta.get('dataset', '?')}, not on {dataset} (dataset fingerprints "
                         f"differ); pass the dataset the model was trained on")
    return meta


def prepare(work: Path, sim: SimConfig, settings: ModelSettings = ModelSettings(), dataset: Path | None = None,
            model: Path | None = None, say: Callable[[str], None] = lambda _m: None) -> Trained:
    """The scenario's dataset and model: both given (checked), a dataset given (trained), or neither (both made).

    Work files go under `work` (a temporary folder of the caller)."""
    if model is not None and dataset is None:
        raise ValueError("--model needs --dataset: the simulated dataset the model was trained on")
    made = dataset is None
    if dataset is None:
        if sim.days < settings.min_days():
            raise ValueError(f"need at least {settings.min_days()} simulated days to train the pipeline, "
                             f"got {sim.days}")
        dataset = Path(work) / "dataset"
        generate_dataset(sim, dataset)
        say(f"dataset simulated ({sim.days} days, {sim.n_users} users, {sim.n_items} items)")
    else:
        check_dataset(dataset)
    if model is not None:
        return Trained(Path(dataset), Path(model), check_model(model, dataset), dataset_made=made)
    from recs.models.train import train_all

    model = Path(work) / "model"
    meta = train_all(Path(dataset), model, settings.train_config())
    say(f"pipeline trained ({meta['stage_seconds'].get('total', 0):.1f} s)")
    return Trained(Path(dataset), model, meta, model_made=True, dataset_made=made)
