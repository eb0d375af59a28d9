"""The validation study's figures: accuracy per run; swift score against gain and against −ΔNLL.

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
#: Swift score against −ΔNLL (beside ``SWIFT_VS_GAIN_FIGURE``).
SWIFT_VS_NLL_FIGURE = "swift-vs-nll.png"


def plot_accuracy(rows: Sequence[AccuracyRow], *, baseline: str) -> Figure:
    """Accuracy of each run with its 95% Wilson interval; the baseline's level dashed.

    Runs whose difference to the baseline is significant are drawn in orange.
    """
    fig = Figure(figsize=(max(5.0, 1.1 * len(rows) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = range(len(rows))
    for x, row in zip(xs, rows, strict=True):
        assert row.accuracy is not None and row.ci_low is not None and row.ci_high is not None
        significant = row.p_value is not None and row.p_value < SIGNIFICANCE_LEVEL
        ax.errorbar(
            [x],
            [100 * row.accuracy],
            yerr=[[100 * (row.accuracy - row.ci_low)], [100 * (row.ci_high - row.accuracy)]],
            fmt="o",
            color=_ORANGE if significant else _BLUE,
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


def _plot_swift_against(
    agreement: Agreement,
    ys: Sequence[float],
    agrees: Sequence[bool | None],
    ylabel: str,
    summary: tuple[float | None, int | None],
) -> Figure:
    """Each strategy's swift score (x) against its measured change (y), agreeing signs in blue."""
    fig = Figure(figsize=(6.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    strategies = agreement.strategies
    for s, y, agree in zip(strategies, ys, agrees, strict=True):
        ax.scatter([s.swift_score], [y], color=_BLUE if agree else _ORANGE, zorder=3)
        ax.annotate(s.run, (s.swift_score, y), textcoords="offset points", xytext=(5, 4))
    ax.axhline(0, color=_GREY, linewidth=0.8)
    ax.axvline(0, color=_GREY, linewidth=0.8)
    ax.set_xlabel("swift score (mean RelInf over checkpoints)")
    ax.set_ylabel(ylabel)
    rho, signs = summary
    rho_text = "n/a" if rho is None else f"{rho:+.2f}"
    ax.set_title(f"Spearman ρ = {rho_text}; signs agree {signs} of {len(strategies)}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_validation_figures(
    rows: Sequence[AccuracyRow], baseline: str, agreement: Agreement | None, figures_dir: Path
) -> list[Path]:
    """Write the figures the results have; remove stale ones; returns the paths written.

    ``accuracy.png`` when answers were graded; with an agreement, ``swift-vs-gain.png`` (graded)
    and ``swift-vs-nll.png`` (with NLLs).
    """
    graded = any(row.accuracy is not None for row in rows)
    figures = {
        ACCURACY_FIGURE: plot_accuracy(rows, baseline=baseline) if graded else None,
        SWIFT_VS_GAIN_FIGURE: None,
        SWIFT_VS_NLL_FIGURE: None,
    }
    if agreement is not None and agreement.sign_agreements is not None:
        figures[SWIFT_VS_GAIN_FIGURE] = _plot_swift_against(
            agreement,
            [100 * (s.gain or 0.0) for s in agreement.strategies],
            [s.sign_agrees for s in agreement.strategies],
            f"accuracy gain over {agreement.baseline} (points)",
            (agreement.spearman, agreement.sign_agreements),
        )
    if agreement is not None and agreement.sign_agreements_nll is not None:
        figures[SWIFT_VS_NLL_FIGURE] = _plot_swift_against(
            agreement,
            [-(s.delta_nll or 0.0) for s in agreement.strategies],
            [s.sign_agrees_nll for s in agreement.strategies],
            f"−ΔNLL against {agreement.baseline} (nats per query)",
            (agreement.spearman_nll, agreement.sign_agreements_nll),
        )
    written: list[Path] = []
    for name, figure in figures.items():
        if figure is not None:
            written += save_figure(figure, figures_dir / name)
        else:
            (figures_dir / name).unlink(missing_ok=True)
    return written
