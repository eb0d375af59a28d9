"""Figures of the pairs behind the means: RelInf heatmaps by task, distributions, gradient norms.

Like ``figures``, everything is drawn on ``matplotlib.figure.Figure`` with an Agg canvas: no
pyplot, no global backend, no display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from swiftstudy.report.figures import colours_by_name

# Cells are annotated with their value up to this many tasks a side.
_MAX_ANNOTATED_TASKS = 10
# Tick labels are shown up to this many tasks a side, cut to this many characters.
_MAX_LABELLED_TASKS = 40
_MAX_LABEL_CHARS = 18
# Points drawn over each box of a distribution (a deterministic subsample beyond).
_MAX_STRIP_POINTS = 400


@dataclass(frozen=True)
class TaskMatrix:
    """Mean RelInf per (probe task, eval task): rows are probe tasks, columns eval tasks.

    Attributes:
        rows: Probe tasks, in order of first appearance in the probe set.
        columns: Eval tasks: the probe tasks they share first (so in-task cells lie on the
            diagonal), then the others in order of first appearance.
        values: ``(len(rows), len(columns))`` means; NaN where no pair was scored.
    """

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    values: np.ndarray


@dataclass(frozen=True)
class DistributionSeries:
    """A metric's pair values at each checkpoint."""

    metric: str
    probes: str
    steps: tuple[int, ...]
    values: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class NormPoint:
    """An example's gradient norm and completion length at a checkpoint."""

    step: int
    set: str
    n_completion_tokens: int
    norm: float


def compute_task_matrix(
    relinf: np.ndarray,
    present: np.ndarray,
    probe_tasks: Sequence[str],
    eval_tasks: Sequence[str],
) -> TaskMatrix:
    """Average the ``(P, E)`` RelInf of the present pairs over each (probe task, eval task)."""
    rows = tuple(dict.fromkeys(probe_tasks))
    eval_order = tuple(dict.fromkeys(eval_tasks))
    columns = tuple(dict.fromkeys([t for t in rows if t in eval_order] + list(eval_order)))
    row_of = {t: i for i, t in enumerate(rows)}
    col_of = {t: j for j, t in enumerate(columns)}
    sums = np.zeros((len(rows), len(columns)))
    counts = np.zeros_like(sums)
    ii, jj = np.nonzero(np.asarray(present, dtype=bool))
    r = np.array([row_of[probe_tasks[i]] for i in ii], dtype=np.intp)
    c = np.array([col_of[eval_tasks[j]] for j in jj], dtype=np.intp)
    np.add.at(sums, (r, c), np.asarray(relinf, dtype=np.float64)[ii, jj])
    np.add.at(counts, (r, c), 1.0)
    return TaskMatrix(rows, columns, np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan))


def select_steps(steps: Sequence[int], at_most: int) -> list[int]:
    """At most ``at_most`` steps spread evenly over ``steps``, the first and the last included."""
    steps = sorted(steps)
    if len(steps) <= at_most:
        return steps
    picks = np.linspace(0, len(steps) - 1, at_most).round().astype(int)
    return [steps[i] for i in sorted(set(picks.tolist()))]


def plot_relinf_heatmaps(
    panels: Sequence[tuple[int, TaskMatrix]], *, title: str | None = None
) -> Figure:
    """One heatmap per checkpoint of mean RelInf by probe task (rows) and eval task (columns).

    Colours share one scale centred on 0 (blue: RelInf > 0, red: < 0); in-task cells are outlined
    and cells without pairs are grey.

    Raises:
        ValueError: ``panels`` is empty.
    """
    if not panels:
        raise ValueError("no heatmap panels to plot")
    n_rows_tasks = max(len(m.rows) for _, m in panels)
    n_col_tasks = max(len(m.columns) for _, m in panels)
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    cell = 0.34 if max(n_rows_tasks, n_col_tasks) <= 16 else 0.16
    width = min(max(n_col_tasks * cell + 1.5, 3.0), 5.5)
    height = min(max(n_rows_tasks * cell + 1.5, 2.6), 5.5)
    fig = Figure(figsize=(ncols * width + 0.9, nrows * height + 0.5), layout="constrained")
    finite = np.concatenate([m.values[np.isfinite(m.values)] for _, m in panels])
    limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.88")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for ax, (step, matrix) in zip(axes.flat, panels, strict=False):
        image = ax.imshow(np.ma.masked_invalid(matrix.values), cmap=cmap, norm=norm, aspect="auto")
        _decorate_heatmap(ax, matrix, limit)
        ax.set_title(f"step {step}", fontsize="medium")
    colorbar = fig.colorbar(image, ax=axes, shrink=0.85, pad=0.02)
    colorbar.set_label("mean RelInf")
    return _finish(fig, axes, len(panels), title)


