"""Number and value formatting shared by the Markdown, HTML and SVG renderers."""
from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

import numpy as np

STATUS_WORDS = {
    "ok": "good", "pass": "good", "passed": "good", "healthy": "good",
    "warn": "warn", "warning": "warn",
    "drift": "bad", "fail": "bad", "failed": "bad", "alarm": "bad", "error": "bad",
}


def format_number(v: float | int) -> str:
    """Readable number: thousands separators, 4 significant digits, scientific below 1e-4."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    x = float(v)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{x:,.0f}"
    if a >= 1000:
        return f"{x:,.1f}"
    if a >= 1e-4:
        s = f"{x:.4g}"
        return s if "e" not in s else f"{x:.4f}"
    return f"{x:.2e}"


def format_value(v: Any, max_len: int = 200) -> str:
    """Any cell value as display text (no markup)."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
        return format_number(v)
    if isinstance(v, datetime):
        return v.isoformat(sep=" ", timespec="seconds")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (list, tuple, dict)) and len(v) == 0:
        return "—"
    if isinstance(v, (list, tuple)):
        s = ", ".join(format_value(x, 40) for x in v[:20]) + (f", … ({len(v)} items)" if len(v) > 20 else "")
    elif isinstance(v, dict):
        s = json.dumps(v, default=str, separators=(", ", ": "))
    else:
        s = str(v)
    return s if len(s) <= max_len else s[: max_len - 1] + "…"


def is_numeric(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def tick_label(v: float, step: float) -> str:
    """Axis tick text with as many decimals as the tick step needs."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or (a < 1e-3 and step < 1e-3):
        return f"{v:.2g}" if a < 1e-3 else _si(v)
    decimals = max(0, -int(math.floor(math.log10(step)))) if step > 0 else 2
    return f"{v:,.{min(decimals, 6)}f}"


def _si(v: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def status_tone(v: Any) -> str | None:
    """'good' / 'warn' / 'bad' for status words (ok, warn, drift, pass, fail, ...), else None."""
    return STATUS_WORDS.get(v.strip().lower()) if isinstance(v, str) else None
