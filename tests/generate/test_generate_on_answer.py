"""``Generator.generate``: answers in prompt order, ``on_answer`` called once per answer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from swiftstudy.data import Message
from swiftstudy.generate import GenerationError, Generator
from swiftstudy.generate.base import Prompt


class _Reversed(Generator):
    """Answers the prompts last to first (as a concurrent server may), or leaves one out."""

    def __init__(self, skip: int | None = None) -> None:
        self.skip = skip

    @property
    def settings(self) -> dict:
        return {"generator": "reversed"}

    def iter_generate(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        for index in reversed(range(len(prompts))):
            if index != self.skip:
                yield index, prompts[index][0].content.upper()


PROMPTS = [(Message("user", text),) for text in ("a", "b", "c")]


def test_answers_come_in_prompt_order_and_each_is_counted():
    counted: list[int] = []
    answers = _Reversed().generate(PROMPTS, on_answer=lambda: counted.append(1))
    assert answers == ["A", "B", "C"]
    assert len(counted) == 3
    assert _Reversed().device is None  # no local model


def test_a_missing_answer_is_an_error():
    with pytest.raises(GenerationError, match=r"no answer for prompts \[1\]"):
        _Reversed(skip=1).generate(PROMPTS)
