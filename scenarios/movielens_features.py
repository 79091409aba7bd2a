"""MovieLens-100K candidates and ranker features for `movielens_pipeline`, computed from the TRAIN part only.

Candidates of a user for a phase (valid or test) are the union of three retrievers, de-duplicated, with the
phase's history (train for valid; train + valid for test, `FullRankingSplit.history`) excluded as RecBole masks it:
- BPR: the `n_bpr` best items by the embedding retriever's exact score;
- popularity: the `n_popular` items with the most train positives;
- co-occurrence (item-based, the covisit idea on user histories): sum over the user's train items i of the cosine
  co-occurrence cos(i, j) = |users with i and j| / sqrt(|users with i| |users with j|); the `n_cooc` best items.
Features (FEATURES, one row per candidate): retriever scores and ranks (ranks among the phase's unmasked items),
item popularity, item mean rating, release year and its gap to the user's mean, genre affinity, user activity and
demographics (`ml-100k.item`, `ml-100k.user` when present). Train timestamps are not used: under a random split
they tell which films were being rated while the user was active, which that split rewards and a time-based one
would not.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.models.embedding.full_ranking import FullRankingSplit

FEATURES = ("bpr_score", "bpr_rank", "bpr_gap", "cooc_score", "cooc_rank", "cooc_max", "pop_log", "pop_rank",
            "item_mean_rating", "item_year", "year_gap", "genre_affinity", "user_hist_log", "user_mean_rating",
            "user_age", "user_gender")


def _positions(ids: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    pos = np.searchsorted(ids, values).clip(0, max(ids.size - 1, 0))
    if ids.size == 0 or not (ids[pos] == values).all():
        raise ValueError(f"{what}: id not in the split")
    return pos


def _matrix(df: pl.DataFrame, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
    """Binary (n_users, n_items) matrix of a split part (duplicates count once)."""
    u = _positions(users, df["user_id"].to_numpy().astype(str), "user_id")
    i = _positions(items, df["item_id"].to_numpy().astype(str), "item_id")
    m = sp.csr_matrix((np.ones(u.size, dtype=np.float32), (u, i)), shape=(users.size, items.size))
    m.data[:] = 1.0
    return m


def _read_side(path: Path | None, key: str, columns: dict[str, str]) -> pl.DataFrame | None:
    """A RecBole atomic side file (`.item` / `.user`) with `key` and the wanted columns renamed, or None."""
    if path is None or not Path(path).is_file():
        return None
    df = pl.read_csv(path, separator="\t", quote_char=None, infer_schema_length=0)
    names = {c.split(":")[0]: c for c in df.columns}
    missing = [c for c in (key, *columns) if c not in names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return df.select(pl.col(names[key]).alias("id"), *(pl.col(names[c]).alias(a) for c, a in columns.items()))


def _rank(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each entry within its row, best (highest) first; -inf entries rank last."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None, :], axis=1)
    return ranks


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """(n_users, n_items) bool: each row's `n` best finite entries."""
    n = min(n, scores.shape[1])
    out = np.zeros(scores.shape, dtype=bool)
    if n <= 0:
        return out
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    np.put_along_axis(out, top, True, axis=1)
    return out & np.isfinite(scores)


@dataclass
class PhaseRows:
    """Candidate rows of one phase, sorted by user: row i is (users[user_pos[i]], items[item_pos[i]])."""

    user_pos: np.ndarray
    item_pos: np.ndarray
    X: np.ndarray  # (n_rows, n_features) float32
    y: np.ndarray  # (n_rows,) 1 if the item is one of the user's positives in the phase part
    n_positives: np.ndarray  # (n_users,) the user's positives in the phase part (inside or outside candidates)

    def groups(self, user_rows: np.ndarray | None = None) -> np.ndarray:
        """Group sizes (rows per user, in row order) of the rows selected by `user_rows` (a row mask)."""
        up = self.user_pos if user_rows is None else self.user_pos[user_rows]
        _, counts = np.unique(up, return_counts=True)
        return counts


