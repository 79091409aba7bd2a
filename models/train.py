"""`train_all`: labels, every retriever, the ranker, the serving snapshot and state: one model folder.

Time split (defaults): the last `holdout_days` are held out for `recs evaluate`; the ranker learns on the
`ranker_days` before them with retrievers fitted on everything earlier (no label leaks into retrieval
features); retrievers are then refitted on all training days for serving.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from recs.datasets.io import atomic_dir, read_table
from recs.datasets.labels import LabelConfig, build_labels
from recs.datasets.requests import requests_from_logs
from recs.features.offline import attrs_from_catalog
from recs.features.snapshot import Vocab, build_snapshot
from recs.features.spec import save_spec
from recs.models.base import TrainingData
from recs.models.candidates import BlendConfig
from recs.models.pipeline import Pipeline
from recs.models.ranker import RankerConfig, train_ranker
from recs.models.registry import KINDS, make_retriever
from recs.models.rerank import SURFACES, RerankConfig
from recs.models.state_files import (histories_frame, purchases_frame, repurchase_frame, save_state,
                                     state_frames)
from recs.models.training_rows import build_rows, day_snapshots, day_start, split_by_time

Progress = Callable[[str], None]
MIN_COLD_REQUESTS = 200   # fewer context-free ranker requests than this: one ranker for all
MIN_RANKER_REQUESTS = 20  # fewer labelled requests in the ranker window: refused (a time split needs both sides)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of `recs train all`; defaults suit the demo-scale simulated marketplace."""

    holdout_days: int = 1
    ranker_days: int = 2
    label_window_days: float = 7.0
    max_ranker_requests: int = 20_000
    retrievers: tuple[str, ...] = KINDS
    refit_retrievers: bool = True
    seed: int = 0
    # the trees boost from the click model's attraction logit (docs/PIPELINE.md); without a click model, from zero
    ranker: RankerConfig = field(default_factory=lambda: RankerConfig(base_feature="cm_score"))
    blend: BlendConfig = field(default_factory=BlendConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    embedding_epochs: int = 25
    embedding_lr: float = 0.01
    embedding_dim: int = 32
    ranker_negatives: int = 40            # unshown retrieved candidates per request added as non-clicks (0: off)
    ranker_negative_weight: float = 1.0   # their row weight (logged rows weigh 1; LightGBM lambdarank weighs groups)
    cold_ranker: bool = True              # a separate ranker for context-free visitors
    # surfaces where the personal ranker's trees are served; elsewhere its base score (the click model's) alone.
    # ("home",) raised true CTR and purchases on the demo world's development requests but lowered revenue by ~2.6%
    # (docs/PIPELINE.md): an owner's trade-off, so the default keeps the trees everywhere
    tree_surfaces: tuple[str, ...] = ("home", "search")

    def __post_init__(self) -> None:
        if self.holdout_days < 0 or self.ranker_days < 1:
            raise ValueError("holdout_days must be >= 0 and ranker_days >= 1")
        unknown = set(self.retrievers) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown retrievers: {sorted(unknown)}")
        if set(self.tree_surfaces) - set(SURFACES):
            raise ValueError(f"tree_surfaces: unknown surface(s) {sorted(set(self.tree_surfaces) - set(SURFACES))}")


@dataclass
class Tables:
    catalog: pl.DataFrame
    sellers: pl.DataFrame | None
    impressions: pl.DataFrame
    interactions: pl.DataFrame
    queries: pl.DataFrame | None
    events: pl.DataFrame | None

    @classmethod
    def read(cls, dataset: Path) -> "Tables":
        def opt(name: str) -> pl.DataFrame | None:
            try:
                return read_table(dataset, name)
            except FileNotFoundError:
                return None

        return cls(read_table(dataset, "catalog"), opt("sellers"), read_table(dataset, "impressions"),
                   read_table(dataset, "interactions"), opt("queries"), opt("inventory_events"))

    def before(self, t: datetime) -> TrainingData:
        return TrainingData(self.interactions.filter(pl.col("ts") < t), self.catalog.filter(pl.col("created_at") < t),
                            t, self.impressions.filter(pl.col("ts") < t),
                            self.queries.filter(pl.col("ts") < t) if self.queries is not None else None,
                            self.events.filter(pl.col("ts") < t) if self.events is not None else None)


def time_split(impressions: pl.DataFrame, cfg: TrainConfig) -> dict[str, datetime]:
    """Window boundaries: data start, ranker start, training end (= holdout start) and data end."""
    start, end = impressions["ts"].min(), impressions["ts"].max()
    end_day = day_start(end) + timedelta(days=1)
    train_end = end_day - timedelta(days=cfg.holdout_days)
    ranker_start = train_end - timedelta(days=cfg.ranker_days)
    if ranker_start <= start:
        raise ValueError(f"the data ({start:%Y-%m-%d} to {end:%Y-%m-%d}) is too short for {cfg.holdout_days} holdout "
                         f"and {cfg.ranker_days} ranker days plus at least one day for the retrievers")
    return {"start": start, "ranker_start": ranker_start, "train_end": train_end, "end": end}


def fit_retrievers(data: TrainingData, cfg: TrainConfig, log: Progress) -> dict:
    out = {}
    for kind in cfg.retrievers:
        t0 = time.perf_counter()
        config = None
        if kind == "embedding":
            from recs.models.embedding.retriever import RetrieverConfig
            from recs.models.embedding.recbole_train import EmbeddingConfig

            config = RetrieverConfig(embedding=EmbeddingConfig(
                epochs=cfg.embedding_epochs, learning_rate=cfg.embedding_lr, embedding_size=cfg.embedding_dim,
                seed=cfg.seed))
        out[kind] = make_retriever(kind, config).fit(data)
        log(f"retriever {kind}: {time.perf_counter() - t0:.1f} s")
    return out


def dataset_fingerprint(dataset: Path) -> str:
    """SHA-256 over the dataset's file names and sizes (cheap, changes when any table changes)."""
    h = hashlib.sha256()
    for p in sorted(dataset.rglob("*.parquet")):
        h.update(f"{p.relative_to(dataset)}:{p.stat().st_size}".encode())
    return h.hexdigest()


def train_all(dataset: Path, out: Path, cfg: TrainConfig = TrainConfig(), overwrite: bool = False,
              log: Progress = lambda _: None) -> dict:
    """Train every stage on `dataset` and write the model folder `out` atomically; returns model.json."""
    times: dict[str, float] = {}
    t_all = time.perf_counter()
    tables = Tables.read(Path(dataset))
    win = time_split(tables.impressions, cfg)
    t0 = time.perf_counter()
    labels = build_labels(tables.impressions.filter(pl.col("ts") < win["train_end"]), tables.interactions,
                          LabelConfig(as_of=win["train_end"], window=timedelta(days=cfg.label_window_days)),
                          ).frame
    times["labels"] = time.perf_counter() - t0
    log(f"labels: {labels.height:,} rows")
    # 1. retrievers on the days before the ranker window
    t0 = time.perf_counter()
    early = fit_retrievers(tables.before(win["ranker_start"]), cfg, log)
    times["retrievers_early"] = time.perf_counter() - t0
    # 2. the rankers on the ranker window, their features from those retrievers
    fit = fit_rankers(tables, labels, early, win, cfg, log, times)
    # 3. serving retrievers on all training days
    t0 = time.perf_counter()
    final = fit_retrievers(tables.before(win["train_end"]), cfg, log) if cfg.refit_retrievers else early
    times["retrievers_final"] = time.perf_counter() - t0
    return write_model(Path(dataset), out, tables, final, fit, win, cfg, times, t_all, overwrite)


@dataclass
class FittedRankers:
    """The rankers of a model (`personal`, and `cold` when trained) with what model.json says of them."""

    rankers: dict
    meta: dict
    config: RankerConfig
    rows: int
    requests: int


def fit_rankers(tables: Tables, labels: pl.DataFrame, retrievers: dict, win: dict[str, datetime], cfg: TrainConfig,
                log: Progress, times: dict[str, float]) -> FittedRankers:
    """The rankers on the labelled impressions of [ranker_start, train_end), with features from `retrievers`
    (which must have been fitted on data before ranker_start, so no label of a row has been seen by them)."""
    t0 = time.perf_counter()
    ranker_labels = labels.filter((pl.col("ts") >= win["ranker_start"]) & (pl.col("ts") < win["train_end"]))
    rids = ranker_labels["request_id"].unique().sort()
    if rids.len() < MIN_RANKER_REQUESTS:
        raise ValueError(f"{rids.len()} labelled requests in the ranker window {win['ranker_start']:%Y-%m-%d %H:%M} "
                         f"to {win['train_end']:%Y-%m-%d %H:%M}: at least {MIN_RANKER_REQUESTS} are needed")
    rng = np.random.default_rng(cfg.seed)
    if rids.len() > cfg.max_ranker_requests:
        rids = pl.Series(rng.choice(rids.to_numpy(), cfg.max_ranker_requests, replace=False))
    requests = requests_from_logs(tables.impressions.filter(pl.col("request_id").is_in(rids.implode())),
                                  tables.interactions)
    early_state_cat, _ = state_frames(tables.catalog, tables.sellers, tables.events, win["train_end"])
    from recs.datasets.online_state import OnlineState

    vocab = Vocab.from_catalog(tables.catalog)
    early_pipe = Pipeline(retrievers, None, build_snapshot(tables.catalog, tables.interactions, tables.impressions,
                                                           tables.events, win["ranker_start"], vocab),
                          OnlineState(early_state_cat, tables.sellers),
                          _histories(tables.interactions, win["ranker_start"]), cfg.blend, cfg.rerank)
    days = sorted({day_start(r.ts) for r in requests.values()})
    snaps = day_snapshots(tables.catalog, tables.interactions, tables.impressions, tables.events, days)
    times["ranker_requests"] = time.perf_counter() - t0
    # two rankers: one for visitors with a signal (history or session clicks), trained on their logged slates plus
    # unshown candidates as negatives; one for context-free visitors, trained on every request's logged slate only
    # (within-slate contrasts, position-debiased): measured better for them than either alternative (docs/PIPELINE.md).
    # Its rows keep each request's own visitor: presenting every request as context-free was measured worse (the
    # logged items then look unretrieved to it, which its serving rows never are; docs/PIPELINE.md)
    groups = {"personal": {r: q for r, q in requests.items() if not early_pipe.is_context_free(q)}}
    if cfg.cold_ranker and len(requests) - len(groups["personal"]) >= MIN_COLD_REQUESTS:
        groups["cold"] = requests
    else:
        groups = {"personal": requests}
    rankers, ranker_meta, n_rows = {}, {}, 0
    ranker_cfg = cfg.ranker if "clickmodel" in retrievers else replace(cfg.ranker, base_feature=None)
    for name, reqs in groups.items():
        t0 = time.perf_counter()
        X, y, w, req, rows = build_rows(ranker_labels, reqs, early_pipe, tables.catalog, tables.events, snaps,
                                        attrs_from_catalog(tables.catalog),
                                        negatives_per_request=cfg.ranker_negatives if name == "personal" else 0,
                                        seed=cfg.seed, negative_weight=cfg.ranker_negative_weight)
        times[f"ranker_rows_{name}"] = time.perf_counter() - t0
        log(f"ranker ({name}) rows: {len(y):,} from {len(reqs):,} requests")
        t0 = time.perf_counter()
        tr, va = split_by_time({r: q.ts for r, q in reqs.items()})
        is_tr = rows["request_id"].is_in(list(tr)).to_numpy()
        rk = train_ranker(X[is_tr], y[is_tr], req[is_tr], w[is_tr], X[~is_tr], y[~is_tr], req[~is_tr], ranker_cfg)
        times[f"ranker_{name}"] = time.perf_counter() - t0
        log(f"ranker ({name}): best iteration {rk.best_iteration}, valid NDCG@10 {rk.valid_ndcg}")
        rankers[name] = rk
        n_rows += len(y)
        ranker_meta[name] = {"best_iteration": rk.best_iteration, "valid_ndcg": rk.valid_ndcg, "rows": int(len(y)),
                             "requests": len(reqs)}
    return FittedRankers(rankers, ranker_meta, ranker_cfg, n_rows, len(requests))


def write_model(dataset: Path, out: Path, tables: Tables, retrievers: dict, fit: FittedRankers,
                win: dict[str, datetime], cfg: TrainConfig, times: dict[str, float], t_all: float, overwrite: bool,
                extra: dict | None = None) -> dict:
    """The model folder (serving retrievers, rankers, snapshot and state as of train_end, fallback lists,
    model.json with `extra` merged in), written atomically; returns model.json."""
    vocab = Vocab.from_catalog(tables.catalog)
    snap = build_snapshot(tables.catalog, tables.interactions, tables.impressions, tables.events,
                          win["train_end"], vocab)
    state_cat, sellers = state_frames(tables.catalog, tables.sellers, tables.events, win["train_end"])
    hist = histories_frame(tables.interactions, win["train_end"])
    fallback = _fallback_lists(retrievers)
    ranker = fit.rankers["personal"]
    meta = {
        "kind": "model", "policy_id": f"pipeline-{dataset_fingerprint(dataset)[:8]}",
        "retrievers": list(retrievers), "training_window": {"start": win["start"].isoformat(),
                                                             "end": win["train_end"].isoformat()},
        "holdout": {"start": win["train_end"].isoformat(), "end": win["end"].isoformat()},
        "ranker_window": {"start": win["ranker_start"].isoformat(), "end": win["train_end"].isoformat()},
        "dataset": str(dataset.resolve()), "dataset_fingerprint": dataset_fingerprint(dataset),
        "blend": cfg.blend.to_json(), "rerank": asdict(cfg.rerank), "ranker": {
            "best_iteration": ranker.best_iteration, "valid_ndcg": ranker.valid_ndcg, "rows": fit.rows,
            "requests": fit.requests, "config": asdict(fit.config), "negatives_per_request": cfg.ranker_negatives,
            "models": fit.meta, "tree_surfaces": list(cfg.tree_surfaces)},
        "offline_metrics": {}, "stage_seconds": {k: round(v, 2) for k, v in times.items()},
        **(extra or {}),
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_spec(tmp / "feature_spec.json")
        for kind, r in retrievers.items():
            r.save(tmp / "retrievers" / kind)
        ranker.save(tmp / "ranker")
        if "cold" in fit.rankers:
            fit.rankers["cold"].save(tmp / "ranker_cold")
        snap.save(tmp / "snapshot")
        save_state(tmp / "state", state_cat, sellers, hist, purchases_frame(tables.interactions, win["train_end"]),
                   repurchase_frame(tables.interactions, tables.catalog, win["train_end"]))
        (tmp / "fallback.json").write_text(json.dumps(fallback))
        meta["stage_seconds"]["total"] = round(time.perf_counter() - t_all, 2)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2))
    return meta


def _histories(interactions: pl.DataFrame, as_of: datetime) -> dict[str, tuple[str, ...]]:
    return {u: tuple(items) for u, items in histories_frame(interactions, as_of).iter_rows()}


def _fallback_lists(retrievers: dict, k: int = 100) -> dict[str, list[str]]:
    pop = retrievers.get("popularity")
    if pop is None or not hasattr(pop, "fallback_lists"):
        return {}
    lists = pop.fallback_lists(k)
    return {str(c): [str(i) for i in ids] for c, ids in lists.items()}
