"""The demo's task families and data set: answers verified by each family's own checker."""

from __future__ import annotations

import json
import random
import shlex
from pathlib import Path

import pytest

from swiftstudy.cli.main import main
from swiftstudy.data import load_examples
from swiftstudy.demo.dataset import SETS, draw_study_tasks, read_jsonl, write_demo_data
from swiftstudy.demo.families import BASE_FAMILIES, FAMILIES, STUDY_FAMILIES
from swiftstudy.demo.recipes import write_recipes

SEEDS = range(200)
COT_ANSWER = "\nSo the final answer is: "


def test_twelve_study_families_disjoint_from_the_base_families():
    assert len(STUDY_FAMILIES) >= 12
    study, base = {f.name for f in STUDY_FAMILIES}, {f.name for f in BASE_FAMILIES}
    assert len(study) == len(STUDY_FAMILIES) and base and not study & base
    # the task types the paper lists
    assert {
        "exchange",
        "classify",
        "number_words",
        "similarity",
        "error_correction",
        "initials",
        "controlled_edit",
        "paragraph_split",
        "extract_list",
    } <= study


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_checker_accepts_the_answer_and_rejects_the_bad_answer(name: str):
    family = FAMILIES[name]
    for seed in SEEDS:
        problem = family.make(random.Random(seed))
        assert family.check(problem.facts, problem.answer), (seed, problem)
        assert not family.check(problem.facts, problem.bad_answer), (seed, problem)
        assert problem.bad_answer != problem.answer
        assert problem.reasons and len(problem.requirements) >= 2
        assert "final answer" not in " ".join(problem.reasons).lower()
        assert "conclusion" not in (" ".join(problem.requirements) + problem.flaw).lower()
        assert problem.flaw.startswith("The [output] ")
        json.dumps(dict(problem.facts))  # the records carry the facts


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_families_are_deterministic_and_varied(name: str):
    family = FAMILIES[name]
    first = [family.make(random.Random(seed)) for seed in range(20)]
    assert first == [family.make(random.Random(seed)) for seed in range(20)]
    assert len({p.query for p in first}) >= 5


NEAR_MISS_FACTS = {
    "number_words": {"number": 347},
    "sort_words": {"words": ["lemon", "apple", "cloud", "music"]},
    "paragraph_split": {"paragraph": "A b. C d."},
    "exchange": {"holdings": {"Ann": 5, "Ben": 3}, "moves": [["Ann", "Ben", 2]], "ask": "Ben"},
}


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("number_words", "three hundred forty-seven", "three hundred forty seven"),  # no hyphen
        ("number_words", "three hundred forty-seven", "Three hundred forty-seven"),
        ("number_words", "three hundred forty-seven.", "three hundred forty-eight"),
        ("sort_words", "apple, cloud, lemon, music", "apple, cloud, lemon"),  # a word left out
        ("paragraph_split", "1. A b. [END]\n2. C d. [END]", "1. A b. [END]\n3. C d. [END]"),
        ("paragraph_split", "1. A b. [END]\n2. C d. [END]", "1. A b. C d. [END]"),
        ("exchange", "5", "3"),
    ],
)
def test_checkers_reject_near_misses(name: str, good: str, bad: str):
    facts = NEAR_MISS_FACTS[name]
    assert FAMILIES[name].check(facts, good)
    assert not FAMILIES[name].check(facts, bad)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_demo_data(tmp_path_factory.mktemp("demo") / "data", seed=0)


def _checker(record: dict):
    return FAMILIES[record["task"]].check


def test_every_set_has_one_example_per_study_task(data: dict[str, Path]):
    tasks = [f.name for f in STUDY_FAMILIES]
    for name in SETS:
        examples = load_examples(data[name])
        assert [e.task for e in examples] == tasks, name
        assert [e.id for e in examples] == tasks, name


def test_base_data_shares_no_task_and_no_query_with_the_study(data: dict[str, Path]):
    base = read_jsonl(data["base"])
    assert len(base) >= 200
    assert {r["task"] for r in base} == {f.name for f in BASE_FAMILIES}
    study_prompts = {e.prompt[-1].content for n in SETS for e in load_examples(data[n])}
    assert not study_prompts & {r["prompt"] for r in base}
    for record in base:
        assert _checker(record)(record["facts"], record["response"])


