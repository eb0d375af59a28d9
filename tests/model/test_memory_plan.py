"""The memory plan: exact sizes against real tensors, activations against a measured peak."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import add_random_lora
from swiftstudy.errors import InputError
from swiftstudy.gradients import (
    collate,
    compute_batch_gradients,
    compute_gradients,
    gradient_dimension,
)
from swiftstudy.model.memory import (
    DOT_CHUNK_COLUMNS,
    GradientWorkload,
    ModelShape,
    choose_batch_tokens,
    plan_memory,
    render_memory_plan,
)
from swiftstudy.scores import compute_dot_products

GIB = 1 << 30
#: Llama-2-7B: hidden 4096, MLP 11008, 32 layers, vocab 32000, bf16.
LLAMA_7B = ModelShape(4096, 11008, 32, 32000, n_params=6_738_415_616, dtype_bytes=2)


def _tiny(dtype: torch.dtype, *, r: int = 8, layers: int = 4):
    """A Llama a little larger than conftest's, so activations dominate the allocator's noise."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=400,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    base = LlamaForCausalLM(config).to(dtype).eval()
    n_params = sum(p.numel() for p in base.parameters())
    model, modules = add_random_lora(base, r=r, alpha=2 * r)
    shape = ModelShape.from_config(config, n_params, torch.finfo(dtype).bits // 8)
    return model, modules, shape


def _sequences(n: int, length: int) -> list[tuple[list[int], list[int]]]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 400, (n, length), generator=generator).tolist()
    return [(row, [0] + [1] * (length - 1)) for row in ids]


def _peak_allocated(fn) -> int:
    """Peak bytes of CPU tensors allocated while ``fn`` runs, from the profiler's memory events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    running = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weights_gradients_and_dot_products_are_exact(dtype):
    model, modules, shape = _tiny(dtype)
    sequences = _sequences(6, 20)
    plan = plan_memory(shape, GradientWorkload(n_examples=6, rank=8, batch_examples=4), 80)
    assert plan.lora_params == gradient_dimension(modules)
    assert plan.weights == sum(p.numel() * p.element_size() for p in model.parameters())
    grads = compute_gradients(model, modules, sequences, pad_id=0, max_examples=4, max_tokens=80)
    assert plan.kept_gradients == grads.numel() * grads.element_size()
    gram = compute_dot_products(grads)
    chunk = 6 * min(DOT_CHUNK_COLUMNS, grads.shape[1]) * 8
    assert plan.dot_products == gram.numel() * gram.element_size() + chunk
    assert plan.activations.batch_gradients == 4 * grads.shape[1] * 4


@pytest.mark.parametrize(
    ("dtype", "examples", "length"),
    [(torch.float32, 4, 64), (torch.bfloat16, 4, 64), (torch.float32, 2, 96)],
)
def test_activation_estimate_is_close_to_the_measured_peak(dtype, examples, length):
    model, modules, shape = _tiny(dtype)
    batch = collate(_sequences(examples, length), range(examples), pad_id=0)
    compute_batch_gradients(model, modules, batch)  # first-call allocations out of the way
    measured = _peak_allocated(lambda: compute_batch_gradients(model, modules, batch))
    workload = GradientWorkload(n_examples=examples, rank=8, batch_examples=examples)
    estimate = plan_memory(shape, workload, examples * length).activations.total
    # Measured 0.95-0.98 of the estimate when written; the band allows allocator differences.
    assert 0.8 * estimate <= measured <= 1.2 * estimate


def test_choose_batch_tokens_takes_the_largest_budget_that_fits():
    workload = GradientWorkload(n_examples=500, n_kept=100, batch_examples=8)
    plan = choose_batch_tokens(LLAMA_7B, workload, 80 * GIB)
    assert plan.peak <= 80 * GIB < plan_memory(LLAMA_7B, workload, plan.batch_tokens + 1).peak
    assert 4096 < plan.batch_tokens < 8192
    larger = choose_batch_tokens(LLAMA_7B, workload, 140 * GIB)
    assert larger.batch_tokens > plan.batch_tokens
    tiny = ModelShape(64, 176, 2, 400, n_params=100_000, dtype_bytes=4)
    assert choose_batch_tokens(tiny, GradientWorkload(4), 100 * GIB).batch_tokens == 1 << 20
    every = GradientWorkload(n_examples=500, batch_examples=8)  # 115 GiB of gradients
    with pytest.raises(InputError, match="kept gradients") as err:
        choose_batch_tokens(LLAMA_7B, every, 80 * GIB)
    assert err.value.key == "max_memory"


def test_the_7b_worked_example():
    """Llama-2-7B in bf16, LoRA r=64 on up/down_proj: the numbers the README quotes."""
    workload = GradientWorkload(n_examples=500, rank=64, batch_examples=8)
    plan = plan_memory(LLAMA_7B, workload, 4096)
    assert plan.lora_params == 32 * 2 * 64 * (4096 + 11008) == 61_865_984
    assert plan.weights == 6_738_415_616 * 2 + 61_865_984 * 4
    assert plan.kept_gradients == 500 * 61_865_984 * 4  # 115.2 GiB: too much for one GPU
    streamed = plan_memory(LLAMA_7B, GradientWorkload(500, n_kept=100, batch_examples=8), 4096)
    assert streamed.kept_gradients == 100 * 61_865_984 * 4
    assert streamed.dot_products < plan.dot_products
    projected = plan_memory(LLAMA_7B, GradientWorkload(500, projection_dim=8192), 4096)
    assert projected.kept_gradients == 500 * 8192 * 4
    # About 8 MB of activations per padded token, nearly all linear in the budget.
    per_token = plan.activations.total - plan_memory(LLAMA_7B, workload, 2048).activations.total
    assert 7.5e6 < per_token / 2048 < 9e6
    text = render_memory_plan(streamed, 80 * GIB)
    assert text.splitlines()[0] == "memory plan (gradient dimension 61,865,984)"
    assert "model weights             12.8 GiB" in text
    assert "100 x 61,865,984 float32" in text and "of max_memory 80.0 GiB" in text


def test_attention_targets_and_bad_input():
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
    shape = ModelShape.from_config(config, n_params=1000, dtype_bytes=2)
    assert shape.linear_features("k_proj") == (64, 32)
    mlp = plan_memory(shape, GradientWorkload(2, rank=4), 64)
    attention = plan_memory(shape, GradientWorkload(2, rank=4, targets=("q_proj", "v_proj")), 64)
    # LoRA in the attention puts the first layer's attention in the graph too.
    assert attention.activations.autograd_saved > mlp.activations.autograd_saved
    assert attention.lora_params == config.num_hidden_layers * 4 * (64 + 64 + 64 + 32)
    with pytest.raises(InputError, match="unknown Llama layer"):
        plan_memory(shape, GradientWorkload(2, targets=("c_attn",)), 64)
    with pytest.raises(ValueError):
        plan_memory(shape, GradientWorkload(2), 0)
