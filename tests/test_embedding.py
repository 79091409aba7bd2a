"""Embedding retriever: RecBole training (BPR, SASRec, GRU4Rec), faiss retrieval, session vectors, persistence."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
import torch

from recs.datasets.online_state import OnlineState
from recs.datasets.policy import Request
from recs.models.base import RetrievalQuery, TrainingData
from recs.models.embedding.ann_index import AnnConfig
from recs.models.embedding.recbole_train import EmbeddingConfig, positive_pairs
from recs.models.embedding.retriever import EmbeddingRetriever, RetrieverConfig

_CUDA_AT_IMPORT = os.environ.get("CUDA_VISIBLE_DEVICES")

N_CLUSTERS, PER_CLUSTER, N_USERS, PER_USER = 4, 40, 160, 16
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _item(c: int, j: int) -> str:
    return f"item {c}-{j % PER_CLUSTER}"  # a space in ids: RecBole never sees our ids


def _cluster(item_id: str) -> int:
    return int(item_id.split()[1].split("-")[0])


def _interactions() -> pl.DataFrame:
    """Each user walks PER_USER consecutive items of one cluster (item j is always followed by j+1)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        c, start = u % N_CLUSTERS, int(rng.integers(0, PER_CLUSTER))
        for step in range(PER_USER):
            ts = T0 + timedelta(minutes=u * 100 + step)
            rows.append((f"e{u}-{step}", ts, f"u{u}", f"s{u}", "click", _item(c, start + step), None, None))
    rows.append(("anon", T0, None, "s-anon", "click", _item(0, 0), None, None))  # anonymous: not trained on
    schema = {"event_id": pl.Utf8, "ts": pl.Datetime("us", "UTC"), "user_id": pl.Utf8, "session_id": pl.Utf8,
              "kind": pl.Utf8, "item_id": pl.Utf8, "request_id": pl.Utf8, "value": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _config(model: str, **kw) -> RetrieverConfig:
    base = dict(model=model, embedding_size=16, epochs=25, learning_rate=0.01, train_batch_size=256,
                early_stopping=False, seed=1)
    base.update(kw)
    return RetrieverConfig(embedding=EmbeddingConfig(**base), ann=AnnConfig(kind="hnsw"))


@pytest.fixture(scope="module")
def inter() -> pl.DataFrame:
    return _interactions()


@pytest.fixture(scope="module")
def bpr(inter) -> EmbeddingRetriever:
    return EmbeddingRetriever(_config("BPR")).fit(inter)


@pytest.fixture(scope="module")
def sasrec(inter) -> EmbeddingRetriever:
    return EmbeddingRetriever(_config("SASRec", epochs=30, n_layers=1, dropout=0.1, attn_dropout=0.1,
                                      max_seq_length=10)).fit(inter)


def test_positive_pairs_dedupes_and_drops_anonymous(inter) -> None:
    doubled = pl.concat([inter, inter.with_columns(pl.col("event_id") + "x")])
    pairs = positive_pairs(doubled)
    assert pairs.height == N_USERS * PER_USER
    assert pairs["user_id"].null_count() == 0


def test_bpr_trains_and_returns_k_unique_items(bpr) -> None:
    assert bpr.item_ids.size == N_CLUSTERS * PER_CLUSTER and bpr.user_ids.size == N_USERS
    ids, scores = bpr.retrieve_items("u5", (), k=20)
    assert len(ids) == 20 == len(set(ids)) == len(scores)
    assert (np.diff(scores) <= 1e-5).all()
    assert bpr.ann_recall >= 0.95


def test_bpr_learns_the_clusters(bpr) -> None:
    own = []
    for u in range(0, N_USERS, 7):
        ids, _ = bpr.retrieve_items(f"u{u}", (), k=10)
        own.append(np.mean([_cluster(i) == u % N_CLUSTERS for i in ids]))
    assert np.mean(own) > 0.8  # chance is 1 / N_CLUSTERS


def test_exclude_is_honoured(bpr) -> None:
    first, _ = bpr.retrieve_items("u3", (), k=10)
    again, _ = bpr.retrieve_items("u3", (), k=10, exclude=first[:5] + ["not an item"])
    assert len(again) == 10 and not set(again) & set(first[:5])


def test_anonymous_session_vector_is_recency_weighted_mean(bpr) -> None:
    recent = [_item(1, 3), _item(2, 7), _item(2, 8)]  # oldest first
    q, source = bpr.query(None, recent)
    assert source == "session"
    emb = bpr.emb
    vecs = emb.item_vectors[np.searchsorted(emb.item_ids, recent)]
    w = 0.5 ** (np.array([2.0, 1.0, 0.0]) / bpr.config.session_half_life)
    np.testing.assert_allclose(q, (w[:, None] * vecs).sum(0) / w.sum(), rtol=1e-5, atol=1e-6)
    ids, _ = bpr.retrieve_items(None, recent, k=10)
    assert np.mean([_cluster(i) == 2 for i in ids]) > 0.6  # the session's recent cluster dominates


def test_unknown_user_with_nothing_falls_back_to_popularity(bpr) -> None:
    ids, scores = bpr.retrieve_items("nobody", ["no such item"], k=5)
    assert bpr.query("nobody", ["no such item"])[1] == "popular"
    pop = dict(zip(bpr.emb.item_ids.tolist(), bpr.emb.item_popularity.tolist()))
    assert [pop[i] for i in ids] == sorted(pop.values(), reverse=True)[:5]
    assert scores.tolist() == [float(pop[i]) for i in ids]


def test_sasrec_predicts_the_successor_for_an_anonymous_session(sasrec) -> None:
    hits = 0
    for c in range(N_CLUSTERS):
        for j in range(0, PER_CLUSTER, 8):
            session = [_item(c, j), _item(c, j + 1), _item(c, j + 2)]
            assert sasrec.query(None, session)[1] == "session"
            ids, _ = sasrec.retrieve_items(None, session, k=5, exclude=session)
            hits += _item(c, j + 3) in ids
    assert hits / (N_CLUSTERS * PER_CLUSTER / 8) >= 0.6


def test_sasrec_logged_in_uses_history_plus_recent(sasrec) -> None:
    q_hist, src = sasrec.query("u1", ())
    assert src == "sequence"
    np.testing.assert_allclose(q_hist, sasrec.emb.encoder.encode([sasrec.emb.histories["u1"]])[0], atol=1e-5)
    q_more, src = sasrec.query("u1", [_item(3, 0)])
    assert src == "sequence" and not np.allclose(q_hist, q_more)


def test_gru4rec_trains_and_encodes(inter) -> None:
    r = EmbeddingRetriever(_config("GRU4Rec", epochs=1, hidden_size=16, max_seq_length=5)).fit(inter)
    ids, _ = r.retrieve_items(None, [_item(0, 1), _item(0, 2)], k=7)
    assert len(ids) == 7 and r.user_ids.size == N_USERS


@pytest.mark.parametrize("which", ["bpr", "sasrec"])
def test_save_load_round_trip_gives_identical_results(which, request, tmp_path) -> None:
    r: EmbeddingRetriever = request.getfixturevalue(which)
    r.save(tmp_path / "r")
    again = EmbeddingRetriever.load(tmp_path / "r")
    assert not list((tmp_path / "r").glob("*.pt")) and not list((tmp_path / "r").glob("*.pkl"))
    for user, recent in [("u2", ()), ("u2", (_item(2, 5),)), (None, (_item(1, 1), _item(1, 2))), (None, ())]:
        a_ids, a_sc = r.retrieve_items(user, recent, k=15, exclude=[_item(1, 3)])
        b_ids, b_sc = again.retrieve_items(user, recent, k=15, exclude=[_item(1, 3)])
        assert a_ids == b_ids
        np.testing.assert_array_equal(a_sc, b_sc)
    assert again.ann_recall == r.ann_recall
    with pytest.raises(FileExistsError):
        r.save(tmp_path / "r")


def _catalog(item_ids: list[str], out_of_stock: set[str]) -> pl.DataFrame:
    n = len(item_ids)
    return pl.DataFrame({
        "item_id": item_ids, "category": ["c"] * n, "subcategory": ["s"] * n, "seller_id": ["x"] * n,
        "brand": ["b"] * n, "title": item_ids, "price": [1.0] * n,
        "stock": [0 if i in out_of_stock else 5 for i in item_ids], "restricted": [False] * n,
        "created_at": [T0 - timedelta(days=1)] * n,
    }, schema_overrides={"created_at": pl.Datetime("us", "UTC")})


def test_retriever_contract_skips_ineligible_items(bpr) -> None:
    free, _ = bpr.retrieve_items("u6", (), k=30)
    gone = set(free[:12])
    state = OnlineState(_catalog(bpr.item_ids.tolist(), gone))
    req = Request("r1", T0 + timedelta(days=3), "home", "u6", "s6")
    cands = bpr.retrieve(RetrievalQuery(req, state=state), k=10)
    assert len(cands) == 10 and not set(cands.item_ids.tolist()) & gone
    assert cands.source == "embedding:user"
    anon = Request("r2", T0 + timedelta(days=3), "home", None, "s9", recent_items=(_item(3, 3),))
    assert bpr.retrieve(RetrievalQuery(anon), k=5).source == "embedding:session"


def test_retriever_contract_returns_the_best_eligible_items(bpr) -> None:
    """Most of the user's best items out of stock (and an item the index never saw in the state): the k returned
    are exactly the best eligible ones by exact score, whatever share of the head was filtered."""
    ranked, _ = bpr.retrieve_items("u6", (), k=len(bpr.item_ids))
    gone = set(ranked[:40:2]) | set(ranked[:12])
    missing = ranked[13]                        # indexed, but not in the live state: never eligible
    state = OnlineState(_catalog([i for i in bpr.item_ids.tolist() if i != missing] + ["never indexed"], gone))
    req = Request("r1", T0 + timedelta(days=3), "home", "u6", "s6")
    cands = bpr.retrieve(RetrievalQuery(req, state=state), k=15)
    exact = bpr.score_items(["u6"])[0]
    ok = state.is_eligible(bpr.item_ids.tolist(), req.ts)
    best = bpr.item_ids[np.argsort(-np.where(ok, exact, -np.inf), kind="stable")[:15]]
    assert set(cands.item_ids.tolist()) == set(best.tolist()) and missing not in set(best.tolist())
    # an item sold out after a first request is skipped by the next one (eligibility is read live)
    state.apply_inventory("stock", str(cands.item_ids[0]), 0)
    again = bpr.retrieve(RetrievalQuery(req, state=state), k=15)
    assert str(cands.item_ids[0]) not in set(again.item_ids.tolist()) and len(again) == 15
    anon = Request("r3", T0 + timedelta(days=3), "home", None, "s9")       # nothing known: popular, eligible
    pop = bpr.retrieve(RetrievalQuery(anon, state=state), k=10)
    assert pop.source == "embedding:popular" and len(pop) == 10 and state.is_eligible(pop.item_ids.tolist()).all()


def test_fit_on_training_data_uses_only_rows_before_as_of(inter) -> None:
    late = pl.DataFrame({"event_id": ["late"], "ts": [T0 + timedelta(days=400)], "user_id": ["u1"],
                         "session_id": ["s1"], "kind": ["click"], "item_id": ["brand new"], "request_id": [None],
                         "value": [None]}, schema=inter.schema)
    data = TrainingData(interactions=pl.concat([inter, late]), catalog=pl.DataFrame(), as_of=T0 + timedelta(days=300))
    r = EmbeddingRetriever(_config("BPR", epochs=1)).fit(data)
    assert "brand new" not in set(r.item_ids.tolist())


def test_bad_config_and_data_are_clear_errors(inter) -> None:
    with pytest.raises(ValueError, match="model"):
        EmbeddingConfig(model="ItemKNN")
    with pytest.raises(ValueError, match="valid_ratio"):
        EmbeddingConfig(valid_ratio=0.7)
    with pytest.raises(ValueError, match="n_heads"):
        EmbeddingConfig(model="SASRec", embedding_size=10, n_heads=3)
    with pytest.raises(ValueError, match="no logged-in positive"):
        EmbeddingRetriever(_config("BPR")).fit(inter.filter(pl.col("user_id").is_null()))
    with pytest.raises(ValueError, match="missing column"):
        EmbeddingRetriever(_config("BPR")).fit(inter.drop("ts"))
    with pytest.raises(RuntimeError, match="fit"):
        EmbeddingRetriever().retrieve_items("u1", (), 5)


def test_compat_shim_is_scoped() -> None:
    import recs.models.recbole_compat  # noqa: F401
    import recbole.trainer.trainer as rt

    assert np.float_ is np.float64 and np.unicode_ is np.str_
    assert torch.load.__module__ == "torch.serialization"  # the process keeps torch's safe default
    assert rt.torch.load is not torch.load


def test_recbole_leaves_the_process_torch_state_alone(bpr) -> None:
    """RecBole's SINE module switches on autograd anomaly detection at import (every later torch training in the
    process ran ~10x slower) and its Config sets CUDA_VISIBLE_DEVICES; after training through our wrapper neither
    has leaked."""
    import recbole.model.sequential_recommender  # noqa: F401

    assert not torch.is_anomaly_enabled()
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == _CUDA_AT_IMPORT
