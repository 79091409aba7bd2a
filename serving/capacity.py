"""Capacity model: servers and cores needed at peak from measured per-core throughput at the p99 budget.

    sustainable per-core rate  r  = max over measured runs with p99 <= budget - overhead, error rate <= max and
                                     fallback share <= max (a server meeting the budget by serving popular lists
                                     to most requests is shedding, not sustaining) of achieved_rps / server_cores
    load in cache-miss units   L  = peak_qps * ((1 - cache_hit) + cache_hit * cache_hit_cost)
    usable per-core rate       u  = r * (1 - headroom)
    cores serving peak         C  = ceil(L / u);   servers  S = ceil(C / cores_per_server)
    zone redundancy            with Z >= 2 zones the fleet must carry peak with one zone lost:
                               per zone ceil(S / (Z - 1)) + spare_per_zone (N+1 inside each zone); total x Z.
                               With Z = 1: S + spare_per_zone.

A loadtest run is one point on the server's latency-throughput curve; measuring several rates and passing all of
them lets the model pick the highest rate that still met the budget.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def _ceil(x: float) -> int:
    """Ceiling that ignores float noise (700.0000000001 servers is 700)."""
    return math.ceil(x - 1e-9)


class CapacityError(ValueError):
    """Bad measured input or no measured run met the budget."""


@dataclass
class CapacityConfig:
    peak_qps: float = 180_000.0
    p99_budget_ms: float = 120.0
    cache_hit: float = 0.0
    cache_hit_cost: float = 0.02
    headroom: float = 0.3
    cores_per_server: int = 16
    zones: int = 3
    spare_per_zone: int = 1
    overhead_ms: float = 0.0
    max_error_rate: float = 0.001
    server_cores: float | None = None
    max_fallback_share: float = 0.05

    def __post_init__(self) -> None:
        checks = [
            (self.peak_qps > 0, "--peak-qps must be > 0"),
            (self.p99_budget_ms > 0, "--p99-budget-ms must be > 0"),
            (0 <= self.cache_hit < 1, "--cache-hit must be in [0, 1)"),
            (0 <= self.cache_hit_cost <= 1, "--cache-hit-cost must be in [0, 1]"),
            (0 <= self.headroom < 1, "--headroom must be in [0, 1)"),
            (self.cores_per_server >= 1, "--cores-per-server must be >= 1"),
            (self.zones >= 1, "--zones must be >= 1"),
            (self.spare_per_zone >= 0, "--spare-per-zone must be >= 0"),
            (0 <= self.overhead_ms < self.p99_budget_ms, "--overhead-ms must be in [0, p99 budget)"),
            (0 <= self.max_error_rate < 1, "--max-error-rate must be in [0, 1)"),
            (self.server_cores is None or self.server_cores > 0, "--server-cores must be > 0"),
            (0 <= self.max_fallback_share <= 1, "--max-fallback-share must be in [0, 1]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @property
    def server_budget_ms(self) -> float:
        return self.p99_budget_ms - self.overhead_ms


@dataclass(frozen=True)
class Measurement:
    source: str
    achieved_rps: float
    p99_ms: float
    errors: int
    requests: int | None
    server_cores: float
    client_limited: bool
    target_rps: float | None
    fallback_share: float | None = None

    @property
    def error_rate(self) -> float:
        if self.requests:
            return self.errors / self.requests
        return 0.0 if self.errors == 0 else 1.0

    @property
    def per_core_rps(self) -> float:
        return self.achieved_rps / self.server_cores


def _num(d: dict[str, Any], key: str, where: str, required: bool = True) -> float | None:
    v = d.get(key)
    if v is None:
        if required:
            raise CapacityError(f"{where}: field {key!r} is missing or null")
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise CapacityError(f"{where}: field {key!r} must be a non-negative number, got {v!r}")
    return float(v)


def read_measurements(paths: list[Path], server_cores: float | None) -> list[Measurement]:
    """Parse `recs loadtest --json` outputs: one run, a list of runs, or a sweep {"runs": [...]} per file."""
    out: list[Measurement] = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CapacityError(f"{path}: file not found") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise CapacityError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(doc, dict) and isinstance(doc.get("runs"), list):
            doc = doc["runs"]  # a `recs loadtest --rate a,b,c` sweep
        runs = doc if isinstance(doc, list) else [doc]
        for i, run in enumerate(runs):
            where = f"{path}" + (f": run {i}" if isinstance(doc, list) else "")
            if not isinstance(run, dict):
                raise CapacityError(f"{where}: expected a JSON object from `recs loadtest --json`")
            cores = server_cores if server_cores is not None else _num(run, "server_cores", where, required=False)
            if not cores:
                raise CapacityError(f"{where}: no server_cores (pass --server-cores N: cores the server used)")
            req = _num(run, "requests", where, required=False)
            out.append(Measurement(
                source=where, achieved_rps=_num(run, "achieved_rps", where), p99_ms=_num(run, "p99_ms", where),
                errors=int(_num(run, "errors", where)), requests=int(req) if req is not None else None,
                server_cores=cores, client_limited=bool(run.get("client_limited", False)),
                target_rps=_num(run, "target_rps", where, required=False),
                fallback_share=_num(run, "fallback_share", where, required=False),
            ))
    if not out:
        raise CapacityError("no measurements given")
    return out


@dataclass
class CapacityPlan:
    assumptions: dict[str, Any]
    chosen: dict[str, Any]
    results: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "capacity", **asdict(self)}


def plan_capacity(cfg: CapacityConfig, measurements: list[Measurement]) -> CapacityPlan:
    """Servers and cores for `cfg.peak_qps` from the best measured run that met the p99 budget."""
    budget = cfg.server_budget_ms
    ok = [m for m in measurements if m.p99_ms <= budget and m.error_rate <= cfg.max_error_rate and m.achieved_rps > 0
          and (m.fallback_share is None or m.fallback_share <= cfg.max_fallback_share)]
    if not ok:
        best = min(measurements, key=lambda m: m.p99_ms)
        fb = f", fallback share {best.fallback_share:.1%}" if best.fallback_share is not None else ""
        raise CapacityError(
            f"no measured run met p99 <= {budget:g} ms with error rate <= {cfg.max_error_rate:g} and fallback "
            f"share <= {cfg.max_fallback_share:g} (best: p99 {best.p99_ms:g} ms, error rate {best.error_rate:.2%}"
            f"{fb} at {best.achieved_rps:g} rps in {best.source}); measure at a lower rate"
        )
    chosen = max(ok, key=lambda m: m.per_core_rps)
    notes: list[str] = []
    if chosen.client_limited:
        notes.append("the chosen run was limited by the load generator (send lag): the server may sustain more, "
                     "so this plan over-provisions; re-measure with more client processes (--procs)")
    highest = max(measurements, key=lambda m: m.achieved_rps)
    if chosen is highest:
        notes.append("the server met the budget at the highest rate measured; its capacity may be higher "
                     "(measure a higher rate to find the knee)")
    rejected = [m for m in measurements if m not in ok]
    if rejected:
        notes.append(f"{len(rejected)} measured run(s) exceeded the p99 budget, error rate or fallback share and "
                     "were not used")

    load = cfg.peak_qps * ((1 - cfg.cache_hit) + cfg.cache_hit * cfg.cache_hit_cost)
    usable = chosen.per_core_rps * (1 - cfg.headroom)
    cores_active = _ceil(load / usable)
    servers_active = _ceil(cores_active / cfg.cores_per_server)
    if cfg.zones >= 2:
        per_zone = _ceil(servers_active / (cfg.zones - 1)) + cfg.spare_per_zone
        servers_total = per_zone * cfg.zones
    else:
        per_zone = servers_active + cfg.spare_per_zone
        servers_total = per_zone
    cores_total = servers_total * cfg.cores_per_server
    per_core_at_peak = load / cores_total
    assumptions = {
        "peak_qps": cfg.peak_qps,
        "p99_budget_ms": cfg.p99_budget_ms,
        "overhead_ms": cfg.overhead_ms,
        "server_p99_budget_ms": budget,
        "cache_hit_share": cfg.cache_hit,
        "cache_hit_relative_cost": cfg.cache_hit_cost,
        "headroom": cfg.headroom,
        "cores_per_server": cfg.cores_per_server,
        "zones": cfg.zones,
        "spare_servers_per_zone": cfg.spare_per_zone,
        "max_error_rate": cfg.max_error_rate,
        "max_fallback_share": cfg.max_fallback_share,
        "throughput_scales_linearly_with_cores": True,
        "measured_traffic_is_cache_miss_traffic": True,
    }
    results = {
        "per_core_sustainable_rps": round(chosen.per_core_rps, 2),
        "per_core_usable_rps": round(usable, 2),
        "load_in_miss_units_qps": round(load, 1),
        "cores_serving_peak": cores_active,
        "servers_serving_peak": servers_active,
        "servers_per_zone": per_zone,
        "servers_total": servers_total,
        "cores_total": cores_total,
        "per_core_rps_at_peak_all_zones_up": round(per_core_at_peak, 2),
        "utilisation_at_peak_all_zones_up": round(per_core_at_peak / chosen.per_core_rps, 3),
        "utilisation_at_peak_one_zone_down": round(
            load / (max(servers_total - per_zone, 1) * cfg.cores_per_server) / chosen.per_core_rps, 3
        ) if cfg.zones >= 2 else None,
    }
    chosen_d = {"source": chosen.source, "achieved_rps": chosen.achieved_rps, "p99_ms": chosen.p99_ms,
                "server_cores": chosen.server_cores, "error_rate": round(chosen.error_rate, 5),
                "fallback_share": chosen.fallback_share,
                "client_limited": chosen.client_limited}
    return CapacityPlan(assumptions, chosen_d, results, notes)
