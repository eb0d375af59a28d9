"""Tests for swiftstudy.model.states: applying checkpoints to a base model and picking targets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import build_tiny_llama
from swiftstudy.errors import InputError
from swiftstudy.model.checkpoints import Checkpoint
from swiftstudy.model.states import ModelStates, find_targets

VOCAB = 64
#: LoRA on up_proj and down_proj of 2 layers: 4 adapted modules, each with lora_A and lora_B.
N_LORA_TARGETS = 2 * 2 * 2


def lora_config(**overrides) -> LoraConfig:
    kwargs = {
        "r": 4,
        "lora_alpha": 32,
        "target_modules": ["up_proj", "down_proj"],
        "lora_dropout": 0.0,
        "init_lora_weights": False,
    }
    return LoraConfig(**{**kwargs, **overrides})


def save_adapter(
    path: Path, *, seed: int, model: torch.nn.Module | None = None, **overrides
) -> Checkpoint:
    """Save a random adapter (seeded) for ``model`` (the tiny Llama by default)."""
    base = build_tiny_llama(VOCAB) if model is None else model
    torch.manual_seed(1000 + seed)
    get_peft_model(base, lora_config(**overrides)).save_pretrained(path)
    return Checkpoint(path, seed, "adapter")


def save_full(path: Path, *, seed: int) -> Checkpoint:
    build_tiny_llama(VOCAB, seed=seed).save_pretrained(path)
    return Checkpoint(path, seed, "full")


def build_llama(*, hidden: int = 32, intermediate: int = 48, layers: int = 2) -> LlamaForCausalLM:
    """A tiny Llama of another shape than conftest's, for adapters that must not fit."""
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


@pytest.fixture()
def batch() -> torch.Tensor:
    return torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))


def logits(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch).logits


def fresh_peft(ckpt: Checkpoint) -> PeftModel:
    return PeftModel.from_pretrained(build_tiny_llama(VOCAB), ckpt.path).eval()


def lora_layer_count(model: torch.nn.Module) -> int:
    return sum(isinstance(m, LoraLayer) for m in model.modules())


def test_second_adapter_swaps_weights_in_place(tmp_path, batch):
    first = save_adapter(tmp_path / "checkpoint-1", seed=1)
    second = save_adapter(tmp_path / "checkpoint-2", seed=2)
    states = ModelStates(build_tiny_llama(VOCAB))
    model_1, _ = states.load(first)
    out_1 = logits(model_1, batch)
    torch.testing.assert_close(out_1, logits(fresh_peft(first), batch))
    model_2, _ = states.load(second)
    assert model_2 is model_1
    out_2 = logits(model_2, batch)
    torch.testing.assert_close(out_2, logits(fresh_peft(second), batch))
    assert not torch.allclose(out_1, out_2)


def test_adapter_targets_are_all_lora_linears(tmp_path):
    model, targets = ModelStates(build_tiny_llama(VOCAB)).load(save_adapter(tmp_path / "a", seed=1))
    assert len(targets) == N_LORA_TARGETS
    expected = [
        name
        for name, _ in model.named_modules()
        if name.endswith((".lora_A.default", ".lora_B.default"))
    ]
    assert [t.name for t in targets] == expected
    assert targets[0].name == "base_model.model.model.layers.0.mlp.up_proj.lora_A.default"
    modules = dict(model.named_modules())
    for target in targets:
        assert type(target.module) is torch.nn.Linear
        assert modules[target.name] is target.module


def test_loaded_models_are_frozen_and_in_eval_mode(tmp_path):
    states = ModelStates(build_tiny_llama(VOCAB))
    for ckpt in (save_adapter(tmp_path / "a", seed=1), save_adapter(tmp_path / "b", seed=2)):
        model, _ = states.load(ckpt)
        assert not any(p.requires_grad for p in model.parameters())
        assert not any(m.training for m in model.modules())


