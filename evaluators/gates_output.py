"""Renderings of a `GateReport`: Markdown (a PR comment) and JUnit XML (CI test reports)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from recs.evaluators.gates import GateReport, GateResult

ICONS = {"pass": "✅ pass", "fail": "❌ FAIL", "skip": "⏭️ skip"}


def fmt_value(v: Any) -> str:
    """Compact value text: 4 significant digits for floats, '-' for none."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    return str(v)


def delta_text(r: GateResult) -> str:
    """Candidate minus baseline (numbers only)."""
    v, b = r.value, r.baseline
    if isinstance(v, (int, float)) and isinstance(b, (int, float)) and not isinstance(v, bool) \
            and not isinstance(b, bool):
        return f"{v - b:+.4g}"
    return ""


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: GateReport) -> str:
    """A Markdown summary for a pull-request comment: headline, counts, one table row per gate, failures first."""
    c = report.counts()
    head = "## Release gates: " + ("✅ all passed" if report.passed else f"❌ {c['fail']} failed")
    lines = [head, "",
             f"{c['pass']} passed, {c['fail']} failed, {c['skip']} skipped. Candidate `{report.candidate}`"
             + (f", baseline `{report.baseline}`" if report.baseline else ", no baseline")
             + f", config `{report.config}`.",
             "", "| gate | status | value | threshold | baseline | Δ vs baseline | note |",
             "|---|---|---:|---|---:|---:|---|"]
    order = {"fail": 0, "skip": 1, "pass": 2}
    for r in sorted(report.results, key=lambda r: order[r.status]):
        g = r.gate
        name = f"**{g.name}**" + (f" ({g.group})" if g.group else "")
        lines.append("| " + " | ".join(_md_cell(x) for x in (
            name, ICONS[r.status], fmt_value(r.value), r.threshold_text, fmt_value(r.baseline), delta_text(r),
            r.reason or f"`{g.kind}` · `{g.path}`")) + " |")
    return "\n".join(lines) + "\n"


def to_junit(report: GateReport, suite_name: str = "recs.gates") -> str:
    """JUnit XML: one testsuite, one testcase per gate (`failure` on fail, `skipped` on skip)."""
    c = report.counts()
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(report.results)), failures=str(c["fail"]),
                       errors="0", skipped=str(c["skip"]))
    props = ET.SubElement(suite, "properties")
    for k, v in (("candidate", report.candidate), ("baseline", report.baseline or ""), ("config", report.config)):
        ET.SubElement(props, "property", name=k, value=v)
    for r in report.results:
        g = r.gate
        case = ET.SubElement(suite, "testcase", name=g.name, classname=f"gates.{g.group or g.kind}", time="0")
        detail = (f"value={fmt_value(r.value)} threshold={r.threshold_text} baseline={fmt_value(r.baseline)} "
                  f"kind={g.kind} path={g.path} file={r.file or '-'}")
        if r.status == "fail":
            f = ET.SubElement(case, "failure", message=r.reason or "gate failed", type="GateFailure")
            f.text = detail
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.reason or "skipped")
        out = ET.SubElement(case, "system-out")
        out.text = detail
    root = ET.Element("testsuites", name=suite_name, tests=suite.get("tests"), failures=suite.get("failures"),
                      errors="0", skipped=suite.get("skipped"))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
