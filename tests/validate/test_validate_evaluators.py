"""Evaluators: what each one reads from an answer, and the golden responses it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftstudy.data import Example, Message
from swiftstudy.errors import InputError
from swiftstudy.validate.evaluator_spec import EvaluatorSpec
from swiftstudy.validate.evaluators import (
    CallableEvaluator,
    ChoiceEvaluator,
    ContainsEvaluator,
    ExactEvaluator,
    NumericEvaluator,
    RegexEvaluator,
    build_evaluator,
    extract_last_number,
    normalize_text,
)
from swiftstudy.validate.grading import EvalQuery, load_eval_queries


def _query(golden: str, prompt: str = "q", checkpoints: tuple[str, ...] = ()) -> EvalQuery:
    example = Example("0", "t", (Message("user", prompt),), golden, "eval.jsonl:1")
    return EvalQuery(example, checkpoints)


def _grades(evaluator, golden: str, answers: list[str]) -> list[bool]:
    query = _query(golden)
    return [g.correct for g in evaluator.grade_all([query] * len(answers), answers)]


def test_normalize_text():
    assert normalize_text("  The   Answer.\n") == "the answer"
    assert normalize_text("ＡＢＣ") == "abc"  # NFKC: full-width letters
    assert normalize_text("Yes.", case_sensitive=True) == "Yes"
    assert normalize_text("e.g..") == "e.g."  # one trailing full stop only


def test_exact():
    assert _grades(ExactEvaluator(), "Paris", ["paris", " Paris. ", "Paris, France", ""]) == [
        True,
        True,
        False,
        False,
    ]
    assert _grades(ExactEvaluator(case_sensitive=True), "Paris", ["paris", "Paris"]) == [
        False,
        True,
    ]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", 42.0),
        ("The answer is 42.", 42.0),
        ("6 - 3 = 3. So the answer is 3.", 3.0),
        ("It costs 1,234.50 dollars", 1234.5),
        ("-7 degrees", -7.0),
        ("from 3-5", 5.0),  # a range, not minus five
        ("x2 and 1e3", 1000.0),
        ("version 2.0.", 2.0),
        ("no digits", None),
        ("list: 3, 4, 5", 5.0),
        ("−12", -12.0),  # a Unicode minus sign
    ],
)
def test_extract_last_number(text, number):
    assert extract_last_number(text) == number


def test_numeric_reads_the_last_number_of_both_sides():
    evaluator = NumericEvaluator(tolerance=1e-6)
    golden = "Ann starts with 6 and gives away 3, and 6 - 3 = 3. So the answer is 3."
    assert _grades(evaluator, golden, ["3", "It is 3.", "3.0000001", "4", "three"]) == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert _grades(NumericEvaluator(tolerance=0.5), "10", ["10.4", "10.6"]) == [True, False]
    relative = NumericEvaluator(tolerance=0.0, relative_tolerance=0.01)
    assert _grades(relative, "1000", ["1009", "1011"]) == [True, False]
    grade = evaluator.grade("so 1,000", _query("1000"))
    assert grade.extracted == "1000"


def test_numeric_refuses_a_golden_response_without_a_number():
    with pytest.raises(InputError, match=r"eval.jsonl:1: response: .*no number"):
        NumericEvaluator(tolerance=0).check([_query("seven")])


def test_regex_extracts_from_answer_and_golden():
    evaluator = RegexEvaluator(r"answer is (\w+)")
    golden = "The reasons. So the answer is positive."
    assert _grades(evaluator, golden, ["the answer is Positive", "positive", "answer is neg"]) == [
        True,
        False,  # the pattern must match the answer
        False,
    ]
    # A golden response the pattern does not match is compared whole.
    assert _grades(evaluator, "positive", ["so the answer is positive"]) == [True]
    whole = RegexEvaluator(r"[A-Z]{3}")
    assert whole.extract("from AAA to BBB") == "BBB"


def test_contains_matches_whole_words():
    evaluator = ContainsEvaluator()
    assert _grades(evaluator, "5", ["it is 5 apples", "it is 15", "5."]) == [True, False, True]
    assert _grades(evaluator, "New York", ["I live in new  york city", "NewYork"]) == [
        True,
        False,
    ]


def test_choice_takes_the_last_label_mentioned():
    evaluator = ChoiceEvaluator(["positive", "negative", "very positive"])
    golden = "The word 'awful' expresses a negative opinion. So the answer is negative."
    assert _grades(
        evaluator,
        golden,
        ["Negative", "not positive, rather negative", "negative or positive?", "neutral"],
    ) == [True, True, False, False]
    assert evaluator.find_label("It is very positive") == "very positive"
    assert evaluator.find_label("nonpositive") is None  # whole words only
    with pytest.raises(InputError, match="names none of the choice labels"):
        evaluator.check([_query("neutral")])


def test_callable_evaluator_from_a_module_beside_the_spec(tmp_path: Path):
    (tmp_path / "grading.py").write_text(
        "def same_length(answer, golden):\n    return len(answer) == len(golden)\n"
        "def bad(answer, golden):\n    return 'maybe'\n"
        "def one_argument(answer):\n    return True\n"
    )
    evaluator = build_evaluator(EvaluatorSpec("grading:same_length"), base_dir=tmp_path)
    assert isinstance(evaluator, CallableEvaluator)
    assert _grades(evaluator, "abc", ["xyz", "xy"]) == [True, False]
    bad = build_evaluator(EvaluatorSpec("grading:bad"), base_dir=tmp_path)
    with pytest.raises(InputError, match="returned 'maybe'"):
        bad.grade_all([_query("a")], ["a"])
    with pytest.raises(InputError, match="two arguments"):
        build_evaluator(EvaluatorSpec("grading:one_argument"), base_dir=tmp_path)
    with pytest.raises(InputError, match="has no 'missing'"):
        build_evaluator(EvaluatorSpec("grading:missing"), base_dir=tmp_path)
    with pytest.raises(InputError, match="cannot import"):
        build_evaluator(EvaluatorSpec("no_such_module_xyz:f"), base_dir=tmp_path)


def test_callable_evaluator_from_an_installed_module(tmp_path: Path):
    evaluator = build_evaluator(EvaluatorSpec("operator:eq"), base_dir=tmp_path)
    assert _grades(evaluator, "a", ["a", "b"]) == [True, False]


def test_build_evaluator_covers_every_builtin(tmp_path: Path):
    kinds = {
        "exact": ExactEvaluator,
        "numeric": NumericEvaluator,
        "contains": ContainsEvaluator,
    }
    for kind, cls in kinds.items():
        assert isinstance(build_evaluator(EvaluatorSpec(kind), base_dir=tmp_path), cls)
    regex = build_evaluator(EvaluatorSpec("regex", pattern="a(b)"), base_dir=tmp_path)
    assert isinstance(regex, RegexEvaluator)
    choice = build_evaluator(EvaluatorSpec("choice", labels=("a", "b")), base_dir=tmp_path)
    assert isinstance(choice, ChoiceEvaluator)


def test_load_eval_queries_reads_checkpoints_and_limit(tmp_path: Path):
    rows = [
        {"id": "a", "prompt": "p1", "response": "r1", "checkpoints": ["uses the formula", "42"]},
        {"id": "b", "prompt": "p2", "response": "r2", "checkpoints": "one point"},
        {"id": "c", "prompt": "p3", "response": "r3"},
    ]
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in rows[1:]))
    queries = load_eval_queries(path)
    assert [q.checkpoints for q in queries] == [("uses the formula", "42"), ("one point",), ()]
    assert [q.golden for q in queries] == ["r1", "r2", "r3"]
    assert [q.example.id for q in load_eval_queries(path, limit=2)] == ["a", "b"]
    path.write_text(json.dumps({"prompt": "p", "response": "r", "checkpoints": [1]}) + "\n")
    with pytest.raises(InputError, match=r"eval.jsonl:1: checkpoints: must be a string or a list"):
        load_eval_queries(path)


def test_load_eval_queries_from_a_saved_dataset(tmp_path: Path):
    import datasets

    rows = {
        "prompt": ["p1", "p2"],
        "response": ["r1", "r2"],
        "checkpoints": [["c1"], None],
    }
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / "ds")
    queries = load_eval_queries(tmp_path / "ds", split="test")
    assert [q.checkpoints for q in queries] == [("c1",), ()]


def test_query_text_of_a_conversation():
    example = Example(
        "0", "t", (Message("system", "be brief"), Message("user", "2+2?")), "4", "x:1"
    )
    assert EvalQuery(example).query_text == "system: be brief\nuser: 2+2?"
    assert _query("4", prompt="2+2?").query_text == "2+2?"


def test_validate_modules_import_each_other_without_a_cycle():
    # Every import counts, those inside functions too: the judge and the rule evaluators share
    # the interface in grading.py instead of importing each other.
    import ast

    import swiftstudy.validate

    folder = Path(swiftstudy.validate.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        prefix = "swiftstudy.validate."
        graph[path.stem] = {m[len(prefix) :] for m in imported if m.startswith(prefix)}
    assert "grading" in graph["judge"] and "judge" in graph["evaluators"]  # read both kinds
    done, visiting = set(), []

    def visit(module):
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting, module])}"
        if module in done:
            return
        visiting.append(module)
        for child in graph.get(module, ()):
            visit(child)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)
