"""Tests for swiftstudy.config.yamlio: line numbers, YAML errors, overrides and dumping."""

from __future__ import annotations

from pathlib import Path

import pytest

from swiftstudy.config.yamlio import apply_overrides, dump_yaml, load_yaml, override_key_path
from swiftstudy.errors import InputError

DOC = """\
# a comment
model: smollm2
sets:
  cot:
    path: data/cot.jsonl
    split: train
  similar: {path: data/similar.jsonl}
metrics:
  - name: first
    probes: cot
  - {name: second, probes: similar}
  -
    name: third
    probes: cot
max_length: 512
ratio: 0.5
flag: true
nothing: null
"""


@pytest.fixture()
def doc_path(tmp_path: Path) -> Path:
    path = tmp_path / "doc.yaml"
    path.write_text(DOC, encoding="utf-8")
    return path


def test_load_yaml_values(doc_path: Path) -> None:
    data, _ = load_yaml(doc_path)
    assert data["sets"]["cot"] == {"path": "data/cot.jsonl", "split": "train"}
    assert [m["name"] for m in data["metrics"]] == ["first", "second", "third"]
    assert data["max_length"] == 512
    assert data["ratio"] == 0.5
    assert data["flag"] is True
    assert data["nothing"] is None
    assert type(data) is dict
    assert type(data["metrics"]) is list


def test_load_yaml_lines_for_nested_keys_and_list_items(doc_path: Path) -> None:
    _, lines = load_yaml(doc_path)
    assert lines[("model",)] == 2
    assert lines[("sets",)] == 3
    assert lines[("sets", "cot")] == 4
    assert lines[("sets", "cot", "path")] == 5
    assert lines[("sets", "cot", "split")] == 6
    assert lines[("sets", "similar", "path")] == 7
    assert lines[("metrics",)] == 8
    assert lines[("metrics", 0)] == 9
    assert lines[("metrics", 0, "probes")] == 10
    assert lines[("metrics", 1)] == 11
    assert lines[("metrics", 1, "probes")] == 11
    assert lines[("metrics", 2, "name")] == 13
    assert lines[("metrics", 2, "probes")] == 14
    assert lines[("max_length",)] == 15


def test_load_yaml_merge_keys(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n", encoding="utf-8")
    data, lines = load_yaml(path)
    assert data["use"] == {"x": 1, "y": 3}
    assert lines[("use", "y")] == 4


def test_load_yaml_empty_document(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    assert load_yaml(path) == (None, {})


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\nb: [1, 2\nc: 3\n", 3),
        ("a: 1\n  b: 2\n", 2),
        ("a: 1\nb:\n  - x\n  y: 2\n", 4),
        ("a: 'unterminated\n", 2),
    ],
)
def test_load_yaml_malformed_reports_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_yaml(path)
    assert err.value.line == line
    assert err.value.path == str(path)
    assert "\n" in text and "\n" not in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: invalid YAML")


def test_load_yaml_duplicate_key(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("a: 1\nb: 2\na: 3\n", encoding="utf-8")
    with pytest.raises(InputError, match="duplicate key 'a'") as err:
        load_yaml(path)
    assert err.value.line == 3


def test_load_yaml_unsafe_tag(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    path.write_text("a: 1\nb: !!python/object:os.system {}\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_yaml(path)
    assert err.value.line == 2


def test_load_yaml_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(InputError, match="no such file") as err:
        load_yaml(path)
    assert err.value.path == str(path)


def test_overrides_nested_list_index_and_types() -> None:
    data = {"a": {"b": {"c": 1}}, "metrics": [{"name": "x"}, {"name": "y"}], "n": 3}
    result = apply_overrides(
        data,
        [
            "a.b.c=2",
            "metrics.1.name=renamed → arrow",
            "n=null",
            "ratio=0.25",
            "flag=false",
            "quoted='8'",
            "items=[a, b]",
            "new.deep.key=v",
        ],
    )
    assert result["a"]["b"]["c"] == 2
    assert result["metrics"][1]["name"] == "renamed → arrow"
    assert result["metrics"][0]["name"] == "x"
    assert result["n"] is None
    assert result["ratio"] == 0.25
    assert result["flag"] is False
    assert result["quoted"] == "8"
    assert result["items"] == ["a", "b"]
    assert result["new"] == {"deep": {"key": "v"}}
    assert data["a"]["b"]["c"] == 1, "the input must not be modified"


def test_overrides_value_keeps_equals_signs() -> None:
    assert apply_overrides({}, ["regex=a=b"]) == {"regex": "a=b"}


def test_overrides_on_empty_document() -> None:
    assert apply_overrides(None, ["batch_size=4"]) == {"batch_size": 4}


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("batch_size", "batch_size", "key=value"),
        ("=4", "=4", "empty key"),
        ("a..b=1", "a..b", "empty key"),
        ("x=[1, 2", "x", "not valid YAML"),
        ("metrics.5.name=z", "metrics.5.name", "out of range"),
        ("metrics.name=z", "metrics.name", "numeric index"),
        ("n.sub=1", "n.sub", "not a mapping"),
    ],
)
def test_bad_overrides(override: str, key: str, message: str) -> None:
    data = {"metrics": [{"name": "x"}], "n": 3}
    with pytest.raises(InputError, match=message) as err:
        apply_overrides(data, [override])
    assert err.value.key == key


def test_override_key_path() -> None:
    assert override_key_path("metrics.0.name") == ("metrics", 0, "name")


def test_dump_yaml_keeps_order_and_unicode(tmp_path: Path) -> None:
    data = {"z": 1, "a": [{"name": "CoT → In-task"}], "path": None}
    text = dump_yaml(data)
    assert text.index("z:") < text.index("a:")
    assert "→" in text
    path = tmp_path / "out.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_yaml(path)[0] == data
