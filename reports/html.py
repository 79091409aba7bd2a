"""Render a `Report` to one self-contained HTML file: inline CSS, inline SVG charts, no scripts, no external files."""
from __future__ import annotations

import re
from html import escape
from typing import Any

from recs.reports.charts import render_svg
from recs.reports.format import format_value, is_numeric, status_tone
from recs.reports.report import Callout, Figure, Heading, KeyValues, Paragraph, Report, Table

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#4269d0;
        --good:#1a7f37; --good-bg:#dafbe1; --warn:#9a6700; --warn-bg:#fff8c5; --bad:#b42318; --bad-bg:#ffebe9;
        --info:#0969da; --info-bg:#ddf4ff; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.55; font-size: 15px;
       font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 32px 28px 64px; }
header { border-bottom: 1px solid var(--line); margin-bottom: 24px; padding-bottom: 12px; }
h1 { font-size: 28px; margin: 0 0 4px; line-height: 1.25; }
.subtitle { color: var(--muted); margin: 0; font-size: 16px; }
.generated { color: var(--muted); font-size: 13px; margin: 6px 0 0; }
h2 { font-size: 21px; margin: 36px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 17px; margin: 26px 0 10px; }
h4 { font-size: 15px; margin: 20px 0 8px; color: var(--muted); }
p { margin: 8px 0 14px; max-width: 80ch; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
       background: var(--soft); padding: 1px 5px; border-radius: 4px; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: 10px 18px;
          margin: 0 0 20px; font-size: 14px; }
nav.toc ol { margin: 4px 0; padding-left: 20px; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
.table-title { font-weight: 600; margin: 18px 0 6px; }
.table-wrap { overflow-x: auto; margin: 0 0 6px; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { padding: 6px 10px; text-align: left; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
tbody tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv { width: auto; min-width: 360px; }
table.kv th { text-align: left; font-weight: 500; color: var(--muted); background: var(--soft); white-space: normal; }
.caption { color: var(--muted); font-size: 13px; margin: 4px 0 16px; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.badge.good { color: var(--good); background: var(--good-bg); }
.badge.warn { color: var(--warn); background: var(--warn-bg); }
.badge.bad { color: var(--bad); background: var(--bad-bg); }
.callout { border-left: 4px solid var(--info); background: var(--info-bg); padding: 10px 14px; margin: 12px 0;
           border-radius: 0 6px 6px 0; font-weight: 500; }
.callout.good { border-color: var(--good); background: var(--good-bg); }
.callout.warn { border-color: var(--warn); background: var(--warn-bg); }
.callout.bad { border-color: var(--bad); background: var(--bad-bg); }
figure { margin: 16px 0 22px; padding: 12px; border: 1px solid var(--line); border-radius: 8px; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
@media print { main { max-width: none; padding: 0; } figure, table { break-inside: avoid; } }
"""


def slug(text: str, used: set[str]) -> str:
    """A unique id for an anchor."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    s, i = base, 2
    while s in used:
        s, i = f"{base}-{i}", i + 1
    used.add(s)
    return s


def _inline(text: str) -> str:
    """Escape text; `code` spans become <code>."""
    parts = re.split(r"`([^`]+)`", text)
    return "".join(f"<code>{escape(p)}</code>" if i % 2 else escape(p) for i, p in enumerate(parts))


STATUS_COLUMN = re.compile(r"status|verdict|decision|result|outcome|passed|alarm|gate", re.I)


def _td(v: Any, column: str = "") -> str:
    tone = status_tone(v) if STATUS_COLUMN.search(column) else None
    if tone:
        return f'<td><span class="badge {tone}">{escape(str(v))}</span></td>'
    cls = ' class="num"' if is_numeric(v) else ""
    return f"<td{cls}>{escape(format_value(v))}</td>"


def _table(b: Table) -> str:
    numeric = [bool(b.rows) and all(is_numeric(r[i]) or r[i] is None for r in b.rows) for i in range(len(b.columns))]
    num_cls = ' class="num"'
    head = "".join(f"<th{num_cls if n else ''}>{escape(str(c))}</th>" for c, n in zip(b.columns, numeric))
    body = "\n".join("<tr>" + "".join(_td(v, str(c)) for v, c in zip(r, b.columns)) + "</tr>" for r in b.rows)
    parts = [f'<div class="table-title">{escape(b.title)}</div>'] if b.title else []
    parts.append(f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead>'
                 f"<tbody>\n{body}\n</tbody></table></div>")
    notes = [b.caption or "", f"showing {len(b.rows):,} of {b.total_rows:,} rows" if b.total_rows else ""]
    if any(notes):
        parts.append(f'<p class="caption">{escape("; ".join(n for n in notes if n))}</p>')
    return "\n".join(parts)


def _kv(b: KeyValues) -> str:
    rows = "\n".join(f"<tr><th>{escape(k)}</th>{_td(v, k)}</tr>" for k, v in b.items)
    parts = [f'<div class="table-title">{escape(b.title)}</div>'] if b.title else []
    parts.append(f'<div class="table-wrap" style="display:inline-block;max-width:100%"><table class="kv">'
                 f"<tbody>\n{rows}\n</tbody></table></div>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """The whole report as one HTML document."""
    used: set[str] = set()
    body: list[str] = []
    toc: list[tuple[str, str]] = []
    for b in report.blocks:
        if isinstance(b, Heading):
            sid = slug(b.text, used)
            if b.level == 2:
                toc.append((sid, b.text))
            body.append(f'<h{b.level} id="{sid}">{escape(b.text)}</h{b.level}>')
        elif isinstance(b, Paragraph):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Callout):
            body.append(f'<div class="callout {b.tone}">{_inline(b.text)}</div>')
        elif isinstance(b, KeyValues):
            body.append(_kv(b))
        elif isinstance(b, Table):
            body.append(_table(b))
        elif isinstance(b, Figure):
            cap = f"<figcaption>{_inline(b.caption)}</figcaption>" if b.caption else ""
            body.append(f"<figure>\n{render_svg(b.chart)}\n{cap}</figure>")
    nav = ""
    if len(toc) >= 3:
        items = "".join(f'<li><a href="#{sid}">{escape(t)}</a></li>' for sid, t in toc)
        nav = f'<nav class="toc"><strong>Contents</strong><ol>{items}</ol></nav>'
    sub = f'<p class="subtitle">{escape(report.subtitle)}</p>' if report.subtitle else ""
    gen = report.generated.strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(report.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{escape(report.title)}</h1>{sub}<p class=\"generated\">Generated {gen}</p></header>\n"
        f"{nav}\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )
