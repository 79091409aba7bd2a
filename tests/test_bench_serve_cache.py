"""The serving benchmark retrains a cached model whose ranker settings are no longer the code's."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from benchmarks.bench_serve import _stale_settings
from recs.models.ranker import RankerConfig


def _model(tmp_path, **ranker):
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(RankerConfig()).items()}
    cfg.update(ranker)
    (tmp_path / "model.json").write_text(json.dumps({"ranker": {"config": cfg}}))
    return tmp_path


def test_current_settings_are_not_stale_and_a_changed_one_is(tmp_path):
    assert _stale_settings(_model(tmp_path)) == []
    assert _stale_settings(_model(tmp_path, base_feature="cm_score")) == []    # set by the retrievers, not stale
    assert _stale_settings(_model(tmp_path, n_estimators=RankerConfig().n_estimators + 100)) == ["n_estimators"]


def test_a_corrupt_cached_model_is_a_clear_error(tmp_path):
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(SystemExit, match="model.json: not valid JSON"):
        _stale_settings(tmp_path)
