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
    # 200: on the development requests (`sample_requests(2000, 17)` and `(2000, 18)` of the demo world, never the
    # evaluation's), the demo model's first 200 trees gave +0.0016 and +0.0013 true CTR over all 300 (paired
    # standard errors 0.0003), 150 trees -0.0011 / +0.0007; a third fewer trees is a third less ranker CPU per request.
    n_estimators: int = 200
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    # 0: no early stopping. The validation NDCG is measured on logged slates, where position dominates; stopping
    # on it kept 27 trees and a true CTR of 0.199 on the demo world, against 0.231 with 300 trees and 0.223 with 800
    # (1,500 fresh requests, docs/PIPELINE.md). The validation NDCG is still computed and saved.
    early_stopping_rounds: int = 0
    eval_at: int = 10
    num_threads: int = 2
    seed: int = 0
    objective: str = "lambdarank"          # or "binary": pointwise click probability
    label_gain: tuple[float, ...] = (0.0, 1.0, 3.0, 7.0)   # gain of grade none, click, add-to-cart, purchase
    # boost from a prior model's score: the trees learn a correction to `base_weight` x this feature's value
    # (LightGBM init_score), the same at training and scoring time. None: boost from zero.
    base_feature: str | None = None
    base_weight: float = 1.0

    def __post_init__(self) -> None:
        import os

        if self.num_threads < 1 or self.num_threads > (os.cpu_count() or 1):
            raise ValueError(f"num_threads must be in [1, {os.cpu_count()}], got {self.num_threads}")
        if self.n_estimators < 1 or self.num_leaves < 2 or not 0 < self.learning_rate <= 1 \
                or self.early_stopping_rounds < 0:
            raise ValueError("bad ranker settings")
        if self.objective not in ("lambdarank", "binary"):
            raise ValueError(f"objective must be lambdarank or binary, got {self.objective!r}")
        if self.base_feature is not None and self.base_feature not in FEATURE_NAMES:
            raise ValueError(f"base_feature {self.base_feature!r} is not a model feature")
        if len(self.label_gain) != 4 or any(g < 0 for g in self.label_gain):
            raise ValueError("label_gain needs 4 non-negative gains (none, click, add-to-cart, purchase)")


def base_scores(X: np.ndarray, feature: str | None, weight: float) -> np.ndarray | None:
    """The prior model's scores the trees start from (None: from zero)."""
    if feature is None:
        return None
    return weight * X[:, FEATURE_NAMES.index(feature)].astype(np.float64)


@dataclass
class Ranker:
    booster: lgb.Booster
    best_iteration: int
    valid_ndcg: float | None
    base_feature: str | None = None
    base_weight: float = 1.0

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self.booster.predict(X, num_iteration=self.best_iteration or None, num_threads=1)
        base = base_scores(X, self.base_feature, self.base_weight)
        return out if base is None else out + base

    def importance(self) -> dict[str, float]:
        gain = self.booster.feature_importance("gain", iteration=self.best_iteration or None)
        return {n: float(g) for n, g in zip(FEATURE_NAMES, gain)}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path / "model.txt"), num_iteration=self.best_iteration or None)
        (path / "meta.json").write_text(json.dumps({
            "features": list(FEATURE_NAMES), "best_iteration": self.best_iteration,
            "valid_ndcg": self.valid_ndcg, "importance_gain": self.importance(),
            "base_feature": self.base_feature, "base_weight": self.base_weight}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "Ranker":
        meta = json.loads((path / "meta.json").read_text())
        if meta["features"] != list(FEATURE_NAMES):
            raise ValueError(f"{path}: ranker was trained on other features than this toolkit defines")
        booster = lgb.Booster(model_file=str(path / "model.txt"))
        return cls(booster, 0, meta.get("valid_ndcg"), meta.get("base_feature"), float(meta.get("base_weight", 1.0)))


@dataclass
class BaseScore:
    """A ranker's base score without its trees: served where the trees were measured not to help (the personal
    ranker on the search bar, `TrainConfig.tree_surfaces`)."""

    ranker: Ranker

    def __post_init__(self) -> None:
        if self.ranker.base_feature is None:
            raise ValueError("BaseScore needs a ranker that boosts from a base feature")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return base_scores(X, self.ranker.base_feature, self.ranker.base_weight)


def _groups(request_of_row: np.ndarray) -> np.ndarray:
    """Group sizes for rows sorted by request."""
    _, counts = np.unique(request_of_row, return_counts=True)
    return counts


def train_ranker(X: np.ndarray, y: np.ndarray, req: np.ndarray, w: np.ndarray | None,
                 X_val: np.ndarray, y_val: np.ndarray, req_val: np.ndarray, cfg: RankerConfig = RankerConfig()
                 ) -> Ranker:
    """Fit lambdarank on rows sorted by request (`req` holds each row's request index), early-stopped on NDCG."""
    params = {
        "objective": cfg.objective, "metric": "ndcg", "eval_at": [cfg.eval_at], "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate, "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction, "num_threads": cfg.num_threads, "seed": cfg.seed,
        "deterministic": True, "verbosity": -1, "label_gain": list(cfg.label_gain),
        # LightGBM otherwise picks col- or row-wise histograms from a timing test at the start of training, which a
        # busy machine can flip; `deterministic` needs one of them forced. Forcing col-wise changed the splits of 12
        # of the demo's 200 personal trees and none of its evaluation figures (sixth session).
        "force_col_wise": True,
    }
    if cfg.objective == "binary":   # pointwise: P(click); graded labels become click / no click
        y, y_val = (y > 0).astype(np.int32), (y_val > 0).astype(np.int32)
    train = lgb.Dataset(X, y, weight=w, group=_groups(req), feature_name=list(FEATURE_NAMES),
                        init_score=base_scores(X, cfg.base_feature, cfg.base_weight))
    valid = lgb.Dataset(X_val, y_val, group=_groups(req_val), reference=train,
                        init_score=base_scores(X_val, cfg.base_feature, cfg.base_weight))
    callbacks = [lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)] if cfg.early_stopping_rounds else []
    evals: dict = {}
    callbacks.append(lgb.record_evaluation(evals))
    booster = lgb.train(params, train, num_boost_round=cfg.n_estimators, valid_sets=[valid], callbacks=callbacks)
    best = (booster.best_iteration if cfg.early_stopping_rounds else 0) or booster.current_iteration()
    curve = evals.get("valid_0", {}).get(f"ndcg@{cfg.eval_at}", [])
    score = curve[best - 1] if 0 < best <= len(curve) else None
    return Ranker(booster, best, float(score) if score is not None else None, cfg.base_feature, cfg.base_weight)
