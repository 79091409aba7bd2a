"""Retriever kinds by name: construct and load them without the caller knowing the classes."""
from __future__ import annotations

from pathlib import Path

from recs.models.base import Retriever

KINDS = ("popularity", "covisit", "content", "embedding", "suggest", "clickmodel")


def retriever_class(kind: str) -> type[Retriever]:
    if kind == "embedding":
        from recs.models.embedding.retriever import EmbeddingRetriever

        return EmbeddingRetriever
    from recs.models.retrievers import RETRIEVERS

    if kind not in RETRIEVERS:
        raise ValueError(f"unknown retriever kind {kind!r}; choose from {', '.join(KINDS)}")
    return RETRIEVERS[kind]


def make_retriever(kind: str, config=None) -> Retriever:
    cls = retriever_class(kind)
    return cls(config) if config is not None else cls()


def load_retriever(kind: str, path: Path) -> Retriever:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: no saved {kind} retriever")
    return retriever_class(kind).load(path)
