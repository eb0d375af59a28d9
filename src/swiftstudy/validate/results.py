"""The rows a validation study reports: per-run accuracy against the baseline, every prediction.

``accuracy.csv`` has one :class:`AccuracyRow` per run: accuracy with its 95% Wilson interval, the
difference to the baseline run and the exact McNemar p-value of that difference. All runs answer
the same queries, so the test is paired: only the queries where the two runs disagree count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from swiftstudy.validate.evaluators import EvalQuery, Grade
from swiftstudy.validate.stats import (
    compute_mcnemar_p_value,
    compute_wilson_interval,
    count_discordant,
)

ACCURACY_COLUMNS = ("run", "n", "correct", "accuracy", "ci_low", "ci_high", "delta", "p_value")


@dataclass(frozen=True)
class AccuracyRow:
    """One line of ``accuracy.csv``.

    Attributes:
        run: The run's name.
        n: Queries graded.
        correct: Queries answered correctly.
        accuracy: ``correct / n``.
        ci_low: Lower bound of the 95% Wilson interval.
        ci_high: Upper bound of the 95% Wilson interval.
        delta: Accuracy minus the baseline's (0.0 for the baseline itself).
        p_value: Exact McNemar p-value of the difference to the baseline (None for the baseline).
    """

    run: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    delta: float
    p_value: float | None


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

    def to_dict(self) -> dict[str, object]:
        return {
            "run": self.run,
            "id": self.id,
            "task": self.task,
            "query": self.query,
            "golden": self.golden,
            "answer": self.answer,
            "correct": self.correct,
            "extracted": self.extracted,
        }


def compute_accuracy_rows(
    grades: Mapping[str, Sequence[Grade]], baseline: str
) -> list[AccuracyRow]:
    """Accuracy, interval, delta and paired test of every run, in the mapping's order.

    Args:
        grades: Each run's grades, all over the same queries in the same order.
        baseline: The run the others are compared with.
    """
    reference = [g.correct for g in grades[baseline]]
    rows = []
    for run, run_grades in grades.items():
        outcome = [g.correct for g in run_grades]
        n, correct = len(outcome), sum(outcome)
        if n == 0:
            raise ValueError("no graded queries")
        interval = compute_wilson_interval(correct, n)
        assert interval is not None  # n > 0
        b, c = count_discordant(reference, outcome)
        rows.append(
            AccuracyRow(
                run=run,
                n=n,
                correct=correct,
                accuracy=correct / n,
                ci_low=interval[0],
                ci_high=interval[1],
                delta=(correct - sum(reference)) / n,
                p_value=None if run == baseline else compute_mcnemar_p_value(b, c),
            )
        )
    return rows


def compute_task_accuracies(
    queries: Sequence[EvalQuery], grades: Mapping[str, Sequence[Grade]]
) -> dict[str, dict[str, float]]:
    """``{run: {task: accuracy}}``, tasks in the order they first appear in the eval set."""
    tasks = list(dict.fromkeys(q.example.task for q in queries))
    result = {}
    for run, run_grades in grades.items():
        totals = dict.fromkeys(tasks, 0)
        right = dict.fromkeys(tasks, 0)
        for query, grade in zip(queries, run_grades, strict=True):
            totals[query.example.task] += 1
            right[query.example.task] += grade.correct
        result[run] = {task: right[task] / totals[task] for task in tasks}
    return result


def build_prediction_rows(
    queries: Sequence[EvalQuery],
    answers: Mapping[str, Sequence[str]],
    grades: Mapping[str, Sequence[Grade]],
) -> list[PredictionRow]:
    """Every run's answer to every query, with its grade: runs in order, then queries."""
    rows = []
    for run, run_answers in answers.items():
        for query, answer, grade in zip(queries, run_answers, grades[run], strict=True):
            rows.append(
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
            )
    return rows
