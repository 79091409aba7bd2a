"""The ranker's train/validation split by time does not depend on the order requests come in."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from recs.models.training_rows import split_by_time


def test_split_by_time_breaks_ties_by_request_id_whatever_the_input_order():
    t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
    ts = {f"r{j:02d}": t0 + timedelta(minutes=j // 4) for j in range(20)}   # four requests at each time
    items = list(ts.items())
    shuffled = items[1::2] + items[::2]
    splits = [split_by_time(dict(order), 0.3) for order in (items, items[::-1], shuffled)]
    assert splits[0] == splits[1] == splits[2]
    train, valid = splits[0]
    # 14 for training: the cut falls inside the four requests of minute 3 (r12..r15), ordered by id
    assert valid == {"r14", "r15", "r16", "r17", "r18", "r19"} and train == set(ts) - valid
    assert max(ts[r] for r in train) <= min(ts[r] for r in valid)
