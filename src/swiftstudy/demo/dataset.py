"""The demo data set: a base run's training data and the probe and evaluation sets of the paper's
three studies, all made by rule from the task families, deterministic for a seed.

Every study family gives one task: a reference example Z (``nocot.jsonl``) and a similar example
Z' of the same task. The reference records also carry, by rule, the answers a generator would
give each built-in strategy (``cot_answer``, ``clarify_answer``, ``similar_answer``,
``eval_answer``), so the sets are made with the same ``swiftstudy probes`` strategies (and
templates) as real data, with ``--generator none``:

=====================================  ==========  ================================================
file                                   symbol      content
=====================================  ==========  ================================================
``base.jsonl``                                     base-run data, from the other families only
``nocot.jsonl``                        Z           one plain example per study task
``similar.jsonl``                      Z', Z'_pos  another plain example of each task
``cot.jsonl``                          Z''         Z answered with reasons first (strategy ``cot``)
``pos.jsonl``                          Z_pos       clarified query → good response (``clarify``)
``pos.clarification.jsonl``            Z_clarify   original query → clarified query (``clarify``)
``neg.jsonl``                          Z_neg       original query → a wrong response
``similar_neg.jsonl``                  Z'_neg      Z' with a wrong response
``eval_pos.jsonl``                     E_pos       judging Z_pos's good response to Z's query
``eval_neg.jsonl``                     E_neg       judging Z_neg's bad response to Z's query
=====================================  ==========  ================================================

Records keep the problem's ``facts``, so each family's checker can verify the answers.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from swiftstudy.demo.families import BASE_FAMILIES, STUDY_FAMILIES, Family, Problem
from swiftstudy.fileio import write_text_atomic
from swiftstudy.probes import build_probes

logger = logging.getLogger(__name__)

#: Base-run examples drawn per base family (duplicates are dropped, so some give fewer).
BASE_EXAMPLES_PER_FAMILY = 80
#: Tries at drawing a similar example whose query differs from the reference's.
_SIMILAR_TRIES = 100

BASE_FILE = "base.jsonl"


class DemoSet(NamedTuple):
    """A demo set: its file in the data folder, the paper's symbol for it, and what it holds."""

    file: str
    symbol: str
    note: str


#: Each set by the name the recipes use.
SETS = {
    "nocot": DemoSet("nocot.jsonl", "Z", "one plain example per task"),
    "similar": DemoSet("similar.jsonl", "Z'", "another plain example of each task"),
    "similar_pos": DemoSet(
        "similar.jsonl", "Z'_pos", "another example of each task, good response"
    ),
    "cot": DemoSet("cot.jsonl", "Z''", "each Z with reasons first, then the answer"),
    "pos": DemoSet("pos.jsonl", "Z_pos", "clarified query, good response"),
    "clarify": DemoSet("pos.clarification.jsonl", "Z_clarify", "original query -> clarified query"),
    "neg": DemoSet("neg.jsonl", "Z_neg", "original query, bad response"),
    "similar_neg": DemoSet("similar_neg.jsonl", "Z'_neg", "Z'_pos's query, bad response"),
    "eval_pos": DemoSet("eval_pos.jsonl", "E_pos", "judging Z_pos's good response to Z's query"),
    "eval_neg": DemoSet("eval_neg.jsonl", "E_neg", "judging Z_neg's bad response to Z's query"),
}
#: The reference field holding each strategy's rule-written answer (``--generation-field``).
GENERATION_FIELDS = {
    "similar": "similar_answer",
    "cot": "cot_answer",
    "clarify": "clarify_answer",
    "eval": "eval_answer",
}
#: The ``probes`` command that fills a set: (strategy, input set), by output set.
PROBES_COMMANDS = {
    "similar": ("similar", "nocot"),
    "cot": ("cot", "nocot"),
    "pos": ("clarify", "nocot"),
    "eval_pos": ("eval", "nocot"),
    "eval_neg": ("eval", "neg"),
}


@dataclass(frozen=True)
class StudyTask:
    """One study task: its family, the reference problem Z and the similar problem Z'."""

    family: Family
    reference: Problem
    similar: Problem


def family_rng(seed: int, family: Family, role: str) -> random.Random:
    """A generator for one family and role, independent of the other families' draws."""
    return random.Random(f"swiftstudy-demo:{seed}:{family.name}:{role}")


def draw_study_tasks(seed: int) -> list[StudyTask]:
    """One reference and one similar problem (with a different query) per study family."""
    tasks = []
    for family in STUDY_FAMILIES:
        rng = family_rng(seed, family, "study")
        reference = family.make(rng)
        for _ in range(_SIMILAR_TRIES):
            similar = family.make(rng)
            if similar.query != reference.query:
                break
        else:
            raise RuntimeError(f"family {family.name} makes no second distinct query")
        tasks.append(StudyTask(family, reference, similar))
    return tasks


