"""Render a study's report from its result folder: figures, ``verdicts.json``, HTML, Markdown.

``render_report`` reads only the saved tables (see ``results``): it recomputes no gradient, so it
re-renders an old result folder, or the same one with other bootstrap settings, in seconds.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swiftstudy.constants import (
    FIGURES_DIR,
    GRADIENT_NORMS_FIGURE,
    RELINF_DISTRIBUTION_FIGURE,
    RELINF_HEATMAP_FIGURE,
    REPORT_HTML,
    REPORT_MD,
    VERDICTS_JSON,
)
from swiftstudy.fileio import write_text_atomic
from swiftstudy.report.analysis import ReportAnalysis, analyze_study, describe_analysis
from swiftstudy.report.content import ReportFigures, build_document, format_steps
from swiftstudy.report.document import FigureBlock
from swiftstudy.report.figures import ScorePoint, save_figure, save_figures, slugify
from swiftstudy.report.html import render_html
from swiftstudy.report.markdown import render_markdown
from swiftstudy.report.pair_figures import (
    DistributionSeries,
    NormPoint,
    compute_task_matrix,
    plot_gradient_norms,
    plot_relinf_distributions,
    plot_relinf_heatmaps,
    select_steps,
)
from swiftstudy.report.results import load_study_tables
from swiftstudy.scores import BootstrapSettings

logger = logging.getLogger(__name__)

#: Figures are written in these formats; the HTML embeds the PNG.
FIGURE_FORMATS = ("png", "svg")
#: At most this many checkpoints get a heatmap panel, and a gradient-norm panel.
MAX_HEATMAP_STEPS = 6
MAX_NORM_STEPS = 4


@dataclass(frozen=True)
class ReportFiles:
    """The files a report wrote into the result folder."""

    html: Path
    markdown: Path
    verdicts: Path
    figures: tuple[Path, ...]


def render_report(out_dir: str | Path, *, settings: BootstrapSettings | None = None) -> ReportFiles:
    """Write ``report.html``, ``report.md``, ``verdicts.json`` and ``figures/`` for a study.

    Args:
        out_dir: A result folder written by ``run_study``.
        settings: Bootstrap resamples, seed and level; the defaults (those of ``scores.csv``)
            when None.

    Returns:
        The paths written.

    Raises:
        InputError: ``out_dir`` is not a complete study result.
    """
    out_dir = Path(out_dir)
    analysis = analyze_study(load_study_tables(out_dir), settings)
    figures, written = _save_figures(analysis, out_dir)
    document = build_document(analysis, figures)
    files = ReportFiles(
        html=out_dir / REPORT_HTML,
        markdown=out_dir / REPORT_MD,
        verdicts=out_dir / VERDICTS_JSON,
        figures=tuple(written),
    )
    verdicts = json.dumps(describe_analysis(analysis), indent=2, ensure_ascii=False)
    write_text_atomic(files.verdicts, verdicts + "\n")
    write_text_atomic(files.markdown, render_markdown(document))
    write_text_atomic(files.html, render_html(document, out_dir))
    logger.info("wrote %s", files.html)
    return files


def _save_figures(analysis: ReportAnalysis, out_dir: Path) -> tuple[ReportFigures, list[Path]]:
    figures_dir = out_dir / FIGURES_DIR
    written: list[Path] = []

    def block(paths: list[Path], caption: str, alt: str) -> FigureBlock:
        written.extend(paths)
        png, *others = (p.relative_to(out_dir) for p in paths)
        return FigureBlock(png, caption, alt, tuple(others))

    points = score_points(analysis)
    paths = save_figures(points, figures_dir, formats=FIGURE_FORMATS)
    # save_figures writes each eval set's figure in every format, sets in order of appearance.
    n = len(FIGURE_FORMATS)
    by_step = [
        block(
            paths[k * n : (k + 1) * n],
            f"Mean RelInf of each metric by training step, evaluated on `{evals}`: in-task "
            "solid, cross-task dashed, one colour per probe set; shaded: the "
            f"{analysis.statistics.settings.level:.0%} two-way bootstrap interval; dashed grey: 0.",
            f"Metrics by step on {evals}",
        )
        for k, evals in enumerate(dict.fromkeys(p.evals for p in points))
    ]
    norms = _norms(analysis, figures_dir)
    figures = ReportFigures(
        metrics_by_step=tuple(by_step),
        heatmaps=tuple(block(*figure) for figure in _heatmaps(analysis, figures_dir)),
        distributions=tuple(block(*figure) for figure in _distributions(analysis, figures_dir)),
        gradient_norms=None if norms is None else block(*norms),
    )
    return figures, written


def score_points(analysis: ReportAnalysis) -> list[ScorePoint]:
    """Each metric's mean at each checkpoint with its interval, as the figures plot them."""
    return [
        ScorePoint(
            metric.name,
            metric.probes,
            metric.evals,
            metric.context,
            step.step,
            step.estimate.value,
            step.n_pairs,
            step.estimate.ci_low,
            step.estimate.ci_high,
        )
        for metric in analysis.statistics.metrics
        for step in metric.steps
        if step.estimate.value is not None
    ]


