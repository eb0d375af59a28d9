"""Write the example study's data: a base training set and the three CoT-study sets, by rule.

    python examples/cot-mini/make_data.py        # rewrites examples/cot-mini/data/*.jsonl

Every answer is computed, so it is right. Base-run tasks and study tasks are disjoint, as in the
paper: probes never appear in the base data set. The study sets follow the paper's CoT study:
``nocot.jsonl`` (Z, one plain example per task), ``similar.jsonl`` (Z', another plain example of
the same task) and ``cot.jsonl`` (Z'', the CoT version of Z: reasons first, then the answer).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

COT_SUFFIX = (
    " Please output the reason first and then the final answer, regardless of the above "
    "description."
)
WORDS = (
    "apple",
    "river",
    "stone",
    "cloud",
    "lemon",
    "tiger",
    "paper",
    "music",
    "glass",
    "honey",
    "mouse",
    "piano",
    "grape",
    "ocean",
    "chair",
    "light",
)
NAMES = ("Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana")
ITEMS = ("pens", "books", "stamps", "marbles", "cards", "shells")
UNITS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
POSITIVE = ("loved", "wonderful", "great", "delightful")
NEGATIVE = ("hated", "awful", "boring", "terrible")


# -- study tasks: (question, answer, reasons) -------------------------------------------------


def exchange(rng):
    a, b = rng.sample(NAMES, 2)
    item, x, k = rng.choice(ITEMS), rng.randint(6, 30), rng.randint(1, 5)
    q = f"{a} has {x} {item}. {a} gives {b} {k} {item}. How many {item} does {a} have now?"
    return q, str(x - k), f"{a} starts with {x} and gives away {k}, and {x} - {k} = {x - k}."


def number_words(rng):
    n = rng.randint(21, 99)
    words = TENS[n // 10] + ("" if n % 10 == 0 else "-" + UNITS[n % 10])
    q = f"Write the number {n} in English words."
    r = f"The tens digit {n // 10} gives {TENS[n // 10]}"
    r += "." if n % 10 == 0 else f" and the units digit {n % 10} gives {UNITS[n % 10]}."
    return q, words, r


def sentiment(rng):
    label = rng.choice(("positive", "negative"))
    word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
    thing = rng.choice(("film", "book", "meal", "concert"))
    q = f"Classify the review as positive or negative. Review: I {word} this {thing}."
    if word in ("great", "wonderful", "delightful", "awful", "boring", "terrible"):
        q = f"Classify the review as positive or negative. Review: This {thing} was {word}."
    return q, label, f"The word '{word}' expresses a {label} opinion."


INITIAL_WORDS = (*WORDS, "bread", "tulip", "ember", "north", "eagle", "dune", "umbrella", "nest")


def initials(rng):
    target = rng.choice(("ant", "cat", "dog", "bee", "emu"))
    chosen = [rng.choice([w for w in INITIAL_WORDS if w[0] == c]).capitalize() for c in target]
    q = f"Form a word from the first letters of: {', '.join(chosen)}."
    letters = ", ".join(w[0] for w in chosen)
    return q, target, f"The first letters are {letters}, which spell {target}."


def count_letter(rng):
    word = rng.choice(("banana", "letter", "balloon", "coffee", "pepper", "success", "mississippi"))
    letter = max(set(word), key=lambda c: (word.count(c), c))
    n = word.count(letter)
    q = f"How many times does the letter '{letter}' occur in '{word}'?"
    return q, str(n), f"Spelling '{word}' letter by letter, '{letter}' appears {n} times."


def largest(rng):
    nums = rng.sample(range(2, 99), 4)
    q = f"Which number is the largest: {', '.join(map(str, nums))}?"
    return q, str(max(nums)), f"Comparing them one by one, {max(nums)} is larger than the others."


def sort_words(rng):
    words = rng.sample(WORDS, 4)
    q = f"Sort these words alphabetically: {', '.join(words)}."
    s = sorted(words)
    return q, ", ".join(s), f"By first letters the order is {', '.join(w[0] for w in s)}."


def correct_spelling(rng):
    pairs = (
        ("recieve", "receive"),
        ("seperate", "separate"),
        ("definately", "definitely"),
        ("untill", "until"),
        ("wierd", "weird"),
        ("occured", "occurred"),
    )
    wrong, right = rng.choice(pairs)
    q = f"Correct the spelling of the word '{wrong}'."
    return q, right, f"The standard spelling of '{wrong}' is '{right}'."


STUDY_TASKS = (
    exchange,
    number_words,
    sentiment,
    initials,
    count_letter,
    largest,
    sort_words,
    correct_spelling,
)


# -- base-run tasks (disjoint from the study tasks) -------------------------------------------


def base_example(rng):
    kind = rng.randrange(5)
    word = rng.choice(WORDS)
    if kind == 0:
        return f"Write the word '{word}' in capital letters.", word.upper()
    if kind == 1:
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        return f"What is {a} plus {b}?", str(a + b)
    if kind == 2:
        ws = rng.sample(WORDS, 3)
        return f"Reverse the order of these words: {' '.join(ws)}.", " ".join(reversed(ws))
    if kind == 3:
        return f"How many letters does the word '{word}' have?", str(len(word))
    n = rng.randint(1, 98)
    return f"What number comes after {n}?", str(n + 1)


DATA_DIR = Path(__file__).resolve().parent / "data"


def main(out: Path = DATA_DIR, seed: int = 0) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    base = [dict(zip(("prompt", "response"), base_example(rng), strict=True)) for _ in range(256)]
    nocot, similar, cot = [], [], []
    for task in STUDY_TASKS:
        q, a, reasons = task(rng)
        q2, a2, _ = task(rng)
        while q2 == q:
            q2, a2, _ = task(rng)
        name = task.__name__
        nocot.append({"id": name, "task": name, "prompt": q, "response": a})
        similar.append({"id": name, "task": name, "prompt": q2, "response": a2})
        cot.append(
            {
                "id": name,
                "task": name,
                "prompt": q + COT_SUFFIX,
                "response": f"{reasons} So the answer is {a}.",
            }
        )
    for name, rows in (("base", base), ("nocot", nocot), ("similar", similar), ("cot", cot)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out / f"{name}.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
