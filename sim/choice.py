"""The user choice model: position-based clicks, price-sensitive add-to-cart and purchase, heavy-tailed delays.

P(click | item i at position p) = examination[p] * attraction(u, i), with
attraction = sigmoid(base + u.v_i + quality_i - price_sens_u * rel_price_i + intent_boost), times
`unavailable_attraction` when the item cannot be bought (out of stock, restricted, blocked seller).
"""
from __future__ import annotations

import numpy as np

from recs.sim.config import SimConfig


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def examination(k: int, cfg: SimConfig) -> np.ndarray:
    """P(a user examines position p), p = 0..k-1 (position-based model)."""
    return 1.0 / (1.0 + np.arange(k)) ** cfg.position_decay


def attraction_logit(user_vec: np.ndarray, item_vec: np.ndarray, quality: np.ndarray, rel_price: np.ndarray,
                     price_sens: np.ndarray, intent_match: np.ndarray | None, cfg: SimConfig) -> np.ndarray:
    """Logit of attraction for (R, K) user-item pairs. user_vec (R, d); item_vec (R, K, d); others (R, K) / (R,)."""
    logit = cfg.base_logit + np.einsum("rd,rkd->rk", user_vec, item_vec) + quality
    logit -= price_sens[:, None] * rel_price
    if intent_match is not None:
        logit += np.where(intent_match, cfg.search_intent_boost, -cfg.search_intent_boost)
    return logit


def p_cart_given_click(quality: np.ndarray, rel_price: np.ndarray, price_sens: np.ndarray) -> np.ndarray:
    """P(add to cart | click), (R, K)."""
    return sigmoid(-0.6 + 0.8 * quality - 1.5 * price_sens[:, None] * rel_price)


def conversion_delay_seconds(n: int, cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Delay from add-to-cart to purchase: log-normal (median `delay_median_hours`, heavy tail into days).

    The click comes 1-29 s after the impression and the add-to-cart an exponential ~3 min after the click."""
    return np.exp(np.log(cfg.delay_median_hours * 3600.0) + cfg.delay_sigma * rng.standard_normal(n))


def delay_cdf(seconds: np.ndarray, cfg: SimConfig) -> np.ndarray:
    """True P(cart-to-purchase delay <= seconds) (for checking label corrections)."""
    from scipy.stats import norm

    s = np.maximum(np.asarray(seconds, dtype=float), 1e-9)
    return norm.cdf((np.log(s) - np.log(cfg.delay_median_hours * 3600.0)) / cfg.delay_sigma)
