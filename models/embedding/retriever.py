"""Embedding retriever: RecBole-trained vectors + a faiss index -> candidate items for a user or a session.

Query vector, by case:
- logged-in user known to a general model (BPR): the user's learned vector;
- known user with a sequential model (SASRec, GRU4Rec): the model run on the user's history followed by the
  request's recent items;
- anonymous or unknown user with recent items: a SESSION vector, i.e. the sequential model run on the session,
  or for BPR the recency-weighted mean of the recent items' vectors (weight 0.5 ** (age / session_half_life),
  age 0 for the newest item);
- nothing known: the most popular training items (scores are their positive counts).
`recent_item_ids` are ordered oldest first. Candidates come from the approximate index (inner product).

Two entry points: `retrieve(RetrievalQuery, k) -> Candidates` (the team's `Retriever` contract; skips items the
query's live state marks ineligible) and `retrieve_items(user_id, recent_item_ids, k, exclude) -> (ids, scores)`.
Saved as JSON, Parquet, .npy/.npz and a faiss index file: nothing is pickled.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from recs.datasets.io import atomic_dir
from recs.models.base import Candidates, RetrievalQuery, Retriever, TrainingData
from recs.models.embedding.ann_index import AnnConfig, AnnIndex
from recs.models.embedding.recbole_train import EmbeddingConfig, TrainedEmbeddings, train_embeddings
from recs.models.embedding.sequence import SequenceEncoder
from recs.models.retrievers._common import StateRows

FORMAT_VERSION = 1
SOURCES = ("user", "sequence", "session", "popular")


@dataclass
class RetrieverConfig:
    """The embedding model, its index, and how a session vector is formed."""

    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    ann: AnnConfig = field(default_factory=AnnConfig)
    session_half_life: float = 3.0  # BPR session vector: an item `half_life` steps older weighs half as much
    session_max_items: int = 50  # BPR session vector: newest items used

    def __post_init__(self) -> None:
        if self.session_half_life <= 0:
            raise ValueError(f"session_half_life: must be > 0, got {self.session_half_life}")
        if self.session_max_items < 1:
            raise ValueError(f"session_max_items: must be >= 1, got {self.session_max_items}")

    def to_dict(self) -> dict:
        return {"embedding": self.embedding.to_dict(), "ann": asdict(self.ann),
                "session_half_life": self.session_half_life, "session_max_items": self.session_max_items}

    @classmethod
    def from_dict(cls, d: dict) -> "RetrieverConfig":
        return cls(embedding=EmbeddingConfig.from_dict(d["embedding"]), ann=AnnConfig(**d["ann"]),
                   session_half_life=float(d["session_half_life"]), session_max_items=int(d["session_max_items"]))


class EmbeddingRetriever(Retriever):
    """`fit` on canonical interactions, then `retrieve(query, k)` or `retrieve_items(user_id, recent, k, exclude)`."""

    kind = "embedding"

    def __init__(self, config: RetrieverConfig | None = None) -> None:
        self.config = config or RetrieverConfig()
        self.emb: TrainedEmbeddings | None = None
        self.index: AnnIndex | None = None
        self._state_rows = StateRows()      # indexed item -> row of the live state

    # ---------------------------------------------------------------- fitting
    def fit(self, data: TrainingData | pl.DataFrame, valid: pl.DataFrame | None = None) -> "EmbeddingRetriever":
        """Train on logged-in positives (`TrainingData`: its interactions before `as_of`) and index the items."""
        if isinstance(data, TrainingData):
            inter = data.interactions.filter(pl.col("ts") < data.as_of)
        else:
            inter = data
        self.emb = train_embeddings(inter, self.config.embedding, valid=valid)
        self.index = AnnIndex.build(self.emb.item_vectors, self.config.ann, queries=self.emb.user_vectors)
        return self

    def _ready(self) -> TrainedEmbeddings:
        if self.emb is None or self.index is None:
            raise RuntimeError("EmbeddingRetriever: call fit() or load() first")
        return self.emb

    @property
    def item_ids(self) -> np.ndarray:
        return self._ready().item_ids

    @property
    def user_ids(self) -> np.ndarray:
        return self._ready().user_ids

    @property
    def ann_recall(self) -> float:
        """Recall@`ann.recall_k` of the index against exact search, measured when it was built."""
        self._ready()
        return self.index.measured_recall  # type: ignore[union-attr]

    # ---------------------------------------------------------------- queries
    def _positions(self, ids: np.ndarray, item_ids: Sequence[str] | Iterable[str]) -> np.ndarray:
        """Positions of the known ids among `ids` (sorted), in input order; unknown ids are dropped."""
        arr = np.asarray(list(item_ids), dtype=str)
        if arr.size == 0 or ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(ids, arr).clip(0, ids.size - 1)
        return pos[ids[pos] == arr].astype(np.int64)

    def _session_vector(self, recent_pos: np.ndarray) -> np.ndarray:
        emb = self._ready()
        pos = recent_pos[-self.config.session_max_items:]
        age = np.arange(pos.size - 1, -1, -1, dtype=np.float64)
        w = 0.5 ** (age / self.config.session_half_life)
        return (w[:, None] * emb.item_vectors[pos]).sum(0).astype(np.float32) / np.float32(w.sum())

    def query(
        self, user_id: str | None, recent_item_ids: Sequence[str] = (), history: Sequence[str] | None = None
    ) -> tuple[np.ndarray | None, str]:
        """(query vector or None, source in `SOURCES`). `history`: the user's past items, oldest first
        (None: what the model saw at fit time)."""
        emb = self._ready()
        urow = self._positions(emb.user_ids, [user_id]) if user_id is not None else np.zeros(0, np.int64)
        known_user = urow.size == 1
        if emb.encoder is not None:
            recent = emb.encoder.known(recent_item_ids)
            if known_user and not recent and history is None:
                return emb.user_vectors[urow[0]], "sequence"
            past = emb.encoder.known(history) if history is not None else (
                emb.histories.get(str(user_id), []) if known_user else [])
            if past or recent:
                return emb.encoder.encode([past + recent])[0], "sequence" if past else "session"
            return None, "popular"
        if known_user:
            return emb.user_vectors[urow[0]], "user"
        recent_pos = self._positions(emb.item_ids, list(history or ()) + list(recent_item_ids))
        if recent_pos.size:
            return self._session_vector(recent_pos), "session"
        return None, "popular"

    def retrieve_items(
        self, user_id: str | None, recent_item_ids: Sequence[str] = (), k: int = 100, exclude: Iterable[str] = (),
        history: Sequence[str] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """Up to `k` (item ids, scores), best first, never an item in `exclude`."""
        ids, scores, _ = self._retrieve(user_id, recent_item_ids, k, exclude, history)
        return ids, scores

    def _retrieve(
        self, user_id: str | None, recent_item_ids: Sequence[str], k: int, exclude: Iterable[str],
        history: Sequence[str] | None, allow: np.ndarray | None = None,
    ) -> tuple[list[str], np.ndarray, str]:
        """`allow`: boolean mask over the indexed items (None: all); the others are skipped like `exclude`."""
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        emb = self._ready()
        ex = self._positions(emb.item_ids, exclude)
        q, source = self.query(user_id, recent_item_ids, history)
        if q is None:
            pop = emb.item_popularity.astype(np.float64)
            pop[ex] = -np.inf
            if allow is not None:
                pop[~allow] = -np.inf
            top = np.argsort(-pop, kind="stable")[:k]
            top = top[np.isfinite(pop[top])]
            return emb.item_ids[top].tolist(), pop[top].astype(np.float32), source
        ids, scores = self.index.search(q[None, :], k, exclude=ex, allow=allow)  # type: ignore[union-attr]
        keep = ids[0] >= 0
        return emb.item_ids[ids[0][keep]].tolist(), scores[0][keep].astype(np.float32), source

    def retrieve(self, query: RetrievalQuery, k: int) -> Candidates:
        """The `Retriever` contract: candidates for one request, skipping items ineligible in `query.state`.

        One index search with the live eligibility of every indexed item as its filter (the items' state rows are
        cached, `StateRows`): the best `k` eligible items up to the index's approximation, however many of the
        best ones are out of stock (an item missing from the state is never eligible)."""
        req = query.request
        history = list(query.history) if query.history else None
        allow = None
        if query.state is not None:
            rows = self._state_rows.get(query.state, self._ready().item_ids)
            allow = rows >= 0
            if allow.any():
                allow[allow] = query.state.eligible_mask(req.ts, rows[allow])
        ids, scores, source = self._retrieve(req.user_id, req.recent_items, k, (), history, allow)
        return Candidates(np.array(ids, dtype=object), np.asarray(scores, dtype=float), f"{self.kind}:{source}")

    def score_items(self, user_ids: Sequence[str], item_ids: Sequence[str] | None = None) -> np.ndarray:
        """Exact scores (n_users, n_items) of each logged-in user for `item_ids` (default: all indexed items).

        Unknown users and unknown items score -inf. This is the full-ranking scorer used by benchmarks.
        """
        emb = self._ready()
        users = np.asarray(list(user_ids), dtype=str)
        qs = np.zeros((users.size, emb.item_vectors.shape[1]), dtype=np.float32)
        known = np.zeros(users.size, dtype=bool)
        if users.size and emb.user_ids.size:
            pos = np.searchsorted(emb.user_ids, users).clip(0, emb.user_ids.size - 1)
            known = emb.user_ids[pos] == users
            qs[known] = emb.user_vectors[pos[known]]
        scores = qs @ emb.item_vectors.T
        scores[~known] = -np.inf
        if item_ids is None:
            return scores
        wanted = np.asarray(list(item_ids), dtype=str)
        ipos = np.searchsorted(emb.item_ids, wanted).clip(0, emb.item_ids.size - 1)
        ok = emb.item_ids[ipos] == wanted
        out = np.full((users.size, wanted.size), -np.inf, dtype=np.float32)
        out[:, ok] = scores[:, ipos[ok]]
        return out

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path, overwrite: bool = False) -> None:  # type: ignore[override]
        """Write the retriever to folder `path` atomically (vectors, ids, index, sequence model, config)."""
        emb = self._ready()
        with atomic_dir(path, overwrite=overwrite) as tmp:
            np.save(tmp / "item_vectors.npy", emb.item_vectors)
            np.save(tmp / "user_vectors.npy", emb.user_vectors)
            pl.DataFrame({"item_id": emb.item_ids.tolist(), "popularity": emb.item_popularity}).write_parquet(
                tmp / "items.parquet")
            pl.DataFrame({"user_id": emb.user_ids.tolist()}, schema={"user_id": pl.Utf8}).write_parquet(
                tmp / "users.parquet")
            if emb.encoder is not None:
                users = sorted(emb.histories)
                pl.DataFrame({"user_id": users, "items": [emb.histories[u] for u in users]},
                             schema={"user_id": pl.Utf8, "items": pl.List(pl.Utf8)}).write_parquet(
                    tmp / "histories.parquet")
                np.savez(tmp / "encoder.npz", **emb.encoder.state_arrays())
            (tmp / "ann").mkdir()
            self.index.write_into(tmp / "ann")  # type: ignore[union-attr]
            meta = {
                "format": FORMAT_VERSION, "config": self.config.to_dict(),
                "encoder": None if emb.encoder is None else {"model": emb.encoder.model_name,
                                                             "arch": emb.encoder.arch},
                "best_valid": emb.best_valid, "best_epoch": emb.best_epoch, "train_seconds": emb.train_seconds,
                "n_items": int(emb.item_ids.size), "n_users": int(emb.user_ids.size),
                "ann_recall": self.index.measured_recall,  # type: ignore[union-attr]
            }
            (tmp / "retriever.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingRetriever":  # type: ignore[override]
        folder = Path(path)
        meta_file = folder / "retriever.json"
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{meta_file}: cannot read retriever metadata ({exc})") from exc
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        config = RetrieverConfig.from_dict(meta["config"])
        items = pl.read_parquet(folder / "items.parquet")
        item_ids = np.asarray(items["item_id"].to_list(), dtype=str)
        encoder, histories = None, {}
        if meta["encoder"] is not None:
            with np.load(folder / "encoder.npz", allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            encoder = SequenceEncoder.from_arrays(meta["encoder"]["model"], meta["encoder"]["arch"], item_ids, arrays)
            h = pl.read_parquet(folder / "histories.parquet")
            histories = dict(zip(h["user_id"].to_list(), h["items"].to_list()))
        emb = TrainedEmbeddings(
            config=config.embedding, item_ids=item_ids,
            item_vectors=np.load(folder / "item_vectors.npy", allow_pickle=False),
            user_ids=np.asarray(pl.read_parquet(folder / "users.parquet")["user_id"].to_list(), dtype=str),
            user_vectors=np.load(folder / "user_vectors.npy", allow_pickle=False),
            item_popularity=items["popularity"].to_numpy().astype(np.int64),
            histories=histories, encoder=encoder, best_valid=meta.get("best_valid") or {},
            best_epoch=meta.get("best_epoch"), train_seconds=float(meta.get("train_seconds", 0.0)),
        )
        if emb.item_vectors.shape[0] != item_ids.size:
            raise ValueError(f"{folder / 'item_vectors.npy'}: {emb.item_vectors.shape[0]} rows, "
                             f"items.parquet has {item_ids.size}")
        out = cls(config)
        out.emb, out.index = emb, AnnIndex.load(folder / "ann")
        if out.index.ntotal != item_ids.size:
            raise ValueError(f"{folder / 'ann'}: the index holds {out.index.ntotal} vectors, items.parquet lists "
                             f"{item_ids.size} items")
        return out
