"""`simulate drift`: shift user preferences, the catalog mix or price levels from a given day and watch the
monitors of the trained pipeline catch it.

Per seed a dataset of `ref_days` days is simulated and the pipeline trained on it (`scenarios.trained`). The world
then runs on, hour by hour, from the end of that log (the logging policy's traffic keeps selling stock, prices and
restrictions keep moving) while the trained pipeline serves `requests_per_day` fresh requests a day; each served
slate is clicked on by the simulator's users (truth), and the ranker's scores, the served items' attributes and
the clicks are recorded. From `onset_day` (absolute day index) the world changes:

* `preference`: every logged-in user's true preference vector is rotated by `magnitude` x 90 degrees (norms
  kept; the model's view of users, their histories, does not change, so its scores do not move but clicks do);
* `catalog_mix`: a share `magnitude` of the items of half the categories leaves the catalog (delisted:
  restricted), so what is eligible, retrieved and shown tilts towards the other categories;
* `price`: live prices of half of the categories rise by a factor 1 + `magnitude`.

Each seed runs a drifted and a drift-free continuation of the same trained world (same requests until the onset).
The monitors are in `scenarios.drift_monitors`.
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from recs.scenarios.common import Clock, small_sim
from recs.scenarios.trained import ModelSettings, Trained, check_dataset, prepare
from recs.sim import SimConfig, World
from recs.sim.traffic import DIURNAL

KINDS = ("preference", "catalog_mix", "price")
DEFAULT_MAGNITUDE = {"preference": 0.5, "catalog_mix": 0.8, "price": 0.5}   # of the CLI, per kind
ITEM_FEATURES = ("log_price", "rel_price", "log_stock", "category")


@dataclass(frozen=True)
class DriftScenarioConfig:
    """Days, the drift (kind, onset, magnitude), served traffic, the monitors' settings and the number of seeds.

    `sim` sets the world (its `days` is replaced by `ref_days`: the training log); days are absolute indices from
    the start of the log: `0 .. ref_days-1` training (the dataset's days when one is given), then `baseline_days`
    days in production that are the monitors' reference, then monitored days up to `days - 1`."""

    sim: SimConfig = field(default_factory=lambda: small_sim(requests_per_day=4_000))
    model: ModelSettings = field(default_factory=ModelSettings)
    dataset: Path | None = None     # a given simulated dataset of `ref_days` days (all seeds continue it) ...
    model_dir: Path | None = None   # ... and a model trained on it (default: simulate and train one per seed)
    kind: str = "preference"
    days: int = 9
    ref_days: int = 2
    baseline_days: int = 2
    onset_day: int = 6
    magnitude: float = 0.5
    requests_per_day: int = 400
    maturity_days: int = 1
    window_days: int = 1
    ndcg_k: int = 10
    z: float = 2.5                      # label monitors: alarm beyond z standard errors ...
    min_ndcg_drop: float = 0.03         # ... and a relative NDCG drop of at least this much
    min_calibration_gap: float = 0.08   # ... or a calibration gap of at least this share of the window's CTR
    psi_warn: float = 0.1
    psi_drift: float = 0.25
    features: tuple[str, ...] = ("log_price", "rel_price", "category")
    seeds: int = 2

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.model_dir is not None and self.dataset is None:
            raise ValueError("--model needs --dataset: the simulated dataset the model was trained on")
        if self.dataset is None and self.ref_days < self.model.min_days():
            raise ValueError(f"ref_days must be at least {self.model.min_days()} to train the pipeline, "
                             f"got {self.ref_days}")
        first = self.ref_days + self.baseline_days
        if self.baseline_days < 1 or not first <= self.onset_day < self.days:
            raise ValueError(f"need ref_days ({self.ref_days}) + baseline_days ({self.baseline_days}) <= onset_day "
                             f"({self.onset_day}) < days ({self.days}), baseline_days >= 1")
        if not (0 <= self.min_ndcg_drop < 1 and 0 <= self.min_calibration_gap < 1):
            raise ValueError("min_ndcg_drop and min_calibration_gap must be in [0, 1)")
        if self.magnitude <= 0 or (self.kind == "catalog_mix" and self.magnitude > 1) \
                or (self.kind == "preference" and self.magnitude > 2):
            raise ValueError(f"magnitude must be > 0 (at most 1 for catalog_mix, at most 2 = 180 degrees for "
                             f"preference), got {self.magnitude}")
        bad = [f for f in self.features if f not in ITEM_FEATURES]
        if bad or not self.features:
            raise ValueError(f"features must be some of {', '.join(ITEM_FEATURES)}, got {', '.join(bad) or 'none'}")
        if self.seeds < 1 or self.maturity_days < 0 or self.z <= 0 or self.window_days < 1 \
                or self.requests_per_day < 24 or self.ndcg_k < 1:
            raise ValueError("seeds, window_days and ndcg_k must be >= 1, requests_per_day >= 24, maturity_days >= 0 "
                             "and z > 0")


def rotate_rows(v: np.ndarray, theta: float, rng: np.random.Generator) -> np.ndarray:
    """Each row of `v` rotated by exactly `theta` radians (0 <= theta <= pi) in a random plane containing it.

    The direction: `v q` (q a random orthogonal matrix) with its component along the row removed, so it is
    orthogonal to the row; the result `cos(theta) v + sin(theta) |v| u_hat` keeps the norm. (Until the ninth
    session the rotation was `cos(theta) v + sin(theta) v q`, renormalised: `v q` is not orthogonal to `v`, so the
    per-user angle was not `theta`: 13.5-75.8 degrees, mean 48, at dim 8 and theta = 45 degrees.) Zero rows stay
    zero; a row whose `v q` is parallel to it (a measure-zero event) gets a fresh random direction."""
    v = np.asarray(v, dtype=float)
    d = v.shape[1]
    if d < 2:
        raise ValueError("a rotation needs vectors of dimension 2 or more")
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    v_hat = np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)

    def orthogonal(w: np.ndarray, vh: np.ndarray) -> np.ndarray:
        return w - np.sum(w * vh, axis=1, keepdims=True) * vh

    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    u = orthogonal(v @ q, v_hat)
    bad = (np.linalg.norm(u, axis=1) <= 1e-9 * norm[:, 0]) & (norm[:, 0] > 0)
    if bad.any():   # v q parallel to v: any other direction orthogonal to v will do
        u[bad] = orthogonal(rng.normal(size=(int(bad.sum()), d)), v_hat[bad])
    u_norm = np.linalg.norm(u, axis=1, keepdims=True)
    u_hat = np.divide(u, u_norm, out=np.zeros_like(u), where=u_norm > 0)
    return np.cos(theta) * v + np.sin(theta) * norm * u_hat


