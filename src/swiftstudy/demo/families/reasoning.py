"""Families that reason over numbers, counts and days: exchanges of items, weekdays, letter counts,
arithmetic and the largest number."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from swiftstudy.demo.families.base import Family, Problem, join_words, normalize, parse_int

NAMES = ("Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade")
ITEMS = ("pens", "books", "stamps", "marbles", "cards", "shells", "coins", "stickers")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
COUNT_WORDS = (
    "strawberry",
    "banana",
    "balloon",
    "coffee",
    "pepper",
    "success",
    "mississippi",
    "committee",
    "bookkeeper",
    "assessment",
    "parallel",
    "engineering",
)


# -- logic reasoning over an exchange of items ----------------------------------------------


def make_exchange(rng: random.Random) -> Problem:
    """Two people trade items twice; how many does one of them hold at the end?"""
    a, b = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    x, y = rng.randint(5, 20), rng.randint(5, 20)
    k1 = rng.randint(2, x)
    k2 = rng.randint(2, y + k1)
    ask = rng.choice((a, b))
    query = (
        f"{a} has {x} {item} and {b} has {y} {item}. {a} gives {b} {k1} {item}, then {b} gives "
        f"{a} {k2} {item}. How many {item} does {ask} have now?"
    )
    start = x if ask == a else y
    first = start - k1 if ask == a else start + k1
    final = first + k2 if ask == a else first - k2
    verb1, verb2 = ("gives away", "receives") if ask == a else ("receives", "gives away")
    reasons = (
        f"{ask} starts with {start} {item}.",
        f"In the first exchange {ask} {verb1} {k1}, so {ask} has {first}.",
        f"In the second exchange {ask} {verb2} {k2}, so {ask} ends with {final}.",
    )
    return Problem(
        query=query,
        answer=str(final),
        reasons=reasons,
        requirements=(
            f"Follow both exchanges in order and track the {item} {ask} holds.",
            f"Give the number of {item} {ask} has at the end, as a number.",
        ),
        bad_answer=str(first),
        flaw=f"The [output] says {first}, which ignores the second exchange; {ask} ends with "
        f"{final}",
        facts={"holdings": {a: x, b: y}, "moves": [[a, b, k1], [b, a, k2]], "ask": ask},
    )


def check_exchange(facts: Mapping[str, Any], response: str) -> bool:
    """Replay the moves on the holdings."""
    holdings = dict(facts["holdings"])
    for giver, taker, count in facts["moves"]:
        holdings[giver] -= count
        holdings[taker] += count
    return parse_int(response) == holdings[facts["ask"]]


# -- weekday arithmetic -----------------------------------------------------------------------


def make_weekday(rng: random.Random) -> Problem:
    """The day of the week some days after a given day."""
    start = rng.randrange(7)
    offset = rng.randint(8, 30)
    weeks, rest = divmod(offset, 7)
    day = DAYS[(start + offset) % 7]
    wrong = DAYS[(start + offset + 1) % 7]
    return Problem(
        query=f"Today is {DAYS[start]}. What day of the week will it be in {offset} days?",
        answer=day,
        reasons=(
            f"A week has 7 days, and {offset} = {weeks} x 7 + {rest}.",
            f"Whole weeks return to {DAYS[start]}, and {rest} more days after {DAYS[start]} "
            f"is {day}.",
        ),
        requirements=(
            f"Count {offset} days forward from {DAYS[start]}, wrapping around the week.",
            "Give the day of the week by its name.",
        ),
        bad_answer=wrong,
        flaw=f"The [output] says {wrong}, one day too far; {offset} days after {DAYS[start]} "
        f"is {day}",
        facts={"start": DAYS[start], "offset": offset},
    )


def check_weekday(facts: Mapping[str, Any], response: str) -> bool:
    """Step through the days one at a time."""
    index = DAYS.index(facts["start"])
    for _ in range(facts["offset"]):
        index = (index + 1) % 7
    return normalize(response) == DAYS[index].lower()


# -- counting letters -------------------------------------------------------------------------


def make_count_letter(rng: random.Random) -> Problem:
    """How often a letter occurs in a word."""
    word = rng.choice(COUNT_WORDS)
    letter = rng.choice(sorted(set(word)))
    positions = [str(i + 1) for i, c in enumerate(word) if c == letter]
    count = len(positions)
    wrong = count + 1 if count == 1 else count - 1
    where = f"position {positions[0]}" if count == 1 else f"positions {join_words(positions)}"
    return Problem(
        query=f"How many times does the letter '{letter}' occur in the word '{word}'?",
        answer=str(count),
        reasons=(
            f"Spelled out, '{word}' is {'-'.join(word)}.",
            f"The letter '{letter}' is at {where}, so it occurs {count} time"
            f"{'' if count == 1 else 's'}.",
        ),
        requirements=(
            f"Count every occurrence of the letter '{letter}' in '{word}'.",
            "Give the count as a number.",
        ),
        bad_answer=str(wrong),
        flaw=f"The [output] says {wrong}, but '{letter}' occurs {count} time"
        f"{'' if count == 1 else 's'} in '{word}'",
        facts={"word": word, "letter": letter},
    )


def check_count_letter(facts: Mapping[str, Any], response: str) -> bool:
    """Count the letter in the word."""
    return parse_int(response) == sum(c == facts["letter"] for c in facts["word"])


# -- arithmetic (base run) --------------------------------------------------------------------


def make_arithmetic(rng: random.Random) -> Problem:
    """A sum, a difference or a small product."""
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    else:
        a, b = sorted((rng.randint(10, 99), rng.randint(10, 99)), reverse=op == "-")
    value = a + b if op == "+" else a - b if op == "-" else a * b
    wrong = value + rng.choice((-10, -1, 1, 10))
    shown = {"+": "+", "-": "-", "*": "x"}[op]
    return Problem(
        query=f"What is {a} {shown} {b}?",
        answer=str(value),
        reasons=(f"{a} {shown} {b} = {value}.",),
        requirements=(f"Compute {a} {shown} {b}.", "Give the result as a number."),
        bad_answer=str(wrong),
        flaw=f"The [output] says {wrong}, but {a} {shown} {b} = {value}",
        facts={"a": a, "b": b, "op": op},
    )


def check_arithmetic(facts: Mapping[str, Any], response: str) -> bool:
    """Recompute the operation."""
    a, b, op = facts["a"], facts["b"], facts["op"]
    ops = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}
    return parse_int(response) == ops[op](a, b)


# -- the largest number (base run) ------------------------------------------------------------


def make_largest(rng: random.Random) -> Problem:
    """The largest of a few numbers."""
    numbers = rng.sample(range(2, 200), rng.randint(4, 6))
    ranked = sorted(numbers, reverse=True)
    others = join_words([str(n) for n in numbers if n != ranked[0]])
    return Problem(
        query=f"Which number is the largest: {', '.join(map(str, numbers))}?",
        answer=str(ranked[0]),
        reasons=(f"{ranked[0]} is larger than {others}.",),
        requirements=("Find the largest of the numbers.", "Give that number alone."),
        bad_answer=str(ranked[1]),
        flaw=f"The [output] says {ranked[1]}, but {ranked[0]} is larger",
        facts={"numbers": numbers},
    )


def check_largest(facts: Mapping[str, Any], response: str) -> bool:
    """Compare with every number."""
    value = parse_int(response)
    return value in facts["numbers"] and all(value >= n for n in facts["numbers"])


EXCHANGE = Family("exchange", make_exchange, check_exchange)
WEEKDAY = Family("weekday", make_weekday, check_weekday)
COUNT_LETTER = Family("count_letter", make_count_letter, check_count_letter)
ARITHMETIC = Family("arithmetic", make_arithmetic, check_arithmetic)
LARGEST = Family("largest", make_largest, check_largest)
