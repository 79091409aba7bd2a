"""A small fake trained model folder for the bundle tests."""
from __future__ import annotations

import json
import os
from pathlib import Path


def make_model(root: Path, with_model_json: bool = True) -> Path:
    """A small fake trained model folder with nested files like `recs train all` writes."""
    m = root / "model"
    (m / "retrieval").mkdir(parents=True)
    (m / "ranker").mkdir()
    (m / "fallback").mkdir()
    if with_model_json:
        (m / "model.json").write_text(json.dumps({
            "training_window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-08T00:00:00Z"},
            "dataset_fingerprint": "sha256:abcd",
            "offline_metrics": {"ndcg@10": 0.3125, "recall@100": float("nan")},
            "extra": [1, 2, 3],
        }))
    (m / "retrieval" / "items.faiss").write_bytes(os.urandom(50_000))
    (m / "ranker" / "lgbm.txt").write_text("tree\nversion=v4\n")
    (m / "feature_spec.json").write_text('{"features": ["a", "b"]}')
    (m / "fallback" / "popular.parquet").write_bytes(b"PAR1" + os.urandom(300) + b"PAR1")
    (m / "rerank.json").write_text('{"diversity": 0.2, "max_per_seller": 2}')
    return m
