"""The validation study's figures: accuracy per run with intervals; swift score against gain.

Built on ``matplotlib.figure.Figure`` (no ``pyplot``, no display), saved atomically by
:func:`swiftstudy.report.figures.save_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from swiftstudy.constants import ACCURACY_FIGURE, SIGNIFICANCE_LEVEL, SWIFT_VS_GAIN_FIGURE
from swiftstudy.report.figures import save_figure
from swiftstudy.validate.agreement import Agreement
from swiftstudy.validate.results import AccuracyRow

_BLUE, _ORANGE, _GREY = "#0072B2", "#D55E00", "#777777"


def plot_accuracy(rows: Sequence[AccuracyRow], *, baseline: str) -> Figure:
    """Accuracy of each run with its 95% Wilson interval; the baseline's level dashed.

    Runs whose difference to the baseline is significant are drawn in orange.
    """
    fig = Figure(figsize=(max(5.0, 1.1 * len(rows) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = range(len(rows))
    for x, row in zip(xs, rows, strict=True):
        significant = row.p_value is not None and row.p_value < SIGNIFICANCE_LEVEL
        colour = _ORANGE if significant else _BLUE
        ax.errorbar(
            [x],
            [100 * row.accuracy],
            yerr=[[100 * (row.accuracy - row.ci_low)], [100 * (row.ci_high - row.accuracy)]],
            fmt="o",
            color=colour,
            capsize=4,
        )
        if row.run == baseline:
            ax.axhline(100 * row.accuracy, color=_GREY, linestyle="--", linewidth=1)
    ax.set_xticks(list(xs), [row.run for row in rows], rotation=20, ha="right")
    ax.set_ylabel("accuracy (%), 95% Wilson interval")
    ax.set_ylim(0, 100)
    n = rows[0].n if rows else 0
    ax.set_title(f"Accuracy per run (n = {n}); dashed: {baseline}")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_swift_vs_gain(agreement: Agreement) -> Figure:
    """Each strategy's swift score (x) against its measured accuracy gain (y)."""
    fig = Figure(figsize=(6.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    strategies = agreement.strategies
    for s in strategies:
        colour = _BLUE if s.sign_agrees else _ORANGE
        ax.scatter([s.swift_score], [100 * s.gain], color=colour, zorder=3)
        ax.annotate(s.run, (s.swift_score, 100 * s.gain), textcoords="offset points", xytext=(5, 4))
    ax.axhline(0, color=_GREY, linewidth=0.8)
    ax.axvline(0, color=_GREY, linewidth=0.8)
    ax.set_xlabel("swift score (mean RelInf over checkpoints)")
    ax.set_ylabel(f"accuracy gain over {agreement.baseline} (points)")
    rho = "n/a" if agreement.spearman is None else f"{agreement.spearman:+.2f}"
    ax.set_title(
        f"Spearman ρ = {rho}; signs agree {agreement.sign_agreements} of {len(strategies)}"
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_validation_figures(
    rows: Sequence[AccuracyRow], baseline: str, agreement: Agreement | None, figures_dir: Path
) -> list[Path]:
    """Write ``accuracy.png`` and, with an agreement, ``swift-vs-gain.png``; returns the paths."""
    written = save_figure(plot_accuracy(rows, baseline=baseline), figures_dir / ACCURACY_FIGURE)
    stale = figures_dir / SWIFT_VS_GAIN_FIGURE
    if agreement is not None:
        written += save_figure(plot_swift_vs_gain(agreement), stale)
    else:
        stale.unlink(missing_ok=True)
    return written
