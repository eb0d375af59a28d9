"""Tests for swiftstudy.model.checkpoints: finding checkpoint series on disk and hashing them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import LoraConfig, get_peft_model

from conftest import build_tiny_llama
from swiftstudy.errors import InputError
from swiftstudy.model.checkpoints import Checkpoint, discover_checkpoints, hash_checkpoint

VOCAB = 64


def _lora_config() -> LoraConfig:
    return LoraConfig(
        r=4,
        lora_alpha=32,
        target_modules=["up_proj", "down_proj"],
        lora_dropout=0.0,
        init_lora_weights=False,
    )


def save_adapter(path: Path, *, seed: int = 0) -> Path:
    """Save a random LoRA adapter for a tiny Llama to ``path``."""
    model = get_peft_model(build_tiny_llama(VOCAB, seed=seed), _lora_config())
    model.save_pretrained(path)
    return path


def save_full(path: Path, *, seed: int = 0) -> Path:
    """Save a whole tiny Llama (safetensors) to ``path``."""
    build_tiny_llama(VOCAB, seed=seed).save_pretrained(path)
    return path


def write_trainer_state(path: Path, step: int) -> None:
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A Trainer output folder: adapters at steps 20, 100 and 5, plus unrelated entries."""
    root = tmp_path_factory.mktemp("run")
    for seed, step in enumerate((20, 100, 5)):
        save_adapter(root / f"checkpoint-{step}", seed=seed)
    (root / "runs").mkdir()
    (root / "notes.txt").write_text("not a checkpoint")
    return root


def test_trainer_layout_sorted_by_step(run_dir):
    checkpoints = discover_checkpoints(run_dir)
    assert [c.step for c in checkpoints] == [5, 20, 100]
    assert [c.path.name for c in checkpoints] == ["checkpoint-5", "checkpoint-20", "checkpoint-100"]
    assert all(c.kind == "adapter" for c in checkpoints)


def test_trainer_layout_accepts_string_and_base_dir(run_dir):
    checkpoints = discover_checkpoints(run_dir.name, base_dir=run_dir.parent)
    assert [c.step for c in checkpoints] == [5, 20, 100]


def test_explicit_list_resolves_relative_paths_and_sorts(run_dir):
    source = [
        {"path": "checkpoint-100"},
        {"path": str(run_dir / "checkpoint-5"), "step": 7},
    ]
    checkpoints = discover_checkpoints(source, base_dir=run_dir)
    assert checkpoints == [
        Checkpoint(run_dir / "checkpoint-5", 7, "adapter"),
        Checkpoint(run_dir / "checkpoint-100", 100, "adapter"),
    ]


def test_explicit_list_step_from_trainer_state(tmp_path):
    adapter = save_adapter(tmp_path / "final")
    write_trainer_state(adapter, 321)
    assert discover_checkpoints([{"path": "final"}], base_dir=tmp_path)[0].step == 321


def test_single_adapter_dir_uses_trainer_state(tmp_path):
    adapter = save_adapter(tmp_path / "adapter")
    write_trainer_state(adapter, 42)
    assert discover_checkpoints(adapter) == [Checkpoint(adapter, 42, "adapter")]


def test_single_full_dir_without_state_is_step_zero(tmp_path):
    model_dir = save_full(tmp_path / "model")
    assert discover_checkpoints(model_dir) == [Checkpoint(model_dir, 0, "full")]


def test_full_trainer_layout(tmp_path):
    save_full(tmp_path / "checkpoint-3")
    save_full(tmp_path / "checkpoint-1", seed=1)
    checkpoints = discover_checkpoints(tmp_path)
    assert [(c.step, c.kind) for c in checkpoints] == [(1, "full"), (3, "full")]


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such folder") as info:
        discover_checkpoints(tmp_path / "nope", origin="run.checkpoints")
    assert info.value.key == "run.checkpoints"
    assert info.value.path == str(tmp_path / "nope")


def test_missing_path_in_list_names_the_entry(run_dir):
    source = [{"path": "checkpoint-5"}, {"path": "checkpoint-20"}, {"path": "missing"}]
    with pytest.raises(InputError) as info:
        discover_checkpoints(source, base_dir=run_dir)
    assert info.value.key == "checkpoints[2].path"
    assert info.value.path == str(run_dir / "missing")


