"""The one definition of every model feature: name, dtype, default when missing, what it means.

`compute.compute_features` is the only code that turns inputs into these columns; the offline path (a dataset,
point-in-time) and the online path (one request, live state) both call it. The spec is saved with every model.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str          # "float32" for every model feature; kept explicit for the spec file
    default: float      # value when the input is missing (e.g. an item with no history)
    group: str          # item | item_stats | user | session | query | retrieval | context
    description: str


FEATURES: tuple[Feature, ...] = (
    Feature("item_age_days", "float32", 365.0, "item", "days since the item was created, at request time"),
    Feature("is_new_item", "float32", 0.0, "item", "1 if the item was created within the last 3 days"),
    Feature("log_price", "float32", 0.0, "item", "log of the live price at request time"),
    Feature("price_rel_subcat", "float32", 0.0, "item", "log price minus log median price of its subcategory"),
    Feature("price_change", "float32", 0.0, "item", "log live price minus log price at the last stats snapshot"),
    Feature("log_stock", "float32", 0.0, "item", "log(1 + live stock)"),
    Feature("item_clicks_1d", "float32", 0.0, "item_stats", "log(1 + clicks) in the day before the snapshot"),
    Feature("item_clicks_7d", "float32", 0.0, "item_stats", "log(1 + clicks) in the 7 days before the snapshot"),
    Feature("item_purchases_7d", "float32", 0.0, "item_stats", "log(1 + purchases) in the 7 days before"),
    Feature("item_impressions_7d", "float32", 0.0, "item_stats", "log(1 + impressions) in the 7 days before"),
    Feature("item_coec", "float32", 1.0, "item_stats",
            "position-debiased CTR: (clicks + a) / (expected clicks at the item's positions + a), a = 5"),
    Feature("user_n_events", "float32", 0.0, "user", "log(1 + the user's positive events before the snapshot)"),
    Feature("user_cat_affinity", "float32", 0.0, "user", "smoothed share of the user's events in the item's category"),
    Feature("user_subcat_affinity", "float32", 0.0, "user", "smoothed share of the user's events in its subcategory"),
    Feature("user_cat_exposure", "float32", 0.0, "user",
            "smoothed share of the user's past impressions in the item's category (what earlier rankers showed them)"),
    Feature("user_subcat_exposure", "float32", 0.0, "user",
            "smoothed share of the user's past impressions in the item's subcategory"),
    Feature("user_item_shown", "float32", 0.0, "user",
            "log(1 + times the item was shown to the user in the 28 days before)"),
    Feature("user_item_clicked", "float32", 0.0, "user",
            "log(1 + times the user clicked the item in the 28 days before)"),
    Feature("user_price_gap", "float32", 0.0, "user", "item's relative price minus the user's mean relative price"),
    Feature("user_brand_affinity", "float32", 0.0, "user", "smoothed share of the user's events on the item's brand"),
    Feature("session_n_items", "float32", 0.0, "session", "items clicked earlier in this session"),
    Feature("session_cat_share", "float32", 0.0, "session", "share of session items in the item's category"),
    Feature("session_subcat_share", "float32", 0.0, "session", "share of session items in its subcategory"),
    Feature("session_seen", "float32", 0.0, "session", "1 if the item was clicked earlier in this session"),
    Feature("is_search", "float32", 0.0, "query", "1 on the search bar, 0 on the home page"),
    Feature("prefix_len", "float32", 0.0, "query", "length of the typed prefix"),
    Feature("prefix_match_subcat", "float32", 0.0, "query", "1 if the subcategory name starts with the prefix"),
    Feature("prefix_match_title", "float32", 0.0, "query", "1 if any title token starts with the prefix"),
    Feature("is_anonymous", "float32", 0.0, "context", "1 for anonymous traffic"),
    Feature("position", "float32", 0.0, "context",
            "logged display position for training rows, 0 when scoring: the ranker learns position bias apart"),
    Feature("emb_score", "float32", 0.0, "retrieval", "user (or session) vector . item vector"),
    Feature("emb_subcat_score", "float32", 0.0, "retrieval",
            "user (or session) vector . mean vector of the item's subcategory (denoised, covers items with no data)"),
    Feature("emb_known", "float32", 0.0, "retrieval", "1 if an embedding score exists for this pair"),
    Feature("cm_score", "float32", -3.0, "retrieval",
            "position-debiased click model's attraction logit for this visitor and item "
            "(models/retrievers/click_model)"),
    Feature("cm_pop_score", "float32", -3.0, "retrieval",
            "click model's population appeal: logit of the item's mean attraction over a sample of its learnt users"),
    Feature("covisit_score", "float32", 0.0, "retrieval", "co-visitation score with the session and user history"),
    Feature("content_score", "float32", 0.0, "retrieval", "content similarity with the session and user profile"),
    Feature("n_sources", "float32", 0.0, "retrieval", "number of retrievers that proposed the item"),
    Feature("best_source_rank", "float32", 500.0, "retrieval", "best rank of the item across retrievers"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
DEFAULTS = {f.name: f.default for f in FEATURES}
SPEC_VERSION = 1


def spec_json() -> dict:
    return {"version": SPEC_VERSION, "features": [asdict(f) for f in FEATURES]}


def save_spec(path: Path) -> None:
    from recs.datasets.io import atomic_write_json

    atomic_write_json(path, spec_json())


def check_spec(path: Path) -> None:
    """Refuse a model whose saved feature spec differs from this code's (training-serving skew by construction)."""
    saved = json.loads(Path(path).read_text())
    if saved != json.loads(json.dumps(spec_json())):
        names = [f["name"] for f in saved.get("features", [])]
        raise ValueError(f"{path}: feature spec differs from this toolkit's (saved {len(names)} features, "
                         f"version {saved.get('version')}); retrain or use the matching toolkit version")
