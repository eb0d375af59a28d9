"""swiftstudy.Session on a tiny model: the model loaded once, gradients shared across studies,
results equal to run_study's, DataFrames equal to the CSV files, and the notebook view."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest

from swiftstudy import Session
from swiftstudy.errors import InputError
from swiftstudy.study import compute, run_study
from test_study import COT, NOCOT, REL_ACROSS_BATCHES, assert_same_tables, build_study_dir

PLAIN = pd.DataFrame(
    {
        "prompt": ["What is two plus two?", "Classify: great!", "Fix: speling"],
        "response": ["The sum is 4", "It is positive", "spelling"],
        "task": ["add", "cls", "fix"],
        "id": ["q1", "q2", None],  # a missing value: the row's index names it
    }
)
METRICS = [
    {"name": "Plain → In-task", "probes": "plain", "evals": "nocot", "context": "in-task"},
    {"name": "Plain → Cross-task", "probes": "plain", "evals": "nocot", "context": "cross-task"},
]
COT_METRIC = {"name": "CoT → In-task", "probes": "cot", "evals": "nocot", "context": "in-task"}


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return build_study_dir(tmp_path)


@pytest.fixture()
def loads(monkeypatch) -> list[str]:
    """The names of the base models loaded, by any study path."""
    calls: list[str] = []
    real = compute.load_base_model

    def counting(name, **kwargs):
        calls.append(name)
        return real(name, **kwargs)

    monkeypatch.setattr(compute, "load_base_model", counting)
    return calls


def test_second_study_computes_only_the_added_probe_set(root: Path, loads: list[str]):
    session = Session(str(root / "base"), root / "run", dtype="float64")
    first = session.study(sets={"nocot": NOCOT, "plain": PLAIN}, metrics=METRICS, batch_size=2)
    second = session.study(
        sets={"nocot": NOCOT, "plain": PLAIN, "cot": COT},
        metrics=[*METRICS, COT_METRIC],
        batch_size=2,
    )

    assert loads == [str(root / "base")]
    # 2 checkpoints × (3 evals + 3 plain probes), then only the 3 new CoT probes at each.
    assert (first.work.computed, first.work.cached) == (12, 0)
    assert (second.work.computed, second.work.cached) == (6, 12)
    # The plain metrics' values come from the cached dot products: the same to the bit.
    values = [(s.metric, s.step, s.value, s.n_pairs) for s in second.scores if s.probes == "plain"]
    assert values == [(s.metric, s.step, s.value, s.n_pairs) for s in first.scores]
    assert {s.probes for s in second.scores} == {"plain", "cot"}
    assert first.out_dir is None and [c.step for c in first.checkpoints] == [10, 20]
    assert {r.probe_id for r in first.relinf} == {"q1", "q2", "2"}


def test_session_result_equals_run_study_and_saves_the_same_files(root: Path, loads: list[str]):
    expected = run_study(root / "study.yaml", root / "cli-out", progress=False, cache=False)
    session = Session(str(root / "base"), root / "run", dtype="float64")
    metrics = [
        {"name": "CoT → In-task", "probes": "cot", "evals": "nocot", "context": "in-task"},
        {"name": "CoT → Cross-task", "probes": "cot", "evals": "nocot", "context": "cross-task"},
    ]
    # In study.yaml's order (yaml.safe_dump sorted its keys): tokens.jsonl lists sets so.
    sets = {"cot": {"path": str(root / "cot.jsonl")}, "nocot": root / "nocot.jsonl"}
    result = session.study(sets=sets, metrics=metrics, batch_size=2)

    assert len(result.scores) == len(expected.scores) and len(result.relinf) == len(expected.relinf)
    assert not (root / "session-out").exists()  # nothing written until save
    files = result.save(root / "session-out")
    assert files.html.is_file() and files.markdown.is_file()
    assert_same_tables(root / "session-out", root / "cli-out", rel=REL_ACROSS_BATCHES)
    with pytest.raises(InputError, match="overwrite=True"):
        result.save(root / "session-out")
    result.save(root / "session-out", overwrite=True)
    assert len(loads) == 2  # run_study's, then the session's


def _csv_text(value) -> str:
    """A DataFrame cell as render_csv writes it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def test_to_pandas_rows_equal_the_csv_rows(root: Path, tmp_path: Path):
    session = Session(str(root / "base"), root / "run", dtype="float64")
    nocot = datasets.Dataset.from_list(NOCOT)
    result = session.study(sets={"nocot": nocot, "plain": PLAIN}, metrics=METRICS)
    result.save(tmp_path / "saved")

    for name, rows in (
        ("scores.csv", result.scores),
        ("relinf.csv", result.relinf),
        ("norms.csv", result.norms),
    ):
        frame = rows.to_pandas()
        header, *lines = list(csv.reader((tmp_path / "saved" / name).open()))
        assert list(frame.columns) == header, name
        got = [[_csv_text(v) for v in row] for row in frame.astype(object).values.tolist()]
        assert got == lines and len(lines) == len(rows) > 0, name

    html = result._repr_html_()
    assert 'id="verdict-table"' in html and html.count("<svg") == 1
    assert "Plain → Cross-task" in html and "<html" not in html

    top = result.top_probes("Plain → Cross-task", k=1)
    assert 1 <= len(top) <= 2 and {d.effect for d in top} <= {"helps", "hurts"}
    frame = top.to_pandas()
    assert list(frame["probe_id"]) == [d.probe_id for d in top]
    assert frame.loc[0, "prompt"] in {first_words for first_words in PLAIN["prompt"]}
    with pytest.raises(KeyError, match="no metric named"):
        result.top_probes("nope")


def test_to_pandas_without_pandas_says_how_to_get_it(root: Path, monkeypatch):
    session = Session(str(root / "base"), root / "run", dtype="float64")
    result = session.study(sets={"nocot": NOCOT, "plain": PLAIN}, metrics=METRICS[:1])
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        result.scores.to_pandas()


def test_bad_sets_and_options_name_the_key(root: Path):
    session = Session(str(root / "base"), root / "run", dtype="float64")
    with pytest.raises(InputError, match="set by the Session") as err:
        session.study(sets={"nocot": NOCOT}, metrics=METRICS, dtype="float32")
    assert err.value.key == "dtype"
    with pytest.raises(InputError, match="expected records") as err:
        session.study(sets={"nocot": 42}, metrics=METRICS)
    assert err.value.key == "sets.nocot"
    with pytest.raises(InputError, match=r"\[row 1\]"):
        session.study(
            sets={"nocot": NOCOT, "plain": [PLAIN.iloc[0].to_dict(), {}]}, metrics=METRICS
        )
    with pytest.raises(InputError, match="probes"):
        session.study(sets={"nocot": NOCOT}, metrics=METRICS)
    with pytest.raises(InputError, match="dtype"):
        Session(str(root / "base"), root / "run", dtype="float8")