class MovieLensFeatures:
    """Train-only statistics of a split, and candidates x features for its valid or test phase."""

    def __init__(self, split: FullRankingSplit, bpr_scores: np.ndarray, data_dir: Path | None = None) -> None:
        self.split = split
        self.items = split.item_ids
        self.users = np.sort(pl.concat([p.select("user_id") for p in (split.train, split.valid, split.test)])
                             ["user_id"].unique().to_numpy().astype(str))
        if bpr_scores.shape != (self.users.size, self.items.size):
            raise ValueError(f"bpr_scores: shape {bpr_scores.shape}, expected {(self.users.size, self.items.size)}")
        self.bpr = np.where(np.isfinite(bpr_scores), bpr_scores, -np.inf).astype(np.float64)
        self.names = FEATURES
        train = split.train
        self.X = _matrix(train, self.users, self.items)
        self.hist_len = np.asarray(self.X.sum(1)).ravel()
        self.pop = np.asarray(self.X.sum(0)).ravel()
        co = (self.X.T @ self.X).toarray().astype(np.float64)
        norm = np.sqrt(np.maximum(self.pop, 1.0))
        self.cos = co / norm[:, None] / norm[None, :]
        np.fill_diagonal(self.cos, 0.0)
        self.cooc = np.asarray(self.X @ self.cos)
        self.cooc_max = np.zeros_like(self.cooc)
        for u in range(self.users.size):
            hist = self.X.indices[self.X.indptr[u]:self.X.indptr[u + 1]]
            if hist.size:
                self.cooc_max[u] = self.cos[hist].max(0)
        self._ratings(train)
        self._side(Path(data_dir) if data_dir is not None else None)

    def _ratings(self, train: pl.DataFrame) -> None:
        value = train["value"].fill_null(np.nan).to_numpy() if "value" in train.columns else np.ones(train.height)
        u = _positions(self.users, train["user_id"].to_numpy().astype(str), "user_id")
        i = _positions(self.items, train["item_id"].to_numpy().astype(str), "item_id")
        ok = np.isfinite(value)
        self.item_rating = np.bincount(i[ok], value[ok], self.items.size) / np.maximum(
            np.bincount(i[ok], minlength=self.items.size), 1)
        self.user_rating = np.bincount(u[ok], value[ok], self.users.size) / np.maximum(
            np.bincount(u[ok], minlength=self.users.size), 1)

    def _side(self, data_dir: Path | None) -> None:
        self.year = np.full(self.items.size, np.nan)
        self.genres = np.zeros((self.items.size, 1))
        self.age = np.full(self.users.size, np.nan)
        self.gender = np.full(self.users.size, np.nan)
        item = _read_side(data_dir / "ml-100k.item" if data_dir else None, "item_id",
                          {"release_year": "year", "class": "genres"})
        if item is not None:
            item = item.filter(pl.col("id").is_in(list(self.items)))
            pos = _positions(self.items, item["id"].to_numpy().astype(str), "item_id")
            self.year[pos] = item["year"].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
            tags = [str(g or "").split() for g in item["genres"].to_list()]
            vocab = sorted({t for ts in tags for t in ts})
            self.genres = np.zeros((self.items.size, max(len(vocab), 1)))
            for p, ts in zip(pos, tags):
                self.genres[p, [vocab.index(t) for t in ts]] = 1.0
        user = _read_side(data_dir / "ml-100k.user" if data_dir else None, "user_id",
                          {"age": "age", "gender": "gender"})
        if user is not None:
            user = user.filter(pl.col("id").is_in(list(self.users)))
            pos = _positions(self.users, user["id"].to_numpy().astype(str), "user_id")
            self.age[pos] = user["age"].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
            self.gender[pos] = (user["gender"] == "F").cast(pl.Float64).to_numpy()
        hist = np.maximum(self.hist_len, 1.0)[:, None]
        self.user_genres = np.asarray(self.X @ self.genres) / hist
        known = np.isfinite(self.year)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.user_year = np.asarray(self.X[:, known] @ self.year[known]).ravel() / np.asarray(
                self.X[:, known].sum(1)).ravel()

    def phase_rows(self, phase: str, users: np.ndarray, n_bpr: int, n_popular: int, n_cooc: int) -> PhaseRows:
        """Candidates x features (and labels from the phase part) of `users` (sorted ids) for phase valid/test."""
        up = _positions(self.users, np.asarray(users, dtype=str), "user_id")
        mask = _matrix(self.split.history(phase), self.users, self.items)[up].toarray() > 0
        bpr = np.where(mask, -np.inf, self.bpr[up])
        cooc = np.where(mask, -np.inf, self.cooc[up])
        pop = np.where(mask, -np.inf, np.broadcast_to(self.pop, mask.shape))
        cand = _top(bpr, n_bpr) | _top(pop, n_popular) | (_top(cooc, n_cooc) & (cooc > 0))
        rows, cols = np.nonzero(cand)  # row-major: sorted by user
        u = up[rows]
        pos = _matrix(self.split.part(phase), self.users, self.items)[up]
        y = np.asarray(pos[rows, cols]).ravel().astype(np.int32)
        n_pos = np.asarray(pos.sum(1)).ravel().astype(np.int64)
        bpr_rank, cooc_rank, pop_rank = _rank(bpr), _rank(cooc), _rank(pop)
        best = bpr.max(1)
        g = self.genres[cols]
        cols_f: dict[str, np.ndarray] = {
            "bpr_score": bpr[rows, cols], "bpr_rank": bpr_rank[rows, cols],
            "bpr_gap": bpr[rows, cols] - best[rows], "cooc_score": cooc[rows, cols],
            "cooc_rank": cooc_rank[rows, cols], "cooc_max": self.cooc_max[u, cols],
            "pop_log": np.log1p(self.pop[cols]), "pop_rank": pop_rank[rows, cols],
            "item_mean_rating": self.item_rating[cols], "item_year": self.year[cols],
            "year_gap": self.year[cols] - self.user_year[u],
            "genre_affinity": (self.user_genres[u] * g).sum(1) / np.maximum(g.sum(1), 1.0),
            "user_hist_log": np.log1p(self.hist_len[u]), "user_mean_rating": self.user_rating[u],
            "user_age": self.age[u], "user_gender": self.gender[u],
        }
        X = np.column_stack([cols_f[n] for n in self.names]).astype(np.float32)
        X[~np.isfinite(X)] = np.nan  # LightGBM: missing
        return PhaseRows(user_pos=u, item_pos=cols, X=X, y=y, n_positives=n_pos)
