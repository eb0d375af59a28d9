"""``run_studies``: several studies of one run in one gradient pass, each as if run alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from swiftstudy.cli.main import main
from swiftstudy.study import run_studies, run_study
from test_study import (
    REL_ACROSS_BATCHES,
    _count_engine_calls,
    _write_jsonl,
    assert_same_tables,
    build_study_dir,
    edit_spec,
)

SIMILAR = [
    {"prompt": "What is three plus one?", "response": "4", "task": "add"},
    {"prompt": "Classify the review: awful.", "response": "negative", "task": "cls"},
    {"prompt": "Fix the spelling: wrod", "response": "word", "task": "fix"},
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SWIFTSTUDY_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def two_studies(tmp_path: Path) -> tuple[Path, Path]:
    """``study.yaml`` (cot → nocot) and ``other.yaml``: its nocot set under another name, as
    probes against a third set, which both share no file with."""
    root = build_study_dir(tmp_path)
    _write_jsonl(root / "similar.jsonl", SIMILAR)
    other = edit_spec(
        root,
        "other.yaml",
        sets={"plain": {"path": "nocot.jsonl"}, "similar": {"path": "similar.jsonl"}},
        metrics=[
            {"name": "Plain → In-task", "probes": "plain", "evals": "similar", "context": "in-task"}
        ],
        verdict={"normalization": "cosine", "checkpoints": "last"},
    )
    return root / "study.yaml", other


def test_each_study_equals_the_study_run_alone(two_studies, tmp_path: Path, monkeypatch):
    first, second = two_studies
    run_study(first, tmp_path / "alone" / "a", cache=False, progress=False)
    run_study(second, tmp_path / "alone" / "b", cache=False, progress=False)
    calls = _count_engine_calls(monkeypatch)
    together = {tmp_path / "both" / "a": first, tmp_path / "both" / "b": second}
    results = run_studies(together, cache=False, progress=False)

    assert list(results) == list(together)
    for name in ("a", "b"):
        assert_same_tables(
            tmp_path / "both" / name, tmp_path / "alone" / name, rel=REL_ACROSS_BATCHES
        )
        assert (tmp_path / "both" / name / "report.html").is_file()
        saved = yaml.safe_load((tmp_path / "both" / name / "config.yaml").read_text())
        alone = yaml.safe_load((tmp_path / "alone" / name / "config.yaml").read_text())
        assert saved["spec"] == alone["spec"]
    # 3 cot + 3 nocot (shared by both studies) + 3 similar, at each of the 2 checkpoints.
    assert sum(calls) == 2 * 9
    assert results[tmp_path / "both" / "a"].work.computed == 2 * 9
    assert not (tmp_path / "both" / "a" / ".partial").exists()


def test_a_shared_set_is_computed_once(two_studies, tmp_path: Path, monkeypatch):
    first, _ = two_studies
    calls = _count_engine_calls(monkeypatch)
    run_studies(
        {tmp_path / "x": first, tmp_path / "y": first}, cache=False, report=False, progress=False
    )
    assert sum(calls) == 2 * 6  # the same two sets, however many studies use them
    assert not (tmp_path / "x" / "report.html").exists()
    assert (tmp_path / "x" / "scores.csv").read_text() == (
        tmp_path / "y" / "scores.csv"
    ).read_text()


def test_studies_with_other_gradient_settings_are_refused(two_studies, tmp_path: Path):
    first, _ = two_studies
    other = edit_spec(first.parent, "float32.yaml", dtype="float32")
    with pytest.raises(Exception, match=r"float32\.yaml.*dtype.*run them one at a time") as raised:
        run_studies({tmp_path / "x": first, tmp_path / "y": other}, progress=False)
    assert type(raised.value).__name__ == "InputError"
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_one_output_folder_for_two_studies_is_refused(two_studies, tmp_path: Path):
    first, second = two_studies
    with pytest.raises(ValueError, match="different output folder"):
        run_studies({tmp_path / "x": first, str(tmp_path / "x"): second}, progress=False)


def test_cli_study_still_runs_one_study(two_studies, tmp_path: Path, capsys):
    first, _ = two_studies
    code = main(["study", str(first), "--out", str(tmp_path / "cli"), "--no-progress"])
    assert code == 0
    assert json.loads((tmp_path / "cli" / "verdicts.json").read_text())["headline"]
