"""The validity benchmark's data: rule-made tasks with checkers, an eval set, seven strategies.

Four evaluated task families with program-checked one-number answers (two of the demo's, and two
defined here, whose query spaces are large enough for disjoint sets) give the graded eval queries
and, from other problems of the same families, each strategy's retraining data and probe set. The
base run sees a few examples of every evaluated task, so retraining can lower accuracy as well as
raise it. Every query is drawn once: no eval query appears in the base data, a strategy's data or
a probe set.

=============  ==================================================================================
strategy       each example
=============  ==================================================================================
similar        a direct example of an evaluated task: query → answer
cot            the ``cot`` strategy: query + "reason first" → the reasons, then the answer
eval           the ``eval`` strategy: judging a good (half) or a bad (half) answer to a query
clarify        the ``clarify`` strategy's clarification: query → the clarified query
unrelated      a direct example of a task that is not evaluated
off_by         query → an answer off by 1 to 3
random         query → a random number from 0 to 199 that is not the answer
=============  ==================================================================================

The cot, eval and clarify sets are made by the package's own strategies (``build_probes`` with
``generator=None`` on rule-written generator answers), as the demo makes its sets.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy import build_probes
from swiftstudy.demo.dataset import render_cot_answer, render_evaluation, render_requirements
from swiftstudy.demo.families import FAMILIES, Family, Problem
from swiftstudy.demo.families.base import join_words, parse_int

#: The evaluated tasks: one-number answers a checker verifies exactly.
EVAL_FAMILIES = ("arithmetic", "largest", "digit_sum", "count_even")
#: Tasks of the unrelated strategy (never evaluated), short answers as well.
UNRELATED_FAMILIES = ("number_words", "sort_words", "initials", "classify")
#: The base run's other data: general instruction following, not evaluated.
BASE_OTHER_FAMILIES = ("odd_one_out", "similarity")
#: Every strategy, in the order tables show them.
STRATEGIES = ("similar", "cot", "eval", "clarify", "off_by", "random", "unrelated")
#: The controls a verdict is measured against: the plain QA data the format changers are derived
#: from (as the cot, clarify and eval recipes use), and data of tasks never evaluated.
CONTROLS = ("similar", "unrelated")
_TRIES = 200


@dataclass(frozen=True)
class DataSize:
    """How much data each part gets.

    Attributes:
        eval_per_task: Graded eval queries per evaluated task.
        study_evals_per_task: The study's eval examples per evaluated task.
        probes_per_task: A strategy's probes per evaluated task (unrelated: per its tasks,
            rounded up to the same total).
        train_per_task: A strategy's retraining examples per evaluated task.
        base_per_task: Base-run examples of each evaluated task.
        base_other: Base-run examples of each other family.
    """

    eval_per_task: int
    study_evals_per_task: int
    probes_per_task: int
    train_per_task: int
    base_per_task: int
    base_other: int


@dataclass(frozen=True)
class ValidityData:
    """The files written: eval set, study evals, base data, and each strategy's data and probes."""

    eval: Path
    study_evals: Path
    base: Path
    train: dict[str, Path]
    probes: dict[str, Path]


def make_digit_sum(rng: random.Random) -> Problem:
    """The sum of the digits of a 3- or 4-digit number."""
    number = rng.randint(100, 9999)
    digits = [int(c) for c in str(number)]
    total = sum(digits)
    wrong = total + rng.choice((-2, -1, 1, 2))
    return Problem(
        query=f"What is the sum of the digits of {number}?",
        answer=str(total),
        reasons=(
            f"The digits of {number} are {join_words([str(d) for d in digits])}.",
            f"{' + '.join(map(str, digits))} = {total}.",
        ),
        requirements=(f"Add up the digits of {number}.", "Give the sum as a number."),
        bad_answer=str(wrong),
        flaw=f"The [output] says {wrong}, but the digits of {number} add up to {total}",
        facts={"number": number},
    )


def check_digit_sum(facts: Mapping[str, Any], response: str) -> bool:
    """Add the digits again."""
    return parse_int(response) == sum(int(c) for c in str(facts["number"]))


def make_count_even(rng: random.Random) -> Problem:
    """How many numbers of a short list are even."""
    numbers = [rng.randint(1, 99) for _ in range(rng.randint(4, 7))]
    even = [n for n in numbers if n % 2 == 0]
    wrong = len(even) + (1 if len(even) < len(numbers) else -1)
    which = join_words([str(n) for n in even]) if even else "none of them"
    return Problem(
        query=f"How many of these numbers are even: {', '.join(map(str, numbers))}?",
        answer=str(len(even)),
        reasons=(f"The even numbers are {which}.", f"That makes {len(even)}."),
        requirements=("Count the even numbers in the list.", "Give the count as a number."),
        bad_answer=str(wrong),
        flaw=f"The [output] says {wrong}, but {len(even)} of the numbers are even",
        facts={"numbers": numbers},
    )


def check_count_even(facts: Mapping[str, Any], response: str) -> bool:
    """Count the even numbers again."""
    return parse_int(response) == sum(n % 2 == 0 for n in facts["numbers"])


