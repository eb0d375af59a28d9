"""Tests for swiftstudy.data.examples: both record formats, datasets directories, every error."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from swiftstudy.data import Example, Message, load_examples
from swiftstudy.errors import InputError


def _write_jsonl(path: Path, records: list) -> Path:
    """Write one JSON value per line (strings are written verbatim)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _error(tmp_path: Path, records: list) -> InputError:
    """Load a JSONL file that must fail, and return the error."""
    path = _write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(InputError) as err:
        load_examples(path)
    assert str(path) in str(err.value)
    return err.value


PAIR = {"prompt": "What is 2+2?", "response": "4"}


def test_prompt_response_format(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", [PAIR, {"prompt": "Hi", "response": "Hello"}])
    examples = load_examples(path)
    assert examples == [
        Example("0", "0", (Message("user", "What is 2+2?"),), "4", f"{path}:1"),
        Example("1", "1", (Message("user", "Hi"),), "Hello", f"{path}:2"),
    ]


def test_messages_format(tmp_path):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Hello again"},
    ]
    path = _write_jsonl(tmp_path / "a.jsonl", [{"messages": messages, "id": "m"}])
    (example,) = load_examples(path)
    assert example.prompt == (
        Message("system", "Be brief."),
        Message("user", "Hi"),
        Message("assistant", "Hello"),
        Message("user", "Again"),
    )
    assert example.response == "Hello again"
    assert example.id == "m"


def test_ids_tasks_defaults_blank_lines_and_extra_fields(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({**PAIR, "id": 7, "task": 3, "label": 1, "strategy": "cot"}),
                "",
                "   ",
                json.dumps({**PAIR, "task": "arith", "source_id": "x"}),
                json.dumps({**PAIR, "id": None}),
            ]
        ),
        encoding="utf-8",
    )
    examples = load_examples(str(path))
    assert [(e.id, e.task) for e in examples] == [("7", "3"), ("1", "arith"), ("2", "2")]
    assert [e.origin for e in examples] == [f"{path}:1", f"{path}:4", f"{path}:5"]


