"""recs loadtest: open-loop scheduling, latency from scheduled time (no coordinated omission), errors, fallbacks.

Each live test runs a stub Starlette app in-process on a free loopback port. Assertions are lower bounds that
follow from the injected server behaviour (a request delayed 300 ms cannot be faster than 300 ms), never upper
bounds on wall time, so they hold on a loaded machine.
"""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from recs.serving.loadtest import LoadTestConfig, parse_mix, run_loadtest, run_plan, summarize
from recs.serving.stub_server import StubConfig, free_loopback_socket, make_app, running_server
from recs.serving.traffic import build_plan

REQUIRED_KEYS = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "achieved_rps", "errors", "fallback_share"]


@pytest.mark.parametrize("engine", ["raw", "httpx"])
def test_percentiles_see_the_slow_tail_and_json_has_the_documented_keys(engine: str) -> None:
    # every 5th request takes >= 300 ms: at least 20% of latencies are >= 300 ms, so p90 must be >= 300 ms
    with running_server(make_app(StubConfig(slow_every=5, slow_ms=300))) as url:
        res = run_loadtest(LoadTestConfig(url=url, rate=40, duration_s=2.5, timeout_s=5, engine=engine))
    d = res.to_json()
    assert list(d)[:7] == REQUIRED_KEYS
    assert res.requests == 100 and res.errors == 0
    assert res.p90_ms >= 300 and res.p99_ms >= 300 and res.p999_ms >= res.p99_ms >= res.p90_ms
    assert res.p50_ms < 300  # 80% of requests have no injected delay
    assert res.p50_ms <= res.p90_ms <= res.max_ms
    assert set(res.by_kind) == {"home", "search"}
    assert sum(k["requests"] for k in res.by_kind.values()) == 100


def test_latency_is_measured_from_the_scheduled_send_time() -> None:
    """Block the client's event loop for 400 ms mid-run: requests due during the stall were sent late, and their
    latency must include the wait (a coordinated-omission-prone tool would report only the server time)."""
    marks: dict[str, float] = {}

    async def main(cfg: LoadTestConfig):
        loop = asyncio.get_running_loop()

        def stall() -> None:
            marks["start"] = loop.time()
            time.sleep(0.4)
            marks["end"] = loop.time()

        loop.call_later(1.0, stall)
        plan = cfg.plan()
        return plan, await run_plan(cfg, plan)

    with running_server(make_app(StubConfig())) as url:
        cfg = LoadTestConfig(url=url, rate=50, duration_s=2.0, timeout_s=5)
        plan, raw = asyncio.run(main(cfg))
    start, end = marks["start"] - raw.t0, marks["end"] - raw.t0
    due_in_stall = (plan.offsets > start) & (plan.offsets < end)
    assert due_in_stall.sum() >= 15
    # each of those could not have completed before the stall ended
    owed = end - plan.offsets[due_in_stall]
    assert np.all(raw.latency_s[due_in_stall] >= owed - 1e-3)
    assert np.all(raw.send_lag_s[due_in_stall] >= owed - 1e-3)
    res = summarize(cfg, plan, raw)
    assert res.p99_ms >= 300 and res.send_lag_max_ms >= 300 and res.client_limited


def test_open_loop_keeps_sending_when_the_server_queues() -> None:
    """A serial server (20 ms per request, capacity 50/s) offered 100/s: the backlog must show in latency.
    The k-th request cannot finish before k * 20 ms, so p90 >= ~1.3 s; a closed-loop client would report ~20 ms."""
    with running_server(make_app(StubConfig(delay_ms=20, serial=True))) as url:
        res = run_loadtest(LoadTestConfig(url=url, rate=100, duration_s=1.5, timeout_s=10, mix={"home": 1.0}))
    assert res.requests == 150 and res.errors == 0
    assert res.p90_ms >= 1000
    assert res.achieved_rps <= 55  # the server cannot complete more than 50/s
    assert set(res.by_kind) == {"home"}


