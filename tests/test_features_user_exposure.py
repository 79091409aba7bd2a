"""Exposure features: what the user was shown before the snapshot (shares and per-item counts), point in time."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from recs.features.snapshot import PAIR_WINDOW, Snapshot, build_snapshot

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def _catalog() -> pl.DataFrame:
    return pl.DataFrame({"item_id": ["a", "b", "c"], "category": ["X", "X", "Y"], "subcategory": ["x1", "x2", "y1"],
                         "brand": ["p", "p", "q"], "price": [10.0, 12.0, 30.0],
                         "created_at": [T0 - timedelta(days=30)] * 3})


def _impressions() -> pl.DataFrame:
    rows = [("u1", "a", 0, True, 1), ("u1", "a", 1, False, 2), ("u1", "b", 2, False, 3), ("u1", "c", 0, True, 30),
            ("u2", "c", 0, False, 4), (None, "a", 0, True, 5)]
    return pl.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "position": [r[2] for r in rows], "clicked": [r[3] for r in rows],
                         "ts": [T0 + timedelta(hours=r[4]) for r in rows], "surface": ["home"] * len(rows)},
                        schema_overrides={"position": pl.Int32})


def _snapshot(tmp_path=None) -> Snapshot:
    inter = pl.DataFrame({"user_id": ["u1"], "item_id": ["a"], "kind": ["click"], "ts": [T0 + timedelta(hours=1)]})
    snap = build_snapshot(_catalog(), inter, _impressions(), None, T0 + timedelta(hours=10))
    if tmp_path is not None:
        snap.save(tmp_path / "snap")
        snap = Snapshot.load(tmp_path / "snap")
    return snap


def test_counts_and_shares_of_what_each_user_was_shown_before_the_snapshot(tmp_path):
    for snap in (_snapshot(), _snapshot(tmp_path)):        # also through save / load
        users = snap.user_rows(["u1", "u1", "u1", "u2", "u2", "nobody"])
        items = snap.item_rows(["a", "b", "c", "c", "a", "a"])
        shown, clicked = snap.user_item_counts(users, items)
        # u1 saw a twice (clicked once) and b once; c at hour 30 is after the snapshot and does not count
        assert shown.tolist() == [2, 1, 0, 1, 0, 0] and clicked.tolist() == [1, 0, 0, 0, 0, 0]
        u1, u2 = snap.user_index["u1"], snap.user_index["u2"]
        cat, sub = snap.vocab.category, snap.vocab.subcategory
        # smoothed shares: (count + 1 / n) / (total + 1)
        assert np.isclose(snap.user_cat_expo[u1, cat["X"]], (3 + 0.5) / 4)
        assert np.isclose(snap.user_subcat_expo[u1, sub["x1"]], (2 + 1 / 3) / 4)
        assert np.isclose(snap.user_cat_expo[u2, cat["Y"]], (1 + 0.5) / 2)
        # u2 has impressions but no positive events: indexed, with no events
        assert snap.user_n[u2] == 0 and snap.user_n[u1] > 0


def test_user_item_counts_without_impressions_are_zero():
    inter = pl.DataFrame({"user_id": ["u1"], "item_id": ["a"], "kind": ["click"], "ts": [T0]})
    snap = build_snapshot(_catalog(), inter, None, None, T0 + timedelta(hours=1))
    shown, clicked = snap.user_item_counts(snap.user_rows(["u1"]), snap.item_rows(["a"]))
    assert shown.tolist() == [0] and clicked.tolist() == [0]


def test_user_item_counts_look_back_a_bounded_window():
    inter = pl.DataFrame({"user_id": ["u1"], "item_id": ["a"], "kind": ["click"], "ts": [T0 + timedelta(hours=1)]})
    later = T0 + PAIR_WINDOW + timedelta(hours=2, minutes=30)      # a (hours 1 and 2) has left the window, b not
    snap = build_snapshot(_catalog(), inter, _impressions(), None, later)
    shown, clicked = snap.user_item_counts(snap.user_rows(["u1", "u1", "u1"]), snap.item_rows(["a", "b", "c"]))
    assert shown.tolist() == [0, 1, 1] and clicked.tolist() == [0, 0, 1]
    # the exposure shares still use all history: the window bounds only the per-(user, item) pairs
    assert np.isclose(snap.user_cat_expo[snap.user_index["u1"], snap.vocab.category["X"]], (3 + 0.5) / 5)
