"""Release gates: checks of a candidate run's JSON results (offline metrics, counterfactual lift, guardrails, drift).

A run folder holds JSON result files with a top-level `"kind"` (`evaluate`, `replay`, `loadtest`, `drift`, `bundle`,
`skew`, `simulate_*`, ...). A gate names a kind (a glob), a dotted JSON path, an operator and a threshold, optionally a
margin relative to the baseline run's value. `load_gate_config` validates a TOML config strictly
(`GateConfigError` names the key); `evaluate_gates` returns a `GateReport` (pass / fail / skip per gate).
"""
from __future__ import annotations

import fnmatch
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPERATORS = (">=", "<=", ">", "<", "==", "!=", "in")
NUMERIC_OPS = (">=", "<=", ">", "<")
GATE_KEYS = {"name", "kind", "path", "op", "threshold", "relative_to_baseline", "required", "file", "group",
             "description"}
TOP_KEYS = {"gate", "defaults"}
DEFAULT_KEYS = {"required"}
MISSING = object()


class GateConfigError(ValueError):
    """A bad gate config; the message names the file and the key."""


class GateInputError(ValueError):
    """A run folder or result file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Gate:
    """One check: `path` in the result file of `kind` compared with `threshold` and/or the baseline's value."""

    name: str
    kind: str
    path: str
    op: str
    threshold: Any = None                       # number, string, bool, or a list for `in`
    relative_to_baseline: float | None = None   # allowed regression vs the baseline (absolute, or a fraction)
    relative_is_fraction: bool = False          # the margin was given as "2%": a fraction of |baseline|
    required: bool = True
    file: str | None = None                     # a file name (glob) when several files share the kind
    group: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"op {self.op!r} is not one of {', '.join(OPERATORS)}")
        if self.threshold is None and self.relative_to_baseline is None:
            raise ValueError("a gate needs a threshold, relative_to_baseline, or both")
        if self.relative_to_baseline is not None:
            if self.op not in NUMERIC_OPS + ("==",):
                raise ValueError(f"relative_to_baseline needs a numeric operator (>=, <=, >, <, ==), not {self.op!r}")
            if not self.relative_to_baseline >= 0:
                raise ValueError("relative_to_baseline is the allowed regression and must be >= 0")
        if self.op == "in" and not isinstance(self.threshold, list):
            raise ValueError("op 'in' needs a list threshold, e.g. [\"ok\", \"warn\"]")
        if self.op in NUMERIC_OPS and self.threshold is not None and not _is_number(self.threshold):
            raise ValueError(f"op {self.op!r} needs a numeric threshold, got {self.threshold!r}")

    @property
    def margin_text(self) -> str:
        if self.relative_to_baseline is None:
            return ""
        m = self.relative_to_baseline
        return f"{m * 100:g}%" if self.relative_is_fraction else f"{m:g}"


@dataclass(frozen=True)
class GateConfig:
    gates: tuple[Gate, ...]
    source: str = "gates.toml"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------------------------------------------ config
