"""Aligning logs with target probabilities: clear errors on bad input, delayed labels, the Policy seam."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recs.datasets.policy import Ranking, Request, SlotProbabilities
from recs.evaluators.ope import OPEInputError, build_inputs, plackett_luce_marginals, target_probs_from_policy
from recs.evaluators.ope.rewards import attach_labels
from recs.evaluators.ope.synthetic import SyntheticBandit
from recs.evaluators.ope.target import sampled_target_from_policy


@pytest.fixture(scope="module")
def frames():
    return SyntheticBandit(target_kind="sparse").frames(200, 0)


def test_absent_target_rows_mean_zero_and_unknown_requests_are_dropped(frames):
    logs, target = frames
    extra = pl.DataFrame({"request_id": ["nope"], "position": [0], "item_id": ["i1"], "prob": [1.0]})
    inp = build_inputs(logs, pl.concat([target.filter(pl.col("request_id") != "r0"), extra]))
    assert inp.dropped_target_rows == 1
    r0 = np.flatnonzero(inp.request_ids == "r0")[0]
    assert np.all(inp.target_prob[inp.req_idx == r0] == 0)
    assert inp.n_requests == 200 and inp.n_impressions == logs.height


@pytest.mark.parametrize("edit, message", [
    (lambda l, t: (l.drop("propensity"), t), "missing column(s) propensity"),
    (lambda l, t: (l.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(0.0).otherwise(pl.col("propensity"))
                                  .alias("propensity")), t), "row 4: field propensity: 0.0 is not in (0.0, 1.0]"),
    (lambda l, t: (pl.concat([l, l.head(1)]), t), "duplicate (request_id='r0', position=0)"),
    (lambda l, t: (l, t.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(1.5).otherwise(pl.col("prob"))
                                     .alias("prob"))), "row 1: field prob: 1.5 is not in [0.0, 1.0]"),
    (lambda l, t: (l, t.with_columns((pl.col("prob") * 1.2).alias("prob"))), "sum to"),
    (lambda l, t: (l, t.drop("prob")), "missing column(s) prob"),
])
def test_bad_inputs_give_one_line_errors(frames, edit, message):
    logs, target = edit(*frames)
    with pytest.raises(OPEInputError) as exc:
        build_inputs(logs, target, logs_source="logs.parquet", target_source="t.csv")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_reward_column_required(frames):
    with pytest.raises(OPEInputError, match="missing column.*purchase"):
        build_inputs(frames[0], frames[1], reward="purchase")


def test_pending_purchase_labels_are_dropped_by_request(frames):
    logs, _ = frames
    labels = logs.select("request_id", "position").with_columns(
        purchase=pl.col("position") == 0,
        label_status=pl.when(pl.col("request_id").is_in(["r1", "r2"])).then(pl.lit("pending"))
        .otherwise(pl.lit("matured")))
    j = attach_labels(logs, labels, "purchase")
    assert j.pending_requests_dropped == 2
    assert j.logs.height == logs.height - 2 * 5 and "r1" not in j.logs["request_id"].to_list()
    assert j.logs["purchase"].sum() == 198
    assert attach_labels(logs, labels, "purchase", include_pending=True).logs.height == logs.height
    assert attach_labels(logs, labels, "clicked").logs.height == logs.height  # clicks never wait


class _TwoItemPolicy:
    """A stochastic policy with exact slot probabilities and a seeded `rank`."""

    policy_id = "two"

    def rank(self, request: Request, k: int) -> Ranking:
        return Ranking(("a", "b")[:k])

    def slot_probabilities(self, request: Request, k: int) -> SlotProbabilities:
        return SlotProbabilities(("a", "b"), np.array([[0.7, 0.3], [0.3, 0.7]])[:k])


def test_policy_seam_turns_any_policy_into_target_rows():
    from datetime import datetime, timezone
    reqs = [Request(f"q{i}", datetime(2026, 1, 1, tzinfo=timezone.utc), "home", None, "s") for i in range(3)]
    t = target_probs_from_policy(_TwoItemPolicy(), reqs, 2)
    assert t.height == 12 and t.filter(pl.col("request_id") == "q0")["prob"].sum() == pytest.approx(2.0)
    s = sampled_target_from_policy(_TwoItemPolicy(), reqs, {"q0": 1, "q1": 2, "q2": 2})
    assert s.height == 5 and s["prob"].max() == 1.0


def test_plackett_luce_marginals():
    scores = np.array([2.0, 1.0, 0.0, -1.0])
    m = plackett_luce_marginals(scores, 3, 1.0, n_samples=20_000, rng=np.random.default_rng(0))
    soft = np.exp(scores) / np.exp(scores).sum()
    assert np.allclose(m[0], soft)
    assert np.allclose(m.sum(axis=1), 1.0)
    assert np.all(m.sum(axis=0) <= 1 + 1e-9)
    top = plackett_luce_marginals(scores, 2, 0.0)
    assert np.array_equal(top, np.array([[1, 0, 0, 0], [0, 1, 0, 0]], float))