def test_errors_timeouts_and_fallback_share_are_counted_exactly() -> None:
    # stub: every 4th request -> 500, every 10th sleeps 2.5 s (past the 1 s deadline); anonymous -> fallback
    app = make_app(StubConfig(error_every=4, slow_every=10, slow_ms=2500))
    with running_server(app) as url:
        cfg = LoadTestConfig(url=url, rate=40, duration_s=2.5, timeout_s=1.0, seed=3)
        plan = cfg.plan()
        raw = asyncio.run(run_plan(cfg, plan))
    res = summarize(cfg, plan, raw)
    n = len(plan)
    assert n == 100
    # 10 requests time out (counter 10, 20, ..); 500s are counters 4, 8, ... not multiples of 10 (20, 40, ... time out)
    assert res.error_kinds["timeout"] == 10
    assert res.error_kinds["http_500"] == 25 - 5
    assert res.errors == 30 and res.ok == 70
    assert res.p99_ms >= 1000  # timeouts enter the distribution at the deadline
    ok = (raw.status == 200)
    assert res.fallback_share == round(float(plan.anonymous[ok].mean()), 4)


def test_connection_refused_is_an_error_not_a_crash() -> None:
    sock = free_loopback_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now
    res = run_loadtest(LoadTestConfig(url=f"http://127.0.0.1:{port}", rate=20, duration_s=0.5, timeout_s=1))
    assert res.ok == 0 and res.errors == res.requests == 10
    assert set(res.error_kinds) == {"connection"}
    assert res.fallback_share is None and res.achieved_rps == 0


def test_two_client_processes_split_the_schedule() -> None:
    with running_server(make_app(StubConfig())) as url:
        res = run_loadtest(LoadTestConfig(url=url, rate=20, duration_s=1.0, timeout_s=5), procs=2)
    assert res.requests == 20 and res.ok == 20 and res.errors == 0


def test_request_plan_mix_anonymous_share_and_urls() -> None:
    plan = build_plan(rate=1000, duration_s=10, mix={"home": 0.6, "search": 0.4}, anonymous_share=0.35, seed=1)
    assert len(plan) == 10_000
    assert np.allclose(np.diff(plan.offsets), 0.001)
    assert abs((plan.kinds == 0).mean() - 0.6) < 0.02 and abs(plan.anonymous.mean() - 0.35) < 0.02
    for p, kind, anon in zip(plan.paths[:500], plan.kinds[:500], plan.anonymous[:500]):
        assert ("user_id=" in p) != bool(anon)
        if kind == 0:
            assert p.startswith("/v1/recommendations?") and p.endswith("&k=10")
        else:
            assert p.startswith("/v1/suggestions?q=") and p.endswith("&k=5")
    users = build_plan(50, 2, {"home": 1.0}, 0.0, users=("alice", "b b"), seed=0)
    assert all(("user_id=alice" in p) or ("user_id=b%20b" in p) for p in users.paths)
    poisson = build_plan(500, 20, {"search": 1.0}, 0.35, arrivals="poisson", seed=2)
    assert abs(len(poisson) - 10_000) < 400 and poisson.offsets.max() < 20


@pytest.mark.parametrize("url", ["http://example.com:80", "http://10.0.0.1:8000", "ftp://127.0.0.1", "127.0.0.1:80"])
def test_only_loopback_targets_are_allowed(url: str) -> None:
    with pytest.raises(ValueError, match="loopback|expected http"):
        LoadTestConfig(url=url, rate=10, duration_s=1)


def test_config_bounds_and_mix_parsing() -> None:
    LoadTestConfig(url="http://[::1]:8000", rate=10, duration_s=1)
    LoadTestConfig(url="http://localhost:8000", rate=10, duration_s=1)
    for kw, msg in [({"rate": 0}, "--rate"), ({"duration_s": 0}, "--duration"), ({"timeout_s": 0}, "--timeout"),
                    ({"rate": 90_000, "duration_s": 3600}, "exceeds"), ({"arrivals": "burst"}, "--arrivals")]:
        args = {"url": "http://127.0.0.1:1", "rate": 10, "duration_s": 1, **kw}
        with pytest.raises(ValueError, match=msg):
            LoadTestConfig(**args)
    assert parse_mix("home=3,search=1") == {"home": 0.75, "search": 0.25}
    for bad in ["home=0.5,cart=0.5", "home", "home=x", "home=0,search=0", "home=-1"]:
        with pytest.raises(ValueError, match="--mix"):
            parse_mix(bad)
