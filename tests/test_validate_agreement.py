"""Agreement of swift scores with measured gains, accuracy rows, and the rendered tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftstudy.data import Example, Message
from swiftstudy.errors import InputError
from swiftstudy.validate.agreement import (
    StrategyMatch,
    compute_agreement,
    load_swift_scores,
    match_strategies,
)
from swiftstudy.validate.evaluators import EvalQuery, Grade
from swiftstudy.validate.outputs import render_accuracy_csv, render_table_md
from swiftstudy.validate.results import compute_accuracy_rows, compute_task_accuracies
from swiftstudy.validate.spec import load_validate_spec

SCORES = (
    "metric,context,probes,evals,step,checkpoint,value,n_pairs,ci_low,ci_high\n"
    "CoT in,in-task,cot,similar,10,c10,0.2,8,,\n"
    "CoT in,in-task,cot,similar,20,c20,0.4,8,,\n"
    "CoT cross,cross-task,cot,similar,10,c10,0.05,56,,\n"
    "Clarify cross,cross-task,clarify,similar,10,c10,-0.02,56,,\n"
    "Eval cross,cross-task,eval,similar,10,c10,0.01,56,,\n"
    "Eval cross 2,cross-task,eval,other,10,c10,0.03,56,,\n"
)


def _spec(tmp_path: Path, runs: str, swift: str = "scores.csv"):
    (tmp_path / "scores.csv").write_text(SCORES)
    text = f"model: m\neval: {{path: e.jsonl}}\nruns:\n{runs}swift: {swift}\n"
    (tmp_path / "v.yaml").write_text(text)
    return load_validate_spec(tmp_path / "v.yaml")


def test_swift_scores_are_means_over_checkpoints(tmp_path: Path):
    (tmp_path / "scores.csv").write_text(SCORES)
    scores = load_swift_scores(tmp_path / "scores.csv")
    assert scores["CoT in"].value == pytest.approx(0.3)
    assert scores["CoT in"].n_steps == 2
    assert (scores["CoT cross"].context, scores["CoT cross"].probes) == ("cross-task", "cot")
    (tmp_path / "bad.csv").write_text("metric,value\nx,1\n")
    with pytest.raises(InputError, match="no context, probes, evals, step column"):
        load_swift_scores(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text(SCORES.replace("0.2,8", "high,8"))
    with pytest.raises(InputError, match=r"bad.csv:2: value: not a number: 'high'"):
        load_swift_scores(tmp_path / "bad.csv")


def test_runs_match_metrics_by_probe_set_and_context(tmp_path: Path):
    runs = (
        "  - {name: base, data: b.jsonl}\n"
        "  - {name: base+cot, data: [b.jsonl, c.jsonl]}\n"
        "  - {name: pos-cot, init_from: base, data: c.jsonl}\n"
        "  - {name: base→clarify, data: [b.jsonl, k.jsonl], schedule: sequential}\n"
        "  - {name: base+cot+clarify, data: [b.jsonl, c.jsonl, k.jsonl]}\n"
        "  - {name: base+eval, data: [b.jsonl, e.jsonl]}\n"
        "  - {name: mystery, data: b.jsonl}\n"
    )
    spec = _spec(tmp_path, runs)
    matches = {m.run: m for m in match_strategies(spec, load_swift_scores(spec.swift.scores))}
    assert "base" not in matches  # the baseline
    assert matches["base+cot"].metric == "CoT cross"
    assert matches["pos-cot"].metric == "CoT in"
    assert matches["base→clarify"].metric == "Clarify cross"
    assert "several probe sets (clarify, cot)" in matches["base+cot+clarify"].reason
    assert "several cross-task metrics of 'eval'" in matches["base+eval"].reason
    assert matches["mystery"].reason == "its name names no probe set of the swift study"

    spec = _spec(tmp_path, runs, swift="{scores: scores.csv, metrics: {base+eval: Eval cross 2}}")
    matches = {m.run: m for m in match_strategies(spec, load_swift_scores(spec.swift.scores))}
    assert matches["base+eval"].metric == "Eval cross 2"


def _rows(accuracies: dict[str, list[bool]]):
    grades = {run: [Grade(c) for c in outcome] for run, outcome in accuracies.items()}
    return compute_accuracy_rows(grades, "base")


def test_agreement_counts_signs_and_ranks(tmp_path: Path):
    (tmp_path / "scores.csv").write_text(SCORES)
    scores = load_swift_scores(tmp_path / "scores.csv")
    accuracy = _rows(
        {
            "base": [True, False, False, False],
            "a": [True, True, True, False],  # +0.50
            "b": [True, True, False, False],  # +0.25
            "c": [False, False, False, False],  # -0.25
            "d": [True, False, False, False],  # 0
        }
    )
    matches = [
        StrategyMatch("a", "CoT in"),  # +0.3
        StrategyMatch("b", "CoT cross"),  # +0.05
        StrategyMatch("c", "Clarify cross"),  # -0.02
        StrategyMatch("d", "Eval cross"),  # +0.01, but no gain
        StrategyMatch("e", None, "no metric"),
    ]
    agreement = compute_agreement(matches, scores, accuracy, "base", tmp_path / "scores.csv")
    assert [s.run for s in agreement.strategies] == ["a", "b", "c", "d"]
    assert [s.sign_agrees for s in agreement.strategies] == [True, True, True, False]
    assert agreement.sign_agreements == 3
    # ranks of scores 4, 3, 1, 2 against gains 4, 3, 1, 2: perfect agreement.
    assert agreement.spearman == pytest.approx(1.0)
    assert [(m.run, m.reason) for m in agreement.unmatched] == [("e", "no metric")]
    data = json.loads(json.dumps(agreement.to_dict()))
    assert data["n"] == 4 and data["strategies"][0]["gain"] == pytest.approx(0.5)


def test_accuracy_rows_are_paired_against_the_baseline():
    rows = _rows(
        {
            "base": [True] * 10 + [False] * 10,
            "better": [True] * 20,
        }
    )
    base, better = rows
    assert (base.delta, base.p_value) == (0.0, None)
    assert (better.correct, better.accuracy, better.delta) == (20, 1.0, 0.5)
    assert better.p_value == pytest.approx(2 / 2**10)
    assert better.ci_high == 1.0 and better.ci_low < 1.0
    text = render_accuracy_csv(rows)
    assert text.splitlines()[0] == "run,n,correct,accuracy,ci_low,ci_high,delta,p_value"
    assert text.splitlines()[1].endswith(",0.0,")


def test_table_md_has_task_columns_and_bold_significant_deltas():
    queries = [
        EvalQuery(Example(str(i), f"task{i % 2}", (Message("user", "q"),), "1", "e:1"))
        for i in range(20)
    ]
    outcomes = {"base": [i < 10 for i in range(20)], "better": [True] * 20}
    grades = {run: [Grade(c) for c in o] for run, o in outcomes.items()}
    rows = compute_accuracy_rows(grades, "base")
    table = render_table_md(
        rows,
        baseline="base",
        eval_name="eval.jsonl",
        evaluator="numeric",
        task_accuracy=compute_task_accuracies(queries, grades),
    )
    assert "| Run | Accuracy | 95% CI | Δ | p | task0 | task1 |" in table
    assert "| base | 50.0 | 29.9–70.1 | – | – | 50.0 | 50.0 |" in table
    assert "| better | 100.0 | 83.9–100.0 | **+50.0** | 0.002 | 100.0 | 100.0 |" in table
