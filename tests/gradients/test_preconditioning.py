"""Adam-preconditioned gradients: LESS's formula by hand, and moments read from real checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.constants import OPTIMIZER_FILE
from swiftstudy.data import load_examples, tokenize_examples
from swiftstudy.errors import InputError
from swiftstudy.gradients import compute_gradients
from swiftstudy.gradients.preconditioning import compute_adam_update
from swiftstudy.model import ModelStates, discover_checkpoints, load_base_model
from swiftstudy.model.optimizer import load_adam_moments, trainer_parameter_order
from swiftstudy.train import run_training

BETA1, BETA2 = 0.9, 0.999
#: Every example is in every step's batch, so each step's gradient is known.
SPEC = {
    "model": "base",
    "data": ["add.jsonl"],
    "lora": {"r": 4, "alpha": 8},
    "lr": 0.01,
    "min_lr": 0.01,
    "warmup_steps": 0,
    "max_steps": 2,
    "batch_size": 6,
    "micro_batch_size": 3,
    "save_steps": 1,
    "device": "cpu",
}


def test_adam_update_by_hand():
    # m' = 0.5·m + 0.5·g, v' = 0.75·v + 0.25·g²
    g = torch.tensor([1.0, -2.0])
    m, v = torch.tensor([0.5, 0.0]), torch.tensor([0.0, 0.0])
    update = compute_adam_update(g, m, v, betas=(0.5, 0.75), eps=0.0)
    # m' = [0.75, -1], v' = [0.25, 1]
    assert update.tolist() == [1.5, -1.0]
    # ε inside the root (LESS): 0.75 / √(0.25 + 0.75); outside (torch Adam): 0.75 / (0.5 + 0.75)
    less = compute_adam_update(g, m, v, betas=(0.5, 0.75), eps=0.75)
    assert less[0].item() == pytest.approx(0.75)
    adam = compute_adam_update(g, m, v, betas=(0.5, 0.75), eps=0.75, eps_in_sqrt=False)
    assert adam[0].item() == pytest.approx(0.6)


def test_adam_update_of_rows_and_dtypes():
    torch.manual_seed(0)
    grads = torch.randn(3, 10, dtype=torch.float64)
    m, v = torch.randn(10), torch.rand(10)
    batched = compute_adam_update(grads, m, v)
    assert batched.dtype == torch.float64 and batched.shape == (3, 10)
    for row in range(3):
        torch.testing.assert_close(batched[row], compute_adam_update(grads[row], m, v))
    # Without history (m = v = 0): 0.1 g / √(0.001 g² + ε), about √10 · sign(g) for large g.
    fresh = compute_adam_update(grads.float(), torch.zeros(10), torch.zeros(10))
    assert fresh.dtype == torch.float32
    expected = 0.1 * grads / (0.001 * grads.square() + 1e-8).sqrt()
    torch.testing.assert_close(fresh, expected.float(), rtol=1e-5, atol=1e-6)
    assert float((fresh.abs() - math.sqrt(10)).abs().min()) < 1e-3
    with pytest.raises(ValueError, match="dimension"):
        compute_adam_update(grads, torch.zeros(9), torch.zeros(9))


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A tiny base model, six examples and a spec (LoRA unless changed)."""
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer)).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    rows = [
        {"id": f"a{i}", "task": "t", "prompt": f"What is {i} plus {i}?", "response": f"{2 * i}."}
        for i in range(6)
    ]
    (tmp_path / "add.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _train(root: Path, name: str, **changes) -> list:
    spec = {k: v for k, v in {**SPEC, **changes}.items() if v is not None}
    (root / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    run_training(root / f"{name}.yaml", root / name, progress=False)
    return discover_checkpoints(root / name)


def _training_gradient(root: Path, ckpt) -> tuple[torch.Tensor, list[tuple[str, torch.Size]]]:
    """The clipped gradient of a whole-data step at ``ckpt``, from the per-example engine."""
    base, tokenizer = load_base_model(str(root / "base"))
    model, targets = ModelStates(base).load(ckpt)
    toks = tokenize_examples(load_examples(root / "add.jsonl"), tokenizer)
    sequences = [(t.input_ids, t.completion_mask) for t in toks]
    grads = compute_gradients(
        model,
        [t.module for t in targets],
        sequences,
        pad_id=tokenizer.pad_token_id,
        max_examples=8,
        max_tokens=4096,
    )
    # The step's loss is the completion-token mean over the batch; the Trainer clips at norm 1.
    step = grads.double().sum(0) / sum(sum(t.completion_mask[1:]) for t in toks)
    step = step * min(1.0, 1.0 / (float(step.norm()) + 1e-6))
    return step, [(t.name, t.module.weight.shape) for t in targets]


def test_moments_of_a_lora_run_are_the_training_gradients_moments(run_dir):
    """m₂ − β₁m₁ = (1 − β₁)g₂ and v₂ − β₂v₁ = (1 − β₂)g₂², g₂ rebuilt from the engine at step 1."""
    first, second = _train(run_dir, "lora")
    g2, parameters = _training_gradient(run_dir, first)
    names = [name for name, _ in parameters]
    assert names[:2] == [
        "base_model.model.model.layers.0.mlp.up_proj.lora_A.default",
        "base_model.model.model.layers.0.mlp.up_proj.lora_B.default",
    ]
    one, two = load_adam_moments(first.path, parameters), load_adam_moments(second.path, parameters)
    assert (one.step, two.step) == (1, 2)
    assert two.betas == (BETA1, BETA2) and two.eps == 1e-8
    m1, v1 = (t.double() for t in one.flatten(names))
    m2, v2 = (t.double() for t in two.flatten(names))
    assert m2.shape == g2.shape
    # PEFT starts B at 0, so step 1 has no gradient for A (m₁ = 0 there); step 2 has one.
    a_rows = torch.cat([torch.full((s.numel(),), "lora_A" in n) for n, s in parameters])
    assert float(m1[a_rows].abs().max()) == 0 < float(g2[a_rows].abs().min())
    scale = float(g2.abs().max())
    torch.testing.assert_close((m2 - BETA1 * m1) / (1 - BETA1), g2, rtol=1e-3, atol=1e-4 * scale)
    torch.testing.assert_close(
        (v2 - BETA2 * v1) / (1 - BETA2), g2.square(), rtol=1e-3, atol=1e-4 * scale**2
    )
    update = compute_adam_update(g2[None], *one.flatten(names), betas=one.betas, eps=one.eps)
    torch.testing.assert_close(update[0], m2 / (v2 + 1e-8).sqrt(), rtol=1e-3, atol=1e-3)


def test_full_finetune_moments_follow_the_trainers_param_groups(run_dir):
    (ckpt,) = _train(run_dir, "full", full_finetune=True, lora=None, max_steps=1)
    model = AutoModelForCausalLM.from_pretrained(ckpt.path)
    order = trainer_parameter_order(model)
    norms = [name for name, _ in order if "norm" in name]
    assert norms and order[-len(norms) :] == [(n, model.get_parameter(n).shape) for n in norms]
    moments = load_adam_moments(ckpt.path, order)
    # After one step m = (1 − β₁)g and v = (1 − β₂)g², so m²/v = (1 − β₁)²/(1 − β₂) where g ≠ 0.
    for name, _ in order:
        m, v = moments.exp_avg[name].double(), moments.exp_avg_sq[name].double()
        seen = v > 0
        assert bool(seen.any()), name
        ratio = m[seen].square() / v[seen]
        torch.testing.assert_close(ratio, torch.full_like(ratio, 10.0), rtol=1e-4, atol=0)
    # Model order without the decay / no-decay grouping puts a norm where a matrix was saved.
    naive = [(n, p.shape) for n, p in model.named_parameters()]
    with pytest.raises(InputError, match="parameter order") as err:
        load_adam_moments(ckpt.path, naive)
    assert err.value.path.endswith(OPTIMIZER_FILE) and err.value.key == norms[0]


def test_mismatched_or_unsafe_optimizer_files_are_refused(run_dir):
    (ckpt,) = _train(run_dir, "lora", max_steps=1)
    base, _ = load_base_model(str(run_dir / "base"))
    _, targets = ModelStates(base).load(ckpt)
    parameters = [(t.name, t.module.weight.shape) for t in targets]
    swapped = [parameters[1], parameters[0], *parameters[2:]]
    with pytest.raises(InputError, match="shape") as err:
        load_adam_moments(ckpt.path, swapped)
    assert err.value.key == parameters[1][0] and err.value.path == str(ckpt.path / OPTIMIZER_FILE)
    with pytest.raises(InputError, match="holds 8 parameters, the model 7"):
        load_adam_moments(ckpt.path, parameters[:7])
    with pytest.raises(InputError, match="no optimizer state"):
        load_adam_moments(run_dir, parameters)

    torch.save({"state": {}, "param_groups": [], "payload": _Pickled()}, run_dir / OPTIMIZER_FILE)
    with pytest.raises(InputError, match="refused"):
        load_adam_moments(run_dir, parameters)
    torch.save({"weights": torch.zeros(2)}, run_dir / OPTIMIZER_FILE)
    with pytest.raises(InputError, match="not an optimizer state_dict"):
        load_adam_moments(run_dir, parameters)
    state = torch.load(ckpt.path / OPTIMIZER_FILE, weights_only=True)
    del state["state"][3]["exp_avg_sq"]
    torch.save(state, run_dir / OPTIMIZER_FILE)
    with pytest.raises(InputError, match="no Adam moments") as err:
        load_adam_moments(run_dir, parameters)
    assert err.value.key == parameters[3][0]


class _Pickled:
    """An arbitrary class: a weights-only load must refuse to build it."""
