"""Strategy files: loading, checking and rendering the templates, with canned answers (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftstudy.data import Message, load_examples
from swiftstudy.data.strategies import (
    ParseFailure,
    build_context,
    builtin_strategy_path,
    load_strategy,
    render_generation_prompt,
    render_probes,
)
from swiftstudy.errors import InputError

COT_SUFFIX = (
    " Please output the reason first and then the final answer, regardless of the above "
    "description."
)


def _references(tmp_path: Path, *records: dict) -> list:
    path = tmp_path / "refs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return load_examples(path)


def _apply(strategy, reference, answer):
    context = build_context(strategy, reference)
    return render_probes(strategy, reference, context, answer)


def _strategy_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    return path


@pytest.fixture()
def add_ref(tmp_path):
    [ref] = _references(
        tmp_path, {"id": "a", "task": "t", "prompt": "What is 2+2?", "response": "4"}
    )
    return ref


@pytest.mark.parametrize("name", ["cot", "clarify", "eval", "similar"])
def test_builtins_load_with_a_header_and_a_generation_step(name):
    strategy = load_strategy(name)
    assert strategy.name == name
    assert strategy.generation is not None and strategy.generation.parse is not None
    assert strategy.generation.expected
    assert strategy.source == builtin_strategy_path(name)
    # Like torchtune configs, each file's header shows the command that uses it.
    assert f"swiftstudy probes --strategy {name}" in strategy.source.read_text()


def test_cot_query_is_the_papers_and_response_ends_with_the_reference_answer(add_ref):
    strategy = load_strategy("cot")
    prompt = render_generation_prompt(strategy, add_ref, build_context(strategy, add_ref))
    assert prompt[-1].role == "user"
    assert "What is 2+2?" in prompt[-1].content and "Correct answer: 4" in prompt[-1].content

    [probe] = _apply(strategy, add_ref, "Two and two make four.\nFinal answer: 4")

    assert probe.kind == "cot" and probe.strategy == "cot" and probe.source_id == "a"
    assert probe.example.prompt == (Message("user", "What is 2+2?" + COT_SUFFIX),)
    assert probe.example.response == "Two and two make four.\nSo the final answer is: 4"
    assert (probe.example.id, probe.example.task) == ("a", "t")


@pytest.mark.parametrize(
    "answer",
    ["Final answer: 4", "Two and two make four.", "", "   \n"],
    ids=["no-reasoning", "no-final-line", "empty", "blank"],
)
def test_cot_answer_without_reasoning_and_final_line_fails_to_parse(add_ref, answer):
    with pytest.raises(ParseFailure, match=r"expected|empty answer"):
        _apply(load_strategy("cot"), add_ref, answer)


def test_cot_accepts_markdown_bold_final_answer(add_ref):
    [probe] = _apply(load_strategy("cot"), add_ref, "2 + 2 = 4.\n**Final answer:** 4")
    assert probe.example.response.startswith("2 + 2 = 4.\n")


def test_clarify_writes_the_clarified_example_and_the_clarification_example(add_ref):
    answer = "Sure! Here they are:\n1. Add 2 and 2.\n\n2. Give a number.\nHope this helps."
    clarified, clarification = _apply(load_strategy("clarify"), add_ref, answer)

    requirements = "1. Add 2 and 2.\n\n2. Give a number."
    assert clarified.kind == "clarified"
    assert clarified.example.prompt[-1].content == f"What is 2+2?\n\nRequirements:\n{requirements}"
    assert clarified.example.response == "4"
    assert clarification.kind == "clarification"
    assert "Rephrase the following query clearly" in clarification.example.prompt[-1].content
    assert clarification.example.prompt[-1].content.endswith("[Query]\nWhat is 2+2?")
    assert clarification.example.response == clarified.example.prompt[-1].content


def test_clarify_without_a_list_fails_to_parse(add_ref):
    with pytest.raises(ParseFailure, match="list of requirements"):
        _apply(load_strategy("clarify"), add_ref, "The query asks for a sum.")


@pytest.mark.parametrize(
    ("label", "verdict"),
    [
        (None, "meets"),
        (True, "meets"),
        ("positive", "meets"),
        ("Pos", "meets"),
        (1, "meets"),
        (False, "does not meet"),
        ("negative", "does not meet"),
        (0, "does not meet"),
        ("bad", "does not meet"),
    ],
)
def test_eval_concludes_from_the_label(tmp_path, label, verdict):
    record = {"prompt": "What is 2+2?", "response": "4"}
    if label is not None:
        record["label"] = label
    [ref] = _references(tmp_path, record)
    strategy = load_strategy("eval")
    prompt = render_generation_prompt(strategy, ref, build_context(strategy, ref))
    assert f"The [output] {verdict} all the requirements." in prompt[-1].content

    answer = "1. Add 2 and 2: the output does.\n2. A number: yes.\nConclusion: whatever it says."
    [probe] = _apply(strategy, ref, answer)

    query = probe.example.prompt[-1].content
    assert query.startswith("[Input]\nWhat is 2+2?\n[Output]\n4\n\n")
    assert "judge whether the [output] appropriately responds to the [input]" in query
    assert probe.example.response == (
        "1. Add 2 and 2: the output does.\n2. A number: yes.\n"
        f"In conclusion, the [output] {verdict} all the requirements."
    )


def test_eval_refuses_an_unknown_label_naming_the_line(tmp_path):
    refs = _references(
        tmp_path, {"prompt": "q", "response": "r"}, {"prompt": "q", "response": "r", "label": "?"}
    )
    strategy = load_strategy("eval")
    build_context(strategy, refs[0])
    with pytest.raises(InputError, match=r"refs.jsonl:2: label: expected positive or negative"):
        build_context(strategy, refs[1])


def test_similar_parses_the_new_example_and_rejects_a_copy(add_ref):
    strategy = load_strategy("similar")
    answer = (
        "Query: What is 2+2?\nResponse: 4\n\n**Query:** What is 3+5?\n**Response:** 8\nQuery: x"
    )
    [probe] = _apply(strategy, add_ref, answer)
    assert probe.example.prompt == (Message("user", "What is 3+5?"),)
    assert probe.example.response == "8"
    assert (probe.example.id, probe.example.task) == ("a", "t")
    with pytest.raises(ParseFailure, match="Query:"):
        _apply(strategy, add_ref, "Query: What is 2+2?\nResponse: 4")
    with pytest.raises(ParseFailure, match="Query:"):  # a copy up to case and end punctuation
        _apply(strategy, add_ref, "Query: what is 2+2\nResponse: 4")


def test_earlier_prompt_messages_are_kept_and_the_last_one_rewritten(tmp_path):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    [ref] = _references(tmp_path, {"messages": messages})
    [probe] = _apply(load_strategy("cot"), ref, "2 and 2 is 4.\nFinal answer: 4")
    assert probe.example.prompt == (
        Message("system", "Be brief."),
        Message("user", "What is 2+2?" + COT_SUFFIX),
    )


CONCLUSION_FIRST = """\
# A custom strategy: the conclusion first, then the reason.
name: conclusion-first
variables:
  upper_task: "task | upper"
