"""RecBole's standard offline protocol, reproduced without RecBole: per-user random split and full-ranking metrics.

Split ("RS" with group_by user, order RO): each user's interactions are shuffled and cut by ratios, every part
but the first rounded down, a part whose share is below one row getting one row while train keeps more than one
(RecBole's `_calcu_split_ids`). Evaluation ("full" mode): every item is a candidate except the user's items in
earlier parts (train for valid; train + valid for test); only users with a positive in the evaluated part count.
Per user with positives R and the top-K list L:
recall@K = |L ∩ R| / |R|; precision@K = |L ∩ R| / K; hit@K = [L ∩ R ≠ ∅]; mrr@K = 1 / rank of the first hit;
ndcg@K = sum_{hits at rank r} 1/log2(r+1) / sum_{r=1..min(|R|,K)} 1/log2(r+1). Each is averaged over users.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.datasets.io import atomic_dir

PARTS = ("train", "valid", "test")
METRICS = ("recall", "mrr", "ndcg", "hit", "precision")


def split_counts(totals: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """(n_users, n_parts) rows per part for each user's total, exactly as RecBole's `_calcu_split_ids`."""
    r = np.asarray(ratios, dtype=np.float64)
    r = r / r.sum()
    tot = np.asarray(totals, dtype=np.int64)
    cnt = np.floor(r[None, :] * tot[:, None]).astype(np.int64)
    cnt[:, 0] = tot - cnt[:, 1:].sum(1)
    for i in range(1, len(r)):
        share = r[-i] * tot
        bump = (cnt[:, 0] > 1) & (share > 0) & (share < 1)
        # RecBole stops adjusting a user once train is down to one row; the mask re-checks that per step
        cnt[bump, -i] += 1
        cnt[bump, 0] -= 1
    return cnt


@dataclass
class FullRankingSplit:
    """train / valid / test interactions (user_id, item_id, ...) of one per-user split."""

    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame

    def part(self, name: str) -> pl.DataFrame:
        if name not in PARTS:
            raise ValueError(f"part: {name!r} is not one of {PARTS}")
        return getattr(self, name)

    @property
    def item_ids(self) -> np.ndarray:
        """Every item of the split, sorted: the full-ranking candidate set."""
        ids = pl.concat([p.select("item_id") for p in (self.train, self.valid, self.test)])["item_id"].unique()
        return np.sort(ids.to_numpy().astype(str))

    def history(self, phase: str) -> pl.DataFrame:
        """Interactions masked out when evaluating `phase` (train for valid; train + valid for test)."""
        if phase == "valid":
            return self.train
        if phase == "test":
            return pl.concat([self.train.select(self.valid.columns), self.valid])
        raise ValueError(f"phase: {phase!r} is not 'valid' or 'test'")

    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """`train.parquet`, `valid.parquet`, `test.parquet` under folder `path`, atomically."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            for name in PARTS:
                self.part(name).write_parquet(tmp / f"{name}.parquet")

    @classmethod
    def load(cls, path: str | Path) -> "FullRankingSplit":
        folder = Path(path)
        parts = {}
        for name in PARTS:
            f = folder / f"{name}.parquet"
            if not f.is_file():
                raise ValueError(f"{f}: missing split part")
            parts[name] = pl.read_parquet(f)
        return cls(**parts)


def split_by_user(
    interactions: pl.DataFrame, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 2020
) -> FullRankingSplit:
    """RecBole's "RS" split grouped by user with random order (rows are shuffled with `seed`, then cut)."""
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise ValueError(f"ratios: need three non-negative shares with train > 0, got {tuple(ratios)}")
    for col in ("user_id", "item_id"):
        if col not in interactions.columns:
            raise ValueError(f"interactions: missing column {col!r}")
    logged_in = interactions.filter(pl.col("user_id").is_not_null())
    rng = np.random.default_rng(seed)
    df = (
        logged_in.with_columns(pl.Series("_key", rng.permutation(logged_in.height)))
        .sort(["user_id", "_key"])
        .with_columns(pl.int_range(pl.len()).over("user_id").alias("_pos"), pl.len().over("user_id").alias("_n"))
    )
    users = df.select("user_id", "_n").unique(maintain_order=True)
    cnt = split_counts(users["_n"].to_numpy(), ratios)
    bounds = users.with_columns(pl.Series("_c0", cnt[:, 0]), pl.Series("_c1", cnt[:, 0] + cnt[:, 1])).drop("_n")
    df = df.join(bounds, on="user_id", how="left")
    part = (
        pl.when(pl.col("_pos") < pl.col("_c0")).then(0)
        .when(pl.col("_pos") < pl.col("_c1")).then(1).otherwise(2)
    )
    df = df.with_columns(part.alias("_part"))
    drop = ["_key", "_pos", "_n", "_c0", "_c1", "_part"]
    return FullRankingSplit(*(df.filter(pl.col("_part") == i).drop(drop) for i in range(3)))


