"""recs.reports: Markdown and self-contained HTML reports with inline SVG charts."""
from recs.reports.report import Report

__all__ = ["Report"]
