"""The rows a validation study reports: per-run accuracy and NLL against the baseline, predictions.

``accuracy.csv`` has one :class:`AccuracyRow` per run:

* accuracy with its 95% Wilson interval, the difference to the baseline run and the exact McNemar
  p-value of that difference. All runs answer the same queries, so the test is paired: only the
  queries where the two runs disagree count. Empty in a loss-only validation (nothing decoded).
* the reference completions' NLL, the quantity RelInf predicts: ``nll`` is the mean over queries of
  each query's summed completion NLL (the study's loss), ``nll_per_token`` the total NLL over the
  total number of completion tokens (so a long response weighs as many tokens as it has), and
  ``delta_nll`` the mean over queries of (run − baseline) summed NLL, with the paired 95% normal
  interval of :func:`~swiftstudy.validate.stats.compute_paired_mean_interval`. A negative
  ``delta_nll`` means the run made the reference responses more likely.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from swiftstudy.report.results import column_names
from swiftstudy.validate.grading import EvalQuery, Grade
from swiftstudy.validate.likelihood import QueryNll
from swiftstudy.validate.stats import (
    compute_mcnemar_p_value,
    compute_paired_mean_interval,
    compute_wilson_interval,
    count_discordant,
)


@dataclass(frozen=True)
class AccuracyRow:
    """One line of ``accuracy.csv``.

    Attributes:
        run: The run's name.
        n: Queries of the eval set.
        correct: Queries answered correctly (``None``: loss-only, nothing was graded).
        accuracy: ``correct / n`` (``None``: loss-only).
        ci_low: Lower bound of the 95% Wilson interval (``None``: loss-only).
        ci_high: Upper bound of the 95% Wilson interval (``None``: loss-only).
        delta: Accuracy minus the baseline's (0.0 for the baseline itself; ``None``: loss-only).
        p_value: Exact McNemar p-value of the difference to the baseline (None for the baseline).
        nll: Mean over queries of the summed NLL of the reference completion, in nats.
        nll_per_token: Total NLL over total completion tokens, in nats per token.
        delta_nll: Mean over queries of the run's summed NLL minus the baseline's (0.0 for the
            baseline itself); negative: the reference responses became more likely.
        delta_nll_low: Lower bound of its paired 95% interval (None for the baseline).
        delta_nll_high: Upper bound of its paired 95% interval (None for the baseline).
    """

    run: str
    n: int
    correct: int | None
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    delta: float | None
    p_value: float | None
    nll: float | None = None
    nll_per_token: float | None = None
    delta_nll: float | None = None
    delta_nll_low: float | None = None
    delta_nll_high: float | None = None


#: The columns of ``accuracy.csv``; new fields are appended so that older readers keep working.
ACCURACY_COLUMNS = column_names(AccuracyRow)


@dataclass(frozen=True)
class PredictionRow:
    """One line of ``predictions.jsonl``: a run's answer to a query and its grade."""

    run: str
    id: str
    task: str
    query: str
    golden: str
    answer: str
    correct: int
    extracted: str | None


def compute_accuracy_rows(
    grades: Mapping[str, Sequence[Grade]] | None,
    baseline: str,
    nlls: Mapping[str, Sequence[QueryNll]] | None = None,
) -> list[AccuracyRow]:
    """Accuracy and NLL of every run, with intervals and paired comparisons to the baseline.

    Args:
        grades: Each run's grades, all over the same queries in the same order; ``None`` in a
            loss-only validation (the accuracy columns stay empty).
        baseline: The run the others are compared with.
        nlls: Each run's per-query reference NLLs over the same queries, or ``None`` (the NLL
            columns stay empty). Runs come in the order of ``grades``, else of ``nlls``.
    """
    per_run: Mapping[str, Sequence[object]] | None = grades if grades is not None else nlls
    if per_run is None:
        raise ValueError("neither grades nor NLLs to report")
    rows = []
    for run, values in per_run.items():
        if not values:
            raise ValueError("no queries")
        fields: dict[str, float | int | None] = dict(_NO_ACCURACY)
        if grades is not None:
            fields.update(_accuracy_fields(grades, run, baseline))
        if nlls is not None:
            fields.update(_nll_fields(nlls, run, baseline))
        rows.append(AccuracyRow(run=run, n=len(values), **fields))  # type: ignore[arg-type]
    return rows


_NO_ACCURACY: dict[str, None] = dict.fromkeys(
    ("correct", "accuracy", "ci_low", "ci_high", "delta", "p_value")
)


def _accuracy_fields(
    grades: Mapping[str, Sequence[Grade]], run: str, baseline: str
) -> dict[str, float | int | None]:
    reference = [g.correct for g in grades[baseline]]
    outcome = [g.correct for g in grades[run]]
    n, correct = len(outcome), sum(outcome)
    interval = compute_wilson_interval(correct, n)
    assert interval is not None  # n > 0
    b, c = count_discordant(reference, outcome)
    return {
        "correct": correct,
        "accuracy": correct / n,
        "ci_low": interval[0],
        "ci_high": interval[1],
        "delta": (correct - sum(reference)) / n,
        "p_value": None if run == baseline else compute_mcnemar_p_value(b, c),
    }


def _nll_fields(
    nlls: Mapping[str, Sequence[QueryNll]], run: str, baseline: str
) -> dict[str, float | None]:
    own, reference = nlls[run], nlls[baseline]
    if len(own) != len(reference):
        raise ValueError(f"paired NLLs differ in length: {len(own)} and {len(reference)}")
    differences = [a.nll - b.nll for a, b in zip(own, reference, strict=True)]
    interval = None if run == baseline else compute_paired_mean_interval(differences)
    tokens = sum(q.n_tokens for q in own)
    return {
        "nll": math.fsum(q.nll for q in own) / len(own),
        "nll_per_token": math.fsum(q.nll for q in own) / tokens if tokens else None,
        "delta_nll": math.fsum(differences) / len(differences),
        "delta_nll_low": None if interval is None else interval[0],
        "delta_nll_high": None if interval is None else interval[1],
    }


def compute_task_accuracies(
    queries: Sequence[EvalQuery], grades: Mapping[str, Sequence[Grade]]
) -> dict[str, dict[str, float]]:
    """``{run: {task: accuracy}}``, tasks in the order they first appear in the eval set."""
    totals = Counter(q.example.task for q in queries)  # in order of first appearance
    result = {}
    for run, run_grades in grades.items():
        right = dict.fromkeys(totals, 0)
        for query, grade in zip(queries, run_grades, strict=True):
            right[query.example.task] += grade.correct
        result[run] = {task: right[task] / totals[task] for task in totals}
    return result


def build_prediction_rows(
    queries: Sequence[EvalQuery],
    answers: Mapping[str, Sequence[str]],
    grades: Mapping[str, Sequence[Grade]],
) -> list[PredictionRow]:
    """Every run's answer to every query, with its grade: runs in order, then queries."""
    return [
        PredictionRow(
            run=run,
            id=query.example.id,
            task=query.example.task,
            query=query.query_text,
            golden=query.golden,
            answer=answer,
            correct=int(grade.correct),
            extracted=grade.extracted,
        )
        for run, run_answers in answers.items()
        for query, answer, grade in zip(queries, run_answers, grades[run], strict=True)
    ]
