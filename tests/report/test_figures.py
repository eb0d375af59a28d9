"""Tests for swiftstudy.report.figures: PNGs are written, non-blank, grouped and display-free."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from matplotlib.colors import to_rgba

from swiftstudy.report import ScorePoint, plot_metrics_by_step, save_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def series(
    metric: str, probes: str, evals: str, context: str, values: dict[int, float]
) -> list[ScorePoint]:
    return [
        ScorePoint(metric, probes, evals, context, step, value, n_pairs=12)
        for step, value in values.items()
    ]


def assert_visible_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3
    assert pixels[..., :3].var() > 1e-3, "the image is blank"


@pytest.fixture()
def scores() -> list[ScorePoint]:
    steps = {0: 0.0, 50: 0.12, 100: 0.3}
    return [
        *series("CoT → In-task non-CoT", "cot", "similar", "in-task", steps),
        *series("CoT → Cross-task", "cot", "similar", "cross-task", {0: -0.1, 50: 0.0, 100: 0.1}),
        *series("NoCoT → In-task", "nocot", "similar", "in-task", {100: -0.2, 0: 0.05, 50: 0.0}),
        *series("CoT → Other", "cot", "other set/v2", "in-task", steps),
    ]


def test_save_figures_groups_by_eval_set(scores: list[ScorePoint], tmp_path: Path) -> None:
    out_dir = tmp_path / "figures"
    paths = save_figures(scores, out_dir)
    assert [p.name for p in paths] == [
        "metrics-by-step-similar.png",
        "metrics-by-step-other-set-v2.png",
    ]
    for path in paths:
        assert path.parent == out_dir
        assert_visible_png(path)
    assert sorted(os.listdir(out_dir)) == sorted(p.name for p in paths), "no temp files left"


def test_single_step_renders(tmp_path: Path) -> None:
    point = [ScorePoint("CoT → In-task", "cot", "cot", "in-task", 40, 0.5, n_pairs=3)]
    (path,) = save_figures(point, tmp_path)
    assert_visible_png(path)
    ax = plot_metrics_by_step(point).axes[0]
    (line,) = ax.get_lines()[1:]  # the first line is the zero line
    assert line.get_marker() == "o"
    low, high = ax.get_xlim()
    assert low < 40 < high


def test_styles_colour_by_probes_and_dash_by_context(scores: list[ScorePoint]) -> None:
    similar = [point for point in scores if point.evals == "similar"]
    fig = plot_metrics_by_step(similar, title="Evaluated on similar")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    in_task = lines["CoT → In-task non-CoT"]
    cross_task = lines["CoT → Cross-task"]
    other_probes = lines["NoCoT → In-task"]
    assert to_rgba(in_task.get_color()) == to_rgba(cross_task.get_color())
    assert to_rgba(in_task.get_color()) != to_rgba(other_probes.get_color())
    assert in_task.get_linestyle() == "-"
    assert cross_task.get_linestyle() == "--"
    assert list(other_probes.get_xdata()) == [0, 50, 100], "points are sorted by step"
    assert ax.get_ylabel() == "mean RelInf"
    assert ax.get_title() == "Evaluated on similar"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["CoT → In-task non-CoT", "CoT → Cross-task", "NoCoT → In-task"]
    assert tuple(fig.get_size_inches()) == (8.0, 5.0)


def test_zero_line_is_dashed(scores: list[ScorePoint]) -> None:
    zero = plot_metrics_by_step(scores).axes[0].get_lines()[0]
    assert set(zero.get_ydata()) == {0.0}
    assert zero.get_linestyle() != "-"


def test_slug_collisions_get_distinct_files(tmp_path: Path) -> None:
    points = [
        ScorePoint("a", "p", "Eval Set", "in-task", 0, 0.1, 1),
        ScorePoint("b", "p", "eval-set", "in-task", 0, 0.2, 1),
    ]
    paths = save_figures(points, tmp_path)
    assert [p.name for p in paths] == [
        "metrics-by-step-eval-set.png",
        "metrics-by-step-eval-set-2.png",
    ]


def test_empty_and_duplicate_steps(tmp_path: Path) -> None:
    assert save_figures([], tmp_path / "none") == []
    with pytest.raises(ValueError, match="no scores"):
        plot_metrics_by_step([])
    twice = [ScorePoint("m", "p", "e", "in-task", 5, v, 1) for v in (0.1, 0.2)]
    with pytest.raises(ValueError, match="two values at step 5"):
        plot_metrics_by_step(twice)


def test_no_display_and_no_pyplot(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from swiftstudy.report import ScorePoint, save_figures\n"
        "p = ScorePoint('m', 'p', 'e', 'in-task', 1, 0.5, 2)\n"
        f"save_figures([p], Path({str(tmp_path)!r}))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    assert_visible_png(tmp_path / "metrics-by-step-e.png")