def _decorate_heatmap(ax, matrix: TaskMatrix, limit: float) -> None:
    for axis, labels, setter in (
        ("x", matrix.columns, ax.set_xticks),
        ("y", matrix.rows, ax.set_yticks),
    ):
        if len(labels) <= _MAX_LABELLED_TASKS:
            setter(range(len(labels)), [_short(t) for t in labels], fontsize="small")
        else:
            setter([])
        ax.tick_params(axis=axis, length=0)
    ax.tick_params(axis="x", labelrotation=90)
    ax.set_xlabel("eval task", fontsize="small")
    ax.set_ylabel("probe task", fontsize="small")
    for i, task in enumerate(matrix.rows):
        if task in matrix.columns:
            j = matrix.columns.index(task)
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.2, ec="0.1"))
    if max(matrix.values.shape) <= _MAX_ANNOTATED_TASKS:
        for (i, j), value in np.ndenumerate(matrix.values):
            if np.isfinite(value):
                colour = "white" if abs(value) > 0.6 * limit else "0.15"
                # Out of the layout: inside the axes anyway, and measuring each is slow.
                ax.text(
                    j, i, f"{value:.2f}", ha="center", va="center", fontsize=6.5, color=colour
                ).set_in_layout(False)


def _short(task: str) -> str:
    return task if len(task) <= _MAX_LABEL_CHARS else task[: _MAX_LABEL_CHARS - 1] + "…"


def plot_relinf_distributions(
    series: Sequence[DistributionSeries], *, title: str | None = None
) -> Figure:
    """Per metric, a box plot of its pairs' RelInf at each checkpoint, with the pairs as points.

    Raises:
        ValueError: ``series`` is empty.
    """
    if not series:
        raise ValueError("no distributions to plot")
    colours = colours_by_name([s.probes for s in series])
    ncols = min(len(series), 2)
    nrows = math.ceil(len(series) / ncols)
    n_steps = max(len(s.steps) for s in series)
    width = min(max(0.7 * n_steps + 2.2, 4.2), 7.5)
    fig = Figure(figsize=(ncols * width, nrows * 3.3 + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    rng = np.random.default_rng(0)  # jitter only: fixed so re-rendering gives the same picture
    for ax, item in zip(axes.flat, series, strict=False):
        colour = colours[item.probes]
        data = [np.asarray(v, dtype=np.float64) for v in item.values]
        positions = list(range(len(data)))
        ax.axhline(0.0, color="0.45", linestyle=(0, (4, 3)), linewidth=0.9, zorder=1)
        boxes = ax.boxplot(
            [d if d.size else [np.nan] for d in data],
            positions=positions,
            widths=0.55,
            showfliers=False,
            patch_artist=True,
            medianprops={"color": "0.1"},
        )
        ax.set_xticks(positions, [str(s) for s in item.steps])
        for patch in boxes["boxes"]:
            patch.set(facecolor=colour, alpha=0.25, edgecolor=colour)
        for x, values in zip(positions, data, strict=True):
            if values.size > _MAX_STRIP_POINTS:
                values = rng.choice(values, _MAX_STRIP_POINTS, replace=False)
            jitter = rng.uniform(-0.18, 0.18, size=values.size)
            ax.scatter(x + jitter, values, s=9, color=colour, alpha=0.65, linewidths=0, zorder=3)
        ax.set_title(item.metric, fontsize="medium")
        ax.set_xlabel("training step", fontsize="small")
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("RelInf of each pair")
    return _finish(fig, axes, len(series), title)


def plot_gradient_norms(points: Sequence[NormPoint], *, title: str | None = None) -> Figure:
    """Gradient norm against completion tokens, one panel per checkpoint, one colour per set.

    Both axes are logarithmic; examples with a zero gradient are left out.

    Raises:
        ValueError: No point has a positive norm.
    """
    points = [p for p in points if p.norm > 0 and p.n_completion_tokens > 0]
    if not points:
        raise ValueError("no gradient norms to plot")
    steps = sorted({p.step for p in points})
    colours = colours_by_name([p.set for p in points])
    ncols = min(len(steps), 4)
    nrows = math.ceil(len(steps) / ncols)
    fig = Figure(figsize=(ncols * 3.4 + 0.4, nrows * 3.1 + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for ax, step in zip(axes.flat, steps, strict=False):
        for name, colour in colours.items():
            mine = [p for p in points if p.step == step and p.set == name]
            ax.scatter(
                [p.n_completion_tokens for p in mine],
                [p.norm for p in mine],
                s=18,
                color=colour,
                alpha=0.8,
                linewidths=0,
                label=name,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Plain numbers at 1, 2, 5 × 10^k: the default 2×10⁰, 3×10⁰, ... labels collide.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"step {step}", fontsize="medium")
        ax.grid(True, which="both", alpha=0.25)
    for ax in axes[-1, :]:
        ax.set_xlabel("completion tokens")
    for ax in axes[:, 0]:
        ax.set_ylabel("gradient norm ‖∇ℓ‖")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="set", fontsize="small")
    return _finish(fig, axes, len(steps), title)


def _finish(fig: Figure, axes: np.ndarray, n_used: int, title: str | None) -> Figure:
    """Attach an Agg canvas, hide the grid's panels past the first ``n_used``, add the title."""
    FigureCanvasAgg(fig)
    for ax in list(axes.flat)[n_used:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig
