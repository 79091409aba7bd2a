"""Open-loop HTTP load test against a loopback recs server.

Requests are sent on a fixed schedule (constant or Poisson arrivals) whatever the server does: a slow response
never delays the next send. Every latency is measured from the request's *scheduled* send time, so time a
request spent waiting because the client or the server was behind is counted (no coordinated omission).
A request still unanswered `timeout_s` after its scheduled time counts as a timeout error and enters the
latency distribution at `timeout_s` (a lower bound), so timeouts cannot hide from the percentiles.
How late the client itself sent each request ("send lag") is reported; a large lag means the load generator,
not the server, was the bottleneck.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import httpx
import numpy as np

from recs.serving.http_client import Fetch, ProtocolError, RawPool
from recs.serving.traffic import KINDS, RequestPlan, build_plan

ST_TIMEOUT, ST_CONNECT, ST_OTHER, ST_UNSENT = -1, -2, -3, 0
_ERROR_NAMES = {ST_TIMEOUT: "timeout", ST_CONNECT: "connection", ST_OTHER: "client_error", ST_UNSENT: "not_sent"}
CLIENT_LAG_WARN_MS = 10.0


def check_loopback(url: str) -> str:
    """Return the URL without a trailing slash if it is http(s) on a loopback host; raise ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url {url!r}: expected http://HOST:PORT")
    host = parts.hostname
    ok = host == "localhost"
    if not ok:
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"--url {url!r}: load tests may only target a loopback host (127.0.0.0/8, ::1, localhost)")
    return url.rstrip("/")


def parse_mix(text: str) -> dict[str, float]:
    """Parse `home=0.6,search=0.4` into normalised weights."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, val = part.partition("=")
        name = name.strip()
        if not sep or name not in KINDS:
            raise ValueError(f"--mix {text!r}: expected entries like home=0.6,search=0.4 (kinds: {', '.join(KINDS)})")
        try:
            w = float(val)
        except ValueError:
            raise ValueError(f"--mix {text!r}: weight {val!r} for {name} is not a number") from None
        if w < 0 or not np.isfinite(w):
            raise ValueError(f"--mix {text!r}: weight for {name} must be >= 0")
        mix[name] = w
    total = sum(mix.values())
    if total <= 0:
        raise ValueError(f"--mix {text!r}: weights sum to 0")
    return {k: v / total for k, v in mix.items()}


@dataclass
class LoadTestConfig:
    """One open-loop run. Bounded: at most `max_requests` requests and `max_duration_s` seconds of schedule."""

    url: str
    rate: float
    duration_s: float
    mix: dict[str, float] = field(default_factory=lambda: {"home": 0.6, "search": 0.4})
    anonymous_share: float = 0.35
    timeout_s: float = 2.0
    max_connections: int = 256
    arrivals: str = "constant"
    engine: str = "raw"
    warmup_s: float = 0.0
    seed: int = 0
    users: tuple[str, ...] | None = None
    prefixes: tuple[str, ...] | None = None
    server_cores: float | None = None
    max_rate: float = 100_000.0
    max_duration_s: float = 3600.0
    max_requests: int = 5_000_000

    def __post_init__(self) -> None:
        self.url = check_loopback(self.url)
        if not (0 < self.rate <= self.max_rate):
            raise ValueError(f"--rate must be in (0, {self.max_rate:g}], got {self.rate}")
        if not (0 < self.duration_s <= self.max_duration_s):
            raise ValueError(f"--duration must be in (0, {self.max_duration_s:g}] s, got {self.duration_s}")
        if self.rate * self.duration_s < 1:
            raise ValueError(f"--rate {self.rate:g} x --duration {self.duration_s:g} schedules no request")
        if self.rate * (self.duration_s + self.warmup_s) > self.max_requests:
            raise ValueError(f"rate x duration exceeds {self.max_requests:,} requests")
        if not (0 <= self.warmup_s < self.max_duration_s):
            raise ValueError(f"--warmup must be >= 0, got {self.warmup_s}")
        if not (0 <= self.anonymous_share <= 1):
            raise ValueError(f"--anonymous-share must be in [0, 1], got {self.anonymous_share}")
        if not (0 < self.timeout_s <= 60):
            raise ValueError(f"--timeout must be in (0, 60] s, got {self.timeout_s}")
        if not (1 <= self.max_connections <= 10_000):
            raise ValueError(f"--connections must be in [1, 10000], got {self.max_connections}")
        if self.engine not in ("raw", "httpx"):
            raise ValueError(f"--engine must be raw or httpx, got {self.engine!r}")
        if self.engine == "raw" and self.url.startswith("https:"):
            raise ValueError("--engine raw speaks plain http only; use --engine httpx for https")
        if self.arrivals not in ("constant", "poisson"):
            raise ValueError(f"--arrivals must be constant or poisson, got {self.arrivals!r}")
        if not self.mix or any(k not in KINDS for k in self.mix) or sum(self.mix.values()) <= 0:
            raise ValueError(f"mix {self.mix!r}: kinds must be among {KINDS} with a positive total")
        if self.server_cores is not None and self.server_cores <= 0:
            raise ValueError(f"--server-cores must be > 0, got {self.server_cores}")

    def plan(self) -> RequestPlan:
        return build_plan(self.rate, self.duration_s + self.warmup_s, self.mix, self.anonymous_share, self.seed,
                          self.arrivals, self.users, self.prefixes)


@dataclass
class RawResults:
    """Per-request outcomes, indexed like the plan. Times in seconds relative to the scheduled start."""

    latency_s: np.ndarray
    status: np.ndarray  # HTTP status, or ST_* (< 1) for client-side outcomes
    fallback: np.ndarray  # 1 / 0, -1 when unknown (non-200 or no "fallback" key)
    send_lag_s: np.ndarray
    done_at_s: np.ndarray
    t0: float = 0.0  # event-loop time of offset 0 (for tests and merging)


def _new_raw(n: int) -> RawResults:
    return RawResults(np.full(n, np.nan), np.zeros(n, np.int16), np.full(n, -1, np.int8),
                      np.full(n, np.nan), np.full(n, np.nan))


@asynccontextmanager
async def open_fetch(cfg: LoadTestConfig) -> AsyncIterator[Fetch]:
    """A `fetch(path) -> (status, body)` for the configured engine (raw asyncio HTTP/1.1, or httpx)."""
    if cfg.engine == "httpx":
        limits = httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections)
        timeout = httpx.Timeout(cfg.timeout_s + 1.0)  # the real deadline is enforced by the caller
        async with httpx.AsyncClient(base_url=cfg.url, limits=limits, timeout=timeout, trust_env=False) as client:

            async def fetch(path: str) -> tuple[int, bytes]:
                resp = await client.get(path)
                return resp.status_code, resp.content

            yield fetch
        return
    parts = urlsplit(cfg.url)
    pool = RawPool(parts.hostname or "127.0.0.1", parts.port or 80, cfg.max_connections)
    prefix = parts.path.rstrip("/")
    try:
        yield (lambda path: pool.get(prefix + path)) if prefix else pool.get
    finally:
        await pool.close()


async def run_plan(cfg: LoadTestConfig, plan: RequestPlan, start_delay_s: float = 0.05) -> RawResults:
    """Send `plan` open-loop; return raw per-request outcomes."""
    n = len(plan)
    raw = _new_raw(n)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()
    async with open_fetch(cfg) as fetch:
        t0 = loop.time() + start_delay_s
        raw.t0 = t0

        async def one(i: int, sched: float) -> None:
            raw.send_lag_s[i] = loop.time() - sched
            try:
                async with asyncio.timeout_at(sched + cfg.timeout_s):
                    status, body = await fetch(plan.paths[i])
                now = loop.time()
                raw.status[i] = status
                if status == 200:
                    try:
                        fb = json.loads(body).get("fallback")
                        raw.fallback[i] = 1 if fb is True else 0 if fb is False else -1
                    except (ValueError, AttributeError):
                        raw.status[i] = ST_OTHER  # 200 with an unparseable body is an error
            except TimeoutError:  # (before OSError: TimeoutError subclasses it)
                now = sched + cfg.timeout_s
                raw.status[i] = ST_TIMEOUT
            except (ConnectionError, OSError, httpx.TransportError):
                now = loop.time()
                raw.status[i] = ST_CONNECT
            except (ProtocolError, httpx.HTTPError, ValueError):
                now = loop.time()
                raw.status[i] = ST_OTHER
            raw.latency_s[i] = now - sched
            raw.done_at_s[i] = now - t0

        offsets = plan.offsets
        for i in range(n):
            sched = t0 + offsets[i]
            delay = sched - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(one(i, sched))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(set(pending), timeout=cfg.timeout_s + 2.0)
        for task in list(pending):  # cannot normally happen: each request has its own deadline
            task.cancel()
    unfinished = np.isnan(raw.latency_s)
    raw.status[unfinished & (raw.status == ST_UNSENT)] = ST_TIMEOUT
    raw.latency_s[unfinished] = cfg.timeout_s
    return raw


def _pct(x: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(x, q, method="higher")) * 1000.0, 3) if len(x) else None


@dataclass
class LoadTestResult:
    target_rps: float
    duration_s: float
    requests: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    achieved_rps: float
    fallback_share: float | None
    send_lag_p99_ms: float | None
    send_lag_max_ms: float | None
    client_limited: bool
    by_kind: dict[str, dict[str, Any]]
    server_cores: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The documented keys first (p50_ms ... fallback_share), then the details."""
        head = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "achieved_rps", "errors", "fallback_share"]
        d: dict[str, Any] = {k: getattr(self, k) for k in head}
        d["kind"] = "loadtest"  # so `recs report` renders saved results
        d.update({k: v for k, v in self.__dict__.items() if k not in d})
        d["latency_ms"] = {"p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms, "p99.9": self.p999_ms,
                           "max": self.max_ms, "mean": self.mean_ms}
        return d


