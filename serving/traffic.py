"""Synthetic request plans for load tests: home / search mix, anonymous share, plausible user ids and prefixes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

KINDS = ("home", "search")
# Common marketplace query words; typed prefixes are their first 1-6 characters.
_VOCAB = (
    "shoes sneakers boots sandals dress jeans jacket hoodie tshirt shirt skirt socks watch phone iphone samsung "
    "charger cable headphones earbuds speaker laptop tablet monitor keyboard mouse printer camera lens tripod tv "
    "blender kettle toaster coffee mug pan knife towel pillow blanket mattress lamp chair desk sofa rug curtain "
    "shampoo soap toothbrush perfume lipstick cream vitamins protein yoga dumbbell bike helmet tent backpack "
    "stroller diapers toys lego puzzle book pen notebook paint garden hose drill hammer tires oil battery gift"
).split()
_PREFIX_LEN_P = np.array([0.12, 0.28, 0.30, 0.16, 0.09, 0.05])  # P(prefix length = 1..6)


@dataclass(frozen=True)
class RequestPlan:
    """Pre-built requests: scheduled offsets (s from start), kind index into KINDS, path+query, anonymous flag."""

    offsets: np.ndarray
    kinds: np.ndarray
    paths: list[str]
    anonymous: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def read_id_list(path: str | Path, what: str) -> tuple[str, ...]:
    """One id per line; blank lines and `#` comments skipped. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: {what} file not found")
    out: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if any(c.isspace() for c in s) and what == "users":
            raise ValueError(f"{path}: line {n}: user id {s!r} contains whitespace")
        out.append(s)
    if not out:
        raise ValueError(f"{path}: no {what} in file")
    return tuple(out)


def arrival_offsets(rate: float, duration_s: float, arrivals: str, rng: np.random.Generator) -> np.ndarray:
    """Scheduled send times in [0, duration): evenly spaced (constant) or a Poisson process of the same rate."""
    if arrivals == "constant":
        n = int(np.floor(rate * duration_s + 1e-9))
        return np.arange(n, dtype=np.float64) / rate
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration_s * 1.2) + 64)
    t = np.cumsum(gaps) - gaps[0]
    return t[t < duration_s]


def build_plan(
    rate: float,
    duration_s: float,
    mix: dict[str, float],
    anonymous_share: float,
    seed: int = 0,
    arrivals: str = "constant",
    users: tuple[str, ...] | None = None,
    prefixes: tuple[str, ...] | None = None,
    n_users: int = 1_000_000,
    home_k: int = 10,
    search_k: int = 5,
) -> RequestPlan:
    """Build every request of a run up front so the send loop does no per-request generation work."""
    rng = np.random.default_rng(seed)
    offsets = arrival_offsets(rate, duration_s, arrivals, rng)
    n = len(offsets)
    p = np.array([mix.get(k, 0.0) for k in KINDS], dtype=float)
    kinds = rng.choice(len(KINDS), size=n, p=p / p.sum()).astype(np.int8)
    anonymous = rng.random(n) < anonymous_share
    # Popularity-skewed user ids (a few heavy users, a long tail), like real traffic.
    users_q = tuple(quote(u, safe="") for u in users) if users else None
    pool_n = len(users) if users else n_users
    uidx = np.minimum((pool_n * rng.random(n) ** 3).astype(np.int64), pool_n - 1)
    sessions = rng.integers(0, max(n // 4, 1) + 1, size=n)
    if prefixes:
        pidx = rng.integers(0, len(prefixes), size=n)
    else:
        widx = rng.integers(0, len(_VOCAB), size=n)
        plen = rng.choice(np.arange(1, 7), size=n, p=_PREFIX_LEN_P)
    paths: list[str] = []
    for i in range(n):
        user = "" if anonymous[i] else "user_id=" + (users_q[uidx[i]] if users_q else f"u{uidx[i]:06d}") + "&"
        sess = f"session_id=s{sessions[i]:08x}"
        if kinds[i] == 0:
            paths.append(f"/v1/recommendations?{user}{sess}&k={home_k}")
        else:
            q = prefixes[pidx[i]] if prefixes else _VOCAB[widx[i]][: plen[i]]
            paths.append(f"/v1/suggestions?q={quote(q, safe='')}&{user}{sess}&k={search_k}")
    return RequestPlan(offsets, kinds, paths, anonymous)