def test_study_answers_pass_and_bad_answers_fail_the_checkers(data: dict[str, Path]):
    nocot = {r["id"]: r for r in read_jsonl(data["nocot"])}
    for record in nocot.values():
        assert _checker(record)(record["facts"], record["response"])
    for record in read_jsonl(data["similar"]):
        facts = nocot[record["id"]]["similar_facts"]
        assert _checker(record)(facts, record["response"])
        assert record["prompt"] != nocot[record["id"]]["prompt"]
    for record in read_jsonl(data["similar_neg"]):
        assert not _checker(record)(record["facts"], record["response"])
    for record in read_jsonl(data["neg"]):
        assert record["prompt"] == nocot[record["id"]]["prompt"]
        assert not _checker(record)(record["facts"], record["response"])
    for record in read_jsonl(data["pos"]):
        reference = nocot[record["id"]]
        assert record["prompt"].startswith(reference["prompt"] + "\n\nRequirements:\n1. ")
        assert _checker(record)(reference["facts"], record["response"])


def test_derived_sets_follow_the_strategies(data: dict[str, Path]):
    nocot = {r["id"]: r for r in read_jsonl(data["nocot"])}
    for record in read_jsonl(data["cot"]):
        reasoning, answer = record["response"].split(COT_ANSWER)
        assert reasoning and answer == nocot[record["id"]]["response"]
        assert "reason first" in record["prompt"]
    pos = {r["id"]: r for r in read_jsonl(data["pos"])}
    for record in read_jsonl(data["clarify"]):
        assert record["response"] == pos[record["id"]]["prompt"]
        assert nocot[record["id"]]["prompt"] in record["prompt"]
    for name, verdict in (("eval_pos", "meets"), ("eval_neg", "does not meet")):
        for record in read_jsonl(data[name]):
            assert record["response"].endswith(f"the [output] {verdict} all the requirements.")
            assert record["prompt"].startswith(f"[Input]\n{nocot[record['id']]['prompt']}\n")
    assert all(r["label"] == "negative" for r in read_jsonl(data["eval_neg"]))


def test_same_seed_same_files_other_seed_other_problems(data: dict[str, Path], tmp_path: Path):
    again = write_demo_data(tmp_path / "again", seed=0)
    for name, path in data.items():
        assert again[name].read_bytes() == path.read_bytes(), name
    assert draw_study_tasks(1) != draw_study_tasks(0)


def test_fewer_tasks_write_the_first_tasks_of_the_full_sets(data: dict[str, Path], tmp_path: Path):
    # What ``demo --quick`` studies: the same examples as the full sets' first three tasks.
    few = write_demo_data(tmp_path / "few", seed=0, tasks=3)
    assert few["base"].read_bytes() == data["base"].read_bytes()
    for name in SETS:
        assert read_jsonl(few[name]) == read_jsonl(data[name])[:3], name
    for tasks in (0, len(STUDY_FAMILIES) + 1):
        with pytest.raises(ValueError, match="tasks must be 1 to 12"):
            write_demo_data(tmp_path / "bad", seed=0, tasks=tasks)


def test_the_probes_commands_in_the_spec_headers_remake_the_sets(tmp_path: Path):
    files = write_recipes(tmp_path, ["cot", "clarify", "eval"], shown_dir=str(tmp_path))
    before = {name: path.read_bytes() for name, path in files.data.items()}
    commands = {
        line.removeprefix("#").strip()
        for spec in files.specs.values()
        for line in spec.read_text(encoding="utf-8").splitlines()
        if line.startswith("#   swiftstudy probes ")
    }
    assert len(commands) == 5  # similar, cot, clarify, eval_pos, eval_neg
    for path in files.data.values():
        if path.name != "nocot.jsonl" and path.name != "neg.jsonl" and path.name != "base.jsonl":
            path.unlink(missing_ok=True)
    for command in sorted(commands):
        assert main([*shlex.split(command)[1:], "--no-progress"]) == 0, command
    for name in ("similar", "cot", "pos", "clarify", "eval_pos", "eval_neg"):
        assert files.data[name].read_bytes() == before[name], name
