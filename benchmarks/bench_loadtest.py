"""Ceiling of one Python `recs loadtest` client: CPU per request and a rate sweep against the stub server.

The stub server (`recs.serving.stub_server`, zero delay) runs in its own process on a free loopback port, so client
and server compete for the same cores; the per-request client CPU time is the machine-independent figure.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from recs.serving.loadtest import LoadTestConfig, run_loadtest
from recs.serving.stub_server import free_loopback_socket

RATES = (200, 400, 800, 1600, 3200)
DURATION_S = 4.0


def _start_stub() -> tuple[subprocess.Popen, str]:
    sock = free_loopback_socket()
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "recs.serving.stub_server", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(300):
        try:
            httpx.get(url + "/v1/recommendations?k=1", timeout=1.0)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("stub server did not start")


def main() -> None:
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    for engine, procs, rates in (("httpx", 1, RATES[:3]), ("raw", 1, RATES), ("raw", 2, RATES[1:])):
        proc, url = _start_stub()  # a fresh server per sweep: no backlog left from a collapsed run
        try:
            _sweep(url, engine, psutil.Process(proc.pid), psutil.Process(), procs, rates)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


def _sweep(url: str, engine: str, server: psutil.Process, me: psutil.Process, procs: int = 1,
           rates: tuple[int, ...] = RATES) -> None:
    note = " (client CPU columns not measured: child processes; wall includes their start)" if procs > 1 else ""
    print(f"\nengine={engine} client processes={procs}{note}")
    run_loadtest(LoadTestConfig(url=url, rate=100, duration_s=1.0, timeout_s=5, engine=engine))  # warm up
    print(f"{'target':>7} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>8} {'lag p99':>8} {'errors':>7} "
          f"{'client cpu ms/req':>18} {'client %cpu':>11} {'server %cpu':>11}")
    ceiling = 0.0
    for rate in rates:
        c0, s0, t0 = me.cpu_times(), server.cpu_times(), time.perf_counter()
        res = run_loadtest(LoadTestConfig(url=url, rate=rate, duration_s=DURATION_S, timeout_s=5, engine=engine),
                           procs=procs)
        c1, s1, wall = me.cpu_times(), server.cpu_times(), time.perf_counter() - t0
        ccpu = (c1.user + c1.system) - (c0.user + c0.system)
        scpu = (s1.user + s1.system) - (s0.user + s0.system)
        ms_per_req = 1000 * ccpu / max(res.requests, 1)
        print(f"{rate:>7} {res.achieved_rps:>9.1f} {res.p50_ms:>8.2f} {res.p99_ms:>8.2f} "
              f"{res.send_lag_p99_ms:>8.2f} {res.errors:>7} {ms_per_req:>18.3f} {100 * ccpu / wall:>10.0f}% "
              f"{100 * scpu / wall:>10.0f}%", flush=True)
        if res.achieved_rps >= 0.95 * rate and not res.client_limited and res.errors == 0:
            ceiling = rate
        if res.achieved_rps < 0.8 * rate:
            break  # collapsed: higher rates only take longer
    print(f"{engine} x{procs}: highest rate held (achieved >= 95% of target, send lag p99 <= 10 ms, no errors): "
          f"{ceiling:g} rps")


if __name__ == "__main__":
    main()