def draw_base_examples(seed: int, per_family: int = BASE_EXAMPLES_PER_FAMILY) -> list[dict]:
    """The base run's examples: distinct queries of the base families, as JSONL records."""
    records = []
    for family in BASE_FAMILIES:
        rng = family_rng(seed, family, "base")
        seen: set[str] = set()
        for _ in range(per_family):
            problem = family.make(rng)
            if problem.query in seen:
                continue
            seen.add(problem.query)
            records.append(_record(f"{family.name}-{len(seen)}", family, problem, problem.answer))
    return records


def render_cot_answer(problem: Problem) -> str:
    """What a generator answers the ``cot`` strategy: the reasons, then a final-answer line."""
    return "\n".join(problem.reasons) + f"\nFinal answer: {problem.answer}"


def render_requirements(problem: Problem) -> str:
    """What a generator answers the ``clarify`` strategy: the numbered requirements."""
    return "\n".join(f"{i}. {req}" for i, req in enumerate(problem.requirements, 1))


def render_evaluation(problem: Problem, positive: bool) -> str:
    """What a generator answers the ``eval`` strategy: each requirement and whether it is met.

    A good response meets every requirement; the bad answer fails the first one (the families'
    convention), for the reason the problem's ``flaw`` gives.
    """
    meets = "The [output] meets this requirement."
    fails = f"{problem.flaw}, so it does not meet this requirement."
    return "\n".join(
        f"{i}. {req} {fails if i == 1 and not positive else meets}"
        for i, req in enumerate(problem.requirements, 1)
    )


def write_demo_data(
    data_dir: str | Path, seed: int = 0, *, tasks: int | None = None
) -> dict[str, Path]:
    """Write the base data and every study set (see the module docstring) into ``data_dir``.

    Args:
        data_dir: The folder to write (created if needed); files of the same names are replaced.
        seed: Draws the problems; the same seed writes the same files.
        tasks: Make the study sets of the first ``tasks`` study families only (default: all
            of them). Each family draws from its own generator, so those tasks' examples are the
            same as in the full sets; the base data does not change.

    Returns:
        Each set's file by set name (see ``SETS``), and ``base`` for the base data.
    """
    data_dir = Path(data_dir)
    if tasks is not None and not 1 <= tasks <= len(STUDY_FAMILIES):
        raise ValueError(f"tasks must be 1 to {len(STUDY_FAMILIES)}, not {tasks}")
    drawn = draw_study_tasks(seed)[:tasks]
    files = {name: data_dir / s.file for name, s in SETS.items()}  # similar_pos = similar
    files["base"] = data_dir / BASE_FILE
    _write_jsonl(files["base"], draw_base_examples(seed))
    _write_jsonl(files["nocot"], [_reference_record(t) for t in drawn])
    _write_jsonl(files["neg"], [_negative_record(t, t.reference, True) for t in drawn])
    _write_jsonl(files["similar_neg"], [_negative_record(t, t.similar, False) for t in drawn])
    # Run the built-in strategies on the rule-written answers, as ``--generator none`` does.
    for out_set, (strategy, in_set) in PROBES_COMMANDS.items():
        result = build_probes(
            strategy,
            files[in_set],
            files[out_set],
            generator=None,
            generation_field=GENERATION_FIELDS[strategy],
            use_cache=False,
        )
        if result.failures:  # the answers are ours: a failure is a bug in this module
            raise RuntimeError(f"{strategy} probes from {files[in_set]}: {result.failures[0]}")
    logger.info("wrote the demo data (%d study tasks) to %s", len(drawn), data_dir)
    return files


def _record(example_id: str, family: Family, problem: Problem, response: str) -> dict[str, Any]:
    return {
        "id": example_id,
        "task": family.name,
        "prompt": problem.query,
        "response": response,
        "facts": dict(problem.facts),
    }


def _reference_record(task: StudyTask) -> dict[str, Any]:
    """Z, with each strategy's rule-written answer and the similar problem's facts."""
    similar = task.similar
    return {
        **_record(task.family.name, task.family, task.reference, task.reference.answer),
        "similar_facts": dict(similar.facts),
        GENERATION_FIELDS["similar"]: f"Query: {similar.query}\nResponse: {similar.answer}",
        GENERATION_FIELDS["cot"]: render_cot_answer(task.reference),
        GENERATION_FIELDS["clarify"]: render_requirements(task.reference),
        GENERATION_FIELDS["eval"]: render_evaluation(task.reference, True),
    }


def _negative_record(task: StudyTask, problem: Problem, with_evaluation: bool) -> dict[str, Any]:
    record = _record(task.family.name, task.family, problem, problem.bad_answer)
    record["label"] = "negative"
    if with_evaluation:
        record[GENERATION_FIELDS["eval"]] = render_evaluation(problem, False)
    return record


def _write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_text_atomic(path, "".join(lines))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL file the demo wrote."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
