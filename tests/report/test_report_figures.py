"""Tests for the report's figures: CI bands, heatmaps by task, distributions, gradient norms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.patches import Rectangle

from swiftstudy.report import (
    ScorePoint,
    plot_gradient_norms,
    plot_metrics_by_step,
    plot_relinf_distributions,
    plot_relinf_heatmaps,
)
from swiftstudy.report.pair_figures import (
    DistributionSeries,
    NormPoint,
    compute_task_matrix,
    select_steps,
)


def test_task_matrix_by_hand():
    relinf = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    present = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=bool)
    # Probes: tasks a, a, b. Evals: tasks c, b, a (a and b come first, on the diagonal).
    matrix = compute_task_matrix(relinf, present, ["a", "a", "b"], ["c", "b", "a"])
    assert matrix.rows == ("a", "b") and matrix.columns == ("a", "b", "c")
    expected = np.array(
        [
            [6.0, 2.0, (1.0 + 4.0) / 2],  # (a, a): pair (1, 2); (a, b): (0, 1); (a, c): two
            [9.0, 8.0, 7.0],
        ]
    )
    np.testing.assert_allclose(matrix.values, expected)
    empty = compute_task_matrix(relinf, np.zeros_like(present), ["a", "a", "b"], ["c", "b", "a"])
    assert np.isnan(empty.values).all()


def test_select_steps_keeps_first_and_last():
    assert select_steps([30, 10, 20], 6) == [10, 20, 30]
    picked = select_steps(list(range(0, 1000, 50)), 6)
    assert len(picked) == 6 and picked[0] == 0 and picked[-1] == 950


def test_metrics_by_step_draws_interval_bands():
    points = [
        ScorePoint("A", "cot", "e", "in-task", s, v, 8, v - 0.1, v + 0.2)
        for s, v in ((0, 0.1), (10, 0.3), (20, 0.5))
    ] + [ScorePoint("B", "nocot", "e", "cross-task", s, 0.0, 56) for s in (0, 10, 20)]
    ax = plot_metrics_by_step(points).axes[0]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert math.isclose(ys.min(), 0.0) and math.isclose(ys.max(), 0.7)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["A", "B", "bootstrap CI"]


def test_single_checkpoint_gets_an_error_bar():
    point = ScorePoint("A", "cot", "e", "in-task", 5, 0.2, 3, -0.1, 0.4)
    ax = plot_metrics_by_step([point]).axes[0]
    assert ax.containers, "an errorbar container"
    assert "bootstrap CI" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_heatmaps_one_panel_per_step_with_in_task_outlines():
    matrix = compute_task_matrix(
        np.arange(9.0).reshape(3, 3) - 4, np.ones((3, 3), bool), ["x", "y", "z"], ["x", "y", "z"]
    )
    fig = plot_relinf_heatmaps([(10, matrix), (20, matrix)], title="cot on similar")
    panels = [ax for ax in fig.axes if ax.get_title().startswith("step")]
    assert [ax.get_title() for ax in panels] == ["step 10", "step 20"]
    outlines = [p for p in panels[0].patches if isinstance(p, Rectangle)]
    assert sorted((p.get_x(), p.get_y()) for p in outlines) == [
        (-0.5, -0.5),
        (0.5, 0.5),
        (1.5, 1.5),
    ]
    (image,) = panels[0].images
    low, high = image.norm.vmin, image.norm.vmax
    assert (low, high) == (-4.0, 4.0), "one symmetric scale around 0"
    with pytest.raises(ValueError):
        plot_relinf_heatmaps([])


def test_distributions_one_panel_per_metric():
    series = [
        DistributionSeries("A", "cot", (0, 10), (np.array([0.1, 0.2, 0.3]), np.array([0.5]))),
        DistributionSeries("B", "nocot", (0, 10), (np.array([-0.1, 0.0]), np.array([]))),
        DistributionSeries("C", "cot", (0, 10), (np.arange(1000.0), np.arange(3.0))),
    ]
    fig = plot_relinf_distributions(series)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["A", "B", "C"]
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["0", "10"]
    drawn = sum(len(c.get_offsets()) for c in visible[2].collections)
    assert drawn == 400 + 3, "large boxes show a subsample of their pairs"
    with pytest.raises(ValueError):
        plot_relinf_distributions([])


def test_gradient_norms_are_log_log_and_skip_zero_gradients():
    points = [
        NormPoint(step, name, n, math.sqrt(n) * (3 if name == "cot" else 1))
        for step in (10, 20)
        for name in ("cot", "nocot")
        for n in (2, 5, 30)
    ] + [NormPoint(10, "nocot", 4, 0.0)]
    fig = plot_gradient_norms(points)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["step 10", "step 20"]
    assert panels[0].get_xscale() == "log" and panels[0].get_yscale() == "log"
    assert sum(len(c.get_offsets()) for c in panels[0].collections) == 6
    with pytest.raises(ValueError):
        plot_gradient_norms([NormPoint(10, "x", 3, 0.0)])


def test_a_figure_is_laid_out_once_for_all_its_formats(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from swiftstudy.report.figures import save_figure

    calls = []
    real = ConstrainedLayoutEngine.execute

    def counted(self, fig):
        calls.append(fig)
        return real(self, fig)

    monkeypatch.setattr(ConstrainedLayoutEngine, "execute", counted)
    fig = Figure(figsize=(3, 2), layout="constrained")
    fig.add_subplot().set_xlabel("a long label that the layout makes room for")
    written = save_figure(fig, tmp_path / "figure", ("png", "svg"))
    assert [p.name for p in written] == ["figure.png", "figure.svg"]
    assert all(p.stat().st_size > 0 for p in written)
    assert len(calls) == 1
