"""Render a `Report` to GitHub-flavoured Markdown (charts become their data as a compact table)."""
from __future__ import annotations

from typing import Any

import numpy as np

from recs.reports.charts import BarChart, Histogram, LineChart
from recs.reports.format import format_number, format_value
from recs.reports.report import Callout, Figure, Heading, KeyValues, Paragraph, Report, Table

_ALERT = {"info": "NOTE", "good": "TIP", "warn": "WARNING", "bad": "CAUTION"}
MAX_CHART_ROWS = 25


def _cell(v: Any) -> str:
    return format_value(v).replace("|", "\\|").replace("\n", " ")


def md_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A pipe table; numeric columns right-aligned."""
    numeric = [bool(rows) and all(isinstance(r[i], (int, float, np.integer, np.floating)) or r[i] is None
                                  for r in rows) for i in range(len(columns))]
    head = "| " + " | ".join(_cell(c) for c in columns) + " |"
    sep = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    body = ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _pick(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def _ref_lines(lines: list[tuple[float, str]]) -> str:
    if not lines:
        return ""
    return "reference lines: " + ", ".join(
        lab if format_value(v) in lab else f"{lab} = {format_value(v)}" for v, lab in lines)


def _chart_table(chart: LineChart | BarChart | Histogram) -> tuple[list[str], list[list[Any]], str]:
    if isinstance(chart, LineChart):
        xs: list[Any] = []
        for s in chart.series:
            for x in s.x:
                if x not in xs:
                    xs.append(x)
        try:
            xs.sort()
        except TypeError:
            pass
        lookup = [dict(zip(s.x, s.y)) for s in chart.series]
        keep = _pick(len(xs), MAX_CHART_ROWS)
        rows = [[xs[i], *[lk.get(xs[i]) for lk in lookup]] for i in keep]
        cols = [chart.x_label or "x", *[s.name or chart.y_label or "y" for s in chart.series]]
        note = f"{len(keep)} of {len(xs)} points shown" if len(keep) < len(xs) else ""
        extra = [f"{lab} at {format_value(v)}" for v, lab in chart.vlines] + [_ref_lines(chart.hlines)]
        return cols, rows, "; ".join(x for x in [note, *extra] if x)
    if isinstance(chart, BarChart):
        cols = [chart.x_label or "category", *[n or chart.y_label or "value" for n in chart.series]]
        rows = [[c, *[chart.series[n][i] for n in chart.series]] for i, c in enumerate(chart.categories)]
        return cols, rows, _ref_lines(chart.hlines)
    cols = [f"{chart.x_label or 'bin'} range", *[n or chart.y_label for n in chart.counts]]
    e = chart.edges
    keep = _pick(len(e) - 1, 2 * MAX_CHART_ROWS)
    rows = [[f"[{format_number(e[i])}, {format_number(e[i + 1])})", *[chart.counts[n][i] for n in chart.counts]]
            for i in keep]
    return cols, rows, f"{len(keep)} of {len(e) - 1} bins shown" if len(keep) < len(e) - 1 else ""


def render_markdown(report: Report) -> str:
    """The whole report as Markdown text."""
    out = [f"# {report.title}", ""]
    if report.subtitle:
        out += [f"_{report.subtitle}_", ""]
    out += [f"Generated {report.generated.strftime('%Y-%m-%d %H:%M UTC')}", ""]
    for b in report.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Callout):
            out += [f"> [!{_ALERT[b.tone]}]", f"> {b.text}", ""]
        elif isinstance(b, KeyValues):
            if b.title:
                out += [f"**{b.title}**", ""]
            out += [md_table(["key", "value"], [[k, v] for k, v in b.items]), ""]
        elif isinstance(b, Table):
            if b.title:
                out += [f"**{b.title}**", ""]
            out += [md_table(b.columns, b.rows), ""]
            notes = [b.caption or "", f"showing {len(b.rows):,} of {b.total_rows:,} rows" if b.total_rows else ""]
            if any(notes):
                out += ["_" + "; ".join(n for n in notes if n) + "_", ""]
        elif isinstance(b, Figure):
            cols, rows, note = _chart_table(b.chart)
            out += [f"**Figure: {b.chart.title}**" + (f" ({b.caption})" if b.caption else ""), ""]
            if not b.md_data:
                out += ["_chart in the HTML report; its data is in the table above_", ""]
                continue
            out += [md_table(cols, rows), ""]
            if note:
                out += [f"_{note}_", ""]
    return "\n".join(out).rstrip() + "\n"
