"""Agreement of swift scores with measured gains, accuracy rows, and the rendered tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from swiftstudy.data import Example, Message
from swiftstudy.errors import InputError
from swiftstudy.scores import compute_rank_correlation
from swiftstudy.validate.agreement import (
    StrategyMatch,
    compute_agreement,
    load_swift_scores,
    match_strategies,
)
from swiftstudy.validate.grading import EvalQuery, Grade
from swiftstudy.validate.likelihood import QueryNll
from swiftstudy.validate.outputs import render_accuracy_csv, render_table_md
from swiftstudy.validate.results import compute_accuracy_rows, compute_task_accuracies
from swiftstudy.validate.spec import load_validate_spec
from swiftstudy.validate.stats import compute_spearman_interval, compute_wilson_interval

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
    assert text.splitlines()[0].startswith("run,n,correct,accuracy,ci_low,ci_high,delta,p_value,")
    assert text.splitlines()[1].endswith(",0.0,,,,,,")  # no p-value, no NLL given


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


def _nlls(values: dict[str, list[float]]) -> dict[str, list[QueryNll]]:
    return {run: [QueryNll(v, 2) for v in vs] for run, vs in values.items()}


def test_rows_carry_the_paired_nll_difference():
    nlls = _nlls({"base": [4.0, 6.0, 8.0, 2.0], "run": [3.0, 6.0, 5.0, 2.0]})
    base, run = compute_accuracy_rows(None, "base", nlls)
    # run − base per query: −1, 0, −3, 0; mean −1; s² = (0 + 1 + 4 + 1) / 3 = 2, se = √(2/4).
    assert (run.nll, run.nll_per_token, run.delta_nll) == (4.0, 2.0, -1.0)
    half = 1.959963984540054 * math.sqrt(0.5)
    assert (run.delta_nll_low, run.delta_nll_high) == pytest.approx((-1 - half, -1 + half))
    assert (base.nll, base.delta_nll, base.delta_nll_low) == (5.0, 0.0, None)
    assert run.accuracy is None and run.correct is None and run.p_value is None
    line = render_accuracy_csv([base, run]).splitlines()[2]
    assert line.startswith("run,4,,,,,,,4.0,2.0,-1.0,")


def test_agreement_against_nll_and_accuracy_with_intervals(tmp_path: Path):
    (tmp_path / "scores.csv").write_text(SCORES)
    scores = load_swift_scores(tmp_path / "scores.csv")
    outcomes = {
        "base": [True, False, False, False],
        "a": [True, True, True, False],  # +0.50
        "b": [True, True, False, False],  # +0.25
        "c": [False, False, False, False],  # -0.25
        "d": [True, False, False, False],  # 0
        "f": [True, True, False, False],  # +0.25
    }
    # Δnll: a −3, b −1, c +2, d −0.5 (the score's sign, unlike the accuracy), f +1.
    nlls = _nlls(
        {
            "base": [5.0, 5.0, 5.0, 5.0],
            "a": [2.0, 2.0, 2.0, 2.0],
            "b": [4.0, 4.0, 4.0, 4.0],
            "c": [7.0, 7.0, 7.0, 7.0],
            "d": [4.5, 4.5, 4.5, 4.5],
            "f": [6.0, 6.0, 6.0, 6.0],
        }
    )
    grades = {run: [Grade(c) for c in o] for run, o in outcomes.items()}
    accuracy = compute_accuracy_rows(grades, "base", nlls)
    matches = [
        StrategyMatch("a", "CoT in"),  # +0.3
        StrategyMatch("b", "CoT cross"),  # +0.05
        StrategyMatch("c", "Clarify cross"),  # -0.02
        StrategyMatch("d", "Eval cross"),  # +0.01
        StrategyMatch("f", "Eval cross 2"),  # +0.03
    ]
    agreement = compute_agreement(matches, scores, accuracy, "base", tmp_path / "scores.csv")
    # Scores rank a 5, b 4, f 3, d 2, c 1. −Δnll: a 3, b 1, d 0.5, f −1, c −2 → ranks 5 4 2 3 1:
    # d² = 0 + 0 + 1 + 1 + 0 = 2, ρ = 1 − 6·2 / (5·24) = 0.9.
    assert agreement.spearman_nll == pytest.approx(0.9)
    assert agreement.spearman_nll_interval == pytest.approx(
        compute_spearman_interval(0.9, 5), rel=1e-12
    )
    assert agreement.sign_agreements_nll == 4  # f: positive score, NLL rose
    assert agreement.sign_agreements_nll_interval == compute_wilson_interval(4, 5)
    # Gains a 0.5, b 0.25, f 0.25, d 0, c −0.25 → ranks 5, 3.5, 3.5, 2, 1 against 5, 4, 3, 2, 1.
    assert agreement.spearman == pytest.approx(
        compute_rank_correlation([5, 4, 3, 2, 1], [5, 3.5, 3.5, 2, 1])
    )
    assert agreement.sign_agreements == 4  # d: no gain
    assert agreement.spearman_interval == pytest.approx(
        compute_spearman_interval(agreement.spearman, 5)
    )
    by_run = {s.run: s for s in agreement.strategies}
    assert (by_run["d"].sign_agrees, by_run["d"].sign_agrees_nll) == (False, True)
    assert by_run["f"].delta_nll == by_run["f"].delta_nll_low == 1.0  # no spread: a point
    data = json.loads(json.dumps(agreement.to_dict()))
    assert data["spearman_nll_interval"] == list(agreement.spearman_nll_interval)
    assert data["sign_agreements_nll"] == 4 and data["sign_agreements"] == 4

    # Loss only: the accuracy side is empty, the NLL side unchanged.
    loss_only = compute_accuracy_rows(None, "base", nlls)
    agreement = compute_agreement(matches, scores, loss_only, "base", tmp_path / "scores.csv")
    assert agreement.spearman is None and agreement.sign_agreements is None
    assert agreement.spearman_interval is None and agreement.sign_agreements_interval is None
    assert agreement.spearman_nll == pytest.approx(0.9)
    table = render_table_md(
        loss_only,
        baseline="base",
        eval_name="e.jsonl",
        evaluator="numeric",
        task_accuracy={},
        agreement=agreement,
    )
    assert "Against the accuracy gain" not in table
    assert "Against −ΔNLL over 5 strategies: Spearman ρ = +0.90 (95% CI" in table
    assert "| a | CoT in | +0.3000 | – | – | – | -3.000 | yes |" in table
