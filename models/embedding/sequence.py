"""Inference wrapper for a trained RecBole sequential model (SASRec, GRU4Rec): item sequences -> query vectors.

The model is rebuilt from its architecture hyper-parameters and a plain `state_dict`, without RecBole's dataset,
so a saved retriever keeps only numpy arrays (no pickle). Item embedding rows are stored in the order of
the sorted item ids: item `item_ids[p]` is model index `p + 1` (0 is padding).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from recs.models import recbole_compat  # noqa: F401  (must precede every recbole import)
from recbole.model.sequential_recommender import GRU4Rec, SASRec  # noqa: E402

_CLASSES = {"SASRec": SASRec, "GRU4Rec": GRU4Rec}
_FIELDS = {
    "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
    "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_", "device": "cpu",
}


class _ItemCount:
    """The one thing RecBole's sequential models read from their dataset: the item vocabulary size."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def num(self, field: str) -> int:
        return self.n_items


def _build(model_name: str, arch: dict[str, Any], n_items: int) -> torch.nn.Module:
    if model_name not in _CLASSES:
        raise ValueError(f"model: {model_name!r} is not a sequential model ({sorted(_CLASSES)})")
    with torch.random.fork_rng():  # weight init must not move the caller's RNG
        model = _CLASSES[model_name]({**_FIELDS, **arch}, _ItemCount(n_items))
    return model.to("cpu").eval()


class SequenceEncoder:
    """Runs a trained sequential model on item-id sequences (oldest first) and returns its output vectors."""

    def __init__(self, model_name: str, arch: dict[str, Any], item_ids: np.ndarray, state_dict: dict) -> None:
        self.model_name = model_name
        self.arch = dict(arch)
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.max_len = int(arch["MAX_ITEM_LIST_LENGTH"])
        self.model = _build(model_name, self.arch, len(self.item_ids) + 1)
        self.model.load_state_dict(state_dict)
        self.model.eval()

    @classmethod
    def from_trained(
        cls, model_name: str, arch: dict[str, Any], model: torch.nn.Module, item_ids: np.ndarray,
        inner_items: np.ndarray,
    ) -> "SequenceEncoder":
        """From a model fresh out of RecBole, whose row j+1 is item `inner_items[j]`; `item_ids` is them sorted."""
        order = np.argsort(inner_items)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        old = state["item_embedding.weight"]
        perm = torch.as_tensor(np.concatenate([[0], order + 1]), dtype=torch.long)
        state["item_embedding.weight"] = old[perm].contiguous()
        return cls(model_name, arch, item_ids, state)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The weights as plain numpy arrays (saved as .npz: no pickle)."""
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    @classmethod
    def from_arrays(
        cls, model_name: str, arch: dict[str, Any], item_ids: np.ndarray, arrays: dict[str, np.ndarray]
    ) -> "SequenceEncoder":
        return cls(model_name, arch, item_ids, {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})

    def known(self, items: Sequence[str]) -> list[str]:
        """The items the model has an embedding for, in the given order."""
        arr = np.asarray(list(items), dtype=str)
        if arr.size == 0:
            return []
        pos = np.searchsorted(self.item_ids, arr).clip(0, len(self.item_ids) - 1)
        return arr[self.item_ids[pos] == arr].tolist()

    def encode(self, sequences: Sequence[Sequence[str]], batch_size: int = 1024) -> np.ndarray:
        """One vector per sequence (unknown items dropped, last `max_len` kept); every sequence must keep an item."""
        n = len(sequences)
        seqs = np.zeros((n, self.max_len), dtype=np.int64)
        lengths = np.zeros(n, dtype=np.int64)
        for row, seq in enumerate(sequences):
            arr = np.asarray(list(seq), dtype=str)
            if arr.size:
                pos = np.searchsorted(self.item_ids, arr).clip(0, len(self.item_ids) - 1)
                idx = (pos + 1)[self.item_ids[pos] == arr][-self.max_len:]
                seqs[row, : idx.size] = idx
                lengths[row] = idx.size
        if (lengths == 0).any():
            raise ValueError(f"sequence {int(np.argmin(lengths))}: no item known to the model")
        out = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                s = torch.from_numpy(seqs[start : start + batch_size])
                ln = torch.from_numpy(lengths[start : start + batch_size])
                out.append(self.model(s, ln).cpu().numpy())
        dim = int(self.model.item_embedding.weight.shape[1])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)

    def item_matrix(self) -> np.ndarray:
        """Output item vectors (row p is `item_ids[p]`): scores are `encode(...) @ item_matrix().T`."""
        with torch.no_grad():
            return self.model.item_embedding.weight[1:].cpu().numpy().astype(np.float32)
