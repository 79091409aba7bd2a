"""recs.features: the one definition of every model feature, computed offline and online by the same code."""
from recs.features.compute import ItemAttrs, RowInputs, compute_features
from recs.features.snapshot import Snapshot, Vocab, build_snapshot
from recs.features.spec import FEATURE_NAMES, FEATURES

__all__ = ["FEATURES", "FEATURE_NAMES", "ItemAttrs", "RowInputs", "Snapshot", "Vocab", "build_snapshot",
           "compute_features"]
