"""Merging a LoRA adapter for decoding: the same outputs, and the exact weights back after."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import LoraLayer

from conftest import add_random_lora, build_tiny_llama
from swiftstudy.model.merging import merge_lora, merged_lora, unmerge_lora


def _adapted(dtype: torch.dtype, b_scale: float = 0.05):
    model = build_tiny_llama(400, hidden_size=64, intermediate_size=96, dtype=torch.float32)
    peft_model, _ = add_random_lora(model, r=8, alpha=64, b_scale=b_scale)
    return peft_model.to(dtype)


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_unmerging_restores_every_weight_bit_for_bit(dtype):
    model = _adapted(dtype)
    before = _weights(model)
    ids = torch.randint(0, 400, (2, 9))

    for _ in range(3):  # repeated cycles do not drift
        with merged_lora(model) as layers:
            assert layers == 4  # up_proj and down_proj of 2 layers
            changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
            assert changed and all("base_layer" in n for n in changed)

    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name  # exact: no tolerance
    assert not any(m.merged for m in model.modules() if isinstance(m, LoraLayer))
    with torch.no_grad():
        after = model(input_ids=ids).logits
        fresh = _adapted(dtype)(input_ids=ids).logits
    assert torch.equal(after, fresh)


def test_the_merged_model_computes_what_the_adapter_does():
    model = _adapted(torch.float32, b_scale=0.5)
    ids = torch.randint(0, 400, (2, 9))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        with merged_lora(model):
            merged = model(input_ids=ids).logits
    assert (adapted - base).abs().max() > 1e-2  # the adapter matters
    # float32 rounding of W + s B A against W x + s B (A x): relative 1e-5 of the logits' scale.
    assert torch.allclose(merged, adapted, rtol=0, atol=1e-5 * adapted.abs().max().item())


def test_merging_twice_is_refused_and_a_changed_adapter_is_caught():
    model = _adapted(torch.float32)
    merged = merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged"):
        merge_lora(model)
    unmerge_lora(merged)

    merged = merge_lora(model)
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    with torch.no_grad():
        layer.lora_B["default"].weight.mul_(2)  # e.g. an adapter swapped while merged
    with pytest.raises(RuntimeError, match="did not restore"):
        unmerge_lora(merged)


def test_a_model_without_lora_merges_nothing():
    model = build_tiny_llama(400)
    before = _weights(model)
    with merged_lora(model) as layers:
        assert layers == 0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
