"""What grading works on: the eval set's queries, an evaluator's grade, and the evaluator interface.

The rule evaluators (:mod:`swiftstudy.validate.evaluators`) and the judge
(:mod:`swiftstudy.validate.judge`) implement :class:`Evaluator`; both import it from here, and only
``build_evaluator`` imports the judge, so the two modules do not import each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy.data import Example, load_examples
from swiftstudy.errors import InputError

_CHECKPOINTS_FIELD = "checkpoints"


@dataclass(frozen=True)
class EvalQuery:
    """A query of the eval set: the example (prompt and golden response) and what to check.

    Attributes:
        example: The prompt turns and the golden ``response``.
        checkpoints: Points a correct answer must get right, from the record's ``checkpoints``
            field (a string or a list of strings); only the judge reads them.
    """

    example: Example
    checkpoints: tuple[str, ...] = ()

    @property
    def golden(self) -> str:
        return self.example.response

    @property
    def query_text(self) -> str:
        """The prompt as text: the user turn alone, or ``role: content`` lines for several turns."""
        turns = self.example.prompt
        if len(turns) == 1:
            return turns[0].content
        return "\n".join(f"{message.role}: {message.content}" for message in turns)


@dataclass(frozen=True)
class Grade:
    """An evaluator's verdict on one answer.

    Attributes:
        correct: Whether the answer is right.
        extracted: What the evaluator read from the answer (the number, the label, the judge's
            reply), ``None`` when it found nothing.
    """

    correct: bool
    extracted: str | None = None


class Evaluator(ABC):
    """Grades answers against golden responses."""

    def check(self, queries: Sequence[EvalQuery]) -> None:  # noqa: B027 - an optional hook
        """Refuse golden responses this evaluator cannot read (before any model work).

        Raises:
            InputError: At the file and line of the first unreadable golden response.
        """

    @abstractmethod
    def grade_all(self, queries: Sequence[EvalQuery], answers: Sequence[str]) -> list[Grade]:
        """Grade ``answers[i]`` as an answer to ``queries[i]``."""


def load_eval_queries(
    path: Path, *, split: str | None = None, limit: int | None = None
) -> list[EvalQuery]:
    """Load the eval set: its examples (as any example file) and their optional checkpoints.

    Args:
        path: A JSONL file or a saved dataset, in the example formats.
        split: The split of a saved ``DatasetDict``.
        limit: Keep only the first ``limit`` queries.

    Raises:
        InputError: The file is not a valid example file, or a ``checkpoints`` field is not a
            string or a list of strings.
    """
    return [
        EvalQuery(e, _checkpoints(e.record.get(_CHECKPOINTS_FIELD), e.origin))
        for e in load_examples(path, split=split)
    ][:limit]


def _checkpoints(value: Any, origin: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InputError("must be a string or a list of strings", path=origin, key=_CHECKPOINTS_FIELD)
