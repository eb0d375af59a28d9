"""Reporting: the paper's figures from computed scores (matplotlib, no pyplot, no display)."""

from swiftstudy.report.figures import ScorePoint, plot_metrics_by_step, save_figures

__all__ = ["ScorePoint", "plot_metrics_by_step", "save_figures"]
