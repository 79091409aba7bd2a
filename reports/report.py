"""`Report`: an ordered list of blocks (headings, paragraphs, key-value tables, data tables, charts, callouts)
rendered to Markdown and to one self-contained HTML file.

    rep = Report("Offline evaluation")
    rep.heading("Metrics").kv({"ndcg@10": 0.312, "requests": 12000})
    rep.table(frame, title="Per surface").line_chart("NDCG by day", {"model": (days, ndcg)}, x_label="day")
    rep.write(out_dir, "evaluation")        # -> evaluation.md, evaluation.html (atomic)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import polars as pl

from recs.datasets.io import atomic_write_text
from recs.reports.charts import BarChart, Chart, Histogram, LineChart, Series

Tone = Literal["info", "good", "warn", "bad"]


@dataclass
class Heading:
    text: str
    level: int = 2  # 2..4; the report title is level 1

    def __post_init__(self) -> None:
        if not 2 <= self.level <= 4:
            raise ValueError(f"heading level must be 2..4, got {self.level}")


@dataclass
class Paragraph:
    text: str  # plain text; `backticks` render as code


@dataclass
class Callout:
    text: str
    tone: Tone = "info"


@dataclass
class KeyValues:
    items: list[tuple[str, Any]]
    title: str | None = None


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    title: str | None = None
    caption: str | None = None
    total_rows: int | None = None  # rows before truncation, when truncated


@dataclass
class Figure:
    chart: Chart
    caption: str | None = None
    md_data: bool = True  # Markdown: print the chart's data (False when a table beside it already shows it)


Block = Heading | Paragraph | Callout | KeyValues | Table | Figure


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]], depth: int) -> None:
    if isinstance(value, Mapping) and depth > 0:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out, depth - 1)
    else:
        out.append((prefix, value))


@dataclass
class Report:
    """A document under construction. Every `add`-style method returns the report, so calls chain."""

    title: str
    subtitle: str | None = None
    generated: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    blocks: list[Block] = field(default_factory=list)

    def add(self, block: Block) -> "Report":
        self.blocks.append(block)
        return self

    def heading(self, text: str, level: int = 2) -> "Report":
        return self.add(Heading(text, level))

    def paragraph(self, text: str) -> "Report":
        return self.add(Paragraph(text))

    def callout(self, text: str, tone: Tone = "info") -> "Report":
        """A highlighted line, e.g. a verdict (tone: info, good, warn, bad)."""
        if tone not in ("info", "good", "warn", "bad"):
            raise ValueError(f"tone must be info, good, warn or bad, got {tone!r}")
        return self.add(Callout(text, tone))

    def kv(self, items: Mapping[str, Any] | Sequence[tuple[str, Any]], title: str | None = None,
           flatten: int = 2) -> "Report":
        """Key-value table; nested mappings are flattened to dotted keys up to `flatten` levels."""
        pairs: list[tuple[str, Any]] = []
        for k, v in (items.items() if isinstance(items, Mapping) else items):
            _flatten(str(k), v, pairs, flatten)
        return self.add(KeyValues(pairs, title))

    def table(self, data: pl.DataFrame | Sequence[Mapping[str, Any]], title: str | None = None,
              columns: Sequence[str] | None = None, caption: str | None = None, max_rows: int = 200) -> "Report":
        """Data table from a polars frame or a list of dicts (columns: the union, in first-seen order)."""
        if isinstance(data, pl.DataFrame):
            cols = list(columns) if columns is not None else data.columns
            rows = [list(r) for r in data.select(cols).head(max_rows).iter_rows()]
            total = data.height
        else:
            recs = list(data)
            cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in recs for k in r))
            rows = [[r.get(c) for c in cols] for r in recs[:max_rows]]
            total = len(recs)
        return self.add(Table(cols, rows, title, caption, total if total > len(rows) else None))

    def line_chart(self, title: str, series: Mapping[str, tuple[Sequence[Any], Sequence[Any]]] | Sequence[Series],
                   x_label: str = "", y_label: str = "", hlines: Sequence[tuple[float, str]] = (),
                   vlines: Sequence[tuple[Any, str]] = (), y_zero: bool = False, caption: str | None = None,
                   md_data: bool = True) -> "Report":
        """Line chart: `series` maps a name to (x values, y values), or is a list of `Series`."""
        ss = ([Series(n, list(x), list(y)) for n, (x, y) in series.items()] if isinstance(series, Mapping)
              else list(series))
        return self.add(Figure(LineChart(title, ss, x_label, y_label, list(hlines), list(vlines), y_zero), caption,
                               md_data))

    def bar_chart(self, title: str, categories: Sequence[Any], series: Mapping[str, Sequence[float]] | Sequence[float],
                  x_label: str = "", y_label: str = "", horizontal: bool | None = None,
                  hlines: Sequence[tuple[float, str]] = (), caption: str | None = None,
                  md_data: bool = True, value_max: float | None = None) -> "Report":
        """Bar chart: one value per category, or {series name: values} for grouped bars."""
        named = {k: list(v) for k, v in series.items()} if isinstance(series, Mapping) else {"": list(series)}
        return self.add(Figure(BarChart(title, [str(c) for c in categories], named, x_label, y_label, horizontal,
                                        list(hlines), value_max),
                               caption, md_data))

    def histogram(self, title: str, values: Mapping[str, Sequence[float]] | Sequence[float] | None = None,
                  bins: int = 30, x_label: str = "", density: bool = False, edges: Sequence[float] | None = None,
                  counts: Mapping[str, Sequence[float]] | Sequence[float] | None = None,
                  caption: str | None = None) -> "Report":
        """Histogram of raw `values` (one array or {name: array}, shared bins), or of precomputed `edges`+`counts`."""
        if values is not None:
            h = Histogram.from_values(title, dict(values) if isinstance(values, Mapping) else values, bins,
                                      x_label, density)
        elif edges is not None and counts is not None:
            named = {k: list(v) for k, v in counts.items()} if isinstance(counts, Mapping) else {"": list(counts)}
            h = Histogram(title, list(edges), named, x_label)
        else:
            raise ValueError("histogram needs values, or edges and counts")
        return self.add(Figure(h, caption))

    def chart(self, chart: Chart, caption: str | None = None) -> "Report":
        return self.add(Figure(chart, caption))

    def extend(self, other: "Report", heading_level: int | None = 2) -> "Report":
        """Append another report's blocks (under a heading with its title unless `heading_level` is None)."""
        if heading_level is not None:
            self.heading(other.title, heading_level)
        self.blocks.extend(other.blocks)
        return self

    def to_markdown(self) -> str:
        from recs.reports.markdown import render_markdown

        return render_markdown(self)

    def to_html(self) -> str:
        from recs.reports.html import render_html

        return render_html(self)

    def write(self, out_dir: str | Path, name: str = "report") -> tuple[Path, Path]:
        """Write `<name>.md` and `<name>.html` into `out_dir` atomically; returns both paths."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad report name {name!r}")
        out = Path(out_dir)
        md, html = out / f"{name}.md", out / f"{name}.html"
        atomic_write_text(md, self.to_markdown())
        atomic_write_text(html, self.to_html())
        return md, html