def load_gate_config(path: str | Path) -> GateConfig:
    """Read and validate a gates TOML file."""
    p = Path(path)
    if not p.is_file():
        raise GateConfigError(f"{p}: no such file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GateConfigError(f"{p}: not valid TOML ({exc})") from None
    return parse_gate_config(data, str(p))


def parse_gate_config(data: dict, source: str = "gates.toml") -> GateConfig:
    """Validate a parsed TOML document: unknown keys, bad operators and missing fields name the key."""
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise GateConfigError(f"{source}: unknown top-level key {unknown[0]!r} (allowed: defaults, gate)")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise GateConfigError(f"{source}: key 'defaults' must be a table")
    bad = sorted(set(defaults) - DEFAULT_KEYS)
    if bad:
        raise GateConfigError(f"{source}: unknown key 'defaults.{bad[0]}' (allowed: {', '.join(sorted(DEFAULT_KEYS))})")
    default_required = defaults.get("required", True)
    if not isinstance(default_required, bool):
        raise GateConfigError(f"{source}: key 'defaults.required' must be true or false")
    raw = data.get("gate")
    if not isinstance(raw, list) or not raw or not all(isinstance(g, dict) for g in raw):
        raise GateConfigError(f"{source}: key 'gate': expected at least one [[gate]] table")
    gates, names = [], set()
    for i, g in enumerate(raw):
        where = f"gate[{i}]" + (f" ({g['name']!r})" if isinstance(g.get("name"), str) else "")
        gate = _parse_gate(g, default_required, f"{source}: {where}")
        if gate.name in names:
            raise GateConfigError(f"{source}: {where}: key 'name': duplicate gate name {gate.name!r}")
        names.add(gate.name)
        gates.append(gate)
    return GateConfig(tuple(gates), source)


def _parse_gate(g: dict, default_required: bool, where: str) -> Gate:
    unknown = sorted(set(g) - GATE_KEYS)
    if unknown:
        raise GateConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(GATE_KEYS))})")
    for key in ("name", "kind", "path", "op"):
        if key not in g:
            raise GateConfigError(f"{where}: missing key {key!r}")
        if not isinstance(g[key], str) or not g[key].strip():
            raise GateConfigError(f"{where}: key {key!r} must be a non-empty string")
    for key in ("file", "group", "description"):
        if key in g and not isinstance(g[key], str):
            raise GateConfigError(f"{where}: key {key!r} must be a string")
    if "required" in g and not isinstance(g["required"], bool):
        raise GateConfigError(f"{where}: key 'required' must be true or false")
    if g["op"] not in OPERATORS:
        raise GateConfigError(f"{where}: key 'op': {g['op']!r} is not an operator ({', '.join(OPERATORS)})")
    if any(not part for part in g["path"].split(".")):
        raise GateConfigError(f"{where}: key 'path': {g['path']!r} has an empty segment")
    threshold = g.get("threshold")
    if threshold is not None and not isinstance(threshold, (int, float, str, bool, list)):
        raise GateConfigError(f"{where}: key 'threshold' must be a number, string, boolean or list")
    rel, frac = g.get("relative_to_baseline"), False
    if isinstance(rel, str):
        text = rel.strip()
        try:
            rel = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
            frac = text.endswith("%")
        except ValueError:
            raise GateConfigError(f"{where}: key 'relative_to_baseline': {text!r} is not a number or "
                                  "a percentage such as \"2%\"") from None
    elif rel is not None and not _is_number(rel):
        raise GateConfigError(f"{where}: key 'relative_to_baseline' must be a number or a percentage string")
    try:
        return Gate(name=g["name"].strip(), kind=g["kind"].strip(), path=g["path"].strip(), op=g["op"],
                    threshold=threshold, relative_to_baseline=None if rel is None else float(rel),
                    relative_is_fraction=frac, required=g.get("required", default_required), file=g.get("file"),
                    group=g.get("group", ""), description=g.get("description", ""))
    except ValueError as exc:
        key = "relative_to_baseline" if "relative_to_baseline" in str(exc) else (
            "threshold" if "threshold" in str(exc) else "op")
        raise GateConfigError(f"{where}: key {key!r}: {exc}") from None


# --------------------------------------------------------------------------------------------------- run folders
@dataclass
class RunFiles:
    """The JSON result files of one run folder, by kind."""

    root: Path
    files: dict[str, list[tuple[Path, dict]]] = field(default_factory=dict)

    def find(self, kind: str, name: str | None = None) -> list[tuple[Path, dict]]:
        out = []
        for k, items in self.files.items():
            if fnmatch.fnmatchcase(k, kind):
                out += [(p, d) for p, d in items if name is None or fnmatch.fnmatchcase(p.name, name)]
        return sorted(out, key=lambda t: str(t[0]))


