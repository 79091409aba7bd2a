"""Ranker training rows: logged impressions x features (point-in-time), graded labels and weights."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from recs.datasets.policy import Request
from recs.features.compute import ItemAttrs, compute_features
from recs.features.offline import offline_inputs
from recs.features.snapshot import Snapshot, Vocab, build_snapshot

MODEL_SCORES = ("emb_score", "emb_subcat_score", "cm_score", "cm_pop_score")


def day_start(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def day_snapshots(catalog: pl.DataFrame, interactions: pl.DataFrame, impressions: pl.DataFrame,
                  events: pl.DataFrame | None, days: list[datetime]) -> dict[datetime, Snapshot]:
    """One snapshot per day start: the batch features a request of that day would have seen."""
    vocab = Vocab.from_catalog(catalog)
    return {d: build_snapshot(catalog, interactions, impressions, events, d, vocab) for d in days}


def retrieval_features_for(pipeline_like, request: Request, item_ids: list[str],
                           cands: tuple[np.ndarray, dict[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """The retrieval features the pipeline would give `item_ids` for this request (NaN/defaults if not retrieved)."""
    ids, feats = cands if cands is not None else pipeline_like.candidates(request, live=False)
    pos = {i: j for j, i in enumerate(ids)}
    idx = np.array([pos.get(i, -1) for i in item_ids])
    out = {}
    for name, v in feats.items():
        if name in MODEL_SCORES:
            continue
        arr = np.full(len(item_ids), np.nan)
        arr[idx >= 0] = v[idx[idx >= 0]]
        out[name] = arr
    out.update(pipeline_like.model_scores(request, np.asarray(item_ids, dtype=object)))
    return out


def with_candidate_negatives(lab: pl.DataFrame, cands: dict[str, np.ndarray], per_request: int,
                             rng: np.random.Generator, weight: float = 1.0) -> pl.DataFrame:
    """`lab` plus, per request of `cands`, up to `per_request` retrieved-but-not-shown candidates as grade-0 rows.

    The ranker sorts retrieved candidates at serve time, most of which the logger never showed; training only on
    logged slates teaches it the logger's contrasts. Unshown candidates are treated as non-clicks (the usual
    sampled-negative assumption: had it been shown, at a position drawn like the slate's, it would not have been
    clicked); logged rows keep their real positions, so the `position` feature still learns position bias.
    """
    extra = []
    shown = lab.group_by("request_id", maintain_order=True).agg(pl.col("item_id"), pl.col("ts").first(),
                                                                pl.col("position").max())
    for rid, items, ts, max_pos in shown.iter_rows():
        have = set(items)
        pool = [i for i in cands.get(rid, ()) if i not in have]
        if not pool:
            continue
        take = rng.choice(len(pool), size=min(per_request, len(pool)), replace=False)
        positions = rng.integers(0, int(max_pos) + 1, len(take))
        extra += [(rid, ts, pool[j], int(p)) for j, p in zip(take, positions)]
    if "weight" not in lab.columns:
        lab = lab.with_columns(pl.lit(1.0).alias("weight"))
    if not extra:
        return lab
    add = pl.DataFrame(extra, schema={"request_id": pl.Utf8, "ts": lab["ts"].dtype, "item_id": pl.Utf8,
                                      "position": lab["position"].dtype}, orient="row")
    add = add.with_columns(pl.lit(0, dtype=lab["grade"].dtype).alias("grade"), pl.lit(weight).alias("weight"))
    return pl.concat([lab.select(add.columns), add]).sort("ts", "request_id", "position", maintain_order=True)


def build_rows(labels: pl.DataFrame, requests: dict[str, Request], pipeline_like, catalog: pl.DataFrame,
               events: pl.DataFrame | None, snapshots: dict[datetime, Snapshot], attrs: ItemAttrs,
               progress=None, negatives_per_request: int = 0, seed: int = 0, negative_weight: float = 1.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pl.DataFrame]:
    """(X, grade, weight, request index, row frame) for the labelled impressions of `requests`, sorted by request.

    `negatives_per_request` > 0 adds that many unshown retrieved candidates per request (`with_candidate_negatives`).
    """
    lab = labels.filter(pl.col("request_id").is_in(list(requests))).sort("ts", "request_id", "position")
    cands = {rid: pipeline_like.candidates(requests[rid], live=False)
             for rid in dict.fromkeys(lab["request_id"].to_list())}
    if negatives_per_request > 0:
        # only where there is a visitor signal: for a context-free visitor, unshown candidates would only teach the
        # ranker which items the logger exposes (the popular ones), not what this visitor likes
        personal = {r: c[0] for r, c in cands.items() if requests[r].user_id is not None or requests[r].recent_items}
        lab = with_candidate_negatives(lab, personal, negatives_per_request,
                                       np.random.default_rng(seed), negative_weight)
    retrieval: dict[str, list[np.ndarray]] = {}
    for j, (rid, rows) in enumerate(lab.group_by("request_id", maintain_order=True)):
        feats = retrieval_features_for(pipeline_like, requests[rid[0]], rows["item_id"].to_list(), cands[rid[0]])
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
    """The latest `valid_share` of requests by time for validation, the rest for training; requests at the same
    time are ordered by id, so the split does not depend on the order of `req_ts`."""
    ordered = sorted(req_ts, key=lambda r: (req_ts[r], r))
    cut = int(len(ordered) * (1 - valid_share))
    return set(ordered[:cut]), set(ordered[cut:])
