"""Typed configuration of the simulated marketplace."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

SCALES = {
    # name: (users, items, days, requests per day)
    "small": (2_000, 5_000, 7, 8_000),
    "medium": (50_000, 100_000, 14, 100_000),
    "large": (500_000, 1_000_000, 30, 400_000),
}


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated marketplace; same config and seed, same data."""

    n_users: int = 2_000
    n_items: int = 5_000
    days: int = 7
    seed: int = 0
    anonymous_share: float = 0.35
    requests_per_day: int = 8_000
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 5, tzinfo=timezone.utc))
    n_categories: int = 12
    subcats_per_category: int = 4
    brands_per_category: int = 8
    items_per_seller: int = 40
    dim: int = 8
    search_share: float = 0.3
    k_home: int = 10
    k_search: int = 5
    session_mean_requests: float = 2.5
    # logging policy ("the current production ranker")
    logging_candidates_per_subcat: int = 64
    logging_pool: int = 50
    epsilon_pool: float = 0.2
    epsilon_uniform: float = 0.05
    logging_user_noise: float = 0.8
    # choice model
    base_logit: float = -2.4
    position_decay: float = 0.8
    search_intent_boost: float = 1.6
    unavailable_attraction: float = 0.3
    purchase_given_cart: float = 0.6
    delay_median_hours: float = 2.0
    delay_sigma: float = 1.8
    # inventory dynamics (per day unless said)
    new_item_rate: float = 0.03
    price_change_rate: float = 0.05
    restock_rate_per_hour: float = 0.04
    restricted_rate: float = 0.002
    blocked_seller_share: float = 0.02
    initial_oos_share: float = 0.05
    chunk_requests: int = 4_000

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "days", "requests_per_day", "n_categories", "subcats_per_category",
                     "brands_per_category", "items_per_seller", "dim", "k_home", "k_search", "logging_pool",
                     "logging_candidates_per_subcat", "chunk_requests"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("anonymous_share", "search_share", "epsilon_pool", "epsilon_uniform", "new_item_rate",
                     "price_change_rate", "restock_rate_per_hour", "restricted_rate", "blocked_seller_share",
                     "initial_oos_share", "purchase_given_cart", "unavailable_attraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.epsilon_pool + self.epsilon_uniform > 1:
            raise ValueError("epsilon_pool + epsilon_uniform must be at most 1")
        if self.logging_pool < max(self.k_home, self.k_search):
            raise ValueError("logging_pool must be at least the slate size")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")

    @classmethod
    def for_scale(cls, scale: str, **overrides) -> "SimConfig":
        """A preset: `small` (tests, demo), `medium` (benchmarks), `large`."""
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        users, items, days, rpd = SCALES[scale]
        base = dict(n_users=users, n_items=items, days=days, requests_per_day=rpd)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def with_(self, **changes) -> "SimConfig":
        return replace(self, **changes)

    def to_json(self) -> dict:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "SimConfig":
        d = dict(d)
        d["start"] = datetime.fromisoformat(d["start"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