def infer_kind(data: dict) -> str | None:
    """The `kind` of a result, or the kind implied by a known shape (`recs replay --json` writes none)."""
    if isinstance(data.get("kind"), str):
        return data["kind"]
    if {"estimates", "diagnostics", "logging"} <= set(data):
        return "replay"
    return None


def load_run(path: str | Path) -> RunFiles:
    """Every `*.json` result under a run folder (recursively; hidden names skipped)."""
    root = Path(path)
    if not root.is_dir():
        raise GateInputError(f"{root}: not a run folder")
    run = RunFiles(root)
    for f in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in f.relative_to(root).parts):
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GateInputError(f"{f}: not valid JSON ({exc})") from None
        kind = infer_kind(data) if isinstance(data, dict) else None
        if kind is not None:
            run.files.setdefault(kind, []).append((f, data))
    return run


def lookup(data: Any, path: str) -> Any:
    """Value at a dotted path; keys may contain dots (`latency_ms.p99.9`), list items are indices. MISSING if absent."""
    parts = path.split(".")
    cur, i = data, 0
    while i < len(parts):
        if isinstance(cur, dict):
            for j in range(len(parts), i, -1):  # longest key first
                key = ".".join(parts[i:j])
                if key in cur:
                    cur, i = cur[key], j
                    break
            else:
                return MISSING
        elif isinstance(cur, list) and parts[i].lstrip("-").isdigit():
            idx = int(parts[i])
            if not -len(cur) <= idx < len(cur):
                return MISSING
            cur, i = cur[idx], i + 1
        else:
            return MISSING
    if cur is None or (isinstance(cur, float) and math.isnan(cur)):
        return MISSING
    return cur


# --------------------------------------------------------------------------------------------------- evaluation
@dataclass
class GateResult:
    gate: Gate
    status: str                 # pass | fail | skip
    value: Any = None
    baseline: Any = None
    bound: Any = None           # the effective bound (threshold and/or baseline - margin)
    reason: str = ""
    file: str | None = None

    @property
    def threshold_text(self) -> str:
        g, parts = self.gate, []
        if g.threshold is not None:
            parts.append(f"{g.op} {_fmt(g.threshold)}")
        if g.relative_to_baseline is not None:
            sign = {">=": "-", ">": "-", "<=": "+", "<": "+", "==": "±"}[g.op]
            parts.append(f"{g.op} baseline {sign} {g.margin_text}")
        return " and ".join(parts)

    def to_json(self) -> dict:
        g = self.gate
        return {"name": g.name, "group": g.group, "kind": g.kind, "path": g.path, "op": g.op,
                "threshold": g.threshold, "relative_to_baseline": g.margin_text or None, "required": g.required,
                "status": self.status, "value": self.value, "baseline": self.baseline, "bound": self.bound,
                "reason": self.reason, "file": self.file}


@dataclass
class GateReport:
    results: list[GateResult]
    candidate: str
    baseline: str | None
    config: str

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}

    def to_json(self) -> dict:
        return {"kind": "gate", "passed": self.passed, "candidate": self.candidate, "baseline": self.baseline,
                "config": self.config, "counts": self.counts(), "gates": [r.to_json() for r in self.results]}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _compare(value: Any, op: str, ref: Any) -> bool:
    if op == "in":
        return value in ref
    if op in ("==", "!="):
        same = math.isclose(value, ref, rel_tol=1e-12, abs_tol=1e-12) if _is_number(value) and _is_number(ref) \
            else value == ref
        return same if op == "==" else not same
    return {">=": value >= ref, "<=": value <= ref, ">": value > ref, "<": value < ref}[op]


