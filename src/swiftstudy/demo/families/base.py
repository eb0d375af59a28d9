"""The shape of a demo task family: a problem maker and a checker that verifies answers.

A family makes problems from a seeded ``random.Random``; each problem carries, by rule, everything
the paper's strategies need: the plain answer, the reasons a chain-of-thought answer gives first,
the requirements a clarified query lists, and a wrong answer (for negative examples) with what is
wrong with it. The checker verifies a response from the problem's ``facts`` by its own route (it
re-parses, re-simulates or re-counts), so a test can hold the maker to it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One rule-made example and its derived texts.

    Attributes:
        query: The instruction the user gives.
        answer: The correct response.
        reasons: The steps a chain-of-thought response writes before the answer.
        requirements: What a correct response must do. By convention the bad answer fails the
            first requirement and meets the others.
        bad_answer: A wrong response of the right form, which the checker rejects.
        flaw: Why ``bad_answer`` fails the first requirement, as a sentence about "the [output]".
        facts: The problem's data (JSON-ready), all the checker reads.
    """

    query: str
    answer: str
    reasons: tuple[str, ...]
    requirements: tuple[str, ...]
    bad_answer: str
    flaw: str
    facts: Mapping[str, Any]


@dataclass(frozen=True)
class Family:
    """A task type: makes problems and checks responses.

    Attributes:
        name: The task name the examples carry (``task`` in the JSONL).
        make: Draws one problem from a seeded random generator.
        check: Whether a response is a correct answer to the problem with these facts.
    """

    name: str
    make: Callable[[random.Random], Problem]
    check: Callable[[Mapping[str, Any], str], bool]


def normalize(response: str) -> str:
    """A one-line answer without surrounding space, a final period or case."""
    return response.strip().rstrip(".").strip().lower()


def parse_int(response: str) -> int | None:
    """The integer a one-number answer states, or None when it is not one integer."""
    text = response.strip().rstrip(".")
    try:
        return int(text)
    except ValueError:
        return None


def join_words(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: a list in running text."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"
