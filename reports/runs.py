"""Combine run folders of `*.json` result files (each with a top-level `"kind"`) into one `Report`.

Every result is rendered by its kind's renderer (see `RENDERERS`; `register_kind` adds one), which puts the
headline first (verdict, decision, key chart) and then hands the whole result to `render_generic`, so no field is
ever dropped. Results of a kind that appears more than once are also compared side by side.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from recs.reports.format import is_numeric, status_tone
from recs.reports.report import Report

X_KEYS = ("day", "date", "step", "epoch", "iteration", "window", "k", "hour", "t", "qps", "target_qps", "n")
HEADLINE_KEYS = ("verdict", "decision", "status", "result", "passed")


@dataclass(frozen=True)
class RunResult:
    run: str  # run folder name
    path: Path
    kind: str
    data: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.run}/{self.path.stem}"


def load_runs(run_dirs: Sequence[str | Path]) -> tuple[list[RunResult], list[tuple[Path, str]]]:
    """Every `*.json` under each run folder with a top-level `kind`; and (file, reason) for the others.

    Raises FileNotFoundError for a missing folder and ValueError (naming the file) for invalid JSON.
    """
    results: list[RunResult] = []
    skipped: list[tuple[Path, str]] = []
    for d in map(Path, run_dirs):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: not a folder")
        for f in sorted(p for p in d.rglob("*.json") if not any(part.startswith(".") for part in p.parts[-2:])):
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{f}: not valid JSON ({exc})") from exc
            if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
                skipped.append((f, "no top-level \"kind\""))
                continue
            results.append(RunResult(d.name or str(d), f, data["kind"], data))
    return results, skipped


# ------------------------------------------------------------------------------------------------ generic
def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, int, float))


def _short_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= 8 and all(_scalar(x) for x in v)


def _records(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _dict_of_records(v: Any) -> bool:
    """{name: {metric: scalar}}: one table row per name."""
    return isinstance(v, dict) and len(v) > 0 and all(
        isinstance(x, dict) and x and all(_scalar(y) for y in x.values()) for x in v.values())


def _auto_line_chart(rep: Report, title: str, rows: list[dict[str, Any]]) -> None:
    """Line charts of the numeric columns against the first x-like column, when the records have one.

    Constant columns are left out; columns are grouped by order of magnitude so that one chart never mixes
    counts with rates (at most two charts, six series each)."""
    if len(rows) < 3:
        return
    xkey = next((k for k in X_KEYS if all(k in r for r in rows)), None)
    if xkey is None:
        return
    ys: list[tuple[str, float]] = []
    for k in dict.fromkeys(k for r in rows for k in r):
        vals = [r.get(k) for r in rows]
        nums = [float(v) for v in vals if is_numeric(v) and math.isfinite(v)]
        if k == xkey or not nums or any(v is not None and not is_numeric(v) for v in vals) or min(nums) == max(nums):
            continue
        ys.append((k, math.log10(max(abs(x) for x in nums) or 1e-12)))
    groups: list[list[tuple[str, float]]] = []
    for k, mag in sorted(ys, key=lambda t: -t[1]):
        if groups and groups[-1][0][1] - mag < 1.0:
            groups[-1].append((k, mag))
        else:
            groups.append([(k, mag)])
    xs = [r[xkey] for r in rows]
    for g in groups[:2]:
        names = [k for k, _ in sorted(g, key=lambda t: [y for y, _ in ys].index(t[0]))][:6]
        label = title if len(groups) == 1 else f"{title}: {', '.join(names)}"
        rep.line_chart(label, {k: (xs, [r.get(k) for r in rows]) for k in names}, x_label=xkey, md_data=False)


def render_generic(rep: Report, data: dict[str, Any], level: int = 4, title: str | None = None,
                   charts: bool = True) -> None:
    """Render any JSON object: scalars as key-values, records and {name: {..}} as tables (plus a line chart
    when there is an x-like column), numeric lists as line charts, nested objects under sub-headings."""
    scalars = [(k, v) for k, v in data.items() if k != "kind" and (_scalar(v) or _short_list(v))]
    if scalars:
        rep.kv(scalars, title=title, flatten=0)
    for k, v in data.items():
        if k == "kind" or _scalar(v) or _short_list(v):
            continue
        if _records(v):
            rep.table(v, title=k)
            if charts:
                _auto_line_chart(rep, k, v)
        elif _dict_of_records(v):
            rows = [{"name": name, **vals} for name, vals in v.items()]
            rep.table(rows, title=k)
        elif isinstance(v, list) and v and all(is_numeric(x) or x is None for x in v) and charts:
            rep.line_chart(k, {k: (list(range(len(v))), v)}, x_label="index")
        elif isinstance(v, dict) and v and all(_scalar(x) or _short_list(x) for x in v.values()):
            rep.kv(v, title=k, flatten=0)
        elif isinstance(v, dict) and v and level <= 6:
            rep.heading(k, min(level, 4))
            render_generic(rep, v, level + 1, charts=charts)
        elif isinstance(v, list) and v:
            rep.kv([(f"{k}[{i}]", x) for i, x in enumerate(v[:50])], title=k, flatten=2)
        else:
            rep.kv([(k, v)], flatten=0)


# ------------------------------------------------------------------------------------------------ kinds
Renderer = Callable[[Report, dict[str, Any]], None]
RENDERERS: dict[str, Renderer] = {}


def register_kind(kind: str) -> Callable[[Renderer], Renderer]:
    """Decorator: render results of `kind` with the decorated function."""
    def deco(fn: Renderer) -> Renderer:
        RENDERERS[kind] = fn
        return fn
    return deco


def headline(data: dict[str, Any]) -> str:
    """One line for the overview table: the verdict-like field, else the first three numeric fields."""
    for k in HEADLINE_KEYS:
        if k in data and _scalar(data[k]):
            return f"{k}: {data[k]}"
    nums = [(k, v) for k, v in data.items() if is_numeric(v)][:3]
    from recs.reports.format import format_value
    return ", ".join(f"{k} {format_value(v)}" for k, v in nums)


def _verdict_callout(rep: Report, data: dict[str, Any]) -> None:
    for k in HEADLINE_KEYS:
        v = data.get(k)
        if isinstance(v, (str, bool)):
            word = ("pass" if v else "fail") if isinstance(v, bool) else v
            tone = status_tone(word) or "info"
            reasons = data.get("reasons")
            tail = f" ({'; '.join(map(str, reasons[:3]))})" if isinstance(reasons, list) and reasons else ""
            rep.callout(f"{k}: {word}{tail}", tone)  # type: ignore[arg-type]
            return


@register_kind("drift")
def render_drift(rep: Report, data: dict[str, Any]) -> None:
    _verdict_callout(rep, data)
    feats = data.get("features")
    if _records(feats):
        cols = ["column", "kind", "psi", "test", "statistic", "p_adjusted", "status", "reference_center",
                "current_center", "note"]
        rep.table([{c: f.get(c) for c in cols} for f in feats], title="Per-feature drift")
        tested = [f for f in feats if is_numeric(f.get("psi"))]
        if tested:
            tested.sort(key=lambda f: -f["psi"])
            cfg = data.get("config") or {}
            warn, drift = cfg.get("psi_warn", 0.1), cfg.get("psi_drift", 0.25)
            rep.bar_chart("PSI by feature", [f["column"] for f in tested], [f["psi"] for f in tested],
                          x_label="feature", y_label="PSI", hlines=[(warn, f"warn {warn}"), (drift, f"drift {drift}")],
                          md_data=False,
                          value_max=max(1.0, 4 * drift) if tested[0]["psi"] > max(1.0, 4 * drift) else None)
    rest = {k: v for k, v in data.items() if k not in ("features", "verdict", "reasons")}
    render_generic(rep, rest)


@register_kind("drift_monitor")
def render_drift_monitor(rep: Report, data: dict[str, Any]) -> None:
    days = data.get("days")
    if _records(days) and all("day" in d for d in days):
        cfg = data.get("config") or {}
        warn, drift = cfg.get("psi_warn", 0.1), cfg.get("psi_drift", 0.25)
        onset = data.get("onset_day")
        rep.line_chart("Largest PSI per day", {"max PSI": ([d["day"] for d in days], [d.get("max_psi") for d in days])},
                       x_label="day", y_label="PSI", hlines=[(warn, f"warn {warn}"), (drift, f"drift {drift}")],
                       vlines=[(onset, "onset")] if onset is not None else [], y_zero=True, md_data=False)
    render_generic(rep, data, charts=False)


def _metric_bars(rep: Report, title: str, table: dict[str, dict[str, Any]]) -> None:
    """Grouped bars of {name: {metric: value}} when the metrics are rates in [0, 1]."""
    metrics = [m for m in dict.fromkeys(k for v in table.values() for k in v)
               if all(is_numeric(v.get(m)) and 0 <= v[m] <= 1 for v in table.values())][:8]
    if metrics and len(table) <= 12:
        rep.bar_chart(title, metrics, {name: [vals[m] for m in metrics] for name, vals in table.items()},
                      x_label="metric", md_data=False)


def _first_dict_of_records(data: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]] | None:
    for k, v in data.items():
        if _dict_of_records(v):
            return k, v
    return None


def _summary_then_generic(rep: Report, data: dict[str, Any]) -> None:
    _verdict_callout(rep, data)
    found = _first_dict_of_records(data)
    if found:
        _metric_bars(rep, found[0], found[1])
    render_generic(rep, data)


for _kind in ("evaluate", "replay", "simulate", "abtest", "scenario"):
    RENDERERS[_kind] = _summary_then_generic


@register_kind("loadtest")
def render_loadtest(rep: Report, data: dict[str, Any]) -> None:
    _verdict_callout(rep, data)
    lat = data.get("latency_ms")
    if isinstance(lat, dict):
        pct = [(k, v) for k, v in lat.items() if is_numeric(v) and (k.startswith("p") or k in ("mean", "max"))]
        if pct:
            rep.bar_chart("Latency (ms)", [k for k, _ in pct], [v for _, v in pct], y_label="ms")
    render_generic(rep, data)


# ------------------------------------------------------------------------------------------------ report
def _flat_numbers(data: dict[str, Any], prefix: str = "", depth: int = 3) -> dict[str, Any]:
    """Headline words and numeric leaves of nested objects as dotted keys (for side-by-side comparison)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k == "config":
            continue
        if k in HEADLINE_KEYS and _scalar(v) and not prefix:
            out[key] = v
        elif is_numeric(v):
            out[key] = v
        elif isinstance(v, dict) and depth > 1:
            out.update(_flat_numbers(v, f"{key}.", depth - 1))
    return out