def _value(run: RunFiles | None, gate: Gate) -> tuple[Any, str | None, str]:
    """(value or MISSING, file, reason when missing)."""
    if run is None:
        return MISSING, None, "no run"
    found = run.find(gate.kind, gate.file)
    if not found:
        what = f"kind {gate.kind!r}" + (f" named {gate.file!r}" if gate.file else "")
        return MISSING, None, f"no result file of {what} in {run.root}"
    if len(found) > 1:
        names = ", ".join(p.name for p, _ in found[:4])
        raise GateInputError(f"gate {gate.name!r}: {len(found)} files of kind {gate.kind!r} in {run.root} "
                             f"({names}); set `file` in the gate to pick one")
    path, data = found[0]
    v = lookup(data, gate.path)
    if v is MISSING:
        return MISSING, str(path), f"{path}: no value at {gate.path!r}"
    return v, str(path), ""


def evaluate_gate(gate: Gate, candidate: RunFiles, baseline: RunFiles | None = None) -> GateResult:
    """Check one gate: every configured comparison must hold; a missing value fails a required gate, else skips."""
    missing = "fail" if gate.required else "skip"
    value, file, why = _value(candidate, gate)
    base, _, bwhy = _value(baseline, gate) if baseline is not None else (MISSING, None, "no baseline run")
    res = GateResult(gate, "pass", None if value is MISSING else value, None if base is MISSING else base, file=file)
    if value is MISSING:
        res.status, res.reason = missing, why
        return res
    numeric = gate.op in NUMERIC_OPS or (gate.relative_to_baseline is not None) or _is_number(gate.threshold)
    if numeric and not _is_number(value) and gate.op not in ("==", "!=", "in"):
        res.status, res.reason = "fail", f"value {value!r} at {gate.path!r} is not a number"
        return res
    reasons, bounds = [], []
    if gate.threshold is not None:
        bounds.append(gate.threshold)
        if not _compare(value, gate.op, gate.threshold):
            reasons.append(f"{_fmt(value)} is not {gate.op} {_fmt(gate.threshold)}")
    if gate.relative_to_baseline is not None:
        if base is MISSING:
            # no baseline run: the baseline comparison is skipped; a baseline run without the value: like a
            # missing value (fails a required gate)
            if baseline is not None and gate.required:
                res.status, res.reason = "fail", f"baseline: {bwhy}"
                return res
            if gate.threshold is None:
                res.status, res.reason = "skip", f"baseline: {bwhy}"
                return res
            res.reason = f"baseline comparison skipped ({bwhy})"
        elif not (_is_number(base) and _is_number(value)):
            res.status, res.reason = "fail", f"baseline value {base!r} or value {value!r} is not a number"
            return res
        else:
            m = gate.relative_to_baseline * (abs(base) if gate.relative_is_fraction else 1.0)
            if gate.op == "==":
                ok, bound = abs(value - base) <= m + 1e-12, base
                if not ok:
                    reasons.append(f"{_fmt(value)} differs from baseline {_fmt(base)} by more than {_fmt(m)}")
            else:
                bound = base - m if gate.op in (">=", ">") else base + m
                ok = _compare(value, gate.op, bound)
                if not ok:
                    reasons.append(f"{_fmt(value)} is not {gate.op} baseline {_fmt(base)} "
                                   f"{'-' if gate.op in ('>=', '>') else '+'} {gate.margin_text} = {_fmt(bound)}")
            bounds.append(bound)
    if bounds and all(_is_number(b) for b in bounds) and gate.op in NUMERIC_OPS:
        res.bound = max(bounds) if gate.op in (">=", ">") else min(bounds)
    elif len(bounds) == 1:
        res.bound = bounds[0]
    if reasons:
        res.status, res.reason = "fail", "; ".join(reasons + ([res.reason] if res.reason else []))
    return res


def evaluate_gates(config: GateConfig, candidate: str | Path, baseline: str | Path | None = None) -> GateReport:
    """Evaluate every gate of `config` on the candidate run folder (and the baseline run folder, if any)."""
    cand = load_run(candidate)
    base = load_run(baseline) if baseline is not None else None
    results = [evaluate_gate(g, cand, base) for g in config.gates]
    return GateReport(results, str(candidate), None if baseline is None else str(baseline), config.source)
