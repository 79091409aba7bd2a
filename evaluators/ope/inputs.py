"""Join logged impressions with a target policy's slot probabilities into aligned numpy arrays.

Logged impressions: one row per shown (request, position) with the item shown, the logger's marginal
probability `propensity` = P_logger(item at position | request) and a reward column. Target probabilities: rows
`request_id, position, item_id, prob` = P_target(item at position | request); absent rows mean 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recs.datasets.io import read_table

LOG_COLUMNS = ("request_id", "position", "item_id", "propensity")
TARGET_COLUMNS = ("request_id", "position", "item_id", "prob")
REWARDS = ("clicked", "purchase", "revenue")
MASS_TOL = 1e-6
SURFACE_CODES = {"home": 0, "search": 1}


class OPEInputError(ValueError):
    """Bad logs or target probabilities; the message names the file, row and field."""


@dataclass(frozen=True)
class OPEInputs:
    """Logged impressions aligned with target probabilities.

    Impression arrays have shape (N,) and are sorted by request then position; `req_idx` indexes the (R,)
    request arrays. Target arrays (prefix `t_`) have shape (M,): the target's non-zero probabilities on logged
    requests, used by the direct method. Item codes index the vocabulary of logged items (-1: never logged).
    """

    request_ids: np.ndarray     # (R,) str
    req_surface: np.ndarray     # (R,) int8: 0 home, 1 search, -1 unknown
    req_anonymous: np.ndarray   # (R,) bool
    req_idx: np.ndarray         # (N,) int64 in [0, R)
    position: np.ndarray        # (N,) int64
    item_code: np.ndarray       # (N,) int64
    pscore: np.ndarray          # (N,) logger P(item at position), in (0, 1]
    target_prob: np.ndarray     # (N,) target P(item at position), in [0, 1]
    target_mass: np.ndarray     # (N,) target's total probability at (request, position), in [0, 1]
    reward: np.ndarray          # (N,) float
    t_req_idx: np.ndarray       # (M,)
    t_position: np.ndarray      # (M,)
    t_item_code: np.ndarray     # (M,)
    t_prob: np.ndarray          # (M,) (from `dm_target` when given)
    slate_pscore: np.ndarray | None = None   # (R,) logger P(whole slate), when logged
    reward_name: str = "clicked"
    n_items: int = 0
    target_mass_total: float = 0.0          # sum of all target probability on logged requests
    unlogged_position_mass: float = 0.0     # ... at (request, position) cells with no logged impression
    unseen_pair_mass: float = 0.0           # ... on (item, position) pairs never logged anywhere
    unseen_item_mass: float = 0.0           # ... on items never logged anywhere
    zero_propensity_mass: float | None = None  # ... where the logger's probability is 0 (only when known)
    dropped_target_rows: int = 0            # target rows of requests absent from the logs

    def __post_init__(self) -> None:
        n = len(self.req_idx)
        for name in ("position", "item_code", "pscore", "target_prob", "target_mass", "reward"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have shape ({n},)")
        m = len(self.t_req_idx)
        for name in ("t_position", "t_item_code", "t_prob"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"{name} must have shape ({m},)")
        if self.slate_pscore is not None and len(self.slate_pscore) != self.n_requests:
            raise ValueError(f"slate_pscore must have shape ({self.n_requests},)")

    @property
    def n_requests(self) -> int:
        return len(self.request_ids)

    @property
    def n_impressions(self) -> int:
        return len(self.req_idx)

    @property
    def weights(self) -> np.ndarray:
        """Importance weights target_prob / pscore (N,)."""
        return self.target_prob / self.pscore


# ---- reading ------------------------------------------------------------------------------------------------
def read_frame(path: str | Path, table: str | None = None) -> pl.DataFrame:
    """A Parquet or CSV file, or (with `table`) a dataset folder."""
    path = Path(path)
    if not path.exists():
        raise OPEInputError(f"{path}: no such file or folder")
    try:
        if path.is_file() and path.suffix.lower() == ".csv":
            return pl.read_csv(path, infer_schema_length=10_000)
        return read_table(path, table)
    except OPEInputError:
        raise
    except Exception as exc:  # polars / arrow errors: one line naming the file
        raise OPEInputError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from exc


def _first_bad(df: pl.DataFrame, mask: pl.Expr) -> int | None:
    hit = df.select(pl.arg_where(mask).first()).item()
    return None if hit is None else int(hit)


def _require(df: pl.DataFrame, cols, source: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise OPEInputError(f"{source}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)})")


def _check_numeric(df: pl.DataFrame, col: str, source: str, lo: float, hi: float, lo_open: bool) -> None:
    if not df.schema[col].is_numeric() and df.schema[col] != pl.Boolean:
        raise OPEInputError(f"{source}: field {col}: must be numeric, got {df.schema[col]}")
    x = pl.col(col).cast(pl.Float64)
    low = (x <= lo) if lo_open else (x < lo)
    bad = x.is_null() | x.is_nan() | low | (x > hi)
    row = _first_bad(df, bad)
    if row is not None:
        val = df[col][row]
        rng = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise OPEInputError(f"{source}: row {row + 1}: field {col}: {val!r} is not in {rng}")


def _check_keys(df: pl.DataFrame, cols, source: str) -> None:
    for c in cols:
        row = _first_bad(df, pl.col(c).is_null())
        if row is not None:
            raise OPEInputError(f"{source}: row {row + 1}: field {c}: is empty")
    dup = _first_bad(df, pl.struct(list(cols)).is_duplicated())
    if dup is not None:
        key = ", ".join(f"{c}={df[c][dup]!r}" for c in cols)
        raise OPEInputError(f"{source}: row {dup + 1}: duplicate ({key})")


def check_logs(logs: pl.DataFrame, reward: str, source: str = "logs") -> pl.DataFrame:
    """Validate logged impressions; returns the columns OPE needs, typed (reward as Float64)."""
    if reward not in REWARDS:
        raise OPEInputError(f"--reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    _require(logs, [*LOG_COLUMNS, reward], source)
    if logs.height == 0:
        raise OPEInputError(f"{source}: no logged impressions")
    _check_keys(logs, ("request_id", "position"), source)
    if not logs.schema["position"].is_integer():
        raise OPEInputError(f"{source}: field position: must be an integer, got {logs.schema['position']}")
    _check_numeric(logs, "position", source, 0, np.inf, False)
    _check_numeric(logs, "propensity", source, 0.0, 1.0, True)
    _check_numeric(logs, reward, source, -np.inf, np.inf, False)
    cols = [pl.col("request_id").cast(pl.Utf8), pl.col("position").cast(pl.Int64),
            pl.col("item_id").cast(pl.Utf8), pl.col("propensity").cast(pl.Float64),
            pl.col(reward).cast(pl.Float64).alias("reward")]
    for extra in ("surface", "user_id", "slate_propensity"):
        if extra in logs.columns:
            cols.append(pl.col(extra))
    return logs.select(cols)


def check_target_probs(target: pl.DataFrame, source: str = "target-probs") -> pl.DataFrame:
    """Validate target probabilities: keys unique, 0 <= prob <= 1, per (request, position) sums at most 1.

    Returns the typed frame without zero rows."""
    _require(target, TARGET_COLUMNS, source)
    _check_keys(target, ("request_id", "position", "item_id"), source)
    if not target.schema["position"].is_integer():
        raise OPEInputError(f"{source}: field position: must be an integer, got {target.schema['position']}")
    _check_numeric(target, "prob", source, 0.0, 1.0, False)
    t = target.select(pl.col("request_id").cast(pl.Utf8), pl.col("position").cast(pl.Int64),
                      pl.col("item_id").cast(pl.Utf8), pl.col("prob").cast(pl.Float64))
    keys = ["request_id", "position"]
    sums = t.group_by(keys).agg(pl.col("prob").sum()).filter(pl.col("prob") > 1 + MASS_TOL)
    if sums.height:
        bad = sums.sort(keys).row(0, named=True)
        raise OPEInputError(f"{source}: field prob: probabilities of request_id={bad['request_id']!r} at "
                            f"position {bad['position']} sum to {bad['prob']:.6g} > 1")
    return t.filter(pl.col("prob") > 0)


# ---- alignment -----------------------------------------------------------------------------------------------
def build_inputs(logs: pl.DataFrame, target: pl.DataFrame, reward: str = "clicked",
                 logs_source: str = "logs", target_source: str = "target-probs",
                 logger_probs: pl.DataFrame | None = None, dm_target: pl.DataFrame | None = None) -> OPEInputs:
    """Validate and align logs (canonical impressions) with target probabilities.

    `target` must give the exact target probability of every logged (request, position, item) (absent: 0).
    `dm_target` (optional, same columns) represents the target's whole distribution for the direct method and
    the support diagnostics when `target` does not (e.g. a policy that reports probabilities only for the
    logged items): exact probabilities, or sampled slates with prob 1 / n_samples, which keeps DM and DR
    unbiased because they are linear in the target probabilities. Default: `target` itself.
    `logger_probs` (optional) gives the logger's full slot probabilities; with it the target mass where the
    logger's probability is 0 is measured exactly.
    """
    lg = check_logs(logs, reward, logs_source).sort("request_id", "position")
    tg = check_target_probs(target, target_source)
    lg = lg.with_columns(((pl.col("request_id") != pl.col("request_id").shift()).fill_null(True)
                          .cast(pl.Int64).cum_sum() - 1).alias("_r"))
    reqs = lg.group_by("_r", maintain_order=True).agg(
        pl.col("request_id").first(),
        (pl.col("surface").first().replace_strict(SURFACE_CODES, default=-1, return_dtype=pl.Int8)
         if "surface" in lg.columns else pl.lit(-1, pl.Int8)).alias("surface"),
        (pl.col("user_id").first().is_null() if "user_id" in lg.columns else pl.lit(False)).alias("anon"),
        (pl.col("slate_propensity").first() if "slate_propensity" in lg.columns
         else pl.lit(None, pl.Float64)).alias("slate_p"),
    ).sort("_r")
    items = lg.select(pl.col("item_id").unique().sort()).with_row_index("_i")
    items = items.with_columns(pl.col("_i").cast(pl.Int64))
    lg = lg.join(items, on="item_id", how="left")

    n_target = tg.height
    tg = tg.join(reqs.select("request_id", "_r"), on="request_id", how="inner")
    dropped = n_target - tg.height
    lg = lg.join(tg.select("request_id", "position", "item_id", pl.col("prob").alias("_tp")),
                 on=["request_id", "position", "item_id"], how="left")
    if dm_target is not None:
        tg = check_target_probs(dm_target, f"{target_source} (DM rows)")
        tg = tg.join(reqs.select("request_id", "_r"), on="request_id", how="inner")
    cell_mass = tg.group_by("request_id", "position").agg(pl.col("prob").sum().alias("_mass"))
    lg = (lg.join(cell_mass, on=["request_id", "position"], how="left")
            .with_columns(pl.col("_tp").fill_null(0.0), pl.col("_mass").fill_null(0.0))
            .sort("_r", "position"))
    tg = tg.join(items, on="item_id", how="left").with_columns(pl.col("_i").fill_null(-1))

    total = float(tg["prob"].sum())
    unlogged = float(cell_mass.join(lg.select("request_id", "position"), on=["request_id", "position"],
                                    how="anti")["_mass"].sum())
    pairs = lg.select("item_id", "position").unique()
    unseen_pair = float(tg.join(pairs, on=["item_id", "position"], how="anti")["prob"].sum())
    unseen_item = float(tg.filter(pl.col("_i") < 0)["prob"].sum())
    zero_mass = None
    if logger_probs is not None:
        lp = check_target_probs(logger_probs, "logger-probs")
        zero_mass = float(tg.join(lp, on=["request_id", "position", "item_id"], how="anti")["prob"].sum())

    slate = None
    if "slate_propensity" in lg.columns and reqs["slate_p"].null_count() < reqs.height:
        slate = reqs["slate_p"].to_numpy().astype(np.float64)  # NaN where absent
    return OPEInputs(
        request_ids=reqs["request_id"].to_numpy(),
        req_surface=reqs["surface"].to_numpy().astype(np.int8),
        req_anonymous=reqs["anon"].to_numpy().astype(bool),
        req_idx=lg["_r"].to_numpy(),
        position=lg["position"].to_numpy(),
        item_code=lg["_i"].to_numpy(),
        pscore=lg["propensity"].to_numpy(),
        target_prob=lg["_tp"].to_numpy(),
        target_mass=np.minimum(lg["_mass"].to_numpy(), 1.0),
        reward=lg["reward"].to_numpy(),
        t_req_idx=tg["_r"].to_numpy(),
        t_position=tg["position"].to_numpy(),
        t_item_code=tg["_i"].to_numpy(),
        t_prob=tg["prob"].to_numpy(),
        slate_pscore=slate,
        reward_name=reward,
        n_items=items.height,
        target_mass_total=total,
        unlogged_position_mass=unlogged,
        unseen_pair_mass=unseen_pair,
        unseen_item_mass=unseen_item,
        zero_propensity_mass=zero_mass,
        dropped_target_rows=dropped,
    )
