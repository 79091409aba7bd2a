"""Approximate maximum-inner-product search over item vectors with faiss (HNSW or IVF), recall checked at build.

`AnnIndex.build` measures recall@`recall_k` of the approximate index against exact search (`IndexFlatIP`) on
a sample of queries and, when `autotune` is on, raises the search breadth (HNSW `efSearch`, IVF `nprobe`) until
the measured recall reaches `target_recall`. The measured figure is kept on the index and saved with it.
Row i of the indexed matrix has id i; callers map ids to item ids.

Filtered search (`allow`): HNSW and IVF visit disallowed entries too, so a selective mask costs recall (on 5,000
random 16-d vectors, k=100, tuned efSearch: 0.74 with 10% of the ids allowed, 0.93 with 30%, short of k at 5% and
below).
The index therefore searches exactly over the allowed vectors when they are fewer than `exact_below_share` of it,
widens its search breadth by 1 / (allowed share) otherwise, and completes exactly any row that still comes back
short of k.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import faiss
import numpy as np

from recs.datasets.io import atomic_dir

INDEX_KINDS = ("hnsw", "ivf", "flat")
_INDEX_FILE, _META_FILE = "index.faiss", "index.json"


@dataclass
class AnnConfig:
    """Index family and its knobs; `target_recall` is checked against exact search at build time."""

    kind: str = "hnsw"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 64  # starting value; autotune doubles it until the target recall is met
    ivf_nlist: int = 0  # 0: about 4 * sqrt(n_items), at most n_items / 39 (faiss' training minimum)
    nprobe: int = 8
    target_recall: float = 0.95
    recall_k: int = 100
    n_eval_queries: int = 500
    autotune: bool = True
    seed: int = 0
    num_threads: int = 1  # 1 is fastest for these small models on a shared CPU (OpenMP contention)
    # filtered search: allow masks keeping less than this share of the index are searched exactly (cost: allowed
    # items x dim); above it the breadth grows by 1 / share, up to 1 / exact_below_share
    exact_below_share: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"kind: {self.kind!r} is not one of {INDEX_KINDS}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe", "recall_k", "n_eval_queries", "num_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.ivf_nlist < 0:
            raise ValueError(f"ivf_nlist: must be >= 0, got {self.ivf_nlist}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall: must be in (0, 1], got {self.target_recall}")
        if not 0.0 < self.exact_below_share <= 1.0:
            raise ValueError(f"exact_below_share: must be in (0, 1], got {self.exact_below_share}")


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-d array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (ids of -1 are padding)."""
    hits = total = 0
    for a, e in zip(approx_ids, exact_ids):
        e = e[e >= 0]
        hits += np.intersect1d(a[a >= 0], e).size
        total += e.size
    return hits / total if total else 1.0


