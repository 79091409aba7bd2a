"""Multiple-comparison corrections: Bonferroni, Holm (FWER) and Benjamini-Hochberg (FDR) adjusted p-values."""
from __future__ import annotations

from typing import Literal

import numpy as np

Correction = Literal["none", "bonferroni", "holm", "bh"]
CORRECTIONS: tuple[str, ...] = ("none", "bonferroni", "holm", "bh")

CORRECTION_NAMES = {
    "none": "no correction",
    "bonferroni": "Bonferroni (family-wise error rate)",
    "holm": "Holm step-down (family-wise error rate)",
    "bh": "Benjamini-Hochberg step-up (false discovery rate)",
}


def adjust_pvalues(pvalues: np.ndarray | list[float], method: Correction = "holm") -> np.ndarray:
    """Adjusted p-values (compare each with alpha) for one family of hypotheses.

    Matches statsmodels' `multipletests(..., method="bonferroni" | "holm" | "fdr_bh")`.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError("adjust_pvalues takes a 1-d array of p-values")
    if np.any((p < 0) | (p > 1) | np.isnan(p)):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    if m == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="stable")
    ps = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ps)
    elif method == "bh":
        adj = ps * m / np.arange(1, m + 1)
        adj = np.minimum.accumulate(adj[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def sizing_alpha(alpha: float, n_comparisons: int, method: Correction) -> float:
    """Per-comparison alpha to size an experiment with `n_comparisons` tests under `method`.

    Bonferroni and Holm size at alpha / m (Holm's first step is Bonferroni's, so the power is at least the stated
    one); Benjamini-Hochberg is sized at the same conservative level because its per-test level depends on how
    many hypotheses turn out to be true; `none` keeps alpha.
    """
    if n_comparisons < 1:
        raise ValueError("n_comparisons must be >= 1")
    if method == "none":
        return alpha
    return alpha / n_comparisons
