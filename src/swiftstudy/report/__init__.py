"""Reporting: figures, verdicts and the HTML / Markdown report of a study's saved tables.

Figures use matplotlib's ``Figure`` with an Agg canvas (no pyplot, no display); the statistics
come from ``swiftstudy.scores``.
"""

from swiftstudy.report.figures import ScorePoint, plot_metrics_by_step, save_figures
from swiftstudy.report.pair_figures import (
    plot_gradient_norms,
    plot_relinf_distributions,
    plot_relinf_heatmaps,
)
from swiftstudy.report.render import ReportFiles, render_report
from swiftstudy.report.results import StudyTables, load_study_tables

__all__ = [
    "ReportFiles",
    "ScorePoint",
    "StudyTables",
    "load_study_tables",
    "plot_gradient_norms",
    "plot_metrics_by_step",
    "plot_relinf_distributions",
    "plot_relinf_heatmaps",
    "render_report",
    "save_figures",
]
