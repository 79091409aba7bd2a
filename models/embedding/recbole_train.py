"""Train user/item embeddings with RecBole (BPR, SASRec, GRU4Rec) from canonical interactions, fully offline.

Canonical interactions -> RecBole atomic files in a temporary folder -> RecBole `Trainer` on CPU -> numpy vectors.
String ids never reach RecBole: users and items are written as integer codes and mapped back afterwards, so ids
may hold any character. Checkpoints live in the same temporary folder, which is removed afterwards.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl
import torch

from recs.models import recbole_compat  # noqa: F401  (must precede every recbole import)
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.general_recommender import BPR  # noqa: E402
from recbole.model.sequential_recommender import GRU4Rec, SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from recs.models.embedding.sequence import SequenceEncoder

GENERAL_MODELS = ("BPR",)
SEQUENTIAL_MODELS = ("SASRec", "GRU4Rec")
_MODEL_CLASSES = {"BPR": BPR, "SASRec": SASRec, "GRU4Rec": GRU4Rec}
# Hyper-parameters that define each model's architecture: read back from RecBole's resolved config after training
# and stored with the artifact, so a sequential model can be rebuilt for inference without RecBole's dataset.
_ARCH_KEYS = {
    "BPR": ("embedding_size",),
    "SASRec": ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob", "attn_dropout_prob",
               "hidden_act", "layer_norm_eps", "initializer_range", "loss_type", "MAX_ITEM_LIST_LENGTH"),
    "GRU4Rec": ("embedding_size", "hidden_size", "num_layers", "dropout_prob", "loss_type", "MAX_ITEM_LIST_LENGTH"),
}
_DATASET = "recs"
POSITIVE_KINDS = ("click", "add_to_cart", "purchase")


@dataclass
class EmbeddingConfig:
    """What to train and how. Defaults follow RecBole's published ml-100k BPR setting where one applies."""

    model: str = "BPR"
    embedding_size: int = 64
    epochs: int = 300
    learning_rate: float = 1e-3
    train_batch_size: int = 4096
    eval_batch_size: int = 4096
    neg_samples: int = 1  # BPR: uniform negatives per positive
    weight_decay: float = 0.0
    seed: int = 2020
    early_stopping: bool = True  # hold out data to stop on `valid_metric` (see `valid_ratio`)
    valid_ratio: float = 0.1  # BPR: random share of each user's items held out; sequential: last item per user
    stopping_step: int = 10
    valid_metric: str = "MRR@10"
    max_seq_length: int = 50  # sequential models: items of history the model reads
    n_layers: int = 2  # SASRec transformer layers / GRU4Rec GRU layers
    n_heads: int = 2  # SASRec
    dropout: float = 0.5  # SASRec hidden dropout, GRU4Rec embedding dropout
    attn_dropout: float = 0.5  # SASRec
    hidden_size: int = 128  # GRU4Rec GRU state (SASRec uses embedding_size)
    num_threads: int = 1  # 1 is fastest for these small models on a shared CPU (OpenMP contention)
    kinds: tuple[str, ...] = POSITIVE_KINDS  # interaction kinds counted as positives

    def __post_init__(self) -> None:
        if self.model not in _MODEL_CLASSES:
            raise ValueError(f"model: {self.model!r} is not one of {sorted(_MODEL_CLASSES)}")
        for name in ("embedding_size", "epochs", "train_batch_size", "eval_batch_size", "neg_samples",
                     "stopping_step", "max_seq_length", "n_layers", "n_heads", "hidden_size", "num_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.valid_ratio < 0.5:
            raise ValueError(f"valid_ratio: must be in (0, 0.5), got {self.valid_ratio}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.model == "SASRec" and self.embedding_size % self.n_heads:
            raise ValueError(f"n_heads: {self.n_heads} must divide embedding_size {self.embedding_size}")
        bad = set(self.kinds) - set(POSITIVE_KINDS)
        if not self.kinds or bad:
            raise ValueError(f"kinds: must be a non-empty subset of {POSITIVE_KINDS}, got {self.kinds}")
        self.kinds = tuple(self.kinds)

    @property
    def sequential(self) -> bool:
        return self.model in SEQUENTIAL_MODELS

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kinds"] = list(self.kinds)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EmbeddingConfig":
        d = dict(d)
        d["kinds"] = tuple(d.get("kinds", POSITIVE_KINDS))
        return cls(**d)

    def recbole_dict(self, data_path: Path, checkpoint_dir: Path, split: dict[str, Any] | None) -> dict[str, Any]:
        """The RecBole config dict for this run (CPU, quiet, offline, checkpoints under `checkpoint_dir`)."""
        d: dict[str, Any] = {
            "data_path": str(data_path), "checkpoint_dir": str(checkpoint_dir), "use_gpu": False,
            "show_progress": False, "state": "ERROR", "worker": 0, "seed": self.seed, "reproducibility": True,
            "save_dataset": False, "save_dataloaders": False, "log_wandb": False,
            "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "embedding_size": self.embedding_size, "epochs": self.epochs, "learning_rate": self.learning_rate,
            "train_batch_size": self.train_batch_size, "eval_batch_size": self.eval_batch_size,
            "weight_decay": self.weight_decay, "stopping_step": self.stopping_step,
            "metrics": ["Recall", "MRR", "NDCG", "Hit", "Precision"], "topk": [10],
            "valid_metric": self.valid_metric, "metric_decimal_place": 6,
        }
        if self.sequential:
            d.update({"train_neg_sample_args": None, "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": self.max_seq_length})
            if self.model == "SASRec":
                d.update({"n_layers": self.n_layers, "n_heads": self.n_heads, "hidden_size": self.embedding_size,
                          "inner_size": 4 * self.embedding_size, "hidden_dropout_prob": self.dropout,
                          "attn_dropout_prob": self.attn_dropout})
            else:
                d.update({"num_layers": self.n_layers, "hidden_size": self.hidden_size, "dropout_prob": self.dropout})
        else:
            d["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": self.neg_samples, "alpha": 1.0,
                                          "dynamic": False, "candidate_num": 0}
        if split is not None:
            d["eval_args"] = split
        return d


@dataclass
class TrainedEmbeddings:
    """Vectors out of one training run. Row i of `item_vectors` is `item_ids[i]` (likewise for users)."""

    config: EmbeddingConfig
    item_ids: np.ndarray  # str, (n_items,)
    item_vectors: np.ndarray  # float32, (n_items, d)
    user_ids: np.ndarray  # str, (n_users,)
    user_vectors: np.ndarray  # float32, (n_users, d): BPR user embeddings, or the sequence model on the history
    item_popularity: np.ndarray  # int64, (n_items,): training positives per item
    histories: dict[str, list[str]]  # user -> last `max_seq_length` items, oldest first (sequential models)
    encoder: SequenceEncoder | None
    best_valid: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    train_seconds: float = 0.0


def positive_pairs(interactions: pl.DataFrame, kinds: tuple[str, ...] = POSITIVE_KINDS) -> pl.DataFrame:
    """Logged-in positives, one row per (user, item) at its latest time, sorted by user then time.

    Needs columns user_id, item_id, ts (kind is optional: without it every row is a positive).
    """
    for col in ("user_id", "item_id", "ts"):
        if col not in interactions.columns:
            raise ValueError(f"interactions: missing column {col!r}")
    df = interactions.filter(pl.col("user_id").is_not_null() & pl.col("item_id").is_not_null())
    if "kind" in df.columns:
        df = df.filter(pl.col("kind").is_in(list(kinds)))
    tie = [pl.col("event_id")] if "event_id" in df.columns else []
    df = (
        df.select("user_id", "item_id", "ts", *tie)
        .sort(["user_id", "ts", *tie])
        .unique(subset=["user_id", "item_id"], keep="last", maintain_order=True)
        .select("user_id", "item_id", "ts")
    )
    return df


def _write_inter(path: Path, frame: pl.DataFrame) -> None:
    """RecBole atomic .inter file: integer codes as tokens, row order as time."""
    frame.select(
        pl.col("u").alias("user_id:token"), pl.col("i").alias("item_id:token"),
        pl.col("t").cast(pl.Float64).alias("timestamp:float"),
    ).write_csv(path, separator="\t")


@contextmanager
def _recbole_quiet(num_threads: int) -> Iterator[None]:
    """Quiet RecBole's root-logger output and warnings, and cap torch threads, for the duration of a run; then put
    back the process-wide state RecBole changes (torch threads, anomaly detection, CUDA_VISIBLE_DEVICES)."""
    root = logging.getLogger()
    old_level, old_threads, old_anomaly = root.level, torch.get_num_threads(), torch.is_anomaly_enabled()
    old_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")  # RecBole's Config sets it
    root.setLevel(logging.ERROR)
    torch.set_num_threads(num_threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(old_level)
        torch.set_num_threads(old_threads)
        torch.autograd.set_detect_anomaly(old_anomaly)
        if old_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old_cuda


def train_embeddings(
    interactions: pl.DataFrame, config: EmbeddingConfig | None = None, valid: pl.DataFrame | None = None
) -> TrainedEmbeddings:
    """Train `config.model` on logged-in positive interactions and return its user and item vectors.

    `valid` (BPR only): an explicit held-out frame (user_id, item_id[, ts]) for early stopping, e.g. a benchmark's
    validation split; otherwise `config.early_stopping` holds out `valid_ratio` of each user's items (BPR) or each
    user's last item (sequential models) and training stops on `valid_metric`.
    """
    cfg = config or EmbeddingConfig()
    train = positive_pairs(interactions, cfg.kinds)
    if train.height == 0:
        raise ValueError("interactions: no logged-in positive interactions to train on")
    if valid is not None and cfg.sequential:
        raise ValueError("valid: an explicit validation frame is supported for general models (BPR) only")
    valid_pairs = positive_pairs(valid, cfg.kinds) if valid is not None else None

    users = pl.concat([train["user_id"], valid_pairs["user_id"]] if valid_pairs is not None else [train["user_id"]])
    items = pl.concat([train["item_id"], valid_pairs["item_id"]] if valid_pairs is not None else [train["item_id"]])
    user_vocab = np.sort(users.unique().to_numpy().astype(str))
    item_vocab = np.sort(items.unique().to_numpy().astype(str))
    if item_vocab.size < 2:
        raise ValueError("interactions: need at least 2 distinct items")

    def encode(df: pl.DataFrame, offset: int = 0) -> pl.DataFrame:
        u = np.searchsorted(user_vocab, df["user_id"].to_numpy().astype(str))
        i = np.searchsorted(item_vocab, df["item_id"].to_numpy().astype(str))
        return pl.DataFrame({"u": u, "i": i, "t": np.arange(offset, offset + df.height)})

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recs-recbole-") as tmp, _recbole_quiet(cfg.num_threads):
        root = Path(tmp)
        (root / _DATASET).mkdir()
        split, benchmark = _plan_split(cfg, valid_pairs is not None)
        if benchmark:
            v = valid_pairs if valid_pairs is not None else train.head(1)
            _write_inter(root / _DATASET / f"{_DATASET}.train.inter", encode(train))
            _write_inter(root / _DATASET / f"{_DATASET}.valid.inter", encode(v, train.height))
            _write_inter(root / _DATASET / f"{_DATASET}.test.inter", encode(v.head(1), train.height + v.height))
        else:
            _write_inter(root / _DATASET / f"{_DATASET}.inter", encode(train))
        rb = cfg.recbole_dict(root, root / "checkpoints", split)
        if benchmark:
            rb["benchmark_filename"] = ["train", "valid", "test"]
        rcfg = Config(model=cfg.model, dataset=_DATASET, config_dict=rb)
        init_seed(rcfg["seed"], rcfg["reproducibility"])
        dataset = create_dataset(rcfg)
        train_data, valid_data, _ = data_preparation(rcfg, dataset)
        model = _MODEL_CLASSES[cfg.model](rcfg, train_data.dataset).to("cpu")
        trainer = Trainer(rcfg, model)
        use_valid = cfg.early_stopping or valid_pairs is not None
        _, best_valid = trainer.fit(train_data, valid_data if use_valid else None, saved=use_valid,
                                    show_progress=False, verbose=False)
        if use_valid:
            # our own checkpoint, just written into our temp dir: RecBole pickles its Config inside it
            state = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
            model.load_state_dict(state["state_dict"])
            best_epoch = int(state["epoch"])
        else:
            best_epoch = None
        model.eval()
        arch = {k: rcfg[k] for k in _ARCH_KEYS[cfg.model]}
        item_tokens = dataset.field2id_token["item_id"]
        user_tokens = dataset.field2id_token["user_id"]
        out = _extract(cfg, model, arch, item_tokens, user_tokens, user_vocab, item_vocab, train)
    out.best_valid = {k: float(v) for k, v in (best_valid or {}).items()}
    out.best_epoch = best_epoch
    out.train_seconds = time.perf_counter() - t0
    return out


def _plan_split(cfg: EmbeddingConfig, explicit_valid: bool) -> tuple[dict[str, Any] | None, bool]:
    """(RecBole eval_args, whether we write pre-split benchmark files)."""
    if explicit_valid or not cfg.sequential:
        if cfg.early_stopping and not explicit_valid:
            r = cfg.valid_ratio
            return {"split": {"RS": [1.0 - r, r, 0.0]}, "group_by": "user", "order": "RO", "mode": "full"}, False
        return None, True  # all positives train; valid/test files are placeholders (never evaluated)
    if cfg.early_stopping:
        return {"split": {"LS": "valid_only"}, "group_by": "user", "order": "TO", "mode": "full"}, False
    return {"split": {"RS": [1.0, 0.0, 0.0]}, "group_by": "user", "order": "TO", "mode": "full"}, False


def _extract(
    cfg: EmbeddingConfig, model: torch.nn.Module, arch: dict[str, Any], item_tokens: np.ndarray,
    user_tokens: np.ndarray, user_vocab: np.ndarray, item_vocab: np.ndarray, train: pl.DataFrame,
) -> TrainedEmbeddings:
    """Map RecBole's internal ids back to ours and pull the vectors out of the trained model."""
    inner_items = item_vocab[item_tokens[1:].astype(np.int64)]  # row 0 is RecBole's [PAD]
    with torch.no_grad():
        item_w = model.item_embedding.weight.detach().cpu().numpy()[1:].astype(np.float32)
    order = np.argsort(inner_items)
    item_ids, item_vectors = inner_items[order], np.ascontiguousarray(item_w[order])
    counts = train.group_by("item_id").len()
    pop = dict(zip(counts["item_id"].to_list(), counts["len"].to_list()))
    popularity = np.array([pop.get(i, 0) for i in item_ids], dtype=np.int64)

    histories: dict[str, list[str]] = {}
    encoder = None
    if cfg.sequential:
        encoder = SequenceEncoder.from_trained(cfg.model, arch, model, item_ids, inner_items)
        tail = train.group_by("user_id", maintain_order=True).agg(pl.col("item_id").tail(cfg.max_seq_length))
        histories = dict(zip(tail["user_id"].to_list(), tail["item_id"].to_list()))
        user_ids = np.array(sorted(histories), dtype=str)
        user_vectors = encoder.encode([histories[u] for u in user_ids])
    else:
        inner_users = user_vocab[user_tokens[1:].astype(np.int64)]
        with torch.no_grad():
            user_w = model.user_embedding.weight.detach().cpu().numpy()[1:].astype(np.float32)
        uorder = np.argsort(inner_users)
        user_ids, user_vectors = inner_users[uorder], np.ascontiguousarray(user_w[uorder])
    return TrainedEmbeddings(
        config=cfg, item_ids=item_ids, item_vectors=item_vectors, user_ids=user_ids,
        user_vectors=np.ascontiguousarray(user_vectors, dtype=np.float32), item_popularity=popularity,
        histories=histories, encoder=encoder,
    )
