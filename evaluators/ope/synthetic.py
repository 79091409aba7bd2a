"""A small, fully known slate bandit for tests and benchmarks (vectorised; no simulator needed).

Users fall into `n_groups` groups (group 0 is anonymous). The logger fills each of `k` slots independently from a
softmax over items (so marginals and whole-slate propensities are exact); clicks follow a position-based model
P(click) = exam[p] * attr[g, item]. Targets: "softmax" (another softmax over all items), "sparse" (epsilon-greedy
over the `support` best items per slot), "deterministic" (the best items, one per slot) and "off-support"
(deterministic on items the logger never shows). `true_value` is the target's exact expected clicks per request.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

TARGET_KINDS = ("softmax", "sparse", "deterministic", "off-support")


@dataclass(frozen=True)
class SyntheticBandit:
    """Generator settings; `logger_items` < n_items leaves items the logger never shows."""

    n_items: int = 50
    k: int = 5
    n_groups: int = 8
    logger_beta: float = 1.0
    target_beta: float = 3.0
    target_kind: str = "softmax"
    support: int = 3
    epsilon: float = 0.3
    logger_items: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {TARGET_KINDS}, got {self.target_kind!r}")
        if self.n_items < self.k or self.k < 1 or self.n_groups < 1:
            raise ValueError("need n_items >= k >= 1 and n_groups >= 1")
        if self.logger_items is not None and not self.k <= self.logger_items <= self.n_items:
            raise ValueError("logger_items must be in [k, n_items]")
        if not 1 <= self.support <= self.n_items or not 0 <= self.epsilon <= 1:
            raise ValueError("support must be in [1, n_items] and epsilon in [0, 1]")

    # ---- the world -----------------------------------------------------------------------------------------
    def _world(self):
        rng = np.random.default_rng([self.seed, 11])
        G, I, k = self.n_groups, self.n_items, self.k
        logit = rng.normal(-2.0, 1.0, (G, I))
        attr = 1.0 / (1.0 + np.exp(-logit))
        exam = 0.9 ** np.arange(k)
        noisy = logit + rng.normal(0, 0.7, (G, I))
        lz = self.logger_beta * noisy
        if self.logger_items is not None:
            lz[:, self.logger_items:] = -np.inf
        pi0 = np.exp(lz - lz.max(axis=1, keepdims=True))
        pi0 /= pi0.sum(axis=1, keepdims=True)
        pi0 = np.repeat(pi0[:, None, :], k, axis=1)  # (G, k, I)
        pi = self._target(logit + rng.normal(0, 0.3, (G, I)), pi0)
        group_p = np.full(G, 1.0 / G)
        return attr, exam, pi0, pi, group_p

    def _target(self, score: np.ndarray, pi0: np.ndarray) -> np.ndarray:
        G, I, k = self.n_groups, self.n_items, self.k
        pi = np.zeros((G, k, I))
        if self.target_kind == "softmax":
            z = self.target_beta * score
            p = np.exp(z - z.max(axis=1, keepdims=True))
            pi[:] = (p / p.sum(axis=1, keepdims=True))[:, None, :]
        elif self.target_kind == "sparse":
            top = np.argsort(-score, axis=1)[:, : self.support]
            for g in range(G):
                pi[g, :, top[g]] = self.epsilon / self.support
                pi[g, :, top[g, 0]] += 1 - self.epsilon
        else:
            s = score.copy()
            if self.target_kind == "off-support":
                s[pi0[:, 0, :] > 0] = -np.inf
            top = np.argsort(-s, axis=1)[:, :k]
            for g in range(G):
                pi[g, np.arange(k), top[g]] = 1.0
        return pi

    def true_value(self) -> float:
        """The target's expected clicks per request."""
        attr, exam, _, pi, gp = self._world()
        return float(np.einsum("g,gpi,p,gi->", gp, pi, exam, attr))

    def logging_value(self) -> float:
        attr, exam, pi0, _, gp = self._world()
        return float(np.einsum("g,gpi,p,gi->", gp, pi0, exam, attr))

    # ---- data ----------------------------------------------------------------------------------------------
    def arrays(self, n_requests: int, seed: int) -> dict[str, np.ndarray]:
        """Logged arrays (R*k,): group, position, item, propensity, target prob, click; plus (R,) slate propensity."""
        attr, exam, pi0, pi, gp = self._world()
        rng = np.random.default_rng([self.seed, seed, 13])
        R, k = n_requests, self.k
        g = rng.choice(self.n_groups, size=R, p=gp)
        cdf = np.cumsum(pi0[:, 0, :], axis=1)
        cdf[:, -1] = 1.0
        u = rng.random((R, k))
        item = np.empty((R, k), dtype=np.int64)
        for gg in range(self.n_groups):
            sel = g == gg
            item[sel] = np.searchsorted(cdf[gg], u[sel], side="right")
        pos = np.broadcast_to(np.arange(k), (R, k))
        gk = np.broadcast_to(g[:, None], (R, k))
        prop = pi0[gk, pos, item]
        clicked = rng.random((R, k)) < exam[pos] * attr[gk, item]
        return {"group": gk.ravel(), "position": pos.ravel().copy(), "item": item.ravel(),
                "propensity": prop.ravel(), "target_prob": pi[gk, pos, item].ravel(),
                "clicked": clicked.ravel(), "slate_propensity": np.prod(prop, axis=1)}

    def frames(self, n_requests: int, seed: int, start: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Canonical-style impressions and the target-probs frame for `n_requests` logged requests.

        Request ids are `r{start}` .. `r{start + n_requests - 1}`, so chunks with distinct `seed` and `start`
        make one larger log (see `write_parquet`)."""
        a = self.arrays(n_requests, seed)
        R, k = n_requests, self.k
        logs = pl.DataFrame({"_r": np.repeat(np.arange(start, start + R), k), "_g": a["group"], "_i": a["item"],
                             "position": a["position"].astype(np.int64), "propensity": a["propensity"],
                             "clicked": a["clicked"],
                             "slate_propensity": np.repeat(a["slate_propensity"], k)})
        logs = logs.select(
            (pl.lit("r") + pl.col("_r").cast(pl.Utf8)).alias("request_id"), "position",
            (pl.lit("i") + pl.col("_i").cast(pl.Utf8)).alias("item_id"), "propensity", "clicked",
            pl.when(pl.col("_g") % 2 == 0).then(pl.lit("home")).otherwise(pl.lit("search")).alias("surface"),
            pl.when(pl.col("_g") == 0).then(pl.lit(None, pl.Utf8))           # every request its own visitor:
              .otherwise(pl.lit("u") + pl.col("_r").cast(pl.Utf8)).alias("user_id"),  # independent units
            "slate_propensity")
        _, _, _, pi, _ = self._world()
        gg, pp, ii = np.nonzero(pi)  # support cells of every group
        cells = pl.DataFrame({"_g": gg, "position": pp.astype(np.int64), "_i": ii, "prob": pi[gg, pp, ii]})
        reqs = pl.DataFrame({"_r": np.arange(start, start + R), "_g": a["group"][::k]})
        target = (reqs.join(cells, on="_g", how="inner").sort("_r", "position", "_i")
                  .select((pl.lit("r") + pl.col("_r").cast(pl.Utf8)).alias("request_id"), "position",
                          (pl.lit("i") + pl.col("_i").cast(pl.Utf8)).alias("item_id"), "prob"))
        return logs, target

    def write_parquet(self, logs_path: str | Path, target_path: str | Path, n_requests: int, seed: int = 0,
                      chunk_requests: int = 100_000) -> tuple[int, int]:
        """Write logs and target probabilities for `n_requests` requests, chunk by chunk (bounded memory).

        Returns (impressions, target rows) written."""
        import pyarrow.parquet as pq

        writers: dict[str, pq.ParquetWriter] = {}
        counts = [0, 0]
        try:
            for c, start in enumerate(range(0, n_requests, chunk_requests)):
                n = min(chunk_requests, n_requests - start)
                for j, (path, frame) in enumerate(zip((logs_path, target_path),
                                                      self.frames(n, seed * 100_003 + c, start))):
                    table = frame.to_arrow()
                    if str(path) not in writers:
                        writers[str(path)] = pq.ParquetWriter(str(path), table.schema)
                    writers[str(path)].write_table(table)
                    counts[j] += frame.height
        finally:
            for w in writers.values():
                w.close()
        return counts[0], counts[1]