class AnnIndex:
    """A faiss inner-product index over item vectors with its measured recall against exact search."""

    def __init__(self, index: faiss.Index, config: AnnConfig, search_breadth: int, measured_recall: float) -> None:
        self.index = index
        self.config = config
        self.search_breadth = search_breadth  # efSearch (hnsw) or nprobe (ivf); 0 for flat
        self.measured_recall = measured_recall
        self.exact_searches = 0   # filtered query rows answered by exact search (too selective, or came back short)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def meets_target(self) -> bool:
        return self.measured_recall >= self.config.target_recall

    @classmethod
    def build(cls, vectors: np.ndarray, config: AnnConfig | None = None,
              queries: np.ndarray | None = None) -> "AnnIndex":
        """Index `vectors`; measure recall on `queries` (default: a sample of the vectors themselves)."""
        cfg = config or AnnConfig()
        x = _as_matrix(vectors, "vectors")
        faiss.omp_set_num_threads(cfg.num_threads)
        n, d = x.shape
        if cfg.kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
            breadth = 0
        elif cfg.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.ef_construction
            breadth = cfg.ef_search
        else:
            nlist = cfg.ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
            nlist = min(nlist, n)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = cfg.seed
            index.train(x)
            breadth = min(cfg.nprobe, nlist)
        index.add(x)
        ann = cls(index, cfg, breadth, 1.0)
        ann.measured_recall = ann._tune(x, queries)
        return ann

    def _max_breadth(self) -> int:
        if self.config.kind == "hnsw":
            return max(self.ntotal, self.config.ef_search)
        if self.config.kind == "ivf":
            return int(self.index.nlist)
        return 0

    def _tune(self, x: np.ndarray, queries: np.ndarray | None) -> float:
        cfg = self.config
        if cfg.kind == "flat":
            return 1.0
        rng = np.random.default_rng(cfg.seed)
        q = x if queries is None else _as_matrix(queries, "queries")
        if q.shape[1] != x.shape[1]:
            raise ValueError(f"queries: dimension {q.shape[1]} != vectors dimension {x.shape[1]}")
        if q.shape[0] > cfg.n_eval_queries:
            q = q[rng.choice(q.shape[0], cfg.n_eval_queries, replace=False)]
        k = min(cfg.recall_k, self.ntotal)
        exact = faiss.IndexFlatIP(x.shape[1])
        exact.add(x)
        _, truth = exact.search(q, k)
        while True:
            got, _ = self.search(q, k)
            recall = recall_at_k(got, truth)
            if not cfg.autotune or recall >= cfg.target_recall or self.search_breadth >= self._max_breadth():
                return recall
            self.search_breadth = min(self.search_breadth * 2, self._max_breadth())

    def _params(self, sel: faiss.IDSelector | None, widen: float = 1.0) -> faiss.SearchParameters | None:
        breadth = max(min(math.ceil(self.search_breadth * widen), self._max_breadth()), 1)
        if self.config.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=breadth)
        elif self.config.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=breadth)
        else:
            if sel is None:
                return None
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        return params

    def search(
        self, queries: np.ndarray, k: int, exclude: Iterable[int] | np.ndarray | None = None,
        allow: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` (ids, inner products) per query row, best first; -1 pads. Ids in `exclude` never appear, nor
        ids whose entry in the boolean mask `allow` (ntotal,) is False: the search itself skips them, so the top
        `k` are the best allowed ids (up to the index's approximation, kept near the unfiltered one as the module
        says), not the best ids filtered afterwards."""
        q = _as_matrix(np.atleast_2d(queries), "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries: dimension {q.shape[1]} != index dimension {self.dim}")
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        ex = None if exclude is None else np.unique(np.asarray(list(exclude) if not isinstance(exclude, np.ndarray)
                                                                else exclude, dtype=np.int64))
        # the selectors (and the bitmap) stay referenced here for the whole search: the C++ side does not own them
        if allow is not None:
            allow = np.asarray(allow, dtype=bool)
            if allow.shape != (self.ntotal,):
                raise ValueError(f"allow: shape {allow.shape} != ({self.ntotal},)")
            if ex is not None and ex.size:
                allow = allow.copy()
                allow[ex[(ex >= 0) & (ex < self.ntotal)]] = False
            bitmap = np.packbits(allow, bitorder="little")     # faiss reads bit i & 7 of byte i >> 3
            sel = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))   # its size is in bytes
        else:
            inner = faiss.IDSelectorBatch(ex) if ex is not None and ex.size else None
            sel = faiss.IDSelectorNot(inner) if inner is not None else None
        faiss.omp_set_num_threads(self.config.num_threads)
        k = min(k, self.ntotal)
        if allow is None or self.config.kind == "flat":
            scores, ids = self.index.search(q, k, params=self._params(sel))
            return ids, scores
        allowed = np.flatnonzero(allow)
        share = allowed.size / max(self.ntotal, 1)
        if share < self.config.exact_below_share:
            return self._exact(q, k, allowed, np.arange(q.shape[0]))
        scores, ids = self.index.search(q, k, params=self._params(sel, widen=1.0 / share))
        short = np.flatnonzero((ids >= 0).sum(axis=1) < min(k, allowed.size))
        if short.size:
            ids[short], scores[short] = self._exact(q[short], k, allowed, short)
        return ids, scores

    def _exact(self, q: np.ndarray, k: int, allowed: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-`k` over the `allowed` ids for query rows `q` (padded like faiss: id -1, score -FLT_MAX).

        HNSW: inner products with the allowed rows of its flat storage, read in place (no copy of the vectors);
        IVF, whose vectors lie in its lists: faiss visiting every list with the allowed ids as a selector."""
        self.exact_searches += len(rows)
        if self.config.kind == "ivf":
            bitmap = np.packbits(np.isin(np.arange(self.ntotal), allowed), bitorder="little")
            sel = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))
            scores, ids = self.index.search(q, k, params=faiss.SearchParametersIVF(nprobe=int(self.index.nlist),
                                                                                   sel=sel))
            return ids, scores
        ids = np.full((q.shape[0], k), -1, dtype=np.int64)
        scores = np.full((q.shape[0], k), -np.finfo(np.float32).max, dtype=np.float32)
        if allowed.size:
            storage = faiss.downcast_index(self.index.storage)    # IndexFlatIP; a view, valid while unchanged
            s = q @ faiss.rev_swig_ptr(storage.get_xb(), self.ntotal * self.dim).reshape(self.ntotal, self.dim)[
                allowed].T
            n = min(k, allowed.size)
            top = np.argpartition(-s, n - 1, axis=1)[:, :n] if n < allowed.size else np.tile(np.arange(n), (len(q), 1))
            top_s = np.take_along_axis(s, top, axis=1)
            order = np.argsort(-top_s, axis=1, kind="stable")
            ids[:, :n] = allowed[np.take_along_axis(top, order, axis=1)]
            scores[:, :n] = np.take_along_axis(top_s, order, axis=1)
        return ids, scores

    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write `index.faiss` and `index.json` (config, search breadth, measured recall) atomically to `path`."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            self.write_into(tmp)

    def write_into(self, folder: Path) -> None:
        faiss.write_index(self.index, str(folder / _INDEX_FILE))
        meta = {"config": asdict(self.config), "search_breadth": self.search_breadth,
                "measured_recall": self.measured_recall, "ntotal": self.ntotal, "dim": self.dim}
        (folder / _META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "AnnIndex":
        folder = Path(path)
        try:
            meta = json.loads((folder / _META_FILE).read_text())
            index = faiss.read_index(str(folder / _INDEX_FILE))
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{folder}: not a saved AnnIndex ({exc})") from exc
        if int(index.ntotal) != int(meta["ntotal"]):
            raise ValueError(f"{folder / _INDEX_FILE}: holds {index.ntotal} vectors, index.json says {meta['ntotal']}")
        return cls(index, AnnConfig(**meta["config"]), int(meta["search_breadth"]), float(meta["measured_recall"]))
