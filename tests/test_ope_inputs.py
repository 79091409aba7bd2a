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


# ---- alignment: chunking, ordering, lazy inputs ------------------------------------------------------------------
def _values(inp):
    from recs.evaluators.ope import IPS, SNIPS
    return IPS().decompose(inp).value(), SNIPS().decompose(inp).value()


def _by_slot(inp) -> dict:
    return dict(zip(zip(inp.request_ids[inp.req_idx], inp.position.tolist()), inp.target_prob.tolist()))


def test_alignment_independent_of_row_order_chunking_and_laziness(frames, tmp_path):
    logs, target = frames
    ref = build_inputs(logs, target)
    shuffled = build_inputs(logs.sample(fraction=1.0, shuffle=True, seed=1),
                            target.sample(fraction=1.0, shuffle=True, seed=2), chunk_rows=97)
    logs.write_parquet(tmp_path / "l.parquet")
    target.write_csv(tmp_path / "t.csv")
    lazy = build_inputs(pl.scan_parquet(tmp_path / "l.parquet"), pl.scan_csv(tmp_path / "t.csv"), chunk_rows=250)
    for other in (shuffled, lazy):
        assert other.n_requests == ref.n_requests and other.n_impressions == ref.n_impressions
        assert np.allclose(_values(other), _values(ref), rtol=1e-12)
        # the same (request, position) -> target probability, whatever the order
        assert _by_slot(other) == _by_slot(ref)
        assert other.target_mass_total == pytest.approx(ref.target_mass_total, rel=1e-12)
        assert np.isclose(other.t_prob.sum(), ref.t_prob.sum(), rtol=1e-12)


def test_errors_name_the_global_row_when_chunked(frames):
    logs, target = frames
    bad = logs.with_columns(pl.when(pl.int_range(pl.len()) == 777).then(1.5).otherwise(pl.col("propensity"))
                            .alias("propensity"))
    with pytest.raises(OPEInputError, match=r"logs: row 778: field propensity: 1.5"):
        build_inputs(bad, target, chunk_rows=100)
    dup = pl.concat([logs, logs.slice(3, 1)])
    with pytest.raises(OPEInputError, match=rf"row {logs.height + 1}: duplicate \(request_id='r0', position=3\)"):
        build_inputs(dup, target, chunk_rows=64)


def test_target_checks_span_chunks(frames):
    logs, target = frames
    r0 = target.filter(pl.col("request_id") == "r0", pl.col("position") == 0)
    # the same key again at the end of the file, far from its first row: a duplicate across chunks
    with pytest.raises(OPEInputError, match=r"duplicate \(request_id='r0', position=0, item_id="):
        build_inputs(logs, pl.concat([target, r0.head(1)]), chunk_rows=50)
    # a cell whose rows are split between chunks and only sum above 1 together
    extra = pl.DataFrame({"request_id": ["r0"], "position": [0], "item_id": ["never-logged"], "prob": [0.5]})
    with pytest.raises(OPEInputError, match=r"request_id='r0' at position 0 sum to 1\.5"):
        build_inputs(logs, pl.concat([target, extra]), chunk_rows=50)


def test_items_only_the_target_mentions(frames):
    logs, target = frames
    extra = pl.DataFrame({"request_id": ["r1", "r1"], "position": [0, 0], "item_id": ["new-a", "new-b"],
                          "prob": [0.0, 0.0]})
    t = target.with_columns(pl.when(pl.col("request_id") == "r1").then(pl.col("prob") * 0.5)
                            .otherwise(pl.col("prob")).alias("prob"))
    mass_r1_p0 = t.filter(pl.col("request_id") == "r1", pl.col("position") == 0)["prob"].sum()
    extra = extra.with_columns(prob=pl.lit((1 - mass_r1_p0) / 2))
    inp = build_inputs(logs, pl.concat([t, extra]))
    assert inp.unseen_item_mass == pytest.approx(1 - mass_r1_p0)
    assert np.sum(inp.t_item_code == -1) == 2  # distinct items, both unknown to the reward model


def test_logger_probabilities_measure_zero_propensity_mass(frames):
    logs, target = frames
    # the logger's full distribution = the logged rows; the target's mass elsewhere has logger probability 0
    logger = logs.select("request_id", "position", "item_id", pl.col("propensity").alias("prob"))
    inp = build_inputs(logs, target, logger_probs=logger)
    on_logged = float(np.sum(inp.target_prob))
    assert inp.zero_propensity_mass == pytest.approx(inp.target_mass_total - on_logged, rel=1e-9)


def test_label_status_in_logs_drops_pending_requests(frames):
    logs, _ = frames
    with_status = logs.with_columns(
        purchase=pl.col("position") == 1,
        label_status=pl.when(pl.col("request_id") == "r5").then(pl.lit("pending")).otherwise(pl.lit("matured")))
    j = attach_labels(with_status, None, "purchase")
    assert j.pending_requests_dropped == 1 and "r5" not in j.logs["request_id"].to_list()
    final = attach_labels(with_status.drop("label_status"), None, "purchase")
    assert final.pending_requests_dropped == 0 and final.source.endswith("(taken as final)")
