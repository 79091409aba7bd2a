"""The report library: every block type rendered to well-formed, self-contained HTML and to Markdown."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recs.reports.charts import BarChart, Histogram, LineChart, Series, nice_ticks, render_svg
from recs.reports.format import format_number, format_value
from recs.reports.report import Report

VOID = {"meta", "br", "img", "input", "hr", "link", "area", "base", "col", "source", "wbr"}


class StrictParser(HTMLParser):
    """Fails on mismatched or unclosed tags; collects tag names and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.errors.append(f"external reference {name}={value}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def full_report() -> Report:
    rng = np.random.default_rng(0)
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(14)]
    rep = Report("Every element <&>", subtitle="a test of all block types")
    rep.heading("Summary").callout("verdict: drift on `price`", "bad").paragraph("Uses `recs drift` & friends.")
    rep.kv({"requests": 123456, "ctr": 0.0412345, "p_value": 1.5e-12, "config": {"bins": 10, "alpha": 0.01}},
           title="Key figures")
    rep.heading("Tables", 2).heading("From polars", 3)
    rep.table(pl.DataFrame({"feature": ["price", "category"], "psi": [0.3127, 0.0411], "status": ["drift", "ok"]}),
              title="Per feature", caption="worst first")
    rep.table([{"arm": "A", "ctr": 0.031}, {"arm": "B", "ctr": 0.034, "note": "pipe | inside"}], title="Arms")
    rep.table(pl.DataFrame({"i": list(range(500))}), title="Long", max_rows=20)
    rep.heading("Charts")
    rep.line_chart("PSI by day", {"price": (days, list(rng.uniform(0, 0.4, 14))), "score": (days, [0.01] * 14)},
                   x_label="day", y_label="PSI", hlines=[(0.25, "drift")], vlines=[(days[7], "onset")], y_zero=True)
    rep.line_chart("Gaps", [Series("with gap", [1, 2, 3, 4], [0.1, None, 0.3, float("nan")])], x_label="k")
    rep.bar_chart("CTR by policy", ["logging", "oracle"], {"home": [0.031, 0.052], "search": [0.02, 0.04]},
                  y_label="CTR")
    rep.bar_chart("Many bars", [f"feature_{i}" for i in range(15)], list(rng.uniform(-1, 1, 15)))
    rep.histogram("Scores", {"reference": rng.normal(size=2000), "current": rng.normal(0.5, size=2000)}, bins=25,
                  x_label="score", density=True)
    rep.histogram("Pre-binned", edges=[0, 10, 20, 50], counts=[5, 7, 1], x_label="ms")
    return rep


def test_html_is_well_formed_self_contained_and_has_charts_and_values() -> None:
    html = full_report().to_html()
    p = StrictParser()
    p.feed(html)
    p.close()
    assert p.errors == [] and p.stack == []
    assert p.tags.count("svg") == 6 and "script" not in p.tags and "link" not in p.tags
    text = " ".join(p.text)
    for value in ("123,456", "0.04123", "1.50e-12", "0.3127", "pipe | inside", "Every element <&>", "onset",
                  "showing 20 of 500 rows", "config.bins"):
        assert value in text, value
    assert re.search(r'<span class="badge bad">drift</span>', html)
    assert '<code>price</code>' in html
    for svg in re.findall(r"<svg.*?</svg>", html, flags=re.S):  # each chart is well-formed XML on its own
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg") and root.find("{http://www.w3.org/2000/svg}title") is not None


def test_markdown_has_tables_and_chart_data() -> None:
    md = full_report().to_markdown()
    assert md.startswith("# Every element <&>\n")
    assert "> [!CAUTION]" in md and "### From polars" in md
    assert "| feature | psi | status |" in md and "|---|---:|---|" in md
    assert "pipe \\| inside" in md and "_showing 20 of 500 rows_" in md
    assert "**Figure: PSI by day**" in md and "| day | price | score |" in md and "onset at 2024-01-08" in md
    assert "| [0, 10) | 5 |" in md


def test_write_is_atomic_pair(tmp_path: Path) -> None:
    md, html = full_report().write(tmp_path / "out", "sample")
    assert md.name == "sample.md" and html.name == "sample.html"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sample.html", "sample.md"]
    with pytest.raises(ValueError):
        full_report().write(tmp_path, "../evil")


def test_chart_validation() -> None:
    with pytest.raises(ValueError, match="has 2 values for 3 categories"):
        BarChart("b", ["a", "b", "c"], {"s": [1, 2]})
    with pytest.raises(ValueError):
        Series("s", [1, 2], [1])
    with pytest.raises(ValueError):
        Histogram("h", [0, 1], {"s": [1, 2]})
    with pytest.raises(ValueError):
        LineChart("l", [])


def test_line_chart_maps_values_to_the_right_place() -> None:
    svg = render_svg(LineChart("t", [Series("s", [0, 10], [0.0, 1.0])]))
    path = re.search(r'<path d="M([\d.]+),([\d.]+) L([\d.]+),([\d.]+)"', svg)
    assert path is not None
    x0, y0, x1, y1 = map(float, path.groups())
    assert x1 > x0 and y1 < y0  # larger y is drawn higher


def test_nice_ticks_and_number_format() -> None:
    ticks, step = nice_ticks(0.0, 0.37)
    assert step == 0.1 and ticks[0] == 0.0 and ticks[-1] >= 0.37
    assert nice_ticks(5.0, 5.0)[0][0] < 5.0 < nice_ticks(5.0, 5.0)[0][-1]
    assert format_number(1234567.8) == "1,234,568" and format_number(0.000012) == "1.20e-05"
    assert format_number(float("nan")) == "–" and format_value(None) == "—" and format_value(True) == "yes"


def test_bar_value_axis_clip_keeps_true_labels() -> None:
    svg = render_svg(BarChart("psi", ["big", "small"], {"": [8.2, 0.2]}, value_max=1.0, horizontal=False))
    heights = [float(h) for h in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', svg)]
    assert len(heights) == 2 and heights[0] / heights[1] == pytest.approx(5.0, rel=0.05)  # 1.0 vs 0.2 drawn
    assert ">8.2</text>" in svg and "<path" in svg  # true value labelled, zigzag marks the clipped bar