def build_report(results: Sequence[RunResult], skipped: Sequence[tuple[Path, str]] = (),
                 title: str = "recs report") -> Report:
    """One report over all results: an overview, a comparison per repeated kind, then each result."""
    runs = list(dict.fromkeys(r.run for r in results))
    rep = Report(title, subtitle=f"{len(results)} result(s) from {len(runs)} run folder(s): {', '.join(runs)}")
    rep.heading("Overview")
    rep.table([{"run": r.run, "file": r.path.name, "kind": r.kind, "headline": headline(r.data)} for r in results])
    by_kind: dict[str, list[RunResult]] = {}
    for r in results:
        by_kind.setdefault(r.kind, []).append(r)
    repeated = {k: v for k, v in by_kind.items() if len(v) > 1}
    if repeated:
        rep.heading("Comparison")
        for kind, rs in repeated.items():
            flat = [_flat_numbers(r.data) for r in rs]
            keys = [k for k in dict.fromkeys(k for f in flat for k in f)][:14]
            if keys:
                rep.table([{"result": r.label, **{k: f.get(k) for k in keys}} for r, f in zip(rs, flat)], title=kind)
    for run in runs:
        rep.heading(f"Run {run}")
        for r in (x for x in results if x.run == run):
            rep.heading(f"{r.kind}: {r.path.name}", 3)
            RENDERERS.get(r.kind, render_generic)(rep, r.data)
    if skipped:
        rep.heading("Files not rendered")
        rep.table([{"file": str(f), "reason": why} for f, why in skipped])
    return rep