def summarize(cfg: LoadTestConfig, plan: RequestPlan, raw: RawResults) -> LoadTestResult:
    """Percentiles over every measured request (errors included at their time-to-failure), rates and shares."""
    keep = plan.offsets >= cfg.warmup_s
    lat, st, fb, lag = raw.latency_s[keep], raw.status[keep], raw.fallback[keep], raw.send_lag_s[keep]
    kinds = plan.kinds[keep]
    ok = (st >= 200) & (st < 300)
    err_kinds: dict[str, int] = {}
    for code in np.unique(st[~ok]):
        name = _ERROR_NAMES.get(int(code), f"http_{int(code)}")
        err_kinds[name] = int((st == code).sum())
    # Throughput as wrk counts it: successful responses completed inside the measured window, per second.
    done = raw.done_at_s[keep][ok]
    in_window = int(((done >= cfg.warmup_s) & (done <= cfg.warmup_s + cfg.duration_s)).sum())
    known_fb = fb[ok & (fb >= 0)]
    by_kind: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(KINDS):
        m = kinds == k
        if not m.any():
            continue
        okk = ok & m
        fbk = fb[okk & (fb >= 0)]
        by_kind[name] = {
            "requests": int(m.sum()), "errors": int((m & ~ok).sum()),
            "p50_ms": _pct(lat[m], 50), "p99_ms": _pct(lat[m], 99),
            "fallback_share": round(float(fbk.mean()), 4) if len(fbk) else None,
        }
    lag_ok = lag[~np.isnan(lag)]
    lag_p99 = _pct(lag_ok, 99)
    return LoadTestResult(
        target_rps=cfg.rate, duration_s=cfg.duration_s, requests=int(keep.sum()), ok=int(ok.sum()),
        errors=int((~ok).sum()), error_kinds=err_kinds,
        p50_ms=_pct(lat, 50), p90_ms=_pct(lat, 90), p99_ms=_pct(lat, 99), p999_ms=_pct(lat, 99.9),
        max_ms=_pct(lat, 100), mean_ms=round(float(lat.mean()) * 1000, 3) if len(lat) else None,
        achieved_rps=round(in_window / cfg.duration_s, 2),
        fallback_share=round(float(known_fb.mean()), 4) if len(known_fb) else None,
        send_lag_p99_ms=lag_p99, send_lag_max_ms=_pct(lag_ok, 100),
        client_limited=bool(lag_p99 is not None and lag_p99 > CLIENT_LAG_WARN_MS),
        by_kind=by_kind, server_cores=cfg.server_cores,
    )


def _shard_worker(args: tuple[LoadTestConfig, int, int, float]) -> tuple[np.ndarray, RawResults]:
    """Run every `n_shards`-th request of the plan in this process, starting at wall-clock `start_wall`."""
    cfg, shard, n_shards, start_wall = args
    plan = cfg.plan()
    idx = np.arange(shard, len(plan), n_shards)
    sub = RequestPlan(plan.offsets[idx], plan.kinds[idx], [plan.paths[i] for i in idx], plan.anonymous[idx])
    raw = asyncio.run(run_plan(cfg, sub, start_delay_s=max(start_wall - time.time(), 0.0)))
    return idx, raw


def run_loadtest(cfg: LoadTestConfig, procs: int = 1) -> LoadTestResult:
    """Run a load test with `procs` client processes (each sends an interleaved 1/procs of the schedule)."""
    if procs < 1 or procs > 64:
        raise ValueError(f"--procs must be in [1, 64], got {procs}")
    plan = cfg.plan()
    if procs == 1:
        raw = asyncio.run(run_plan(cfg, plan))
        return summarize(cfg, plan, raw)
    import multiprocessing as mp

    start_wall = time.time() + 1.0 + 0.2 * procs  # time for the workers to start and build their plans
    raw = _new_raw(len(plan))
    with mp.get_context("spawn").Pool(procs) as pool:
        for idx, part in pool.map(_shard_worker, [(cfg, s, procs, start_wall) for s in range(procs)]):
            for name in ("latency_s", "status", "fallback", "send_lag_s", "done_at_s"):
                getattr(raw, name)[idx] = getattr(part, name)
    return summarize(cfg, plan, raw)


def run_sweep(cfg: LoadTestConfig, rates: list[float], procs: int = 1) -> list[LoadTestResult]:
    """Run `cfg` once per rate, in order (one point per rate on the latency-throughput curve)."""
    from dataclasses import replace

    return [run_loadtest(replace(cfg, rate=r), procs=procs) for r in rates]


def sweep_json(results: list[LoadTestResult]) -> dict[str, Any]:
    """JSON of a sweep: {"kind": "loadtest_sweep", "runs": [one loadtest JSON per rate]}."""
    return {"kind": "loadtest_sweep", "runs": [r.to_json() for r in results]}


def parse_rates(text: str) -> list[float]:
    """`500` or `250,500,1000` -> list of positive rates."""
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--rate {text!r}: expected a number or a comma-separated list of numbers") from None
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"--rate {text!r}: rates must be > 0")
    return rates
