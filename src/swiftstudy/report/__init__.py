"""Reporting: figures, verdicts and the HTML / Markdown report of a study's saved tables.

Figures use matplotlib's ``Figure`` with an Agg canvas (no pyplot, no display); the statistics
come from ``swiftstudy.scores``.
"""

from typing import TYPE_CHECKING

from swiftstudy.lazy import lazy_exports

#: Each public name and the module it comes from, imported on first use: the study writes its
#: tables with ``report.results`` and must not load matplotlib for it.
_SOURCES = {
    "ReportFiles": "swiftstudy.report.render",
    "ScorePoint": "swiftstudy.report.figures",
    "StudyTables": "swiftstudy.report.results",
    "load_study_tables": "swiftstudy.report.results",
    "plot_gradient_norms": "swiftstudy.report.pair_figures",
    "plot_metrics_by_step": "swiftstudy.report.figures",
    "plot_relinf_distributions": "swiftstudy.report.pair_figures",
    "plot_relinf_heatmaps": "swiftstudy.report.pair_figures",
    "render_report": "swiftstudy.report.render",
    "save_figures": "swiftstudy.report.figures",
}

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

if TYPE_CHECKING:
    from swiftstudy.report.figures import ScorePoint, plot_metrics_by_step, save_figures
    from swiftstudy.report.pair_figures import (
        plot_gradient_norms,
        plot_relinf_distributions,
        plot_relinf_heatmaps,
    )
    from swiftstudy.report.render import ReportFiles, render_report
    from swiftstudy.report.results import StudyTables, load_study_tables


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