def apply_drift(world: World, kind: str, magnitude: float, rng: np.random.Generator) -> dict:
    """Change the world in place; returns what changed (categories hit, items delisted)."""
    cats = np.unique(world.catalog.category)
    if kind == "preference":
        world.users.vec[:] = rotate_rows(world.users.vec, magnitude * np.pi / 2, rng)
        return {"users": int(len(world.users.vec))}
    up = rng.choice(cats, size=max(1, len(cats) // 2), replace=False)
    hit = np.isin(world.catalog.category, up)
    names = sorted(world.catalog.category_names[c] for c in up)
    if kind == "price":
        world.state.price[hit] = np.round(world.state.price[hit] * (1 + magnitude), 2)
        world.state.version += 1
        return {"categories": names, "items_repriced": int(hit.sum())}
    if kind == "catalog_mix":
        rows = np.flatnonzero(hit & ~world.state.restricted)
        gone = rows[rng.random(len(rows)) < magnitude]
        world.state.restricted[gone] = True
        world.state.version += 1
        return {"categories": names, "items_delisted": int(len(gone))}
    raise ValueError(f"unknown drift kind {kind!r}")


def _served_rows(world: World, pipe, requests, day: int, rng: np.random.Generator) -> dict[str, list]:
    """Serve each request with the pipeline; one row per shown item with its score, attributes and a sampled click."""
    cols: dict[str, list] = {c: [] for c in ("day", "request_id", "item_id", "position", "score", "label", "p_click",
                                             "log_price", "rel_price", "log_stock", "category", "segment")}
    for q in requests:
        r = pipe.rank(q, world.k_for(q))
        if not r.item_ids:
            continue
        idx = world.state.indices(list(r.item_ids))
        p_click, _, _ = world.click_probs(world.contexts[q.request_id], idx)
        n = len(idx)
        scored = "rank" in r.stages and not r.fallback
        cols["day"] += [day] * n
        cols["request_id"] += [q.request_id] * n
        cols["item_id"] += list(r.item_ids)
        cols["position"] += list(range(n))
        cols["score"] += [float(s) if scored else float("nan") for s in r.scores]
        cols["label"] += (rng.random(n) < p_click).astype(np.int8).tolist()
        cols["p_click"] += p_click.tolist()
        cols["log_price"] += np.log(world.state.price[idx]).tolist()
        cols["rel_price"] += world.rel_price(idx).tolist()
        cols["log_stock"] += np.log1p(world.state.stock[idx]).tolist()
        cols["category"] += world.state.category[idx].tolist()
        cols["segment"] += [("anonymous" if q.user_id is None else "user") + "/" + q.surface] * n
    return cols


def serve_days(cfg: DriftScenarioConfig, trained: Trained, seed: int, drift: bool) -> tuple[pl.DataFrame, dict]:
    """Days `ref_days .. days-1` of the trained world served by the pipeline (drifted from `onset_day` if `drift`)."""
    from recs.models.pipeline import Pipeline

    world = World.load(trained.dataset)
    pipe = Pipeline.load(trained.model, state=world.state)
    clock = Clock(world, 3600, seed)
    drift_rng = np.random.default_rng([seed, 97])
    click_rng = np.random.default_rng([seed, 98])
    parts, changed = [], {}
    for day in range(cfg.ref_days, cfg.days):
        if day == cfg.onset_day:
            click_rng = np.random.default_rng([seed, 99])  # both runs restart their click draws at the onset
            if drift:
                changed = apply_drift(world, cfg.kind, cfg.magnitude, drift_rng)
        cols: dict[str, list] = {}
        for h in range(24):
            n = max(1, int(round(cfg.requests_per_day * DIURNAL[h])))
            reqs = world.sample_requests(n, 100_000 * seed + 1_000 * day + h, ts=world.now)
            for name, vals in _served_rows(world, pipe, reqs, day, click_rng).items():
                cols.setdefault(name, []).extend(vals)
            clock.step()
        parts.append(pl.DataFrame(cols, schema_overrides={"label": pl.Int8, "day": pl.Int32}))
    return pl.concat(parts), changed


def run_drift(cfg: DriftScenarioConfig = DriftScenarioConfig(), progress: Callable[[str], None] | None = None) -> dict:
    """Drifted and drift-free runs over `cfg.seeds` seeds; detection delay and false-alarm rate per monitor."""
    from recs.scenarios.drift_monitors import MONITORS, monitor_run, summarise

    say = progress or (lambda _m: None)
    if cfg.dataset is not None and check_dataset(cfg.dataset).days != cfg.ref_days:
        raise ValueError(f"{cfg.dataset}: has {check_dataset(cfg.dataset).days} days, ref_days is {cfg.ref_days}")
    drifted, clean, changes, models = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="recs-drift-") as tmp:
        # a given dataset (and model) is the same world for every seed: prepared (trained) once
        given = (prepare(Path(tmp), cfg.sim.with_(days=cfg.ref_days), cfg.model, cfg.dataset, cfg.model_dir, say=say)
                 if cfg.dataset is not None else None)
        for s in range(cfg.seeds):
            seed = cfg.sim.seed + s
            if given is None:
                (Path(tmp) / f"seed{s}").mkdir()
            trained = given or prepare(Path(tmp) / f"seed{s}", cfg.sim.with_(seed=seed, days=cfg.ref_days), cfg.model,
                                       say=say)
            models.append(trained.describe())
            frame, changed = serve_days(cfg, trained, seed, True)
            drifted.append(monitor_run(cfg, frame))
            changes.append(changed)
            clean.append(monitor_run(cfg, serve_days(cfg, trained, seed, False)[0]))
            say(f"seed {seed}: drifted and drift-free runs monitored")
    return {"kind": "simulate_drift", "config": _cfg_json(cfg),
            "drift": {"kind": cfg.kind, "onset_day": cfg.onset_day, "magnitude": cfg.magnitude, "changed": changes[0]},
            "models": models, "monitors": {m: summarise(m, cfg, drifted, clean) for m in MONITORS},
            "runs": drifted, "clean_runs": clean}


def _cfg_json(cfg: DriftScenarioConfig) -> dict:
    d = asdict(cfg)
    d["sim"] = cfg.sim.with_(days=cfg.ref_days).to_json()
    d["model"]["retrievers"] = list(cfg.model.retrievers)
    d["features"] = list(cfg.features)
    d["dataset"] = str(cfg.dataset) if cfg.dataset else None
    d["model_dir"] = str(cfg.model_dir) if cfg.model_dir else None
    if cfg.model_dir:    # a trained model was loaded: the training settings here were not used
        d.pop("model")
    return d
