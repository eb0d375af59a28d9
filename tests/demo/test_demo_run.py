"""``swiftstudy demo``: refusals without a model; the quick demo end to end on the bundled model."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from swiftstudy import InputError, run_demo
from swiftstudy.cli.main import main
from swiftstudy.demo.recipes import RECIPES
from swiftstudy.demo.run import render_summary
from swiftstudy.model import Checkpoint
from swiftstudy.report.results import ScoreRow
from swiftstudy.study import StudyResult


def test_a_folder_whose_demo_files_are_not_a_demos_is_refused(tmp_path: Path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "results").mkdir()
    with pytest.raises(InputError, match=r"holds results but no demo\.yaml"):
        run_demo(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "results"]
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "--out: holds results but no demo.yaml" in capsys.readouterr().err


def test_a_demo_of_other_settings_is_refused(tmp_path: Path):
    (tmp_path / "demo.yaml").write_text("seed: 0\nquick: true\n")
    with pytest.raises(InputError, match="other settings"):
        run_demo(tmp_path, quick=False)
    with pytest.raises(InputError, match="other settings"):
        run_demo(tmp_path, quick=True, seed=1)


@pytest.mark.slow
@pytest.mark.integration
def test_quick_demo_end_to_end(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"summary: {out / 'summary.md'}" in printed

    checkpoints = sorted(p.name for p in (out / "runs" / "base").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-10"]
    for name, recipe in RECIPES.items():
        results = out / "results" / name
        assert f"{name} report: {results / 'report.html'}" in printed
        assert (results / "report.html").is_file() and (results / "report.md").is_file()
        figures = {p.name for p in (results / "figures").iterdir()}
        for evals in {m.evals for m in recipe.metrics}:
            assert f"metrics-by-step-{evals}.png" in figures
        rows = list(csv.DictReader((results / "scores.csv").open(encoding="utf-8")))
        assert [r["metric"] for r in rows if r["step"] == "10"] == [m.name for m in recipe.metrics]
        assert {r["step"] for r in rows} == {"10"}
        assert all(r["value"] not in ("", "nan") for r in rows)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| CoT → In-task non-CoT |" in summary and "results/eval/report.html" in summary
    assert "Verdicts against controls" in summary
    assert re.search(
        r"\| CoT → In-task non-CoT \| (helps more|no better|worse) than nocot \|", summary
    )
    assert "than nocot" in printed
    for stage in ("base run", "gradients and tables (the three studies)", "eval report"):
        assert re.search(rf"\| {re.escape(stage)} \| \d+ \|", summary), stage


def test_summary_times_each_stage():
    text = render_summary({}, Path("."), 90.0, {"base run": 61.2, "cot report": 3.4})
    assert "Made in 1.5 minutes." in text
    assert "| base run | 61 |" in text and "| cot report | 3 |" in text
    assert "| stage |" not in render_summary({}, Path("."), 90.0)


def test_summary_opens_each_study_with_its_verdicts_against_controls(tmp_path: Path):
    out = tmp_path / "results" / "cot"
    out.mkdir(parents=True)
    verdicts = {
        "bootstrap": {"level": 0.95},
        "headline": {
            "normalization": "relinf",
            "checkpoints": "mean",
            "verdicts": [
                {
                    "metric": "CoT → In-task non-CoT",
                    "verdict": "worse than nocot",
                    "margin": {"value": -0.25, "ci_low": -0.5, "ci_high": -0.125},
                    "relinf_mean_over_checkpoints": {"value": 0.5},
                }
            ],
        },
    }
    (out / "verdicts.json").write_text(json.dumps(verdicts))
    rows = tuple(
        ScoreRow("CoT → In-task non-CoT", "in-task", "cot", "similar", s, "c", 0.5, 12)
        for s in (10, 20)
    )
    checkpoints = tuple(Checkpoint(tmp_path / f"checkpoint-{s}", s, "adapter") for s in (10, 20))
    summary = render_summary({"cot": StudyResult(out, rows, (), checkpoints)}, tmp_path, 60.0)
    assert "Verdicts against controls (relinf, checkpoints mean; margin = strategy − control, " in (
        summary
    )
    assert (
        "| CoT → In-task non-CoT | worse than nocot | -0.2500 [-0.5000, -0.1250] | +0.5000 |"
        in summary
    )
    assert summary.index("worse than nocot") < summary.index("| metric | step 10 | step 20 |")
