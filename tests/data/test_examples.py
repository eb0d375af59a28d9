"""Tests for swiftstudy.data.examples: both record formats, datasets directories, every error."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import huggingface_hub.constants
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


# -- TRL's formats, column mapping, dataset folders and Hub ids -----------------------------------

SYSTEM = {"role": "system", "content": "Be brief."}
TRL_STANDARD = {"prompt": "What is 2+2?", "completion": " 4"}
TRL_CONVERSATIONAL = {"prompt": [SYSTEM, USER], "completion": [ASSISTANT]}


def test_trl_formats_are_recognised(tmp_path):
    path = _write_jsonl(
        tmp_path / "a.jsonl", [TRL_STANDARD, TRL_CONVERSATIONAL, {"messages": [USER, ASSISTANT]}]
    )
    standard, conversational, messages = load_examples(path)
    assert standard == Example(
        "0", "0", (Message("user", "What is 2+2?"),), " 4", f"{path}:1", "trl-standard"
    )
    assert conversational.format == "trl-conversational"
    assert conversational.prompt == (Message("system", "Be brief."), Message("user", "Hi"))
    assert conversational.response == "Hello"
    # Without format=trl, a messages row is swiftstudy's own format, as before.
    assert messages.format == "swiftstudy"


def test_format_trl_reads_messages_as_language_modeling(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", [{"messages": [SYSTEM, USER, ASSISTANT]}])
    (example,) = load_examples(path, format="trl")
    assert example.format == "trl-messages"
    assert example.prompt == (Message("system", "Be brief."), Message("user", "Hi"))
    err = _error_with(tmp_path, [PAIR], format="trl")
    assert "swiftstudy's own format" in str(err)


def _error_with(tmp_path: Path, records: list, **options) -> InputError:
    path = _write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(InputError) as err:
        load_examples(path, **options)
    return err.value


@pytest.mark.parametrize(
    ("record", "key", "fragment"),
    [
        ({"completion": "x"}, "prompt", "missing 'prompt'"),
        ({"prompt": "a", "completion": " "}, "completion", "empty completion"),
        ({"prompt": "a", "completion": [ASSISTANT]}, "completion", "both be strings"),
        ({"prompt": [USER], "completion": []}, "completion", "exactly one"),
        ({"prompt": [USER], "completion": [ASSISTANT, ASSISTANT]}, "completion", "exactly one"),
        ({"prompt": [USER], "completion": [USER]}, "completion[0].role", "assistant message"),
        ({"prompt": [], "completion": [ASSISTANT]}, "prompt", "non-empty list"),
        (
            {"prompt": [USER | {"tool_calls": [{}]}], "completion": [ASSISTANT]},
            "prompt[0].tool_calls",
            "other than role and content",
        ),
        ({**TRL_CONVERSATIONAL, "tools": [{}]}, "tools", "not supported"),
        ({**PAIR, "completion": "x"}, None, "both 'response'"),
        ({**TRL_STANDARD, "messages": [USER, ASSISTANT]}, None, "both 'messages'"),
    ],
)
def test_trl_format_errors(tmp_path, record, key, fragment):
    err = _error(tmp_path, [TRL_STANDARD, record])
    assert (err.line, err.key) == (2, key)
    assert fragment in str(err)


def test_columns_rename_fields(tmp_path):
    rows = [{"question": "Q?", "answer": "A.", "prompt": "ignored", "name": "n1"}]
    path = _write_jsonl(tmp_path / "a.jsonl", rows)
    (example,) = load_examples(path, columns={"prompt": "question", "completion": "answer"})
    assert (example.prompt, example.response) == ((Message("user", "Q?"),), "A.")
    assert example.format == "trl-standard"
    (named,) = load_examples(
        path, columns={"prompt": "question", "response": "answer", "id": "name"}
    )
    assert (named.id, named.format) == ("n1", "swiftstudy")

    err = _error_with(
        tmp_path, [{"question": "Q?"}], columns={"prompt": "question", "completion": "x"}
    )
    assert (err.line, err.key) == (1, "x")
    assert "columns.completion" in str(err)
    with pytest.raises(InputError, match="unknown field") as info:
        load_examples(path, columns={"answer": "completion"})
    assert info.value.key == "columns.answer"
    with pytest.raises(InputError, match="auto, trl"):
        load_examples(path, format="chatml")


def test_dataset_folder_of_data_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "hub-like"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", [TRL_CONVERSATIONAL, TRL_CONVERSATIONAL | {"id": "b"}])
    _write_jsonl(folder / "test.jsonl", [{"prompt": [USER], "completion": [ASSISTANT]}])
    train = load_examples(folder, split="train")
    assert [e.format for e in train] == ["trl-conversational"] * 2
    assert train[1].id == "b" and train[0].origin == f"{folder}[0]"
    (test,) = load_examples(folder, split="test")
    assert test.prompt == (Message("user", "Hi"),)
    with pytest.raises(InputError, match="choose a split") as info:
        load_examples(folder)
    assert info.value.key == "split"
    with pytest.raises(InputError) as info:
        load_examples(folder, split="validation")
    assert info.value.key == "split"


def test_hub_id_goes_to_load_dataset(tmp_path, monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([TRL_STANDARD])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    (example,) = load_examples("trl-lib/tiny", split="train", name="default")
    assert calls == [("trl-lib/tiny", "default", "train")]
    assert example.origin == "trl-lib/tiny[0]"
    # Paths that look local are never sent to the Hub.
    for local in ("data/missing.jsonl", "./x/y", "a/b/c"):
        with pytest.raises(InputError, match="no such file"):
            load_examples(local)
    assert len(calls) == 1


def test_unknown_hub_id_offline(tmp_path, monkeypatch):
    # Both libraries read HF_HUB_OFFLINE at import: patch their constants too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="not a dataset") as info:
        load_examples("nobody-here/no-such-dataset", split="train")
    assert info.value.path == "nobody-here/no-such-dataset"


def test_name_refused_for_files_and_saved_datasets(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", [PAIR])
    with pytest.raises(InputError, match="no configurations") as info:
        load_examples(path, name="x")
    assert info.value.key == "name"
