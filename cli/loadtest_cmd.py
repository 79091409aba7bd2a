"""`recs loadtest` (open-loop load test of a loopback server) and `recs capacity` (fleet size at peak)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from recs.cli.common import console, fail, out, print_json
from recs.datasets.io import atomic_write_json
from recs.serving.capacity import CapacityConfig, CapacityError, plan_capacity, read_measurements
from recs.serving.loadtest import LoadTestConfig, LoadTestResult, parse_mix, parse_rates, run_sweep, sweep_json
from recs.serving.traffic import read_id_list


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if v.is_integer() else f"{v:,.4g}" if abs(v) < 1 else f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _render_loadtest(res: LoadTestResult, url: str) -> None:
    t = Table(title=f"loadtest {url}: {res.target_rps:g} rps x {res.duration_s:g} s, open loop (latency ms)",
              title_justify="left")
    for c in ("", "req", "err", "p50", "p90", "p99", "p99.9", "max", "fallback"):
        t.add_column(c, justify="left" if not c else "right")
    fb = "-" if res.fallback_share is None else f"{res.fallback_share:.1%}"
    t.add_row("all", _fmt(res.requests), _fmt(res.errors), _fmt(res.p50_ms), _fmt(res.p90_ms), _fmt(res.p99_ms),
              _fmt(res.p999_ms), _fmt(res.max_ms), fb)
    for name, k in res.by_kind.items():
        kfb = "-" if k["fallback_share"] is None else f"{k['fallback_share']:.1%}"
        t.add_row(name, _fmt(k["requests"]), _fmt(k["errors"]), _fmt(k["p50_ms"]), "", _fmt(k["p99_ms"]), "", "",
                  kfb)
    out.print(t)
    out.print(f"achieved {res.achieved_rps:,.1f} rps of {res.target_rps:g} targeted; "
              f"errors {res.errors} {res.error_kinds or ''}; client send lag p99 {_fmt(res.send_lag_p99_ms)} ms "
              f"(max {_fmt(res.send_lag_max_ms)} ms)", highlight=False)
    if res.client_limited:
        console.print("[yellow]warning:[/] the load generator fell behind its schedule (send lag p99 > 10 ms): "
                      "latencies include client delay; lower --rate or add --procs", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("loadtest")
    def loadtest(
        url: str = typer.Option(..., "--url", help="Server base URL on loopback, e.g. http://127.0.0.1:8000."),
        rate: str = typer.Option(
            ..., "--rate",
            help="Target arrival rate, requests/s (open loop); a list like 250,500,1000 runs a sweep."),
        duration: float = typer.Option(..., "--duration", help="Seconds of scheduled traffic."),
        mix: str = typer.Option("home=0.6,search=0.4", "--mix", help="Traffic mix, e.g. home=0.6,search=0.4."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        users_file: Optional[Path] = typer.Option(None, "--users-file", help="User ids, one per line."),
        prefixes_file: Optional[Path] = typer.Option(None, "--prefixes-file", help="Search prefixes, one per line."),
        anonymous_share: float = typer.Option(0.35, "--anonymous-share", help="Share of requests without user_id."),
        timeout: float = typer.Option(2.0, "--timeout", help="Per-request deadline from its scheduled time, s."),
        connections: int = typer.Option(256, "--connections", help="Max open connections per client process."),
        arrivals: str = typer.Option("constant", "--arrivals", help="constant or poisson inter-arrival times."),
        warmup: float = typer.Option(0.0, "--warmup", help="Seconds of traffic sent first and left out of stats."),
        procs: int = typer.Option(1, "--procs", help="Client processes sharing the schedule."),
        engine: str = typer.Option("raw", "--engine", help="raw (built-in asyncio HTTP/1.1, fastest) or httpx."),
        server_cores: Optional[float] = typer.Option(
            None, "--server-cores", help="Cores the server used (recorded for `recs capacity`)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the request plan."),
        save: Optional[Path] = typer.Option(None, "--save", help="Also write the JSON result to this file."),
    ) -> None:
        """Open-loop load test: constant arrival rate, latency from each request's scheduled send time."""
        try:
            rates = parse_rates(rate)
            cfg = LoadTestConfig(
                url=url, rate=rates[0], duration_s=duration, mix=parse_mix(mix), anonymous_share=anonymous_share,
                timeout_s=timeout, max_connections=connections, arrivals=arrivals, engine=engine, warmup_s=warmup,
                seed=seed,
                users=read_id_list(users_file, "users") if users_file else None,
                prefixes=read_id_list(prefixes_file, "prefixes") if prefixes_file else None,
                server_cores=server_cores,
            )
            for r in rates[1:]:
                replace(cfg, rate=r)  # validate every rate before sending anything
            if not json_out:
                console.print(f"sending {rate} rps for {duration:g} s to {cfg.url} ...", highlight=False)
            results = run_sweep(cfg, rates, procs=procs)
        except ValueError as exc:
            fail(str(exc))
        doc: Any = results[0].to_json() if len(results) == 1 else sweep_json(results)
        if save is not None:
            atomic_write_json(save, doc)
        if json_out:
            print_json(doc)
        else:
            for res in results:
                _render_loadtest(res, cfg.url)

    @app.command("capacity")
    def capacity(
        peak_qps: float = typer.Option(180_000, "--peak-qps", help="Peak requests/s to serve."),
        p99_budget_ms: float = typer.Option(120, "--p99-budget-ms", help="End-to-end p99 latency budget."),
        measured: list[Path] = typer.Option(..., "--measured", help="`recs loadtest --json` output(s); repeatable."),
        cache_hit: float = typer.Option(0.0, "--cache-hit", help="Share of peak traffic served from cache."),
        cache_hit_cost: float = typer.Option(
            0.02, "--cache-hit-cost", help="CPU cost of a cache hit relative to a miss."),
        headroom: float = typer.Option(0.3, "--headroom", help="Fraction of sustainable per-core rate kept free."),
        cores_per_server: int = typer.Option(16, "--cores-per-server", help="Cores per serving host."),
        zones: int = typer.Option(3, "--zones", help="Availability zones; peak must be served with one zone down."),
        spare_per_zone: int = typer.Option(1, "--spare-per-zone", help="Extra servers per zone (N+1)."),
        overhead_ms: float = typer.Option(
            0.0, "--overhead-ms", help="Part of the budget spent outside the server (network, gateway)."),
        max_error_rate: float = typer.Option(0.001, "--max-error-rate", help="Highest error rate of a usable run."),
        server_cores: Optional[float] = typer.Option(
            None, "--server-cores", help="Cores the measured server used (overrides the JSON)."),
        max_fallback_share: float = typer.Option(
            0.05, "--max-fallback-share", help="Highest share of degraded (fallback) answers of a usable run."),
        json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    ) -> None:
        """Servers and cores needed at peak from measured per-core throughput; prints every assumption."""
        try:
            cfg = CapacityConfig(peak_qps, p99_budget_ms, cache_hit, cache_hit_cost, headroom, cores_per_server,
                                 zones, spare_per_zone, overhead_ms, max_error_rate, server_cores, max_fallback_share)
            plan = plan_capacity(cfg, read_measurements(measured, server_cores))
        except (ValueError, CapacityError) as exc:
            fail(str(exc))
        if json_out:
            print_json(plan.to_json())
            return
        t = Table(title="assumptions", title_justify="left", show_header=False)
        t.add_column(justify="left")
        t.add_column(justify="right")
        for k, v in plan.assumptions.items():
            t.add_row(k, _fmt(v))
        out.print(t)
        c = plan.chosen
        out.print(f"measured: {c['achieved_rps']:,.1f} rps at p99 {c['p99_ms']:g} ms on {c['server_cores']:g} "
                  f"core(s), error rate {c['error_rate']:.3%} ({c['source']})", highlight=False)
        r = Table(title="capacity at peak", title_justify="left", show_header=False)
        r.add_column(justify="left")
        r.add_column(justify="right")
        for k, v in plan.results.items():
            r.add_row(k, _fmt(v))
        out.print(r)
        for note in plan.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
