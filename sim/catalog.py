"""Catalog, sellers and users of the simulated marketplace, with their hidden latent truth."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recs.sim.config import SimConfig

_SYL = ["ka", "lo", "mi", "ra", "ve", "to", "su", "ne", "di", "po", "ba", "ze", "fi", "gu", "ho", "ju",
        "ce", "wa", "ri", "mo", "ta", "le", "xo", "ny"]
ADJECTIVES = ["classic", "pro", "lite", "max", "eco", "smart", "mini", "ultra", "soft", "prime"]


def _names(rng: np.random.Generator, n: int, syllables: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(_SYL, size=syllables))
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


@dataclass
class Catalog:
    """Item attributes (observable) and item latents (hidden truth); arrays indexed by item row."""

    category_names: list[str]
    subcat_names: list[str]          # global subcategory index -> name
    subcat_category: np.ndarray      # (n_subcats,) category index of each subcategory
    brand_names: list[str]
    centroids: np.ndarray            # (n_subcats, dim) latent centre of each subcategory
    subcat: np.ndarray               # (M,) subcategory index
    brand: np.ndarray                # (M,) brand index
    seller: np.ndarray               # (M,) seller index
    adjective: np.ndarray            # (M,)
    vec: np.ndarray                  # (M, dim) latent item vector
    quality: np.ndarray              # (M,) latent quality
    price: np.ndarray                # (M,) initial price
    stock: np.ndarray                # (M,) initial stock
    restricted: np.ndarray           # (M,) initial restricted flag
    created_us: np.ndarray           # (M,) creation time in epoch microseconds
    prior: np.ndarray                # (M,) the logging ranker's popularity prior (noisy, observable to it)
    n_sellers: int

    @property
    def n(self) -> int:
        return len(self.subcat)

    @property
    def category(self) -> np.ndarray:
        return self.subcat_category[self.subcat]

    def item_ids(self) -> np.ndarray:
        return np.array([f"i{j:07d}" for j in range(self.n)], dtype=object)

    def titles(self) -> list[str]:
        return [f"{self.brand_names[b]} {self.subcat_names[s]} {ADJECTIVES[a]} {j % 997}"
                for j, (b, s, a) in enumerate(zip(self.brand, self.subcat, self.adjective))]


@dataclass
class Users:
    """Logged-in users: hidden preference vectors and price sensitivity, plus the logger's noisy estimate."""

    vec: np.ndarray          # (N, dim)
    price_sens: np.ndarray   # (N,)
    activity: np.ndarray     # (N,) request-rate weights (sum 1)
    logger_vec: np.ndarray   # (N, dim) what the production ranker believes about each user
    created_us: np.ndarray   # (N,)

    @property
    def n(self) -> int:
        return len(self.vec)

    def user_ids(self) -> np.ndarray:
        return np.array([f"u{j:07d}" for j in range(self.n)], dtype=object)


def build_catalog(cfg: SimConfig, rng: np.random.Generator) -> Catalog:
    """Items with categories, brands, sellers, prices, stock and latents; ~new_item_rate of them created per day."""
    taken: set[str] = set()
    cats = _names(rng, cfg.n_categories, 2, taken)
    n_sub = cfg.n_categories * cfg.subcats_per_category
    subs = _names(rng, n_sub, 3, taken)
    brands = _names(rng, cfg.n_categories * cfg.brands_per_category, 2, taken)
    sub_cat = np.repeat(np.arange(cfg.n_categories), cfg.subcats_per_category)
    cat_centre = rng.normal(0, 1.0, (cfg.n_categories, cfg.dim))
    centroids = cat_centre[sub_cat] + rng.normal(0, 0.6, (n_sub, cfg.dim))
    m = cfg.n_items
    sub_pop = rng.dirichlet(np.full(n_sub, 2.0))
    subcat = rng.choice(n_sub, size=m, p=sub_pop)
    brand = sub_cat[subcat] * cfg.brands_per_category + rng.integers(0, cfg.brands_per_category, m)
    n_sellers = max(1, m // cfg.items_per_seller)
    seller = rng.integers(0, n_sellers, m)
    vec = centroids[subcat] + rng.normal(0, 0.7, (m, cfg.dim))
    vec /= np.sqrt(cfg.dim) / 1.6
    quality = rng.normal(0, 0.6, m)
    cat_price = np.exp(rng.normal(3.5, 0.8, cfg.n_categories))
    price = np.round(cat_price[sub_cat[subcat]] * np.exp(rng.normal(0, 0.5, m)), 2).clip(0.5, None)
    stock = rng.poisson(30, m).astype(np.int64)
    stock[rng.random(m) < cfg.initial_oos_share] = 0
    restricted = rng.random(m) < cfg.restricted_rate * 5
    start_us = int(cfg.start.timestamp() * 1e6)
    day_us = 86_400 * 10**6
    # existing items were created up to a year ago; new ones arrive during the log period
    created = start_us - rng.integers(day_us, 365 * day_us, m)
    new = rng.random(m) < min(0.5, cfg.new_item_rate * cfg.days)
    created[new] = start_us + rng.integers(0, cfg.days * day_us, int(new.sum()))
    prior = 0.8 * quality + rng.normal(0, 0.8, m)
    return Catalog(cats, subs, sub_cat, brands, centroids, subcat, brand, seller, rng.integers(0, len(ADJECTIVES), m),
                   vec, quality, price, stock, restricted, created, prior, n_sellers)


def sample_user_vectors(cat: Catalog, n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Preference vectors: a mix of two favourite subcategories plus noise (used for users and anonymous visitors)."""
    n_sub = len(cat.centroids)
    a = rng.integers(0, n_sub, n)
    b = rng.integers(0, n_sub, n)
    w = rng.uniform(0.5, 1.0, (n, 1))
    v = w * cat.centroids[a] + (1 - w) * cat.centroids[b] + rng.normal(0, 0.4, (n, dim))
    return v / (np.sqrt(dim) / 1.6)


def sample_price_sens(rng: np.random.Generator, n: int | None = None):
    """Price sensitivity of a visitor (or `n` of them): the population's prior, Gamma(2, 0.3)."""
    return rng.gamma(2.0, 0.3, n)


def intent_probs(cat: Catalog, vecs: np.ndarray) -> np.ndarray:
    """P(search intent = subcategory | taste) per row of `vecs`: softmax(2 u.centroid)."""
    logits = 2.0 * vecs @ cat.centroids.T
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def build_users(cfg: SimConfig, cat: Catalog, rng: np.random.Generator) -> Users:
    vec = sample_user_vectors(cat, cfg.n_users, cfg.dim, rng)
    price_sens = sample_price_sens(rng, cfg.n_users)
    activity = rng.pareto(1.5, cfg.n_users) + 1
    activity /= activity.sum()
    logger_vec = vec + rng.normal(0, cfg.logging_user_noise, vec.shape) / (np.sqrt(cfg.dim) / 1.6)
    start_us = int(cfg.start.timestamp() * 1e6)
    created = start_us - rng.integers(86_400 * 10**6, 3 * 365 * 86_400 * 10**6, cfg.n_users)
    return Users(vec, price_sens, activity, logger_vec * 0.6, created)