def _user_item_matrix(df: pl.DataFrame, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
    shape = (users.size, items.size)
    if df.height == 0 or users.size == 0 or items.size == 0:
        return sp.csr_matrix(shape, dtype=np.float32)
    u = df["user_id"].to_numpy().astype(str)
    i = df["item_id"].to_numpy().astype(str)
    upos = np.searchsorted(users, u).clip(0, users.size - 1)
    ipos = np.searchsorted(items, i).clip(0, items.size - 1)
    ok = (users[upos] == u) & (items[ipos] == i)
    m = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.float32), (upos[ok], ipos[ok])),
                      shape=shape)
    m.data[:] = 1.0  # duplicates count once
    return m


def _metrics_from_hits(hits: np.ndarray, n_pos: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user metrics from a (n_users, k) 0/1 hit matrix and each user's positive count."""
    ranks = np.arange(1, k + 1, dtype=np.float64)
    disc = 1.0 / np.log2(ranks + 1.0)
    idcg = np.cumsum(disc)[np.minimum(n_pos, k) - 1]
    first = np.where(hits.any(1), hits.argmax(1) + 1, 0)
    return {
        "recall": hits.sum(1) / n_pos,
        "mrr": np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0),
        "ndcg": (hits * disc).sum(1) / idcg,
        "hit": hits.any(1).astype(np.float64),
        "precision": hits.sum(1) / k,
    }


def _summarise(per_user: list[dict[str, np.ndarray]], k: int) -> dict[str, float]:
    out = {f"{m}@{k}": float(np.concatenate([p[m] for p in per_user]).mean()) for m in METRICS}
    out["n_users"] = float(sum(len(p["recall"]) for p in per_user))
    return out


def evaluate_scores(
    split: FullRankingSplit, score_fn: Callable[[Sequence[str]], np.ndarray], phase: str = "test", k: int = 10,
    batch_size: int = 256,
) -> dict[str, float]:
    """Full-ranking metrics of a scorer: `score_fn(user_ids)` -> (n_users, n_items) scores aligned with
    `split.item_ids` (higher is better; -inf or NaN: never recommended). History items are masked here."""
    items = split.item_ids
    target = split.part(phase)
    users = np.sort(target["user_id"].unique().to_numpy().astype(str))
    pos = _user_item_matrix(target, users, items)
    hist = _user_item_matrix(split.history(phase), users, items)
    n_pos = np.asarray(pos.sum(1)).ravel().astype(np.int64)
    per_user = []
    for start in range(0, users.size, batch_size):
        rows = slice(start, start + batch_size)
        scores = np.array(score_fn(users[rows].tolist()), dtype=np.float64)
        if scores.shape != (len(users[rows]), items.size):
            raise ValueError(f"score_fn: returned shape {scores.shape}, expected {(len(users[rows]), items.size)}")
        scores[np.isnan(scores)] = -np.inf
        scores[hist[rows].toarray() > 0] = -np.inf
        kk = min(k, items.size)
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        finite = np.isfinite(np.take_along_axis(scores, top, 1))
        hits = np.take_along_axis(pos[rows].toarray(), top, 1) * finite
        if kk < k:
            hits = np.pad(hits, ((0, 0), (0, k - kk)))
        per_user.append(_metrics_from_hits(hits, n_pos[rows], k))
    return _summarise(per_user, k)


def evaluate_topk(
    split: FullRankingSplit, topk: Mapping[str, Sequence[str]], phase: str = "test", k: int = 10
) -> dict[str, float]:
    """The same metrics for ready-made top-K lists (user -> items, best first). Nothing is masked: a list should
    already leave out the user's history; a user without a list scores zero."""
    target = split.part(phase)
    users = np.sort(target["user_id"].unique().to_numpy().astype(str))
    positives = target.group_by("user_id").agg(pl.col("item_id").unique())
    pos_sets = {u: set(v) for u, v in zip(positives["user_id"].to_list(), positives["item_id"].to_list())}
    hits = np.zeros((users.size, k), dtype=np.float64)
    for row, u in enumerate(users):
        seen: set[str] = set()
        for r, item in enumerate(list(topk.get(u, ()))[:k]):
            if item in pos_sets[u] and item not in seen:
                hits[row, r] = 1.0
            seen.add(item)
    n_pos = np.array([len(pos_sets[u]) for u in users], dtype=np.int64)
    return _summarise([_metrics_from_hits(hits, n_pos, k)], k)