def _heatmaps(analysis: ReportAnalysis, figures_dir: Path):
    examples = analysis.tables.examples
    for probes, evals in dict.fromkeys((m.probes, m.evals) for m in analysis.pairs):
        metrics = [m for m in analysis.pairs if (m.probes, m.evals) == (probes, evals)]
        all_steps = [m.step for m in metrics[0].matrices]
        steps = select_steps(all_steps, MAX_HEATMAP_STEPS)
        tasks = [e.task for e in examples[probes]], [e.task for e in examples[evals]]
        panels = []
        for step in steps:
            k = all_steps.index(step)
            # Metrics of the same two sets share their RelInf matrix; only their pair masks differ.
            used = np.logical_or.reduce([m.matrices[k].used for m in metrics])
            panels.append((step, compute_task_matrix(metrics[0].matrices[k].relinf, used, *tasks)))
        fig = plot_relinf_heatmaps(panels, title=f"{probes} probes on {evals} evals")
        name = RELINF_HEATMAP_FIGURE.format(probes=slugify(probes), evals=slugify(evals))
        caption = (
            f"Mean RelInf by probe task (rows, `{probes}`) and eval task (columns, `{evals}`) at "
            f"each checkpoint{_shown(steps, all_steps)}. Outlined cells are in-task (the "
            "diagonal); grey cells have no scored pair; blue helps (RelInf > 0), red hurts."
        )
        yield save_figure(fig, figures_dir / name, FIGURE_FORMATS), caption, f"Heatmap {probes}"


def _distributions(analysis: ReportAnalysis, figures_dir: Path):
    for evals in dict.fromkeys(m.evals for m in analysis.pairs):
        series = [
            DistributionSeries(
                m.name,
                m.probes,
                tuple(x.step for x in m.matrices),
                tuple(np.asarray(x.relinf)[np.asarray(x.used, dtype=bool)] for x in m.matrices),
            )
            for m in analysis.pairs
            if m.evals == evals
        ]
        fig = plot_relinf_distributions(series, title=f"RelInf of each pair, evaluated on {evals}")
        name = RELINF_DISTRIBUTION_FIGURE.format(evals=slugify(evals))
        caption = (
            f"RelInf of every pair of each metric on `{evals}`, by checkpoint: boxes span the "
            "quartiles with the median, whiskers reach 1.5× the interquartile range, dots are "
            "pairs."
        )
        yield save_figure(fig, figures_dir / name, FIGURE_FORMATS), caption, f"Pairs on {evals}"


def _norms(analysis: ReportAnalysis, figures_dir: Path):
    norms = analysis.tables.norms
    if not norms:
        return None
    all_steps = sorted({r.step for r in norms})
    steps = set(select_steps(all_steps, MAX_NORM_STEPS))
    points = [
        NormPoint(r.step, r.set, r.n_completion_tokens, math.sqrt(max(r.sqnorm, 0.0)))
        for r in norms
        if r.step in steps
    ]
    if not any(p.norm > 0 for p in points):
        return None
    fig = plot_gradient_norms(points, title="Gradient norm against completion length")
    caption = (
        "Gradient norm ‖∇ℓ‖ of every scored example against its number of completion tokens, "
        f"per checkpoint{_shown(steps, all_steps)}, log–log axes."
    )
    return save_figure(fig, figures_dir / GRADIENT_NORMS_FIGURE, FIGURE_FORMATS), caption, "Norms"


def _shown(steps, all_steps) -> str:
    """A caption's note of the checkpoints a figure shows, when it leaves some out."""
    if len(steps) == len(all_steps):
        return ""
    return f" (checkpoints {format_steps(sorted(steps))} shown)"