generation:
  system: You explain answers.
  prompt: "Why is {{ response }} the answer to: {{ query }} ({{ record.source }})"
  parse: '(?s)Because (?P<reason>.+)'
  expected: an answer starting with "Because"
outputs:
  - kind: conclusion-first
    query: "{{ query }} Give the answer first, then the reason."
    response: "{{ response }}. Because {{ reason }} [{{ upper_task }}, {{ generation | length }}]"
"""


def test_custom_strategy_with_system_prompt_variables_and_record_fields(tmp_path):
    strategy = load_strategy(_strategy_file(tmp_path, CONCLUSION_FIRST))
    [ref] = _references(
        tmp_path, {"task": "add", "prompt": "2+2?", "response": "4", "source": "book"}
    )
    context = build_context(strategy, ref)
    assert render_generation_prompt(strategy, ref, context) == (
        Message("system", "You explain answers."),
        Message("user", "Why is 4 the answer to: 2+2? (book)"),
    )
    [probe] = _apply(strategy, ref, "Because two and two make four.")
    assert probe.example.response == "4. Because two and two make four. [ADD, 30]"
    with pytest.raises(ParseFailure, match='expected an answer starting with "Because"'):
        _apply(strategy, ref, "It is 4.")


def test_strategy_without_generation_step_only_rewrites(tmp_path, add_ref):
    text = (
        "name: rewrite\n"
        "outputs:\n"
        "  - {kind: r, query: 'Q: {{ query }}', response: '{{ response }}{{ label or \"\" }}'}\n"
    )
    strategy = load_strategy(_strategy_file(tmp_path, text))
    [probe] = render_probes(strategy, add_ref, build_context(strategy, add_ref), None)
    assert probe.example.prompt[-1].content == "Q: What is 2+2?"
    assert probe.example.response == "4"


def test_output_that_renders_empty_is_a_parse_failure(tmp_path, add_ref):
    text = (
        "name: x\n"
        "generation: {prompt: '{{ query }}', parse: '(?P<part>a?)'}\n"
        "outputs: [{kind: x, query: '{{ query }}', response: '{{ part }}'}]\n"
    )
    strategy = load_strategy(_strategy_file(tmp_path, text))
    with pytest.raises(ParseFailure, match=r"outputs\[0\].response \(x\) rendered empty"):
        _apply(strategy, add_ref, "no a here")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\n", r"custom.yaml:1: outputs: missing required key 'outputs'"),
        (
            "name: x\noutputs:\n  - kind: x\n    query: '{{ qeury }}'\n    response: r\n",
            r"custom.yaml:4: outputs\[0\].query: unknown variable 'qeury' \(available here: ",
        ),
        (
            "name: x\noutputs:\n  - {kind: x, query: q, response: '{{ generation }}'}\n",
            r"custom.yaml:3: outputs\[0\].response: unknown variable 'generation'",
        ),
        (
            "name: x\noutputs:\n  - {kind: x, query: '{% if %}', response: r}\n",
            r"custom.yaml:3: outputs\[0\].query: invalid Jinja template",
        ),
        (
            "name: x\ngeneration: {prompt: p, parse: '(?P<a>'}\n"
            "outputs: [{kind: x, query: q, response: r}]\n",
            None,  # a bad regex is found when the first answer is parsed, see below
        ),
        (
            "name: x\noutputs:\n  - {kind: x, query: q, response: r}\n"
            "  - {kind: x, query: q, response: r}\n",
            r"custom.yaml:4: outputs\[1\].kind: kind 'x' is used twice",
        ),
        (
            "name: x\noutputs: [{kind: config, query: q, response: r}]\n",
            r"outputs\[0\].kind: use letters",
        ),
        (
            "name: x\noutputs: [{kind: x, query: q, respones: r}]\n",
            r"outputs\[0\].respones: unknown key 'respones': did you mean 'response'\?",
        ),
        (
            "name: x\nvariables: {query: '1'}\noutputs: [{kind: x, query: q, response: r}]\n",
            r"custom.yaml:2: variables.query: 'query' is already a variable",
        ),
        (
            "name: x\ngeneration: {prompt: p, parse: '(?P<query>.)'}\n"
            "outputs: [{kind: x, query: q, response: r}]\n",
            r"generation.parse: group 'query' shadows a variable",
        ),
        ("name: 'a b'\noutputs: [{kind: x, query: q, response: r}]\n", r"custom.yaml:1: name"),
    ],
)
def test_bad_strategy_files_name_file_line_and_key(tmp_path, add_ref, text, message):
    path = _strategy_file(tmp_path, text)
    if message is None:
        strategy = load_strategy(path)
        with pytest.raises(InputError, match=r"generation.parse: invalid regular expression"):
            _apply(strategy, add_ref, "x")
        return
    with pytest.raises(InputError, match=message):
        load_strategy(path)


def test_unknown_strategy_name_and_missing_file():
    with pytest.raises(InputError, match=r"unknown strategy 'cots': a built-in \(cot, clarify"):
        load_strategy("cots")
    with pytest.raises(InputError, match=r"missing.yaml: no such file"):
        load_strategy("missing.yaml")


def test_render_error_names_the_strategy_key_and_the_reference(tmp_path, add_ref):
    text = "name: x\noutputs: [{kind: x, query: '{{ record.nope }}', response: r}]\n"
    strategy = load_strategy(_strategy_file(tmp_path, text))
    with pytest.raises(InputError, match=r"custom.yaml:2: outputs\[0\].query: .*refs.jsonl:1"):
        _apply(strategy, add_ref, None)


def test_templates_run_sandboxed(tmp_path, add_ref):
    text = "name: x\noutputs: [{kind: x, query: '{{ query.__class__.__mro__ }}', response: r}]\n"
    strategy = load_strategy(_strategy_file(tmp_path, text))
    with pytest.raises(InputError, match="outputs"):
        _apply(strategy, add_ref, None)


@pytest.mark.parametrize("name", ["cot", "clarify", "eval", "similar"])
def test_builtin_few_shot_examples_are_turns_before_the_prompt_and_parse(tmp_path, add_ref, name):
    strategy = load_strategy(name)
    assert strategy.generation is not None and len(strategy.generation.examples) == 2
    messages = render_generation_prompt(strategy, add_ref, build_context(strategy, add_ref))
    roles = [m.role for m in messages]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert "What is 2+2?" in messages[-1].content
    assert "What is 2+2?" not in messages[0].content
    # Each demonstration's answer is one the strategy itself accepts for its record.
    for demo in strategy.generation.examples:
        record = {"prompt": demo.record["query"], **demo.record}
        del record["query"]
        [ref] = _references(tmp_path, record)
        assert _apply(strategy, ref, demo.answer)


def test_few_shot_examples_use_the_variables_of_their_own_record(add_ref):
    strategy = load_strategy("eval")
    messages = render_generation_prompt(strategy, add_ref, build_context(strategy, add_ref))
    assert "The [output] meets all the requirements." in messages[0].content
    assert "The [output] does not meet all the requirements." in messages[2].content


def test_bad_few_shot_example_names_its_key(tmp_path):
    text = (
        "name: x\n"
        "generation:\n"
        "  prompt: '{{ query }}'\n"
        "  examples:\n"
        "    - {query: q, answer: a}\n"
        "outputs: [{kind: x, query: q, response: '{{ generation }}'}]\n"
    )
    with pytest.raises(InputError, match=r"custom.yaml:5: generation.examples\[0\].response: miss"):
        load_strategy(_strategy_file(tmp_path, text))
