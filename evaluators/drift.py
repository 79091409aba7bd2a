"""Feature and score drift between a reference and a current sample, and day-by-day drift monitoring.

`compare(reference, current)` tests every selected column (PSI on reference-quantile bins for all columns; KS for
numeric, chi-square for categorical columns; p-values adjusted across columns by Holm or Bonferroni) and returns a
`DriftReport` with a per-feature table and a verdict. `monitor_windows` runs the same comparison per day against one
fixed reference; `detection_delay` and `false_alarm_rate` score a monitor against a known drift onset.

Per-feature status (documented in docs/DRIFT.md):
  drift  PSI >= psi_drift, or (adjusted p < alpha and PSI >= psi_warn)
  warn   PSI >= psi_warn, or adjusted p < alpha (significant but small)
  ok     otherwise;  skipped  fewer than `min_rows` rows on a side
Verdict: `drift` if any feature drifts, `warn` if any warns or a reference column is absent from the current data,
else `ok`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import polars as pl

from recs.evaluators import drift_stats as ds

Status = Literal["ok", "warn", "drift", "skipped"]
Verdict = Literal["ok", "warn", "drift"]
_RANK = {"skipped": -1, "ok": 0, "warn": 1, "drift": 2}


@dataclass(frozen=True)
class DriftConfig:
    """Settings of a drift comparison; the defaults are the documented ones."""

    bins: int = 10  # reference-quantile bins for numeric PSI
    epsilon: float = 1e-4  # floor for an empty bin's share in PSI
    psi_warn: float = 0.1
    psi_drift: float = 0.25
    alpha: float = 0.01  # family-wise significance level across the tested columns
    correction: ds.Correction = "holm"
    min_share: float = 0.005  # categories rarer than this in both samples are pooled
    max_categories: int = 50
    min_rows: int = 50  # fewer rows on either side: the column is skipped
    id_unique_share: float = 0.5  # auto-selection skips string columns more unique than this (identifiers)
    cluster_column: str | None = None  # rows clustered by this column (e.g. request_id): tests use n / deff

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.bins}")
        if not 0 < self.epsilon < 0.01:
            raise ValueError(f"epsilon must be in (0, 0.01), got {self.epsilon}")
        if not 0 < self.psi_warn <= self.psi_drift:
            raise ValueError(f"need 0 < psi_warn <= psi_drift, got {self.psi_warn}, {self.psi_drift}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.correction not in ("holm", "bonferroni", "none"):
            raise ValueError(f"correction must be holm, bonferroni or none, got {self.correction!r}")
        if not 0 <= self.min_share < 1 or self.max_categories < 2 or self.min_rows < 1:
            raise ValueError("need 0 <= min_share < 1, max_categories >= 2, min_rows >= 1")


@dataclass(frozen=True)
class FeatureDrift:
    """One column's comparison. `statistic` is KS D (numeric) or chi-square (categorical)."""

    column: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    n_reference: int
    n_current: int
    psi: float
    statistic: float
    p_value: float
    p_adjusted: float
    status: Status
    reference_center: float | str | None  # mean (numeric) or "most frequent category (its share)"
    current_center: float | str | None
    missing_reference: float  # share of null/NaN values
    missing_current: float
    note: str = ""


