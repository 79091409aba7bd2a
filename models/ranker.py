"""LightGBM lambdarank over candidates x features, saved as LightGBM's text model (never pickled)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from recs.features.spec import FEATURE_NAMES


@dataclass(frozen=True)
class RankerConfig:
    """LightGBM lambdarank settings; `num_threads` never above the machine's cores."""

    num_leaves: int = 31
    learning_rate: float = 0.05
    n_estimators: int = 400
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    early_stopping_rounds: int = 30
    eval_at: int = 10
    num_threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        import os

        if self.num_threads < 1 or self.num_threads > (os.cpu_count() or 1):
            raise ValueError(f"num_threads must be in [1, {os.cpu_count()}], got {self.num_threads}")
        if self.n_estimators < 1 or self.num_leaves < 2 or not 0 < self.learning_rate <= 1:
            raise ValueError("bad ranker settings")


@dataclass
class Ranker:
    booster: lgb.Booster
    best_iteration: int
    valid_ndcg: float | None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(X, num_iteration=self.best_iteration or None, num_threads=1)

    def importance(self) -> dict[str, float]:
        gain = self.booster.feature_importance("gain", iteration=self.best_iteration or None)
        return {n: float(g) for n, g in zip(FEATURE_NAMES, gain)}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path / "model.txt"), num_iteration=self.best_iteration or None)
        (path / "meta.json").write_text(json.dumps({
            "features": list(FEATURE_NAMES), "best_iteration": self.best_iteration,
            "valid_ndcg": self.valid_ndcg, "importance_gain": self.importance()}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "Ranker":
        meta = json.loads((path / "meta.json").read_text())
        if meta["features"] != list(FEATURE_NAMES):
            raise ValueError(f"{path}: ranker was trained on other features than this toolkit defines")
        booster = lgb.Booster(model_file=str(path / "model.txt"))
        return cls(booster, 0, meta.get("valid_ndcg"))


def _groups(request_of_row: np.ndarray) -> np.ndarray:
    """Group sizes for rows sorted by request."""
    _, counts = np.unique(request_of_row, return_counts=True)
    return counts


def train_ranker(X: np.ndarray, y: np.ndarray, req: np.ndarray, w: np.ndarray | None,
                 X_val: np.ndarray, y_val: np.ndarray, req_val: np.ndarray, cfg: RankerConfig = RankerConfig()
                 ) -> Ranker:
    """Fit lambdarank on rows sorted by request (`req` holds each row's request index), early-stopped on NDCG."""
    params = {
        "objective": "lambdarank", "metric": "ndcg", "eval_at": [cfg.eval_at], "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate, "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction, "num_threads": cfg.num_threads, "seed": cfg.seed,
        "deterministic": True, "verbosity": -1, "label_gain": [0, 1, 3, 7],
    }
    train = lgb.Dataset(X, y, weight=w, group=_groups(req), feature_name=list(FEATURE_NAMES))
    valid = lgb.Dataset(X_val, y_val, group=_groups(req_val), reference=train)
    booster = lgb.train(params, train, num_boost_round=cfg.n_estimators, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    best = booster.best_iteration or booster.current_iteration()
    score = booster.best_score.get("valid_0", {}).get(f"ndcg@{cfg.eval_at}")
    return Ranker(booster, best, float(score) if score is not None else None)
