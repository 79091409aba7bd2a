"""Prometheus text exposition for the server: per-stage latency histograms, counters and gauges (no dependency).

All updates happen on the server's event-loop thread, so plain integers suffice; exposition is format 0.0.4.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Callable, Iterable

# Latency buckets in seconds: dense under the 25 ms target, out to 2.5 s for overload.
BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.12, 0.25, 0.5, 1.0, 2.5)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    esc = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, esc)) + "}"


class Histogram:
    """Cumulative-bucket histogram per label tuple."""

    def __init__(self, name: str, help_: str, labels: tuple[str, ...], buckets: tuple[float, ...] = BUCKETS_S):
        self.name, self.help, self.label_names, self.buckets = name, help_, labels, buckets
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._sums: dict[tuple[str, ...], float] = defaultdict(float)

    def observe(self, value: float, *labels: str) -> None:
        c = self._counts.get(labels)
        if c is None:
            c = self._counts[labels] = [0] * (len(self.buckets) + 1)
        c[bisect_left(self.buckets, value)] += 1
        self._sums[labels] += value

    def count(self, *labels: str) -> int:
        return sum(self._counts.get(labels, ()))

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for lv, c in sorted(self._counts.items()):
            acc = 0
            for b, n in zip(self.buckets, c):
                acc += n
                yield f"{self.name}_bucket{_labels(self.label_names + ('le',), lv + (repr(b),))} {acc}"
            acc += c[-1]
            yield f"{self.name}_bucket{_labels(self.label_names + ('le',), lv + ('+Inf',))} {acc}"
            yield f"{self.name}_sum{_labels(self.label_names, lv)} {self._sums[lv]:.6f}"
            yield f"{self.name}_count{_labels(self.label_names, lv)} {acc}"


class Counter:
    def __init__(self, name: str, help_: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help_, labels
        self.values: dict[tuple[str, ...], float] = defaultdict(float)

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] += by

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for lv, v in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, lv)} {v:g}"


class Gauge:
    """A value read from a callback at scrape time: returns {label tuple: value}. `kind="counter"` for a total
    kept elsewhere (it must never decrease)."""

    def __init__(self, name: str, help_: str, labels: tuple[str, ...], read: Callable[[], dict],
                 kind: str = "gauge"):
        self.name, self.help, self.label_names, self.read, self.kind = name, help_, labels, read, kind

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for lv, v in sorted(self.read().items()):
            yield f"{self.name}{_labels(self.label_names, lv)} {float(v):g}"


class ServerMetrics:
    """Everything `/metrics` exposes."""

    def __init__(self) -> None:
        self.request_seconds = Histogram("recs_request_duration_seconds",
                                         "Server-side latency per endpoint, queue wait included", ("endpoint",))
        self.stage_seconds = Histogram("recs_stage_duration_seconds", "Latency of each request-path stage",
                                       ("stage",))
        self.requests = Counter("recs_requests_total", "Responses by endpoint and HTTP status", ("endpoint", "status"))
        self.fallbacks = Counter("recs_fallbacks_total", "Responses served by a degraded path, by reason",
                                 ("endpoint", "reason"))
        self.errors = Counter("recs_errors_total", "Exceptions caught in a request-path stage", ("stage",))
        self.cache = Counter("recs_cache_requests_total", "Cache lookups by cache and result", ("cache", "result"))
        self.inventory = Counter("recs_inventory_updates_total", "Inventory updates applied", ("kind",))
        self.events = Counter("recs_events_total", "Session events recorded", ("kind",))
        self.reloads = Counter("recs_reloads_total", "Bundle reload attempts", ("result",))
        self.journal = Counter("recs_journal_applied_total", "Writes of other workers applied from the journal",
                               ("op",))
        self.extra: list[Gauge] = []

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.request_seconds, self.stage_seconds, self.requests, self.fallbacks, self.errors, self.cache,
                  self.inventory, self.events, self.reloads, self.journal, *self.extra):
            lines.extend(m.render())
        return "\n".join(lines) + "\n"
