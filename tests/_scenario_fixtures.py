"""One tiny simulated dataset and a pipeline trained on it, shared by the scenario tests of one pytest process."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from recs.scenarios.trained import ModelSettings, Trained, prepare
from recs.sim import SimConfig

TINY_SIM = SimConfig(n_users=300, n_items=800, days=3, requests_per_day=2_000, seed=3)
TINY_MODEL = ModelSettings(ranker_trees=40, max_ranker_requests=800, holdout_days=1, ranker_days=1, seed=3)


@functools.cache
def tiny_trained() -> Trained:
    """3 simulated days (retrievers, ranker, holdout), 300 users, 800 items; trained once per process."""
    root = Path(tempfile.mkdtemp(prefix="recs-scen-tests-"))
    atexit.register(shutil.rmtree, root, True)
    return prepare(root, TINY_SIM, TINY_MODEL)