def test_dataset_dir(tmp_path):
    rows = {"prompt": ["a", "b"], "response": ["x", "y"], "id": [10, 11], "label": [0, 1]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    examples = load_examples(tmp_path / "ds")
    assert [(e.id, e.task, e.response) for e in examples] == [("10", "0", "x"), ("11", "1", "y")]
    assert examples[1].origin == f"{tmp_path / 'ds'}[1]"


def test_dataset_dict_dir_with_split(tmp_path):
    messages = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"messages": messages}),
            "test": datasets.Dataset.from_dict({"prompt": ["p"], "response": ["r"]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    (train,) = load_examples(tmp_path / "dd", split="train")
    assert train.prompt == (Message("user", "Hi"),) and train.response == "Yo"
    (test,) = load_examples(tmp_path / "dd", split="test")
    assert test.response == "r"
    for split in (None, "validation"):
        with pytest.raises(InputError) as err:
            load_examples(tmp_path / "dd", split=split)
        assert err.value.key == "split"
        assert "train" in str(err.value) and "test" in str(err.value)


def test_dataset_row_errors_name_the_row(tmp_path):
    datasets.Dataset.from_dict({"prompt": ["a", "b"], "response": ["x", " "]}).save_to_disk(
        str(tmp_path / "ds")
    )
    with pytest.raises(InputError) as err:
        load_examples(tmp_path / "ds")
    assert err.value.key == "[row 1].response"
    assert err.value.line is None
    assert "empty completion" in str(err.value)


def test_split_refused_for_single_dataset_and_jsonl(tmp_path):
    datasets.Dataset.from_dict({"prompt": ["a"], "response": ["x"]}).save_to_disk(
        str(tmp_path / "ds")
    )
    path = _write_jsonl(tmp_path / "a.jsonl", [PAIR])
    for target in (tmp_path / "ds", path):
        with pytest.raises(InputError) as err:
            load_examples(target, split="train")
        assert err.value.key == "split"


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        load_examples(tmp_path / "nope.jsonl")
    assert str(tmp_path / "nope.jsonl") in str(err.value)


def test_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="not a dataset") as err:
        load_examples(tmp_path / "d")
    assert err.value.path == str(tmp_path / "d")


def test_empty_file(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="no examples") as err:
        load_examples(path)
    assert err.value.path == str(path)


def test_malformed_json(tmp_path):
    err = _error(tmp_path, [PAIR, '{"prompt": "a", "response": '])
    assert err.line == 2
    assert "malformed JSON" in str(err) and ":2" in str(err)


def test_line_not_an_object(tmp_path):
    err = _error(tmp_path, [PAIR, PAIR | {"id": "x"}, [1, 2]])
    assert err.line == 3
    assert "list" in str(err)


def test_neither_format(tmp_path):
    err = _error(tmp_path, [{"text": "hello"}])
    assert err.line == 1
    assert "'messages'" in str(err)


def test_both_formats(tmp_path):
    err = _error(tmp_path, [{**PAIR, "messages": []}])
    assert err.line == 1
    assert "both" in str(err)


@pytest.mark.parametrize(
    ("record", "key", "fragment"),
    [
        ({"prompt": "a"}, "response", "missing 'response'"),
        ({"response": "a"}, "prompt", "missing 'prompt'"),
        ({"prompt": 3, "response": "a"}, "prompt", "must be a string"),
        ({"prompt": "a", "response": ["b"]}, "response", "must be a string"),
        ({"prompt": "a", "response": ""}, "response", "empty completion"),
        ({"prompt": "a", "response": " \n\t"}, "response", "empty completion"),
        ({**PAIR, "id": [1]}, "id", "string or an integer"),
        ({**PAIR, "task": 1.5}, "task", "string or an integer"),
    ],
)
def test_prompt_response_errors(tmp_path, record, key, fragment):
    err = _error(tmp_path, [PAIR | {"id": "ok"}, record])
    assert (err.line, err.key) == (2, key)
    assert fragment in str(err)
    assert f":2: {key}:" in str(err)


USER = {"role": "user", "content": "Hi"}
ASSISTANT = {"role": "assistant", "content": "Hello"}


@pytest.mark.parametrize(
    ("messages", "key", "fragment"),
    [
        ("hi", "messages", "non-empty list"),
        ([], "messages", "non-empty list"),
        ([ASSISTANT], "messages", "at least one prompt message"),
        ([USER, USER], "messages[1].role", "last message must be the assistant"),
        ([USER, "hi", ASSISTANT], "messages[1]", "expected an object"),
        ([{"role": "robot", "content": "x"}, ASSISTANT], "messages[0].role", "role must be"),
        ([{"content": "x"}, ASSISTANT], "messages[0].role", "role must be"),
        ([USER, {"role": "user", "content": 1}, ASSISTANT], "messages[1].content", "string"),
        ([USER, {"role": "assistant"}], "messages[1].content", "must be a string"),
        ([USER, {"role": "assistant", "content": "  "}], "messages[1].content", "empty"),
    ],
)
def test_messages_errors(tmp_path, messages, key, fragment):
    err = _error(tmp_path, [PAIR, PAIR | {"id": "b"}, {"messages": messages}])
    assert (err.line, err.key) == (3, key)
    assert fragment in str(err)


def test_duplicate_id_names_both_lines(tmp_path):
    err = _error(tmp_path, [PAIR | {"id": "a"}, PAIR, "", PAIR | {"id": "a"}])
    assert (err.line, err.key) == (4, "id")
    assert "'a'" in str(err) and "line 1" in str(err)


def test_duplicate_id_against_a_default(tmp_path):
    err = _error(tmp_path, [PAIR | {"id": 1}, PAIR])
    assert (err.line, err.key) == (2, "id")
    assert "line 1" in str(err)
