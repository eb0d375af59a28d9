"""The paper's figures: mean RelInf of each metric against the training step, with CI bands.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas attached, so this module never
imports ``pyplot``, never touches the global backend and needs no display.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from swiftstudy.constants import (
    CONTEXT_ALL,
    CONTEXT_CROSS_TASK,
    CONTEXT_IN_TASK,
    FIGURE_DPI,
    METRICS_BY_STEP_FIGURE,
)
from swiftstudy.fileio import write_atomic

logger = logging.getLogger(__name__)

_FIGSIZE = (8.0, 5.0)
# Colour-blind-friendly qualitative palette (Okabe-Ito), one colour per probe set.
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
_LINESTYLES = {CONTEXT_IN_TASK: "-", CONTEXT_CROSS_TASK: "--", CONTEXT_ALL: ":"}
_MARKERS = {CONTEXT_IN_TASK: "o", CONTEXT_CROSS_TASK: "s", CONTEXT_ALL: "^"}
# Label every checkpoint on the x axis when there are this few; let matplotlib choose otherwise.
_MAX_EXPLICIT_TICKS = 12
_BAND_ALPHA = 0.15
_BAND_LABEL = "bootstrap CI"


@dataclass(frozen=True)
class ScorePoint:
    """One metric's value at one checkpoint.

    Attributes:
        metric: The metric's name (legend label).
        probes: The probe set's name (picks the line colour).
        evals: The eval set's name (picks the figure in ``save_figures``).
        context: ``in-task`` (solid line) or ``cross-task`` (dashed line).
        step: The checkpoint's training step (x).
        value: The mean RelInf (y).
        n_pairs: How many (probe, eval) pairs the mean is over.
        ci_low: Lower bound of its confidence interval (None: none, no band there).
        ci_high: Upper bound of its confidence interval.
    """

    metric: str
    probes: str
    evals: str
    context: str
    step: int
    value: float
    n_pairs: int
    ci_low: float | None = None
    ci_high: float | None = None


def plot_metrics_by_step(scores: Sequence[ScorePoint], *, title: str | None = None) -> Figure:
    """Plot mean RelInf against training step, one line per metric.

    In-task metrics are solid lines and cross-task metrics dashed; metrics that share a probe set
    share a colour. Every checkpoint gets a marker, so a single checkpoint still shows. Points with
    an interval get a shaded band in the line's colour (an error bar for a lone checkpoint).

    Args:
        scores: The points to plot; each metric's points are sorted by step.
        title: The axes title, if any.

    Returns:
        An 8×5 inch figure with an Agg canvas (``fig.savefig`` works without pyplot).

    Raises:
        ValueError: ``scores`` is empty, or a metric has two values at the same step.
    """
    if not scores:
        raise ValueError("no scores to plot")
    colours = colours_by_name([point.probes for point in scores])
    has_band = False

    fig = Figure(figsize=_FIGSIZE, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.45", linestyle=(0, (4, 3)), linewidth=0.9, zorder=1)
    for metric, points in _group(scores, key=lambda point: point.metric).items():
        points = sorted(points, key=lambda point: point.step)
        for before, after in itertools.pairwise(points):
            if before.step == after.step:
                raise ValueError(f"metric {metric!r} has two values at step {after.step}")
        if not all(math.isfinite(point.value) for point in points):
            logger.warning("metric %r has non-finite values; they leave gaps", metric)
        context = points[0].context
        colour = colours[points[0].probes]
        has_band = _plot_interval(ax, points, colour) or has_band
        ax.plot(
            [point.step for point in points],
            [point.value for point in points],
            label=metric,
            color=colour,
            linestyle=_LINESTYLES.get(context, ":"),
            marker=_MARKERS.get(context, "^"),
            markersize=6,
            linewidth=1.8,
            zorder=3,
        )
    steps = sorted({point.step for point in scores})
    if len(steps) <= _MAX_EXPLICIT_TICKS:
        ax.set_xticks(steps)
    if len(steps) == 1:
        ax.set_xlim(steps[0] - 1, steps[0] + 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean RelInf")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if has_band:
        handles.append(Patch(facecolor="0.5", alpha=_BAND_ALPHA, label=_BAND_LABEL))
        labels.append(_BAND_LABEL)
    # Below the axes: bands and lines would hide behind a legend placed inside.
    ax.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncols=2,
        fontsize="small",
        frameon=False,
    )
    return fig


def _plot_interval(ax, points: Sequence[ScorePoint], colour: str) -> bool:
    """Shade the interval of a metric's points; returns whether anything was drawn."""
    with_ci = [p for p in points if p.ci_low is not None and p.ci_high is not None]
    if not with_ci:
        return False
    if len(points) == 1:
        (point,) = with_ci
        ax.errorbar(
            [point.step],
            [point.value],
            yerr=[[point.value - point.ci_low], [point.ci_high - point.value]],
            fmt="none",
            ecolor=colour,
            alpha=0.6,
            capsize=4,
            zorder=2,
        )
        return True
    nan = float("nan")
    ax.fill_between(
        [p.step for p in points],
        [nan if p.ci_low is None else p.ci_low for p in points],
        [nan if p.ci_high is None else p.ci_high for p in points],
        color=colour,
        alpha=_BAND_ALPHA,
        linewidth=0,
        zorder=2,
    )
    return True