def test_dir_that_is_neither_layout(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(InputError, match="not a checkpoint"):
        discover_checkpoints(tmp_path)


def test_checkpoint_without_weights(tmp_path):
    adapter = save_adapter(tmp_path / "checkpoint-1")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(InputError, match="no weights") as info:
        discover_checkpoints(tmp_path)
    assert info.value.path == str(adapter)


def test_pickled_full_weights_are_refused(tmp_path):
    model_dir = tmp_path / "checkpoint-1"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InputError, match="safetensors"):
        discover_checkpoints(tmp_path)


def test_mixed_kinds_are_refused(tmp_path):
    save_adapter(tmp_path / "checkpoint-1")
    save_full(tmp_path / "checkpoint-2")
    with pytest.raises(InputError, match="cannot mix"):
        discover_checkpoints(tmp_path)


def test_duplicate_steps_are_refused(run_dir):
    source = [{"path": "checkpoint-5", "step": 1}, {"path": "checkpoint-20", "step": 1}]
    with pytest.raises(InputError, match="step 1 appears twice"):
        discover_checkpoints(source, base_dir=run_dir)


def test_list_entry_without_step_source(tmp_path):
    save_adapter(tmp_path / "final")
    with pytest.raises(InputError, match="cannot tell the step") as info:
        discover_checkpoints([{"path": "final"}], base_dir=tmp_path)
    assert info.value.key == "checkpoints[0].step"


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"path": "checkpoint-5", "step": -1}, "checkpoints[0].step"),
        ({"path": "checkpoint-5", "step": "5"}, "checkpoints[0].step"),
        ({"step": 5}, "checkpoints[0].path"),
        ({"path": "checkpoint-5", "stepp": 5}, "checkpoints[0]"),
        ("checkpoint-5", "checkpoints[0]"),
    ],
)
def test_bad_list_entries(run_dir, entry, key):
    with pytest.raises(InputError) as info:
        discover_checkpoints([entry], base_dir=run_dir)
    assert info.value.key == key


def test_empty_list_is_refused():
    with pytest.raises(InputError, match="empty"):
        discover_checkpoints([])


def test_hash_is_stable_across_copies(tmp_path):
    first = Checkpoint(save_adapter(tmp_path / "a", seed=3), 1, "adapter")
    second = Checkpoint(save_adapter(tmp_path / "b", seed=3), 2, "adapter")
    (second.path / "README.md").write_text("docs do not count")
    assert hash_checkpoint(first) == hash_checkpoint(second)
    assert len(hash_checkpoint(first)) == 64


def test_hash_changes_with_weights(tmp_path):
    first = Checkpoint(save_adapter(tmp_path / "a", seed=3), 1, "adapter")
    second = Checkpoint(save_adapter(tmp_path / "b", seed=4), 1, "adapter")
    assert hash_checkpoint(first) != hash_checkpoint(second)


def test_hash_of_full_checkpoint_changes_with_config(tmp_path):
    ckpt = Checkpoint(save_full(tmp_path / "m"), 0, "full")
    before = hash_checkpoint(ckpt)
    config = json.loads((ckpt.path / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (ckpt.path / "config.json").write_text(json.dumps(config))
    assert hash_checkpoint(ckpt) != before


def test_learning_rate_log_from_trainer_state(tmp_path):
    from swiftstudy.model import load_learning_rate_log

    ckpt = Checkpoint(tmp_path, 3, "adapter")
    assert load_learning_rate_log(ckpt) is None
    history = [
        {"step": 1, "loss": 2.0, "learning_rate": 1e-4},
        {"step": 2, "eval_loss": 1.0},  # no learning rate: skipped
        {"step": 3, "loss": 1.5, "learning_rate": 5e-5},
    ]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    assert load_learning_rate_log(ckpt) == [(1, 1e-4), (3, 5e-5)]
    history[2]["learning_rate"] = "fast"
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    with pytest.raises(InputError, match="log_history\\[2\\]"):
        load_learning_rate_log(ckpt)
