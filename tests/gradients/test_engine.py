"""The batched engine against the naive one-example autograd loop, on tiny random models."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from conftest import build_tiny_llama
from swiftstudy.gradients import (
    collate,
    compute_batch_gradients,
    compute_completion_nll,
    compute_gradients,
    compute_naive_gradients,
)

VOCAB = 97


def _lora_model(dtype=torch.float64, seed=0):
    model = build_tiny_llama(VOCAB, seed=seed, dtype=dtype)
    config = LoraConfig(
        r=4, lora_alpha=32, target_modules=["up_proj", "down_proj"], init_lora_weights=False
    )
    torch.manual_seed(seed + 1)
    peft_model = get_peft_model(model, config).to(dtype)
    peft_model.eval()
    peft_model.requires_grad_(False)
    modules = [
        m for n, m in peft_model.named_modules() if n.endswith(("lora_A.default", "lora_B.default"))
    ]
    return peft_model, modules


def _sequences(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(1, VOCAB, (n,), generator=gen).tolist()
        start = int(torch.randint(1, n, (1,), generator=gen))  # prompt is ids[:start]
        mask = [0] * start + [1] * (n - start)
        out.append((ids, mask))
    return out


def _relative_errors(fast, slow):
    return ((fast - slow).norm(dim=1) / slow.norm(dim=1)).max().item()


def test_engine_matches_naive_loop_float64_with_padding():
    model, modules = _lora_model()
    seqs = _sequences([5, 17, 9, 12, 3, 17, 8])
    naive = compute_naive_gradients(model, modules, seqs)
    fast = compute_gradients(model, modules, seqs, pad_id=0, max_examples=4, max_tokens=64)
    assert fast.dtype == torch.float64
    assert fast.shape == naive.shape == (7, sum(m.weight.numel() for m in modules))
    assert _relative_errors(fast, naive) <= 1e-10


def test_batch_composition_does_not_change_gradients():
    model, modules = _lora_model()
    seqs = _sequences([6, 14, 10, 4, 11], seed=3)
    one_batch = compute_gradients(model, modules, seqs, pad_id=0, max_examples=5, max_tokens=10_000)
    singles = compute_gradients(model, modules, seqs, pad_id=0, max_examples=1, max_tokens=1)
    assert _relative_errors(one_batch, singles) <= 1e-12


def test_full_weight_targets_match_naive():
    model = build_tiny_llama(VOCAB, dtype=torch.float64)
    model.requires_grad_(False)
    modules = [m for n, m in model.named_modules() if n.endswith(("up_proj", "down_proj"))]
    seqs = _sequences([7, 13, 4], seed=5)
    naive = compute_naive_gradients(model, modules, seqs)
    fast = compute_gradients(model, modules, seqs, pad_id=0, max_examples=3, max_tokens=100)
    assert _relative_errors(fast, naive) <= 1e-10


def test_engine_float32_close_to_float64():
    model64, modules64 = _lora_model(torch.float64)
    model32, modules32 = _lora_model(torch.float32)
    seqs = _sequences([9, 15, 6], seed=7)
    ref = compute_naive_gradients(model64, modules64, seqs)
    fast = compute_gradients(model32, modules32, seqs, pad_id=0, max_examples=3, max_tokens=100)
    assert fast.dtype == torch.float32
    assert _relative_errors(fast.double(), ref) <= 1e-4


def test_loss_is_summed_completion_nll():
    model, _ = _lora_model()
    seqs = _sequences([8, 5], seed=2)
    batch = collate(seqs, [0, 1], pad_id=0)
    losses = compute_completion_nll(
        model, batch.input_ids, batch.attention_mask, batch.completion_mask
    )
    for row, (ids, mask) in enumerate(seqs):
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits, dim=-1)
        expected = -sum(logp[t - 1, ids[t]] for t in range(1, len(ids)) if mask[t])
        assert losses[row].item() == pytest.approx(expected.item(), rel=1e-12)


def test_prompt_tokens_do_not_change_loss_mask():
    """Only completion positions count: an example with no completion has zero gradient."""
    model, modules = _lora_model()
    ids = _sequences([10], seed=4)[0][0]
    seqs = [(ids, [0] * 10), (ids, [0] * 5 + [1] * 5)]
    grads = compute_gradients(model, modules, seqs, pad_id=0, max_examples=2, max_tokens=100)
    assert torch.count_nonzero(grads[0]) == 0
    assert grads[1].norm() > 0


def test_refuses_model_with_trainable_parameters():
    model, modules = _lora_model()
    modules[0].weight.requires_grad_(True)
    batch = collate(_sequences([5]), [0], pad_id=0)
    with pytest.raises(ValueError, match="frozen"):
        compute_batch_gradients(model, modules, batch)


def test_trailing_unscored_tokens_and_completion_gaps_match_naive():
    """Completions that stop before the end, or with holes, are cut and sliced exactly."""
    model, modules = _lora_model()
    ids = [ids for ids, _ in _sequences([12, 16, 9, 12], seed=8)]
    masks = [
        [0] * 4 + [1] * 5 + [0] * 3,
        [0] * 10 + [1] * 2 + [0] * 4,
        [0] * 2 + [1] * 7,
        [0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0],
    ]
    seqs = list(zip(ids, masks, strict=True))
    naive = compute_naive_gradients(model, modules, seqs)
    fast = compute_gradients(model, modules, seqs, pad_id=0, max_examples=4, max_tokens=64)
    assert _relative_errors(fast, naive) <= 1e-10


def test_module_called_twice_accumulates_both_calls():
    """A layer applied twice in one forward (shared weights) gets the sum of both products."""
    model = build_tiny_llama(VOCAB, dtype=torch.float64)
    model.requires_grad_(False)
    layers = model.model.layers
    layers[1].mlp.up_proj = layers[0].mlp.up_proj  # tie: one module, two calls per forward
    modules = [layers[0].mlp.up_proj, layers[1].mlp.down_proj]
    seqs = _sequences([7, 11, 5], seed=9)
    naive = compute_naive_gradients(model, modules, seqs)
    fast = compute_gradients(model, modules, seqs, pad_id=0, max_examples=3, max_tokens=100)
    assert _relative_errors(fast, naive) <= 1e-10


def test_batch_gradients_write_into_the_given_rows_only():
    model, modules = _lora_model()
    seqs = _sequences([6, 9], seed=10)
    expected = compute_gradients(model, modules, seqs, pad_id=0, max_examples=2, max_tokens=100)
    out = torch.full((4, expected.shape[1]), 7.0, dtype=torch.float64)
    compute_batch_gradients(model, modules, collate(seqs, [0, 1], pad_id=0), out=out, rows=[3, 1])
    # compute_gradients planned its own batch (longest first: examples 1, 0), and float64 kernels
    # may round a row by its place in the batch (on AMD EPYC they do): not the same computation,
    # so the engine's promise for any batch composition, 1e-12 relative (as in
    # test_batch_composition_does_not_change_gradients). A row written to the wrong place is off
    # by far more.
    assert _relative_errors(out[[3, 1]], expected) <= 1e-12
    # Rows outside ``rows`` are never touched: exactly the fill value.
    assert bool((out[[0, 2]] == 7.0).all())
