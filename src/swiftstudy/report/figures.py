"""The paper's figures: mean RelInf of each metric against the training step.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas attached, so this module never
imports ``pyplot``, never touches the global backend and needs no display.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from swiftstudy.constants import (
    CONTEXT_CROSS_TASK,
    CONTEXT_IN_TASK,
    FIGURE_DPI,
    METRICS_BY_STEP_FIGURE,
)

logger = logging.getLogger(__name__)

_FIGSIZE = (8.0, 5.0)
# Colour-blind-friendly qualitative palette (Okabe-Ito), one colour per probe set.
_PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
_LINESTYLES = {CONTEXT_IN_TASK: "-", CONTEXT_CROSS_TASK: "--"}
_MARKERS = {CONTEXT_IN_TASK: "o", CONTEXT_CROSS_TASK: "s"}
# Label every checkpoint on the x axis when there are this few; let matplotlib choose otherwise.
_MAX_EXPLICIT_TICKS = 12
_FILE_MODE = 0o644


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
    """

    metric: str
    probes: str
    evals: str
    context: str
    step: int
    value: float
    n_pairs: int


def plot_metrics_by_step(scores: Sequence[ScorePoint], *, title: str | None = None) -> Figure:
    """Plot mean RelInf against training step, one line per metric.

    In-task metrics are solid lines and cross-task metrics dashed; metrics that share a probe set
    share a colour. Every checkpoint gets a marker, so a single checkpoint still shows.

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
    by_metric = _group(scores, key=lambda point: point.metric)
    colours = _colours_by_probes(scores)

    fig = Figure(figsize=_FIGSIZE, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.45", linestyle=(0, (4, 3)), linewidth=0.9, zorder=1)
    for metric, points in by_metric.items():
        points = sorted(points, key=lambda point: point.step)
        _check_unique_steps(metric, points)
        if not all(math.isfinite(point.value) for point in points):
            logger.warning("metric %r has non-finite values; they leave gaps", metric)
        context = points[0].context
        ax.plot(
            [point.step for point in points],
            [point.value for point in points],
            label=metric,
            color=colours[points[0].probes],
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
    ax.legend(loc="best", fontsize="small", framealpha=0.9)
    return fig


def save_figures(scores: Sequence[ScorePoint], out_dir: Path) -> list[Path]:
    """Write one metrics-by-step PNG per eval set into ``out_dir``.

    Metrics that share an eval set go on the same axes. Files are named
    ``metrics-by-step-<evals>.png`` with the set name slugified, and are written atomically (a
    temporary file in ``out_dir`` renamed into place).

    Args:
        scores: The points to plot.
        out_dir: The folder to write into; created if missing.

    Returns:
        The written paths, one per eval set in order of first appearance; empty for no scores.
    """
    out_dir = Path(out_dir)
    if not scores:
        logger.warning("no scores: no figures written to %s", out_dir)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used_slugs: set[str] = set()
    for evals, points in _group(scores, key=lambda point: point.evals).items():
        slug = _unique(_slugify(evals), used_slugs)
        target = out_dir / METRICS_BY_STEP_FIGURE.format(evals=slug)
        fig = plot_metrics_by_step(points, title=f"Evaluated on {evals}")
        _save_atomically(fig, target)
        logger.info("wrote %s", target)
        written.append(target)
    return written


def _group(
    scores: Sequence[ScorePoint], key: Callable[[ScorePoint], str]
) -> dict[str, list[ScorePoint]]:
    groups: dict[str, list[ScorePoint]] = {}
    for point in scores:
        groups.setdefault(key(point), []).append(point)
    return groups


def _colours_by_probes(scores: Sequence[ScorePoint]) -> dict[str, str]:
    colours: dict[str, str] = {}
    for point in scores:
        if point.probes not in colours:
            colours[point.probes] = _PALETTE[len(colours) % len(_PALETTE)]
    return colours


def _check_unique_steps(metric: str, points: Sequence[ScorePoint]) -> None:
    for before, after in itertools.pairwise(points):
        if before.step == after.step:
            raise ValueError(f"metric {metric!r} has two values at step {after.step}")


def _slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9._]+", "-", ascii_name.lower()).strip("-.")
    return slug or "set"


def _unique(slug: str, used: set[str]) -> str:
    candidate, suffix = slug, 2
    while candidate in used:
        candidate, suffix = f"{slug}-{suffix}", suffix + 1
    used.add(candidate)
    return candidate


def _save_atomically(fig: Figure, target: Path) -> None:
    # A reader (or a crash) never sees a half-written PNG: write beside the target, then rename.
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", dpi=FIGURE_DPI)
        os.chmod(temp_name, _FILE_MODE)  # mkstemp creates 0600; figures are for sharing
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
