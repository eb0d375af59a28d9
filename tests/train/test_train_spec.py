"""Tests for swiftstudy.train.spec: defaults, data forms, overrides and every error case."""

from __future__ import annotations

from pathlib import Path

import pytest

from swiftstudy.errors import InputError
from swiftstudy.train import DataSource, LoraSpec, load_train_spec, train_spec_from_dict

BASE = """\
model: smollm2
data: data/base.jsonl
"""


def write_spec(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_reference_setup(tmp_path: Path) -> None:
    spec = load_train_spec(write_spec(tmp_path / "specs", BASE))
    assert spec.model == "smollm2"
    assert spec.data == (DataSource(tmp_path / "specs" / "data" / "base.jsonl"),)
    assert spec.lora == LoraSpec(r=64, alpha=512, dropout=0.0, targets=("up_proj", "down_proj"))
    assert (spec.lr, spec.min_lr, spec.warmup_steps) == (1e-5, 1e-7, 10)
    assert (spec.epochs, spec.max_steps) == (6, None)
    assert (spec.batch_size, spec.micro_batch_size) == (32, None)
    assert (spec.save_steps, spec.max_length, spec.schedule) == (50, 2048, "mixed")
    assert (spec.init_from, spec.full_finetune, spec.device) == (None, False, "auto")


def test_every_key_and_round_trip(tmp_path: Path) -> None:
    text = """\
model: ./base
data:
  - a.jsonl
  - {path: saved, split: train}
lora: {r: 8, alpha: 16, dropout: 0.1, targets: [q_proj]}
lr: 1e-4
min_lr: 0
warmup_steps: 0
max_steps: 40
batch_size: 16
micro_batch_size: 8
save_steps: 5
seed: 3
max_length: 256
on_overflow: drop
init_from: runs/base/checkpoint-50
schedule: sequential
device: cpu
"""
    path = write_spec(tmp_path, text)
    spec = load_train_spec(path)
    assert spec.model == str(tmp_path / "base")
    assert spec.data == (DataSource(tmp_path / "a.jsonl"), DataSource(tmp_path / "saved", "train"))
    assert spec.lora == LoraSpec(8, 16, 0.1, ("q_proj",))
    assert spec.lr == 1e-4 and spec.min_lr == 0
    assert (spec.epochs, spec.max_steps) == (None, 40)
    assert spec.init_from == tmp_path / "runs" / "base" / "checkpoint-50"
    assert spec.schedule == "sequential"
    again = train_spec_from_dict(spec.to_dict(), base_dir=tmp_path / "elsewhere")
    assert again == spec


def test_override_of_max_steps_replaces_the_files_epochs(tmp_path: Path) -> None:
    path = write_spec(tmp_path, BASE + "epochs: 3\n")
    spec = load_train_spec(path, ["max_steps=40", "lora.r=4", "lr=1e-3"])
    assert (spec.epochs, spec.max_steps, spec.lora.r, spec.lr) == (None, 40, 4, 1e-3)
    spec = load_train_spec(write_spec(tmp_path, BASE + "max_steps: 9\n"), ["epochs=2"])
    assert (spec.epochs, spec.max_steps) == (2, None)


def test_training_arguments_and_peft_names_are_aliases(tmp_path: Path) -> None:
    ours = """\
lora: {r: 8, alpha: 16, dropout: 0.1, targets: [q_proj]}
lr: 1e-4
epochs: 2
batch_size: 8
micro_batch_size: 2
"""
    theirs = """\
lora: {r: 8, lora_alpha: 16, lora_dropout: 0.1, target_modules: [q_proj]}
learning_rate: 1e-4
num_train_epochs: 2
batch_size: 8
per_device_train_batch_size: 2
report_to: none
"""
    expected = load_train_spec(write_spec(tmp_path, BASE + ours))
    spec = load_train_spec(write_spec(tmp_path, BASE + theirs))
    assert spec.lora == expected.lora == LoraSpec(8, 16, 0.1, ("q_proj",))
    assert (spec.lr, spec.epochs, spec.micro_batch_size) == (1e-4, 2, 2)
    assert spec.report_to == "none"
    # The resolved config writes our names: the two specs are one run.
    assert spec.to_dict() == expected.to_dict()
    assert "report_to" not in spec.to_dict() and "revision" not in spec.to_dict()
    # A TrainingArguments name given as an override replaces the file's own key.
    spec = load_train_spec(write_spec(tmp_path, BASE + ours), ["learning_rate=3e-4"])
    assert spec.lr == 3e-4


def test_from_pretrained_keys(tmp_path: Path) -> None:
    text = "model: org/model\ndata: a.jsonl\n"
    extra = "revision: v1\ntrust_remote_code: true\nattn_implementation: sdpa\n"
    spec = load_train_spec(write_spec(tmp_path, text + extra))
    assert (spec.revision, spec.trust_remote_code, spec.attn_implementation) == (
        "v1",
        True,
        "sdpa",
    )
    assert spec.to_dict()["revision"] == "v1"
    assert train_spec_from_dict(spec.to_dict(), base_dir=tmp_path) == spec
    spec = load_train_spec(write_spec(tmp_path, BASE + "attn_implementation: eager\n"))
    assert spec.attn_implementation == "eager"  # the converted bundled model takes it too


def test_full_finetune_drops_lora_from_the_saved_config(tmp_path: Path) -> None:
    spec = load_train_spec(write_spec(tmp_path, BASE + "full_finetune: true\n"))
    assert spec.full_finetune and spec.to_dict()["lora"] is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("warmup: 5\n", "train.yaml:3: warmup: unknown key 'warmup': did you mean 'warmup_steps'?"),
        ("lora:\n  r: 0\n", "train.yaml:4: lora.r: must be at least 1"),
        ("lora: {targets: []}\n", "train.yaml:3: lora.targets: expected a non-empty list"),
        ("lora: {dropout: 1.0}\n", "train.yaml:3: lora.dropout: must be below 1"),
        ("lora: {rank: 4}\n", "train.yaml:3: lora.rank: unknown key 'rank'"),
        ("lr: fast\n", "train.yaml:3: lr: expected a number, got a string ('fast')"),
        ("lr: 0\n", "train.yaml:3: lr: must be positive"),
        ("lr: 1e-6\nmin_lr: 1e-5\n", "train.yaml:4: min_lr: must not exceed lr"),
        ("micro_batch_size: 5\n", "train.yaml:3: micro_batch_size: must divide batch_size (32)"),
        ("epochs: 2\nmax_steps: 9\n", "train.yaml:4: max_steps: give epochs or max_steps"),
        ("epochs: 0\n", "train.yaml:3: epochs: must be at least 1"),
        ("schedule: random\n", "train.yaml:3: schedule: unknown value 'random'"),
        ("full_finetune: 1\n", "train.yaml:3: full_finetune: expected true or false"),
        ("device: cuda:1\n", "train.yaml:3: device: unknown value 'cuda:1'"),
        ("save_steps: 2.5\n", "train.yaml:3: save_steps: expected an integer"),
        ("init_from: ''\n", "train.yaml:3: init_from: must not be empty"),
        (
            "lr: 1e-4\nlearning_rate: 1e-4\n",
            "train.yaml:4: learning_rate: 'lr' and 'learning_rate' name the same key",
        ),
        (
            "lora: {alpha: 8, lora_alpha: 8}\n",
            "train.yaml:3: lora.lora_alpha: 'alpha' and 'lora_alpha' name the same key",
        ),
        ("num_train_epochs: 2\nmax_steps: 9\n", "train.yaml:4: max_steps: give epochs or"),
        ("learning_rate: 0\n", "train.yaml:3: learning_rate: must be positive"),
        (
            "per_device_train_batch_size: 5\n",
            "train.yaml:3: per_device_train_batch_size: must divide batch_size (32)",
        ),
        (
            "learning_rat: 1e-4\n",
            "train.yaml:3: learning_rat: unknown key 'learning_rat': did you mean 'learning_rate'?",
        ),
        (
            "per_device_batch_size: 4\n",
            "train.yaml:3: per_device_batch_size: unknown key 'per_device_batch_size': did you "
            "mean 'per_device_train_batch_size'?",
        ),
        (
            "lora_alpha: 16\n",
            "train.yaml:3: lora_alpha: unknown key 'lora_alpha': did you mean 'lora.alpha'?",
        ),
        (
            "target_modules: [q_proj]\n",
            "train.yaml:3: target_modules: unknown key 'target_modules': did you mean "
            "'lora.targets'?",
        ),
        (
            "gradient_accumulation_steps: 4\n",
            "train.yaml:3: gradient_accumulation_steps: unknown key "
            "'gradient_accumulation_steps': set batch_size, the examples of one optimizer step",
        ),
        ("report_to: wandb\n", "train.yaml:3: report_to: swiftstudy reports to no tracker"),
        (
            "revision: v1\n",
            "train.yaml:3: revision: applies to a Hub id, not to the bundled model: smollm2",
        ),
        (
            "trust_remote_code: true\n",
            "train.yaml:3: trust_remote_code: applies to a Hub id or a local folder, not to the "
            "bundled model",
        ),
        ("trust_remote_code: null\n", "train.yaml:3: trust_remote_code: expected true or false"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, extra: str, expected: str) -> None:
    path = write_spec(tmp_path, BASE + extra)
    with pytest.raises(InputError) as info:
        load_train_spec(path)
    assert str(info.value).startswith(f"{tmp_path}/{expected}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: smollm2\n", "train.yaml:1: data: missing required key 'data'"),
        ("model: smollm2\ndata: []\n", "train.yaml:2: data: the list of data sources is empty"),
        (
            "model: smollm2\ndata:\n  - a.jsonl\n  - {path: b.jsonl, splt: x}\n",
            "train.yaml:4: data[1].splt: unknown key 'splt': did you mean 'split'?",
        ),
        ("model: smollm2\ndata: {split: x}\n", "train.yaml:2: data.path: missing required key"),
        ("- model\n", "train.yaml:1: expected a mapping of spec keys"),
    ],
)
def test_errors_in_required_sections(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(InputError, match=None) as info:
        load_train_spec(write_spec(tmp_path, text))
    assert str(info.value).startswith(f"{tmp_path}/{expected}")


def test_bad_override_is_marked(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_train_spec(write_spec(tmp_path, BASE), ["batch_size=0"])
    message = str(info.value)
    assert "batch_size: must be at least 1" in message
    assert "(set by a command-line override)" in message
