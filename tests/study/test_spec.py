"""Tests for swiftstudy.study.spec: loading, path resolution, round trips and every error case."""

from __future__ import annotations

from pathlib import Path

import pytest

from swiftstudy.config.yamlio import dump_yaml
from swiftstudy.constants import DEFAULT_FULL_PARAMS, DEFAULT_VERDICT_VARIANT
from swiftstudy.errors import InputError
from swiftstudy.study.spec import (
    CheckpointRef,
    MetricSpec,
    SetSpec,
    StudySpec,
    VerdictSpec,
    load_study_spec,
    spec_from_dict,
)

BASE = """\
model: smollm2
checkpoints: runs/base
sets:
  nocot: {path: data/nocot.jsonl}
  similar: {path: data/similar.jsonl}
  cot: {path: data/cot.jsonl, split: train}
metrics:
  - {name: "CoT → In-task non-CoT", probes: cot, evals: similar, context: in-task}
  - name: "NoCoT → Cross-task"
    probes: nocot
    evals: similar
    context: cross-task
"""


def write_spec(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def spec_path(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "specs", BASE)


def test_load_valid_spec(spec_path: Path) -> None:
    spec = load_study_spec(spec_path)
    folder = spec_path.parent
    assert spec.model == "smollm2"
    assert spec.checkpoints == folder / "runs" / "base"
    assert spec.sets == (
        SetSpec("nocot", folder / "data" / "nocot.jsonl"),
        SetSpec("similar", folder / "data" / "similar.jsonl"),
        SetSpec("cot", folder / "data" / "cot.jsonl", "train"),
    )
    assert spec.metrics == (
        MetricSpec("CoT → In-task non-CoT", "cot", "similar", "in-task"),
        MetricSpec("NoCoT → Cross-task", "nocot", "similar", "cross-task"),
    )
    assert (spec.max_length, spec.batch_size, spec.batch_tokens) == (2048, 8, None)
    assert (spec.dtype, spec.device, spec.on_overflow) == ("float32", "auto", "error")
    assert spec.params == DEFAULT_FULL_PARAMS
    assert spec.spec_path == spec_path


def test_relative_paths_resolve_against_spec_folder(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_study_spec(spec_path)
    assert spec.set("cot").path == spec_path.parent / "data" / "cot.jsonl"
    assert spec.set("cot").path.is_absolute()
    assert spec.checkpoints == spec_path.parent / "runs" / "base"


def test_all_options_and_checkpoint_list(tmp_path: Path) -> None:
    text = BASE.replace(
        "checkpoints: runs/base\n",
        "checkpoints:\n  - {path: ckpt/a, step: 0}\n  - {path: ../b, step: 100}\n  - ckpt/c\n",
    )
    text += (
        "max_length: 512\nbatch_size: 2\nbatch_tokens: 4096\ndtype: bfloat16\n"
        "device: cuda:1\non_overflow: drop\nparams: ['\\.q_proj\\.weight$']\n"
    )
    folder = tmp_path / "specs"
    spec = load_study_spec(write_spec(folder, text))
    assert spec.checkpoints == (
        CheckpointRef(folder / "ckpt" / "a", 0),
        CheckpointRef(tmp_path / "b", 100),
        CheckpointRef(folder / "ckpt" / "c", None),
    )
    assert (spec.max_length, spec.batch_size, spec.batch_tokens) == (512, 2, 4096)
    assert (spec.dtype, spec.device, spec.on_overflow) == ("bfloat16", "cuda:1", "drop")
    assert spec.params == (r"\.q_proj\.weight$",)


def test_model_resolution(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    (folder / "models" / "local").mkdir(parents=True)

    def model_of(model: str) -> str:
        return load_study_spec(write_spec(folder, BASE.replace("smollm2", model, 1))).model

    assert model_of("smollm2") == "smollm2"
    assert model_of("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model_of("models/local") == str(folder / "models" / "local")
    assert model_of("weights/tiny.Q4_1.gguf") == str(folder / "weights" / "tiny.Q4_1.gguf")
    assert model_of("/abs/model.gguf") == "/abs/model.gguf"


def test_round_trip_through_dict_and_yaml(spec_path: Path, tmp_path: Path) -> None:
    spec = load_study_spec(spec_path, ["batch_tokens=1024", "device=auto"])
    data = spec.to_dict()
    assert all(Path(s["path"]).is_absolute() for s in data["sets"].values())
    again = spec_from_dict(data, base_dir=tmp_path / "unrelated")
    assert again == spec
    assert again.spec_path is None
    saved = tmp_path / "saved" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text(dump_yaml(data), encoding="utf-8")
    assert load_study_spec(saved) == spec


def test_round_trip_checkpoint_list(tmp_path: Path) -> None:
    spec = StudySpec(
        model="smollm2",
        checkpoints=(CheckpointRef(tmp_path / "a", 5), CheckpointRef(tmp_path / "b", None)),
        sets=(SetSpec("s", tmp_path / "s.jsonl"),),
        metrics=(MetricSpec("S → S", "s", "s", "in-task"),),
    )
    assert spec_from_dict(spec.to_dict(), base_dir=tmp_path) == spec


def test_set_lookup(spec_path: Path) -> None:
    spec = load_study_spec(spec_path)
    assert spec.set("similar").name == "similar"
    with pytest.raises(KeyError, match="nocot, similar, cot"):
        spec.set("missing")


def test_overrides_applied(spec_path: Path) -> None:
    spec = load_study_spec(
        spec_path,
        [
            "batch_size=4",
            "metrics.0.name=CoT ⇒ renamed",
            "sets.cot.path=other/cot.jsonl",
            "dtype=float64",
        ],
    )
    assert spec.batch_size == 4
    assert spec.metrics[0].name == "CoT ⇒ renamed"
    assert spec.set("cot").path == spec_path.parent / "other" / "cot.jsonl"
    assert spec.set("cot").split == "train"
    assert spec.dtype == "float64"


def test_bad_override_value_is_blamed_on_the_command_line(spec_path: Path) -> None:
    with pytest.raises(InputError, match="command-line override") as err:
        load_study_spec(spec_path, ["metrics.1.context=sideways"])
    assert err.value.key == "metrics[1].context"
    assert err.value.line is None
    assert str(spec_path) in str(err.value)


def test_malformed_override(spec_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_study_spec(spec_path, ["batch_size"])
    assert err.value.key == "batch_size"


def edit(old: str, new: str) -> str:
    """BASE with one piece of text replaced (which must be there)."""
    assert old in BASE, old
    return BASE.replace(old, new, 1)


METRICS_START = BASE.index("metrics:")
SETS_BODY = (
    "  nocot: {path: data/nocot.jsonl}\n"
    "  similar: {path: data/similar.jsonl}\n"
    "  cot: {path: data/cot.jsonl, split: train}\n"
)

# name: (spec text, expected line, expected key, a fragment of the message)
ERROR_CASES = {
    "missing model": (edit("model: smollm2\n", ""), 1, "model", "missing required key 'model'"),
    "missing metrics": (BASE[:METRICS_START], 1, "metrics", "missing required key 'metrics'"),
    "unknown top-level key": (
        BASE + "batchsize: 4\n",
        13,
        "batchsize",
        "unknown key 'batchsize': did you mean 'batch_size'?",
    ),
    "model not a string": (edit("model: smollm2", "model: 3"), 1, "model", "expected a string"),
    "sets not a mapping": (
        edit("sets:\n" + SETS_BODY, "sets: [a, b]\n"),
        3,
        "sets",
        "expected a mapping of set name to {path, split}, got a list",
    ),
    "set path not a string": (
        edit("{path: data/similar.jsonl}", "{path: [a, b]}"),
        5,
        "sets.similar.path",
        "expected a string, got a list",
    ),
    "set missing path": (
        edit("{path: data/similar.jsonl}", "{split: train}"),
        5,
        "sets.similar.path",
        "missing required key 'path'",
    ),
    "set unknown key": (
        edit("{path: data/similar.jsonl}", "{path: x, spilt: train}"),
        5,
        "sets.similar.spilt",
        "did you mean 'split'?",
    ),
    "metrics not a list": (
        BASE[:METRICS_START] + "metrics: {a: 1}\n",
        7,
        "metrics",
        "expected a list of metrics, got a mapping",
    ),
    "metric unknown probes set": (
        edit("    probes: nocot", "    probes: cots"),
        10,
        "metrics[1].probes",
        "unknown set 'cots' (known sets: nocot, similar, cot)",
    ),
    "metric unknown evals set": (
        edit("evals: similar, context", "evals: simlar, context"),
        8,
        "metrics[0].evals",
        "known sets: nocot, similar, cot",
    ),
    "metric bad context": (
        edit("context: cross-task", "context: crosstask"),
        12,
        "metrics[1].context",
        "expected one of: in-task, cross-task",
    ),
    "metric missing key": (
        edit("    probes: nocot\n", ""),
        9,
        "metrics[1].probes",
        "missing required key 'probes'",
    ),
    "metric unknown key": (
        edit("    probes: nocot\n", "    probe: nocot\n"),
        10,
        "metrics[1].probe",
        "did you mean 'probes'?",
    ),
    "metric not a mapping": (
        BASE + "  - just a string\n",
        13,
        "metrics[2]",
        "expected a metric",
    ),
    "duplicate metric name": (
        edit('name: "NoCoT → Cross-task"', 'name: "CoT → In-task non-CoT"'),
        9,
        "metrics[1].name",
        "duplicate metric name 'CoT → In-task non-CoT' (also metrics[0])",
    ),
    "empty metric name": (
        edit('name: "NoCoT → Cross-task"', 'name: "  "'),
        9,
        "metrics[1].name",
        "must not be empty",
    ),
    "bad dtype": (BASE + "dtype: float8\n", 13, "dtype", "expected one of: float32, float64"),
    "bad device": (BASE + "device: gpu\n", 13, "device", "expected cpu, cuda, cuda:N or auto"),
    "bad on_overflow": (
        BASE + "on_overflow: truncate\n",
        13,
        "on_overflow",
        "expected one of: error, drop",
    ),
    "max_length too small": (BASE + "max_length: 1\n", 13, "max_length", "at least 2"),
    "max_length string": (BASE + "max_length: big\n", 13, "max_length", "expected an integer"),
    "batch_size zero": (BASE + "batch_size: 0\n", 13, "batch_size", "at least 1"),
    "batch_size bool": (BASE + "batch_size: true\n", 13, "batch_size", "got a boolean"),
    "batch_tokens float": (
        BASE + "batch_tokens: 2.5\n",
        13,
        "batch_tokens",
        "expected an integer or null",
    ),
    "params not a list": (BASE + "params: '.*'\n", 13, "params", "non-empty list of regexes"),
    "params empty": (BASE + "params: []\n", 13, "params", "non-empty list of regexes"),
    "params bad regex": (
        BASE + "params:\n  - ok$\n  - '(unclosed'\n",
        15,
        "params[1]",
        "invalid regex '(unclosed'",
    ),
    "params not strings": (BASE + "params: [1]\n", 13, "params[0]", "expected a string"),
    "checkpoints wrong type": (
        edit("checkpoints: runs/base", "checkpoints: 5"),
        2,
        "checkpoints",
        "expected a path or a list of {path, step}",
    ),
    "checkpoints empty list": (
        edit("checkpoints: runs/base", "checkpoints: []"),
        2,
        "checkpoints",
        "the list of checkpoints is empty",
    ),
    "checkpoint negative step": (
        edit("checkpoints: runs/base", "checkpoints:\n  - {path: a, step: -1}"),
        3,
        "checkpoints[0].step",
        "at least 0",
    ),
    "checkpoint duplicate step": (
        edit(
            "checkpoints: runs/base", "checkpoints:\n  - {path: a, step: 1}\n  - {path: b, step: 1}"
        ),
        4,
        "checkpoints[1].step",
        "also given to checkpoints[0]",
    ),
    "control unknown set": (
        edit("context: in-task}", "context: in-task, control: nocots}"),
        8,
        "metrics[0].control",
        "unknown set 'nocots' (known sets: nocot, similar, cot)",
    ),
    "control is the metric's own probes": (
        edit("context: in-task}", "context: in-task, control: cot}"),
        8,
        "metrics[0].control",
        "the control 'cot' is the metric's own probe set",
    ),
    "verdict not a mapping": (BASE + "verdict: relinf\n", 13, "verdict", "expected a mapping"),
    "verdict unknown normalization": (
        BASE + "verdict: {normalization: l2}\n",
        13,
        "verdict.normalization",
        "expected one of: relinf, cosine, per-token",
    ),
    "verdict unknown weighting": (
        BASE + "verdict:\n  checkpoints: first\n",
        14,
        "verdict.checkpoints",
        "expected one of: mean, last, lr",
    ),
    "verdict unknown key": (
        BASE + "verdict: {weighting: lr}\n",
        13,
        "verdict.weighting",
        "unknown key 'weighting'",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_spec_errors(tmp_path: Path, case: str) -> None:
    text, line, key, fragment = ERROR_CASES[case]
    path = write_spec(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_study_spec(path)
    assert err.value.key == key
    assert err.value.line == line
    assert err.value.path == str(path)
    assert str(err.value).startswith(f"{path}:{line}: {key}: ")
    assert fragment in err.value.message


def test_spec_not_a_mapping(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "- a\n- b\n")
    with pytest.raises(InputError, match="expected a mapping of spec keys") as err:
        load_study_spec(path)
    assert err.value.line == 1
    assert err.value.key is None


def test_empty_spec_lists_missing_key(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "# nothing\n")
    with pytest.raises(InputError, match="missing required key 'model'") as err:
        load_study_spec(path)
    assert err.value.key == "model"


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_study_spec(tmp_path / "nope.yaml")


def test_yaml_error_in_spec_names_line(tmp_path: Path) -> None:
    path = write_spec(tmp_path, BASE + "device: [cpu\n")
    with pytest.raises(InputError, match="invalid YAML") as err:
        load_study_spec(path)
    assert err.value.line == 14


def test_empty_sets_and_metrics(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "model: m\ncheckpoints: c\nsets: {}\nmetrics: []\n")
    with pytest.raises(InputError, match="no sets are defined") as err:
        load_study_spec(path)
    assert (err.value.line, err.value.key) == (3, "sets")
    path = write_spec(tmp_path, "model: m\ncheckpoints: c\nsets: {a: a.jsonl}\nmetrics: []\n")
    with pytest.raises(InputError, match="list of metrics is empty") as err:
        load_study_spec(path)
    assert (err.value.line, err.value.key) == (4, "metrics")


def test_control_reuses_a_listed_metric_of_the_control_set(tmp_path: Path) -> None:
    text = edit("context: in-task}", "context: in-task, control: nocot}").replace(
        "context: cross-task", "context: in-task"
    )
    spec = load_study_spec(write_spec(tmp_path, text))
    assert [m.name for m in spec.metrics] == ["CoT → In-task non-CoT", "NoCoT → Cross-task"]
    assert spec.metrics[0].control == "nocot"
    assert spec.control_metric(spec.metrics[0]) == spec.metrics[1]
    assert spec.control_metric(spec.metrics[1]) is None


def test_control_adds_the_missing_control_metric(tmp_path: Path) -> None:
    spec = load_study_spec(
        write_spec(tmp_path, edit("context: in-task}", "context: in-task, control: nocot}"))
    )
    added = MetricSpec("nocot → similar (in-task, control)", "nocot", "similar", "in-task")
    assert spec.metrics[2] == added
    assert spec.metrics[2].added_for == 0
    assert spec.control_metric(spec.metrics[0]) == added
    # The saved config lists the added metric; loading it back gives the same spec.
    data = spec.to_dict()
    assert data["metrics"][0]["control"] == "nocot"
    assert "control" not in data["metrics"][1]
    assert spec_from_dict(data, base_dir=tmp_path) == spec


def test_verdict_defaults_and_values(spec_path: Path, tmp_path: Path) -> None:
    spec = load_study_spec(spec_path)
    assert (spec.verdict.normalization, spec.verdict.checkpoints) == DEFAULT_VERDICT_VARIANT
    assert spec.to_dict()["verdict"] == dict(
        zip(("normalization", "checkpoints"), DEFAULT_VERDICT_VARIANT, strict=True)
    )
    text = BASE + "verdict: {normalization: per-token, checkpoints: lr}\n"
    spec = load_study_spec(write_spec(tmp_path / "v", text))
    assert spec.verdict == VerdictSpec("per-token", "lr")
    assert spec_from_dict(spec.to_dict(), base_dir=tmp_path) == spec
