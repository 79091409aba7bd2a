"""recs.models: retrievers, ranker, re-ranking and policy filters, and the pipeline that joins them."""
from __future__ import annotations

from pathlib import Path


def load_pipeline(model_dir: str | Path, state=None):
    """Load a trained pipeline folder (see `recs.models.pipeline.Pipeline.load`)."""
    from recs.models.pipeline import Pipeline

    return Pipeline.load(model_dir, state=state)


__all__ = ["load_pipeline"]