def test_target_weights_can_take_gradients(tmp_path, batch):
    model, targets = ModelStates(build_tiny_llama(VOCAB)).load(save_adapter(tmp_path / "a", seed=1))
    params = [t.module.weight for t in targets]
    for param in params:
        param.requires_grad_(True)
    model(input_ids=batch, labels=batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_different_adapter_config_rewraps(tmp_path, batch):
    first = save_adapter(tmp_path / "r4", seed=1)
    second = save_adapter(tmp_path / "r8", seed=2, r=8, target_modules=["up_proj"])
    states = ModelStates(build_tiny_llama(VOCAB))
    states.load(first)
    model, targets = states.load(second)
    assert lora_layer_count(model) == 2
    assert len(targets) == 2 * 2
    assert targets[0].module.weight.shape[0] == 8
    torch.testing.assert_close(logits(model, batch), logits(fresh_peft(second), batch))
    model, _ = states.load(first)
    torch.testing.assert_close(logits(model, batch), logits(fresh_peft(first), batch))


def test_adapter_for_another_model_size_is_refused(tmp_path, batch):
    good = save_adapter(tmp_path / "good", seed=1)
    wrong = save_adapter(tmp_path / "wrong", seed=2, model=build_llama(hidden=64))
    states = ModelStates(build_tiny_llama(VOCAB))
    with pytest.raises(InputError, match="does not fit") as info:
        states.load(wrong)
    assert info.value.key == "adapter_model.safetensors"
    assert info.value.path == str(wrong.path)
    assert "\n" not in str(info.value)
    model, _ = states.load(good)
    with pytest.raises(InputError, match="does not fit"):
        states.load(wrong)
    assert lora_layer_count(model) == 4
    model, _ = states.load(good)
    torch.testing.assert_close(logits(model, batch), logits(fresh_peft(good), batch))


def test_adapter_with_extra_modules_is_refused(tmp_path):
    good = save_adapter(tmp_path / "good", seed=1)
    deeper = save_adapter(tmp_path / "deeper", seed=2, model=build_llama(layers=3))
    states = ModelStates(build_tiny_llama(VOCAB))
    with pytest.raises(InputError, match=r"no module 'model\.layers\.2"):
        states.load(deeper)
    states.load(good)
    with pytest.raises(InputError, match="4 unknown") as info:
        states.load(deeper)
    assert info.value.key == "adapter_model.safetensors"


def test_dora_is_refused(tmp_path):
    dora = save_adapter(tmp_path / "dora", seed=1, use_dora=True)
    with pytest.raises(InputError, match="DoRA") as info:
        ModelStates(build_tiny_llama(VOCAB)).load(dora)
    assert info.value.key == "use_dora"


def test_a_live_model_gets_the_targets_a_saved_one_would_and_the_same_refusals(tmp_path):
    # find_targets: what the training callback studies, the model as it is being trained.
    ckpt = save_adapter(tmp_path / "a", seed=1)
    _, saved = ModelStates(build_tiny_llama(VOCAB)).load(ckpt)
    live = get_peft_model(build_tiny_llama(VOCAB), lora_config())
    found = find_targets(live, ckpt)
    assert [t.name for t in found] == [t.name for t in saved]
    assert len(found) == N_LORA_TARGETS and all(
        isinstance(t.module, torch.nn.Linear) for t in found
    )
    for overrides, key, what in (
        ({"use_dora": True}, "peft_config.use_dora", "DoRA is not supported"),
        ({"bias": "lora_only"}, "peft_config.bias", "trained biases are not supported"),
    ):
        model = get_peft_model(build_tiny_llama(VOCAB), lora_config(**overrides))
        with pytest.raises(InputError, match=what) as info:
            find_targets(model, ckpt)
        assert info.value.key == key
    full = find_targets(build_tiny_llama(VOCAB), ckpt, full_params=[r"mlp\.up_proj"])
    assert [t.name for t in full] == [f"model.layers.{i}.mlp.up_proj" for i in range(2)]


def save_trained_extras(path: Path, *, seed: int, vocab: int = VOCAB, **overrides) -> Checkpoint:
    """An adapter whose ``modules_to_save`` copies were trained too (perturbed, seeded), for a
    base model resized to ``vocab`` rows as after adding chat tokens."""
    base = build_tiny_llama(VOCAB)
    if vocab != VOCAB:
        base.resize_token_embeddings(vocab, mean_resizing=False)
    torch.manual_seed(1000 + seed)
    peft = get_peft_model(base, lora_config(**overrides))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if ".modules_to_save." in name:
                param.add_(0.1 * torch.randn_like(param))
    peft.save_pretrained(path)
    return Checkpoint(path, seed, "adapter")


def test_modules_to_save_are_applied_but_not_in_the_gradient(tmp_path, batch, caplog):
    first = save_trained_extras(tmp_path / "checkpoint-1", seed=1, modules_to_save=["lm_head"])
    second = save_trained_extras(tmp_path / "checkpoint-2", seed=2, modules_to_save=["lm_head"])
    states = ModelStates(build_tiny_llama(VOCAB))
    states.check(first)
    with caplog.at_level(logging.WARNING, logger="swiftstudy.model.states"):
        model, targets = states.load(first)
    assert "lm_head applied as trained but left out of the gradient" in caplog.text
    assert len(targets) == N_LORA_TARGETS and all("lora_" in t.name for t in targets)
    torch.testing.assert_close(logits(model, batch), logits(fresh_peft(first), batch))
    # The next checkpoint swaps its lm_head in place with the LoRA weights.
    model_2, _ = states.load(second)
    assert model_2 is model
    torch.testing.assert_close(logits(model_2, batch), logits(fresh_peft(second), batch))


@pytest.mark.filterwarnings("ignore:.*(tie_word_embeddings|save_embedding_layers).*:UserWarning")
def test_resized_embeddings_are_resized_in_the_base_model(tmp_path, batch):
    vocab = VOCAB + 6  # chat tokens added before training
    ckpt = save_trained_extras(
        tmp_path / "a", seed=1, vocab=vocab, modules_to_save=["embed_tokens", "lm_head"]
    )
    base = build_tiny_llama(VOCAB)
    states = ModelStates(base)
    states.check(ckpt)
    model, targets = states.load(ckpt)
    assert base.get_input_embeddings().weight.shape[0] == vocab
    assert len(targets) == N_LORA_TARGETS
    reference = build_tiny_llama(VOCAB)
    reference.resize_token_embeddings(vocab, mean_resizing=False)
    reference = PeftModel.from_pretrained(reference, ckpt.path).eval()
    new_tokens = torch.tensor([[1, VOCAB, VOCAB + 5, 2]])
    for ids in (batch, new_tokens):
        torch.testing.assert_close(logits(model, ids), logits(reference, ids))


def test_lora_bias_is_refused(tmp_path):
    ckpt = save_adapter(tmp_path / "a", seed=1, lora_bias=True)
    with pytest.raises(InputError, match="LoRA bias") as info:
        ModelStates(build_tiny_llama(VOCAB)).check(ckpt)
    assert info.value.key == "lora_bias"


@pytest.mark.filterwarnings("ignore:.*(tie_word_embeddings|save_embedding_layers).*:UserWarning")
def test_embedding_lora_is_refused_and_leaves_base_clean(tmp_path):
    embedding = save_adapter(tmp_path / "emb", seed=1, target_modules=["embed_tokens"])
    base = build_tiny_llama(VOCAB)
    with pytest.raises(InputError, match="plain LoRA"):
        ModelStates(base).load(embedding)
    assert lora_layer_count(base) == 0


def test_full_checkpoints_target_up_and_down_projections(tmp_path, batch):
    ckpt = save_full(tmp_path / "checkpoint-3", seed=3)
    model, targets = ModelStates(build_tiny_llama(VOCAB)).load(ckpt)
    assert [t.name for t in targets] == [
        f"model.layers.{i}.mlp.{proj}" for i in range(2) for proj in ("up_proj", "down_proj")
    ]
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    torch.testing.assert_close(logits(model, batch), logits(build_tiny_llama(VOCAB, seed=3), batch))


def test_full_checkpoint_custom_params_and_dtype(tmp_path):
    ckpt = save_full(tmp_path / "m", seed=1)
    states = ModelStates(
        build_tiny_llama(VOCAB), full_params=[r"q_proj\.weight$"], dtype=torch.float64
    )
    _, targets = states.load(ckpt)
    assert [t.name for t in targets] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
    ]
    assert targets[0].module.weight.dtype == torch.float64


def test_full_params_matching_nothing_is_refused(tmp_path):
    ckpt = save_full(tmp_path / "m", seed=1)
    with pytest.raises(InputError, match="no Linear weight") as info:
        ModelStates(build_tiny_llama(VOCAB), full_params=[r"gate_of_heaven"]).load(ckpt)
    assert info.value.key == "params"


def test_invalid_full_params_regex():
    with pytest.raises(InputError, match="invalid regex") as info:
        ModelStates(build_tiny_llama(VOCAB), full_params=["up_proj", "("])
    assert info.value.key == "params[1]"
