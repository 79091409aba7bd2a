"""The click model's fitting mathematics: the position-based likelihood, the exposure averages and full-batch
L-BFGS with early stopping on the latest impressions (`click_model.ClickModelRetriever.fit` uses them)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from recs.models.retrievers.click_model import ClickModelConfig

LBFGS_ROUND = 10     # L-BFGS iterations between two validation checks
RECENT = 10          # session clicks the visitor vector looks at


def _session_recent(impressions: pl.DataFrame, interactions: pl.DataFrame, item_index: dict[str, int]
                    ) -> dict[str, list[int]]:
    """Per request: item indices of the session's clicks before the request, oldest first (last RECENT)."""
    reqs = impressions.group_by("request_id").agg(pl.col("session_id").first(), pl.col("ts").min())
    clicks = (interactions.filter(pl.col("kind") == "click").select("session_id", pl.col("ts").alias("cts"),
                                                                    "item_id"))
    j = (reqs.join(clicks, on="session_id").filter(pl.col("cts") < pl.col("ts")).sort("cts")
         .group_by("request_id").agg(pl.col("item_id").tail(RECENT)))
    return {r: [item_index[i] for i in items if i in item_index] for r, items in j.iter_rows()}


def position_based_nll(exam_logit, attraction_logit, clicked):
    """Per-impression negative log-likelihood under P(click) = sigma(exam_logit) * sigma(attraction_logit)
    (torch tensors)."""
    import torch

    logp = torch.nn.functional.logsigmoid(exam_logit) + torch.nn.functional.logsigmoid(attraction_logit)
    log1m = torch.log1p(-torch.exp(logp).clamp(max=1 - 1e-6))   # log(1 - exp(logp)), numerically safe
    return -(clicked * logp + (1 - clicked) * log1m)


def _row_mean_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int):
    """Sparse (n_rows, n_cols) matrix whose row r averages the columns listed for r (repeats count; rows with none
    stay empty, so their product is the zero vector)."""
    import torch

    key = rows.astype(np.int64) * n_cols + cols
    uniq, counts = np.unique(key, return_counts=True)
    r, c = uniq // n_cols, uniq % n_cols
    totals = np.bincount(r, weights=counts, minlength=n_rows)
    vals = counts / np.maximum(totals[r], 1)
    idx = torch.from_numpy(np.vstack([r, c]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals.astype(np.float32)), (n_rows, n_cols),
                                   check_invariants=True).coalesce()


def _exposure_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int):
    """Each registered user's impressions averaged (row sums 1; user 0, the anonymous slot, stays empty): what the
    logging policy chose to show a user reveals its belief about their taste."""
    keep = users > 0
    return _row_mean_matrix(users[keep], items[keep], n_users, n_items)


def _fit_lbfgs(P: dict, nll_of, n: int, time_order: np.ndarray, cfg: "ClickModelConfig") -> None:
    """Full-batch L-BFGS on the earliest (1 - validation_share) of the impressions with a Gaussian prior per
    parameter; every `LBFGS_ROUND` iterations the held-out NLL (the latest impressions) is checked and the best
    parameters are kept (early stopping: more iterations overfit the rarely shown items)."""
    import torch

    n_val = int(round(n * cfg.validation_share))
    train = torch.from_numpy(np.sort(time_order[:n - n_val]))
    val = torch.from_numpy(np.sort(time_order[n - n_val:]))
    opt = torch.optim.LBFGS(list(P.values()), lr=1, max_iter=LBFGS_ROUND, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll_of(train) + cfg.l2 / len(train) * sum((P[k] ** 2).sum() for k in ("U", "E", "bi", "beta_u", "S"))
        loss.backward()
        return loss

    best, best_nll, worse = None, np.inf, 0
    for _ in range(max(1, -(-cfg.max_iter // LBFGS_ROUND))):
        opt.step(closure)
        if not n_val:
            continue
        with torch.no_grad():
            v = float(nll_of(val))
        if v < best_nll - 1e-6:
            best, best_nll, worse = {k: t.detach().clone() for k, t in P.items()}, v, 0
        else:
            worse += 1
            if worse >= 2:
                break
    if best is not None:
        with torch.no_grad():
            for k, t in best.items():
                P[k].copy_(t)
