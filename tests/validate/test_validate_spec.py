"""The validate spec: runs as train specs (defaults + own keys), references, errors at file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftstudy.errors import InputError
from swiftstudy.validate.spec import (
    QuickSpec,
    apply_quick,
    dependency_order,
    load_validate_spec,
)

SPEC = """\
model: smollm2
eval: {path: eval.jsonl, evaluator: numeric}
train: {epochs: 1, lr: 1.0e-4, batch_size: 8, lora: {r: 8, alpha: 16}}
runs:
  - {name: base,         data: [base.jsonl]}
  - {name: base+cot,     data: [base.jsonl, cot.jsonl], schedule: mixed}
  - {name: base→clarify, data: [base.jsonl, clarify.jsonl], schedule: sequential}
  - {name: pos,          init_from: base, data: [pos.jsonl], lr: 1.0e-6, epochs: 3}
baseline: base
swift: ../cot/scores.csv
"""
HEAD = "model: m\neval: {path: e.jsonl}\n"


def _write(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "validate.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str, overrides=()) -> str:
    with pytest.raises(InputError) as info:
        load_validate_spec(_write(tmp_path, text), overrides)
    return str(info.value)


def test_the_issue_example_loads(tmp_path: Path):
    spec = load_validate_spec(_write(tmp_path))
    assert [run.name for run in spec.runs] == ["base", "base+cot", "base→clarify", "pos"]
    assert spec.baseline == "base"
    assert spec.eval.evaluator.kind == "numeric"
    assert spec.eval.path == tmp_path / "eval.jsonl"
    assert spec.swift is not None and spec.swift.scores == tmp_path.parent / "cot" / "scores.csv"
    base, cot, clarify, pos = spec.runs
    assert base.train.model == "smollm2"
    assert (base.train.epochs, base.train.lr, base.train.batch_size) == (1, 1e-4, 8)
    assert (base.train.lora.r, base.train.lora.alpha) == (8, 16)
    assert [s.path.name for s in cot.train.data] == ["base.jsonl", "cot.jsonl"]
    assert clarify.train.schedule == "sequential"
    # The run's own keys win; init_from names a run, filled in with its checkpoint at run time.
    assert (pos.train.lr, pos.train.epochs, pos.init_run, pos.train.init_from) == (
        1e-6,
        3,
        "base",
        None,
    )
    assert dependency_order(spec)[0].name == "base"
    assert spec.to_dict()["runs"][3]["init_run"] == "base"


def test_a_runs_duration_replaces_the_defaults_and_lora_merges(tmp_path: Path):
    spec = load_validate_spec(
        _write(
            tmp_path,
            "model: m\neval: {path: e.jsonl}\ntrain: {max_steps: 40, lora: {r: 8, alpha: 16}}\n"
            "runs:\n  - {name: a, data: d.jsonl, epochs: 2, lora: {r: 4}}\n"
            "  - {name: b, data: d.jsonl}\n",
        )
    )
    a, b = spec.runs
    assert (a.train.epochs, a.train.max_steps) == (2, None)
    assert (a.train.lora.r, a.train.lora.alpha) == (4, 16)
    assert (b.train.epochs, b.train.max_steps) == (None, 40)
    assert spec.baseline == "a"  # the first run by default
    assert spec.eval.evaluator.kind == "exact"
    # The TrainingArguments names: a run's num_train_epochs replaces the defaults' max_steps too.
    spec = load_validate_spec(
        _write(
            tmp_path,
            HEAD + "train: {max_steps: 40, learning_rate: 1.0e-4}\n"
            "runs:\n  - {name: a, data: d.jsonl, num_train_epochs: 2}\n",
        )
    )
    assert (spec.runs[0].train.epochs, spec.runs[0].train.max_steps) == (2, None)
    assert spec.runs[0].train.lr == 1e-4


def test_overrides_reach_defaults_and_runs(tmp_path: Path):
    spec = load_validate_spec(_write(tmp_path), ["train.lr=0.001", "runs.1.seed=7", "device=cpu"])
    assert spec.run("base").train.lr == 0.001
    assert spec.run("base+cot").train.seed == 7
    assert spec.run("pos").train.lr == 1e-6  # its own value still wins
    assert spec.device == "cpu"


def test_base_key_is_a_run_named_base(tmp_path: Path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "adapter_config.json").write_text("{}")
    text = HEAD + "base: ckpt\nruns:\n  - {name: pos, init_from: base, data: p.jsonl}\n"
    spec = load_validate_spec(_write(tmp_path, text))
    assert [r.name for r in spec.runs] == ["base", "pos"]
    assert spec.runs[0].checkpoint == tmp_path / "ckpt"
    assert spec.runs[1].init_run == "base"
    text = "model: m\neval: {path: e.jsonl}\nbase: b.jsonl\nruns:\n  - {name: x, data: x.jsonl}\n"
    spec = load_validate_spec(_write(tmp_path, text))
    assert [s.path.name for s in spec.runs[0].train.data] == ["b.jsonl"]
    text = "model: m\neval: {path: e.jsonl}\nbase: b.jsonl\nruns:\n  - {name: base, data: x}\n"
    assert "runs[0].name: duplicate run name 'base' (also base:)" in _error(tmp_path, text)


def test_evaluators_and_their_options(tmp_path: Path):
    def evaluator(text):
        return load_validate_spec(
            _write(
                tmp_path,
                f"model: m\neval: {{path: e.jsonl, evaluator: {text}}}\n"
                "runs: [{name: a, data: d.jsonl}]\n",
            )
        ).eval.evaluator

    assert evaluator("{name: numeric, tolerance: 0.5}").tolerance == 0.5
    assert evaluator("{name: choice, labels: ['yes', 'no']}").labels == ("yes", "no")
    assert evaluator("{name: choice, labels: [1, 2, 3]}").labels == ("1", "2", "3")
    with pytest.raises(InputError, match=r"labels\[0\]: YAML reads this label as True"):
        evaluator("{name: choice, labels: [yes, no]}")
    assert evaluator("{name: regex, pattern: 'is (\\d+)'}").pattern == "is (\\d+)"
    assert evaluator("grading:score").kind == "grading:score"
    judge = evaluator("{name: judge, model: gpt-4o, base_url: 'http://127.0.0.1:8080/v1'}")
    assert judge.judge.model == "gpt-4o"
    assert judge.judge.base_url == "http://127.0.0.1:8080/v1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: m\neval: {path: e.jsonl}\nruns: []\n", ":3: runs: expected a non-empty list"),
        (
            "model: m\neval: {path: e.jsonl}\nruns:\n  - {name: a, data: d.jsonl, lr: -1}\n",
            ":4: runs[0].lr: must be positive",
        ),
        (
            "model: m\neval: {path: e.jsonl}\ntrain: {lr: fast}\nruns:\n  - {name: a, data: d}\n",
            ":3: train.lr: expected a number",
        ),
        (
            "model: m\neval: {path: e.jsonl}\nruns:\n  - {name: a, dat: d.jsonl}\n",
            "runs[0].dat: unknown key 'dat': did you mean 'data'?",
        ),
        (
            "model: m\neval: {path: e.jsonl}\nruns:\n  - {name: a}\n",
            ":4: runs[0].data: missing required key 'data'",
        ),
        (
            "model: m\neval: {path: e.jsonl}\ntrain: {model: x}\nruns: [{name: a, data: d}]\n",
            ":3: train.model: not a default: set it at the top level",
        ),
        (
            HEAD + "runs:\n  - {name: a, data: d}\n  - {name: a, data: d}\n",
            ":5: runs[1].name: duplicate run name 'a' (also runs[0])",
        ),
        (
            "model: m\neval: {path: e.jsonl}\nruns:\n  - {name: a, data: d, init_from: b}\n"
            "  - {name: b, data: d, init_from: a}\n",
            "runs[0].init_from: runs continue from each other in a cycle: a → b → a",
        ),
        (
            "model: m\neval: {path: e.jsonl}\nruns:\n  - {name: a, data: d, init_from: a}\n",
            "runs[0].init_from: a run cannot continue from itself",
        ),
        (
            "model: m\neval: {path: e.jsonl}\nruns: [{name: a, data: d}]\nbaseline: b\n",
            ":4: baseline: unknown run 'b' (expected one of: a)",
        ),
        (
            "model: m\neval: {path: e.jsonl, evaluator: fuzzy}\nruns: [{name: a, data: d}]\n",
            ":2: eval.evaluator.name: unknown evaluator 'fuzzy'",
        ),
        (
            "model: m\neval: {path: e.jsonl, evaluator: {name: regex}}\n"
            "runs: [{name: a, data: d}]\n",
            "eval.evaluator.pattern: missing required key 'pattern'",
        ),
        (
            "model: m\neval: {path: e.jsonl, evaluator: {name: regex, pattern: '('}}\n"
            "runs: [{name: a, data: d}]\n",
            "eval.evaluator.pattern: invalid regex",
        ),
        (
            "model: m\neval: {path: e.jsonl, evaluator: {name: exact, labels: [a, b]}}\n"
            "runs: [{name: a, data: d}]\n",
            "eval.evaluator.labels: unknown key 'labels'",
        ),
        (
            "model: m\neval: {path: e.jsonl, evaluator: {name: choice, labels: [a]}}\n"
            "runs: [{name: a, data: d}]\n",
            "eval.evaluator.labels: expected a list of at least 2 labels",
        ),
        (
            "model: m\neval: {path: e.jsonl}\nruns: [{name: a, checkpoint: nowhere}]\n",
            "runs[0].checkpoint: no such file or folder",
        ),
        (
            HEAD + "runs:\n  - {name: a, data: d}\n  - {name: b, data: d}\n"
            "swift: {scores: s.csv, metrics: {a: m1}}\n",
            "swift.metrics.a: the baseline has no gain to compare",
        ),
        (
            "model: m\neval: {path: e.jsonl}\nruns: [{name: a, data: d}]\nquick: {max_step: 3}\n",
            "quick.max_step: unknown key 'max_step': did you mean 'max_steps'?",
        ),
        (
            "model: m\neval: {path: e.jsonl}\nruns: [{name: a, data: d}]\ndevice: tpu\n",
            ":4: device: unknown device 'tpu'",
        ),
        (
            HEAD + "train: {revision: v1}\nruns: [{name: a, data: d}]\n",
            ":3: train.revision: set it at the top level, beside model: every run trains",
        ),
        (
            HEAD + "runs: [{name: a, data: d, attn_implementation: sdpa}]\n",
            ":3: runs[0].attn_implementation: set it at the top level, beside model",
        ),
        (
            "model: smollm2\neval: {path: e.jsonl}\nrevision: v1\nruns: [{name: a, data: d}]\n",
            ":3: revision: applies to a Hub id, not to the bundled model",
        ),
        (
            HEAD + "trust_remote_code: maybe\nruns: [{name: a, data: d}]\n",
            ":3: trust_remote_code: expected true or false, got a string ('maybe')",
        ),
        (
            HEAD + "attn_implementation: [sdpa]\nruns: [{name: a, data: d}]\n",
            ":3: attn_implementation: expected a string",
        ),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str):
    assert expected in _error(tmp_path, text)


def test_an_override_error_says_so(tmp_path: Path):
    message = _error(tmp_path, SPEC, ["runs.0.lr=-3"])
    assert "runs[0].lr: must be positive" in message
    assert "(set by a command-line override)" in message


def test_a_checkpoint_run_takes_no_training_keys(tmp_path: Path):
    (tmp_path / "ckpt").mkdir()
    text = "model: m\neval: {path: e.jsonl}\nruns: [{name: a, checkpoint: ckpt, lr: 0.1}]\n"
    assert "runs[0].lr: a run evaluated from a checkpoint takes no training keys" in _error(
        tmp_path, text
    )


def test_quick_profile_shortens_runs_eval_and_answers(tmp_path: Path):
    spec = load_validate_spec(_write(tmp_path))
    spec = spec.__class__(**{**spec.__dict__, "quick": QuickSpec(12, 5, 16)})
    quick = apply_quick(spec)
    for run in quick.runs:
        assert (run.train.max_steps, run.train.epochs) == (12, None)
        assert run.train.warmup_steps <= 3
    assert (quick.eval.limit, quick.eval.max_new_tokens) == (5, 16)
    assert quick.runs[3].init_run == "base"


def test_the_spec_round_trips_as_json(tmp_path: Path):
    spec = load_validate_spec(_write(tmp_path))
    json.dumps(spec.to_dict())  # plain data: config.yaml records it


def test_model_loading_keys_reach_every_run_and_are_recorded(tmp_path: Path):
    spec = load_validate_spec(
        _write(
            tmp_path,
            "model: org/model\nrevision: v1\ntrust_remote_code: true\n"
            "attn_implementation: sdpa\neval: {path: e.jsonl}\ntrain: {epochs: 1}\n"
            "runs:\n  - {name: a, data: d.jsonl}\n  - {name: b, init_from: a, data: d.jsonl}\n",
        )
    )
    assert (spec.revision, spec.trust_remote_code, spec.attn_implementation) == (
        "v1",
        True,
        "sdpa",
    )
    for run in spec.runs:  # each run's train spec loads the base model as answers do
        assert (run.train.revision, run.train.trust_remote_code) == ("v1", True)
        assert run.train.attn_implementation == "sdpa"
    saved = spec.to_dict()
    assert (saved["revision"], saved["trust_remote_code"]) == ("v1", True)
    assert saved["attn_implementation"] == "sdpa"
    assert saved["runs"][1]["train"]["revision"] == "v1"


def test_model_loading_keys_left_out_change_no_saved_config(tmp_path: Path):
    spec = load_validate_spec(_write(tmp_path))
    saved = spec.to_dict()
    for key in ("revision", "trust_remote_code", "attn_implementation"):
        assert key not in saved
        assert key not in saved["runs"][0]["train"]


def test_a_model_loading_key_set_by_an_override(tmp_path: Path):
    path = _write(tmp_path, "model: org/model\neval: {path: e.jsonl}\nruns: [{name: a, data: d}]\n")
    spec = load_validate_spec(path, ["attn_implementation=eager"])
    assert (spec.attn_implementation, spec.runs[0].train.attn_implementation) == ("eager", "eager")
    message = _error(tmp_path, path.read_text(), ["trust_remote_code=perhaps"])
    assert "trust_remote_code: expected true or false" in message
    assert "(set by a command-line override)" in message


def test_the_eval_backend_is_hf_unless_vllm_is_asked_for(tmp_path: Path):
    spec = load_validate_spec(_write(tmp_path))
    assert spec.eval.backend == "hf"
    assert "backend" not in spec.to_dict()["eval"]  # configs saved before the key stay equal
    chosen = load_validate_spec(_write(tmp_path), ["eval.backend=vllm"])
    assert chosen.eval.backend == "vllm"
    assert chosen.to_dict()["eval"]["backend"] == "vllm"
    wrong = SPEC.replace("evaluator: numeric}", "evaluator: numeric, backend: vlm}")
    message = _error(tmp_path, wrong)
    assert "validate.yaml:2" in message and "eval.backend" in message and "vllm" in message


def test_the_vllm_backend_refuses_a_full_fine_tune_before_training(tmp_path: Path):
    vllm = SPEC.replace("evaluator: numeric}", "evaluator: numeric, backend: vllm}")
    own = vllm.replace("data: [pos.jsonl],", "data: [pos.jsonl], full_finetune: true,")
    message = _error(tmp_path, own)
    assert "validate.yaml:8" in message and "runs[3].full_finetune" in message
    assert "decodes LoRA adapters" in message
    default = vllm.replace("train: {epochs: 1,", "train: {full_finetune: true, epochs: 1,")
    assert "train.full_finetune" in _error(tmp_path, default)
    assert load_validate_spec(_write(tmp_path, own.replace(", backend: vllm", "")))  # hf: fine
