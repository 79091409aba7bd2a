"""The classic (non-embedding) retrievers and their registry: `RETRIEVERS[kind]` is the class of that kind.

`load_retriever(path)` reads the `kind` a retriever saved in `path/meta.json` and loads it with its class.
"""
from __future__ import annotations

import json
from pathlib import Path

from recs.models.base import Retriever
from recs.models.retrievers.click_model import ClickModelConfig, ClickModelRetriever
from recs.models.retrievers.content import ContentConfig, ContentRetriever
from recs.models.retrievers.covisit import CovisitConfig, CovisitRetriever
from recs.models.retrievers.popularity import GLOBAL, PopularityConfig, PopularityRetriever
from recs.models.retrievers.suggest import SuggestConfig, SuggestRetriever

RETRIEVERS: dict[str, type[Retriever]] = {
    PopularityRetriever.kind: PopularityRetriever,
    CovisitRetriever.kind: CovisitRetriever,
    ContentRetriever.kind: ContentRetriever,
    SuggestRetriever.kind: SuggestRetriever,
    ClickModelRetriever.kind: ClickModelRetriever,
}


def load_retriever(path: str | Path) -> Retriever:
    """Load a saved retriever of any registered kind."""
    f = Path(path) / "meta.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no saved retriever here (meta.json missing)")
    try:
        kind = json.loads(f.read_text()).get("kind")
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{f}: not a JSON object") from None
    if kind not in RETRIEVERS:
        raise ValueError(f"{f}: field 'kind' is {kind!r}; known kinds: {', '.join(RETRIEVERS)}")
    return RETRIEVERS[kind].load(Path(path))


__all__ = ["RETRIEVERS", "GLOBAL", "load_retriever", "PopularityRetriever", "PopularityConfig", "CovisitRetriever",
           "CovisitConfig", "ContentRetriever", "ContentConfig", "SuggestRetriever", "SuggestConfig",
           "ClickModelRetriever", "ClickModelConfig"]