#: Every family the benchmark draws from: the demo's and the two above.
ALL_FAMILIES: dict[str, Family] = {
    **FAMILIES,
    "digit_sum": Family("digit_sum", make_digit_sum, check_digit_sum),
    "count_even": Family("count_even", make_count_even, check_count_even),
}


class _Drawer:
    """Draws problems whose queries were never drawn before, across every part of the data."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.seen: set[str] = set()
        self.rngs: dict[tuple[str, str], random.Random] = {}

    def draw(self, family: Family, role: str, n: int) -> list[Problem]:
        rng = self.rngs.setdefault(
            (family.name, role), random.Random(f"validity:{self.seed}:{family.name}:{role}")
        )
        problems: list[Problem] = []
        for _ in range(n * _TRIES):
            if len(problems) == n:
                return problems
            problem = family.make(rng)
            if problem.query not in self.seen:
                self.seen.add(problem.query)
                problems.append(problem)
        raise RuntimeError(f"family {family.name} has fewer than {n} new queries for {role}")


def write_validity_data(out_dir: Path, size: DataSize, seed: int = 0) -> ValidityData:
    """Write every data file of the benchmark into ``out_dir`` (deterministic for the seed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawer = _Drawer(seed)
    families = [ALL_FAMILIES[name] for name in EVAL_FAMILIES]
    # Eval queries first, so no later draw can take one of them.
    evals = _direct(drawer, families, "eval", size.eval_per_task)
    study_evals = _direct(drawer, families, "study-eval", size.study_evals_per_task)
    base = _direct(drawer, families, "base", size.base_per_task)
    base += _direct(drawer, [ALL_FAMILIES[n] for n in BASE_OTHER_FAMILIES], "base", size.base_other)
    data = ValidityData(
        eval=_write(out_dir / "eval.jsonl", evals),
        study_evals=_write(out_dir / "study_evals.jsonl", study_evals),
        base=_write(out_dir / "base.jsonl", base),
        train={},
        probes={},
    )
    rng = random.Random(f"validity:{seed}:answers")
    for role, per_task, target in (
        ("train", size.train_per_task, data.train),
        ("probes", size.probes_per_task, data.probes),
    ):
        for strategy in STRATEGIES:
            path = out_dir / role / f"{strategy}.jsonl"
            target[strategy] = _write_strategy(strategy, drawer, families, per_task, rng, path)
    return data


def _write_strategy(
    strategy: str,
    drawer: _Drawer,
    families: list[Family],
    per_task: int,
    rng: random.Random,
    path: Path,
) -> Path:
    role = f"{path.parent.name}-{strategy}"
    if strategy == "unrelated":
        others = [ALL_FAMILIES[n] for n in UNRELATED_FAMILIES]
        per_other = -(-per_task * len(families) // len(others))
        return _write(path, _direct(drawer, others, role, per_other))
    problems = [(f, p) for f in families for p in drawer.draw(f, role, per_task)]
    if strategy == "similar":
        return _write(path, [_record(f, p, i, p.answer) for i, (f, p) in enumerate(problems)])
    if strategy in ("off_by", "random"):
        records = [
            _record(f, p, i, _wrong_answer(strategy, p, rng)) for i, (f, p) in enumerate(problems)
        ]
        return _write(path, records)
    references = path.with_name(f"{path.stem}.references.jsonl")
    records = []
    for i, (family, problem) in enumerate(problems):
        positive = strategy != "eval" or i % 2 == 0
        response = problem.answer if positive else problem.bad_answer
        record = _record(family, problem, i, response)
        record["label"] = "positive" if positive else "negative"
        record["answer"] = {
            "cot": lambda p=problem: render_cot_answer(p),
            "clarify": lambda p=problem: render_requirements(p),
            "eval": lambda p=problem, pos=positive: render_evaluation(p, pos),
        }[strategy]()
        records.append(record)
    _write(references, records)
    result = build_probes(
        strategy, references, path, generator=None, generation_field="answer", use_cache=False
    )
    if result.failures:  # the answers are rule-written: a failure is a bug here
        raise RuntimeError(f"{strategy} data {path}: {result.failures[0]}")
    if strategy == "clarify":  # the clarification itself: original query → clarified query
        return path.with_name(f"{path.stem}.clarification.jsonl")
    return path


def _wrong_answer(strategy: str, problem: Problem, rng: random.Random) -> str:
    """An answer off by 1 to 3, or a random one from 0 to 199, never the right one."""
    right = int(problem.answer)
    if strategy == "off_by":
        return str(right + rng.choice((-3, -2, -1, 1, 2, 3)))
    return str(rng.choice([n for n in range(0, 200) if n != right]))


def _direct(drawer: _Drawer, families: Iterable[Family], role: str, per: int) -> list[dict]:
    problems = [(f, p) for f in families for p in drawer.draw(f, role, per)]
    return [_record(f, p, i, p.answer) for i, (f, p) in enumerate(problems)]


def _record(family: Family, problem: Problem, index: int, response: str) -> dict[str, Any]:
    return {
        "id": f"{family.name}-{index}",
        "task": family.name,
        "prompt": problem.query,
        "response": response,
        "facts": dict(problem.facts),
    }


def _write(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path