def save_figures(
    scores: Sequence[ScorePoint], out_dir: Path, *, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """Write one metrics-by-step figure per eval set into ``out_dir``.

    Metrics that share an eval set go on the same axes. Files are named
    ``metrics-by-step-<evals>.<format>`` with the set name slugified, and are written atomically
    (a temporary file in ``out_dir`` renamed into place).

    Args:
        scores: The points to plot.
        out_dir: The folder to write into; created if missing.
        formats: File formats matplotlib knows (``png``, ``svg``, ``pdf``), each written.

    Returns:
        The written paths, per eval set in order of first appearance, then per format; empty for
        no scores.
    """
    out_dir = Path(out_dir)
    if not scores:
        logger.warning("no scores: no figures written to %s", out_dir)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used_slugs: set[str] = set()
    for evals, points in _group(scores, key=lambda point: point.evals).items():
        target = out_dir / METRICS_BY_STEP_FIGURE.format(evals=_unique(slugify(evals), used_slugs))
        fig = plot_metrics_by_step(points, title=f"Evaluated on {evals}")
        written.extend(save_figure(fig, target, formats))
    return written


def save_figure(fig: Figure, target: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` to ``target`` with each format's suffix, atomically; returns the paths.

    The layout is computed once, for the first format: the others keep its positions (laying out
    a heatmap's tick labels again is most of a report's time).
    """
    written = []
    for fmt in formats:
        path = target.with_suffix(f".{fmt}")
        # An SVG records its creation time by default: leave it out, re-rendering changes less.
        metadata = {"Date": None} if fmt == "svg" else None
        write_atomic(path, partial(fig.savefig, format=fmt, dpi=FIGURE_DPI, metadata=metadata))
        fig.set_layout_engine("none")
        logger.debug("wrote %s", path)
        written.append(path)
    return written


def _group(
    scores: Sequence[ScorePoint], key: Callable[[ScorePoint], str]
) -> dict[str, list[ScorePoint]]:
    groups: dict[str, list[ScorePoint]] = {}
    for point in scores:
        groups.setdefault(key(point), []).append(point)
    return groups


def colours_by_name(names: Sequence[str]) -> dict[str, str]:
    """One palette colour per distinct name, in order of first appearance (cycling)."""
    return {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(dict.fromkeys(names))}


def slugify(name: str) -> str:
    """A file-name-safe ASCII form of a set name (``other set/v2`` → ``other-set-v2``)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9._]+", "-", ascii_name.lower()).strip("-.")
    return slug or "set"


def _unique(slug: str, used: set[str]) -> str:
    candidate, suffix = slug, 2
    while candidate in used:
        candidate, suffix = f"{slug}-{suffix}", suffix + 1
    used.add(candidate)
    return candidate
