"""The benchmark workload: chain-of-thought and one-number answers of mixed lengths, by rule.

Deterministic for a seed, no model needed. Mirrors the issue's measurement: 48 examples, about
7.5k tokens of which about a third are completion tokens.
"""

from __future__ import annotations

import random

from swiftstudy.data import Example, Message

_ITEMS = ("apples", "pens", "books", "stamps", "marbles", "cards", "shells", "coins")
_NAMES = ("Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana")
_FILLER = (
    "Read the question carefully and make sure every quantity is accounted for. "
    "Some details may be irrelevant to the answer, and the exchange happens only once. "
)


def _problem(rng: random.Random) -> tuple[str, int, str]:
    a, b = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    x, y, k = rng.randint(5, 40), rng.randint(5, 40), rng.randint(1, 4)
    question = (
        f"{a} has {x} {item} and {b} has {y} {item}. {a} gives {b} {k} {item}, then {b} gives "
        f"{a} twice as many {item} back. How many {item} does {a} have now?"
    )
    answer = x - k + 2 * k
    reasons = (
        f"At first {a} has {x} {item}. After giving {k} to {b}, {a} has {x} - {k} = {x - k}. "
        f"{b} then gives back twice {k}, which is {2 * k}. So {a} ends with {x - k} + {2 * k} = "
        f"{answer} {item}. Checking: {b} started with {y}, received {k} and gave {2 * k}, so "
        f"{b} has {y + k - 2 * k} left, and the total {x + y} is unchanged. "
    )
    return question, answer, reasons


def make_workload(n: int = 48, *, seed: int = 0) -> list[Example]:
    """``n`` examples: even ones with a reasoned (CoT) answer, odd ones with a bare number."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        question, answer, reasons = _problem(rng)
        prompt = _FILLER * rng.randint(0, 2) + question
        if i % 2 == 0:
            prompt += " Please output the reason first and then the final answer."
            response = reasons * rng.randint(1, 2) + f"The answer is {answer}."
        else:
            response = str(answer)
        examples.append(
            Example(
                id=str(i),
                task=str(i),
                prompt=(Message("user", prompt),),
                response=response,
                origin=f"workload[{i}]",
            )
        )
    return examples