@dataclass(frozen=True)
class DriftReport:
    verdict: Verdict
    features: tuple[FeatureDrift, ...]
    config: DriftConfig
    n_reference: int
    n_current: int
    only_in_reference: tuple[str, ...] = ()
    only_in_current: tuple[str, ...] = ()
    skipped_columns: tuple[tuple[str, str], ...] = ()  # (column, reason) left out of auto-selection
    reasons: tuple[str, ...] = ()
    design_effect: float = 1.0  # divisor of the sample sizes in the tests (1: rows independent)

    def worst_first(self) -> list[FeatureDrift]:
        """Features by status (drift, warn, ok, skipped), then PSI descending."""
        return sorted(self.features, key=lambda f: (-_RANK[f.status], -(f.psi if np.isfinite(f.psi) else -1.0)))

    def to_frame(self) -> pl.DataFrame:
        """Per-feature table, worst first."""
        rows = [vars(f).copy() for f in self.features]
        for r in rows:
            for k in ("reference_center", "current_center"):
                r[k] = None if r[k] is None else (f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]))
        if not rows:
            return pl.DataFrame()
        return pl.DataFrame(rows).sort(
            pl.col("status").replace_strict(_RANK, return_dtype=pl.Int64), "psi", descending=True, nulls_last=True
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (`kind: drift`), readable by `recs report`."""

        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and not np.isfinite(v) else v

        return {
            "kind": "drift",
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "design_effect": self.design_effect,
            "config": vars(self.config),
            "features": [{k: clean(v) for k, v in vars(f).items()} for f in self.worst_first()],
            "only_in_reference": list(self.only_in_reference),
            "only_in_current": list(self.only_in_current),
            "skipped_columns": [{"column": c, "reason": r} for c, r in self.skipped_columns],
        }


def _looks_like_id(name: str) -> bool:
    n = name.lower()
    return n == "id" or n.endswith("_id") or n.endswith("_ids")


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric()


def _is_categorical(dtype: pl.DataType) -> bool:
    return dtype in (pl.Utf8, pl.Boolean, pl.Categorical) or isinstance(dtype, (pl.Enum, pl.Categorical))


def select_columns(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    config: DriftConfig = DriftConfig(),
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Columns to test as (name, kind) and auto-skipped (name, reason). Explicit columns must exist on both sides."""
    cat_set = set(categorical)
    chosen: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    if columns is not None:
        for c in columns:
            for side, df in (("reference", reference), ("current", current)):
                if c not in df.columns:
                    raise ValueError(f"column {c!r} is not in the {side} data (has {', '.join(df.columns[:12])})")
    names = list(columns) if columns is not None else [c for c in reference.columns if c in current.columns]
    for c in names:
        rt, ct = reference.schema[c], current.schema[c]
        if columns is None and c == config.cluster_column:
            skipped.append((c, "cluster column"))
            continue
        if columns is None and c not in cat_set and (rt.is_temporal() or ct.is_temporal()):
            skipped.append((c, "date/time (moves between any two windows; pass it in --columns to compare)"))
            continue
        if c in cat_set:
            chosen.append((c, "categorical"))
        elif _is_numeric(rt) and _is_numeric(ct):
            chosen.append((c, "numeric"))
        elif _is_categorical(rt) and _is_categorical(ct):
            if columns is None and _looks_like_id(c) and rt != pl.Boolean:
                skipped.append((c, "identifier (name ends in _id)"))
            elif columns is None and reference.height and (
                reference[c].n_unique() / reference.height > config.id_unique_share
                and reference[c].n_unique() > config.max_categories
            ):
                skipped.append((c, "identifier-like (mostly unique values)"))
            else:
                chosen.append((c, "categorical"))
        elif columns is not None:
            raise ValueError(
                f"column {c!r}: cannot compare {rt} (reference) with {ct} (current); "
                "pass it in --categorical to compare as categories"
            )
        else:
            skipped.append((c, f"unsupported or mismatched dtype ({rt} / {ct})"))
    return chosen, skipped


def _status(psi: float, p_adj: float, cfg: DriftConfig) -> Status:
    sig = bool(np.isfinite(p_adj) and p_adj < cfg.alpha)
    if np.isfinite(psi) and (psi >= cfg.psi_drift or (sig and psi >= cfg.psi_warn)):
        return "drift"
    if (np.isfinite(psi) and psi >= cfg.psi_warn) or sig:
        return "warn"
    return "ok"


def _numeric(ref: pl.Series, cur: pl.Series, cfg: DriftConfig, deff: float) -> dict[str, Any]:
    r = ref.cast(pl.Float64).to_numpy()
    c = cur.cast(pl.Float64).to_numpy()
    d, p = ds.ks_test(r, c, deff)
    rf, cf = r[np.isfinite(r)], c[np.isfinite(c)]
    return {
        "kind": "numeric", "test": "ks", "statistic": d, "p_value": p,
        "psi": ds.psi_numeric(r, c, cfg.bins, cfg.epsilon),
        "reference_center": float(rf.mean()) if rf.size else None,
        "current_center": float(cf.mean()) if cf.size else None,
        "missing_reference": float(1 - rf.size / max(r.size, 1)),
        "missing_current": float(1 - cf.size / max(c.size, 1)),
        "note": "",
    }


def _categorical(ref: pl.Series, cur: pl.Series, cfg: DriftConfig, deff: float) -> dict[str, Any]:
    cc = ds.category_counts(ref, cur, cfg.min_share, cfg.max_categories)
    stat, p, _ = ds.chi_square_test(cc.reference, cc.current, deff)
    def top(counts: np.ndarray) -> str | None:  # most frequent category and its share
        if not counts.sum():
            return None
        i = int(np.argmax(counts))
        return f"{cc.categories[i]} ({counts[i] / counts.sum():.1%})"

    return {
        "kind": "categorical", "test": "chi2", "statistic": stat, "p_value": p,
        "psi": ds.psi_from_counts(cc.reference, cc.current, cfg.epsilon),
        "reference_center": top(cc.reference), "current_center": top(cc.current),
        "missing_reference": float(ref.null_count() / max(ref.len(), 1)),
        "missing_current": float(cur.null_count() / max(cur.len(), 1)),
        "note": f"{len(cc.categories)} categories" + (f", {cc.n_pooled} rare pooled" if cc.n_pooled else ""),
    }


def compare(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    config: DriftConfig = DriftConfig(),
) -> DriftReport:
    """Compare `current` with `reference` column by column (see the module docstring for the rules)."""
    chosen, skipped = select_columns(reference, current, columns, categorical, config)
    deff = 1.0
    if config.cluster_column is not None:
        for side, df in (("reference", reference), ("current", current)):
            if config.cluster_column not in df.columns:
                raise ValueError(f"cluster column {config.cluster_column!r} is not in the {side} data")
        deff = max(ds.design_effect(reference[config.cluster_column]), ds.design_effect(current[config.cluster_column]))
    raw: list[dict[str, Any]] = []
    for name, kind in chosen:
        r, c = reference[name], current[name]
        if reference.height < config.min_rows or current.height < config.min_rows:
            raw.append({
                "column": name, "kind": kind, "test": "ks" if kind == "numeric" else "chi2",
                "statistic": float("nan"), "p_value": float("nan"), "psi": float("nan"),
                "reference_center": None, "current_center": None, "missing_reference": 0.0,
                "missing_current": 0.0, "note": f"fewer than {config.min_rows} rows", "skip": True,
            })
            continue
        res = _numeric(r, c, config, deff) if kind == "numeric" else _categorical(r, c, config, deff)
        raw.append({"column": name, **res})
    p_adj = ds.adjust_pvalues(np.array([x["p_value"] for x in raw], dtype=float), config.correction)
    feats = []
    for x, pa in zip(raw, p_adj):
        skip = x.pop("skip", False)
        status: Status = "skipped" if skip else _status(x["psi"], pa, config)
        feats.append(FeatureDrift(n_reference=reference.height, n_current=current.height,
                                  p_adjusted=float(pa), status=status, **x))
    only_ref = tuple(c for c in reference.columns if c not in current.columns)
    only_cur = tuple(c for c in current.columns if c not in reference.columns)
    reasons = [f"{f.column}: {f.status} (PSI {f.psi:.3f}, adjusted p {f.p_adjusted:.2g})"
               for f in sorted(feats, key=lambda f: -_RANK[f.status]) if f.status in ("warn", "drift")]
    worst = max((_RANK[f.status] for f in feats), default=0)
    verdict: Verdict = "drift" if worst == 2 else "warn" if worst == 1 else "ok"
    if only_ref and columns is None:
        reasons.append(f"absent from current data: {', '.join(only_ref)}")
        if verdict == "ok":
            verdict = "warn"
    return DriftReport(verdict, tuple(feats), config, reference.height, current.height,
                       only_ref, only_cur, tuple(skipped), tuple(reasons), deff)


# ----------------------------------------------------------------------------------------------- monitoring
Day = Any  # date, datetime, int (day index) or "YYYY-MM-DD"


@dataclass(frozen=True)
class MonitorConfig:
    """Day-by-day monitoring: a day alarms when its verdict reaches `alarm_on` on `consecutive` days in a row."""

    drift: DriftConfig = field(default_factory=DriftConfig)
    alarm_on: Literal["warn", "drift"] = "drift"
    consecutive: int = 1

    def __post_init__(self) -> None:
        if self.alarm_on not in ("warn", "drift"):
            raise ValueError(f"alarm_on must be warn or drift, got {self.alarm_on!r}")
        if self.consecutive < 1:
            raise ValueError(f"consecutive must be >= 1, got {self.consecutive}")


@dataclass(frozen=True)
class DayVerdict:
    day: Day
    verdict: Verdict
    alarm: bool
    n_rows: int
    max_psi: float
    flagged: tuple[str, ...]  # columns whose status reached `alarm_on`
    report: DriftReport = field(compare=False, repr=False)


def split_by_day(frame: pl.DataFrame, ts_column: str = "ts") -> dict[date, pl.DataFrame]:
    """{calendar day: rows of that day} from a frame with a datetime (or date) column."""
    if ts_column not in frame.columns:
        raise ValueError(f"no column {ts_column!r} to split by day")
    day = pl.col(ts_column).cast(pl.Date) if frame.schema[ts_column] != pl.Date else pl.col(ts_column)
    parts = frame.with_columns(__day=day).partition_by("__day", as_dict=True, maintain_order=True)
    return {k[0]: v.drop("__day") for k, v in sorted(parts.items())}


def monitor_windows(
    frames_by_day: Mapping[Day, pl.DataFrame],
    reference: pl.DataFrame,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    config: MonitorConfig = MonitorConfig(),
) -> list[DayVerdict]:
    """Compare each day's frame with `reference`; one `DayVerdict` per day in day order."""
    out: list[DayVerdict] = []
    run = 0
    level = _RANK[config.alarm_on]
    for day in sorted(frames_by_day, key=_day_key):
        rep = compare(reference, frames_by_day[day], columns, categorical, config.drift)
        hit = _RANK[rep.verdict] >= level
        run = run + 1 if hit else 0
        psis = [f.psi for f in rep.features if np.isfinite(f.psi)]
        out.append(DayVerdict(
            day=day, verdict=rep.verdict, alarm=run >= config.consecutive, n_rows=rep.n_current,
            max_psi=max(psis) if psis else float("nan"),
            flagged=tuple(f.column for f in rep.features if _RANK[f.status] >= level), report=rep,
        ))
    return out


def _day_key(day: Day) -> float:
    if isinstance(day, datetime):
        return day.timestamp() / 86400.0
    if isinstance(day, date):
        return float(day.toordinal())
    if isinstance(day, str):
        return float(date.fromisoformat(day[:10]).toordinal())
    return float(day)


def _days_between(a: Day, b: Day) -> float:
    if isinstance(a, datetime) and isinstance(b, datetime):
        return (b - a).total_seconds() / 86400.0
    return _day_key(b) - _day_key(a)


def detection_delay(verdicts: Sequence[DayVerdict], onset_day: Day) -> float | None:
    """Days from `onset_day` to the first alarm on or after it (0: alarmed on the onset day); None: never."""
    for v in sorted(verdicts, key=lambda v: _day_key(v.day)):
        if v.alarm and _days_between(onset_day, v.day) >= 0:
            return _days_between(onset_day, v.day)
    return None


def false_alarm_rate(verdicts: Sequence[DayVerdict], onset_day: Day | None = None) -> float:
    """Share of days that alarmed among the days without drift (all days, or those before `onset_day`).

    NaN when there are no such days.
    """
    clean = [v for v in verdicts if onset_day is None or _days_between(onset_day, v.day) < 0]
    return float(np.mean([v.alarm for v in clean])) if clean else float("nan")


def run_false_alarm_rate(runs: Sequence[Sequence[DayVerdict]]) -> float:
    """Share of drift-free runs that alarmed at least once (NaN for no runs)."""
    return float(np.mean([any(v.alarm for v in run) for run in runs])) if runs else float("nan")


def monitor_to_dict(verdicts: Sequence[DayVerdict], onset_day: Day | None = None,
                    config: MonitorConfig | None = None) -> dict[str, Any]:
    """JSON-ready monitoring result (`kind: drift_monitor`), readable by `recs report`."""
    def day_str(d: Day) -> Any:
        return d.isoformat() if isinstance(d, (date, datetime)) else d

    def clean(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    delay = detection_delay(verdicts, onset_day) if onset_day is not None else None
    out: dict[str, Any] = {
        "kind": "drift_monitor",
        "n_days": len(verdicts),
        "n_alarms": sum(v.alarm for v in verdicts),
        "onset_day": day_str(onset_day) if onset_day is not None else None,
        "detection_delay_days": delay,
        "false_alarm_rate": clean(false_alarm_rate(verdicts, onset_day)),
        "days": [{"day": day_str(v.day), "verdict": v.verdict, "alarm": v.alarm, "n_rows": v.n_rows,
                  "max_psi": clean(v.max_psi), "flagged": ", ".join(v.flagged)} for v in verdicts],
    }
    if config is not None:
        out["config"] = {**vars(config.drift), "alarm_on": config.alarm_on, "consecutive": config.consecutive}
    return out
