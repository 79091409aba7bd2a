"""Ranker training rows: logged impressions x features (point-in-time), graded labels and weights."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from recs.datasets.policy import Request
from recs.features.compute import ItemAttrs, compute_features
from recs.features.offline import offline_inputs
from recs.features.snapshot import Snapshot, Vocab, build_snapshot


def day_start(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def day_snapshots(catalog: pl.DataFrame, interactions: pl.DataFrame, impressions: pl.DataFrame,
                  events: pl.DataFrame | None, days: list[datetime]) -> dict[datetime, Snapshot]:
    """One snapshot per day start: the batch features a request of that day would have seen."""
    vocab = Vocab.from_catalog(catalog)
    return {d: build_snapshot(catalog, interactions, impressions, events, d, vocab) for d in days}


def retrieval_features_for(pipeline_like, request: Request, item_ids: list[str]) -> dict[str, np.ndarray]:
    """The retrieval features the pipeline would give `item_ids` for this request (NaN/defaults if not retrieved)."""
    ids, feats = pipeline_like.candidates(request, live=False)
    pos = {i: j for j, i in enumerate(ids)}
    idx = np.array([pos.get(i, -1) for i in item_ids])
    out = {}
    for name, v in feats.items():
        if name in ("emb_score", "emb_subcat_score"):
            continue
        arr = np.full(len(item_ids), np.nan)
        arr[idx >= 0] = v[idx[idx >= 0]]
        out[name] = arr
    out["emb_score"], out["emb_subcat_score"] = pipeline_like.embedding_scores(request,
                                                                               np.asarray(item_ids, dtype=object))
    return out


def build_rows(labels: pl.DataFrame, requests: dict[str, Request], pipeline_like, catalog: pl.DataFrame,
               events: pl.DataFrame | None, snapshots: dict[datetime, Snapshot], attrs: ItemAttrs,
               progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pl.DataFrame]:
    """(X, grade, weight, request index, row frame) for the labelled impressions of `requests`, sorted by request."""
    lab = labels.filter(pl.col("request_id").is_in(list(requests))).sort("ts", "request_id", "position")
    retrieval: dict[str, list[np.ndarray]] = {}
    for j, (rid, rows) in enumerate(lab.group_by("request_id", maintain_order=True)):
        feats = retrieval_features_for(pipeline_like, requests[rid[0]], rows["item_id"].to_list())
        for k, v in feats.items():
            retrieval.setdefault(k, []).append(v)
        if progress and j % 200 == 0:
            progress(j)
    retr = {k: np.concatenate(v) for k, v in retrieval.items()}
    inp = offline_inputs(lab, requests, catalog, events, retr)
    inp.position = lab["position"].to_numpy().astype(np.float32)
    day = lab["ts"].dt.truncate("1d").to_list()
    parts = []
    for d in sorted(set(day)):
        mask = np.array([x == d for x in day])
        sub = inp.take(mask)
        parts.append((mask, compute_features(sub, snapshots[d], attrs)))
    X = np.zeros((lab.height, parts[0][1].shape[1]), dtype=np.float32)
    for mask, block in parts:
        X[mask] = block
    req_index = lab["request_id"].rank("dense").to_numpy().astype(np.int64)
    order = np.argsort(req_index, kind="stable")
    w = lab["weight"].to_numpy() if "weight" in lab.columns else np.ones(lab.height)
    return X[order], lab["grade"].to_numpy()[order].astype(np.int32), w[order], req_index[order], lab[order]


def split_by_time(req_ts: dict[str, datetime], valid_share: float = 0.2) -> tuple[set[str], set[str]]:
    """The latest `valid_share` of requests by time for validation, the rest for training."""
    ordered = sorted(req_ts, key=lambda r: req_ts[r])
    cut = int(len(ordered) * (1 - valid_share))
    return set(ordered[:cut]), set(ordered[cut:])
