"""The judge evaluator: its prompt, reading verdicts, caching, and a real llama.cpp server.

The unit tests answer with a plain Python function (``FunctionGenerator``); the integration test
starts llama-cpp-python's OpenAI-compatible server on 127.0.0.1 with the bundled SmolLM2 GGUF and
grades through it, as ``judge:`` does with GPT-4o.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swiftstudy.data import Example, Message
from swiftstudy.generate import CachedGenerator, FunctionGenerator, GenerationCache
from swiftstudy.validate.evaluator_spec import EvaluatorSpec, JudgeSpec
from swiftstudy.validate.evaluators import build_evaluator
from swiftstudy.validate.grading import EvalQuery
from swiftstudy.validate.judge import (
    JudgeEvaluator,
    parse_verdict,
    render_judge_prompt,
)


def _query(prompt: str, golden: str, checkpoints: tuple[str, ...] = ()) -> EvalQuery:
    return EvalQuery(Example("0", "t", (Message("user", prompt),), golden, "e:1"), checkpoints)


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("1", True),
        ("0", False),
        (" 1\n", True),
        ("Verdict: 0.", False),
        ("**1**", True),
        ("1.5", None),  # a number, not a verdict
        ("10", None),
        ("yes", None),
        ("", None),
    ],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_the_prompt_holds_query_golden_checkpoints_and_answer():
    query = _query("What is 6 - 3?", "3", ("subtracts 3 from 6", "says 3"))
    system, user = render_judge_prompt(query, "It is 3.")
    assert system.role == "system" and "single digit" in system.content
    assert user.role == "user"
    for part in ("What is 6 - 3?", "Reference answer:\n3", "- subtracts 3 from 6", "It is 3."):
        assert part in user.content
    assert "satisfying every checkpoint" in user.content
    _, plain = render_judge_prompt(_query("q", "g"), "a")
    assert "Checkpoints" not in plain.content and "checkpoint" not in plain.content


def test_judge_grades_through_a_generator_and_caches_verdicts(tmp_path: Path, caplog):
    def judge(prompt):
        text = prompt[-1].content
        answer = text.split("Answer to grade:\n", 1)[1].split("\n", 1)[0]
        reference = text.split("Reference answer:\n", 1)[1].split("\n", 1)[0]
        return "maybe" if answer == "?" else ("1" if answer == reference else "0")

    function = FunctionGenerator(judge, "toy-judge")
    evaluator = JudgeEvaluator(CachedGenerator(function, GenerationCache(tmp_path)))
    queries = [_query("a", "x"), _query("b", "y"), _query("c", "z")]
    grades = evaluator.grade_all(queries, ["x", "n", "?"])
    assert [g.correct for g in grades] == [True, False, False]
    assert [g.extracted for g in grades] == ["1", "0", "maybe"]
    assert "without a lone 0 or 1" in caplog.text
    assert function.calls == 3
    again = JudgeEvaluator(CachedGenerator(function, GenerationCache(tmp_path)))
    assert [g.correct for g in again.grade_all(queries, ["x", "n", "?"])] == [True, False, False]
    assert function.calls == 3  # every verdict came from the cache


@pytest.mark.integration
@pytest.mark.slow
def test_judge_against_a_llama_cpp_server(llama_server, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SWIFTSTUDY_TEST_NO_KEY", "")
    spec = EvaluatorSpec(
        "judge",
        judge=JudgeSpec(
            base_url=llama_server,
            api_key_env="SWIFTSTUDY_TEST_NO_KEY",
            concurrency=2,
            cache_dir=tmp_path / "cache",
        ),
    )
    queries = [
        _query("What is 2 + 2?", "4"),
        _query("What is the capital of France?", "Paris", ("names Paris",)),
        _query("Is the sky green?", "No"),
    ]
    answers = ["4", "Paris", "Yes, it is green."]
    evaluator = build_evaluator(spec, base_dir=tmp_path)
    grades = evaluator.grade_all(queries, answers)
    assert len(grades) == 3
    assert all(isinstance(g.correct, bool) and g.extracted for g in grades)
    generator = evaluator.generator
    assert (generator.misses, generator.hits) == (3, 0)
    # The served model's name is asked once and enters the cache key with the messages.
    assert generator.settings["model"].endswith(".gguf")

    again = build_evaluator(spec, base_dir=tmp_path)
    assert [g.correct for g in again.grade_all(queries, answers)] == [g.correct for g in grades]
    assert (again.generator.misses, again.generator.hits) == (0, 3)
