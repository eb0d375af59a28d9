"""A study result's compact HTML for Jupyter: the verdict table and the metrics-by-step figures.

The same analysis as the report (``analyze_study``), the table rendered as the report renders it,
each figure as inline SVG, so a notebook shows what ``report.html`` would open with, without
writing a file.
"""

from __future__ import annotations

import io
import re

from swiftstudy.report.analysis import analyze_study
from swiftstudy.report.content import build_verdict_table
from swiftstudy.report.figures import plot_metrics_by_step
from swiftstudy.report.html import inline, render_fragment
from swiftstudy.report.render import score_points
from swiftstudy.report.results import StudyTables

_CSS = """
.swiftstudy table { border-collapse: collapse; font-size: 13px; }
.swiftstudy th, .swiftstudy td { padding: 4px 8px; border-bottom: 1px solid #d8dee4;
  text-align: left; vertical-align: top; }
.swiftstudy td.num { text-align: right; white-space: nowrap; }
.swiftstudy .badge { padding: 1px 8px; border-radius: 999px; font-weight: 600; }
.swiftstudy .badge.positive { background: #d3f5dc; color: #0f5c26; }
.swiftstudy .badge.negative { background: #ffe1de; color: #9a1024; }
.swiftstudy .badge.neutral { background: #eaeef2; color: #3d444d; }
.swiftstudy .badge.muted { background: #f3f4f6; color: #6e7781; }
.swiftstudy svg { max-width: 720px; height: auto; }
"""
#: What precedes the ``<svg`` element in matplotlib's SVG output (XML declaration, doctype).
_SVG_PROLOGUE = re.compile(r"\A.*?(?=<svg)", re.DOTALL)


def render_summary_html(tables: StudyTables) -> str:
    """A ``<div>``: the checkpoints, the verdict table, and one metrics-by-step SVG per eval set."""
    analysis = analyze_study(tables)
    steps = tables.steps
    heading = (
        f"**swiftstudy** · model `{tables.config['spec'].get('model')}` · {len(steps)} "
        f"checkpoint{'s' if len(steps) != 1 else ''} (steps {', '.join(map(str, steps))})"
    )
    points = score_points(analysis)
    figures = []
    for evals in dict.fromkeys(p.evals for p in points):
        fig = plot_metrics_by_step(
            [p for p in points if p.evals == evals], title=f"Evaluated on {evals}"
        )
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
        figures.append(_SVG_PROLOGUE.sub("", buffer.getvalue(), count=1))
    return (
        f'<div class="swiftstudy"><style>{_CSS}</style><p>{inline(heading)}</p>'
        f"{render_fragment([build_verdict_table(analysis)])}{''.join(figures)}</div>"
    )
