"""The batched per-example gradient engine.

For a linear layer y = W x applied at the positions t of example b, the loss gradient is
∇_W ℓ_b = Σ_t (∂ℓ_b/∂y_{b,t}) x_{b,t}ᵀ. Because examples in a batch do not interact (attention is
per sequence, there is no batch norm), the gradient of the *summed* batch loss with respect to
y_{b,t} equals that of ℓ_b alone. So one forward and one backward per batch give every example's
gradient: forward hooks keep each target layer's input x and output y, ``torch.autograd.grad``
returns ∂L/∂y, and a batched matmul forms the per-example weight gradients.

No parameter of the model requires a gradient: the first target output is made a graph leaf, so
autograd never computes gradients of frozen weights or embeddings, nor the summed gradient of the
target weights that a training backward would form and we would throw away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from swiftstudy.gradients.batching import Batch, collate, plan_batches
from swiftstudy.gradients.loss import compute_completion_nll


def gradient_dimension(modules: Sequence[nn.Linear]) -> int:
    """Length of the flattened gradient over the weights of ``modules``."""
    return sum(m.weight.numel() for m in modules)


def compute_batch_gradients(
    model: nn.Module,
    modules: Sequence[nn.Linear],
    batch: Batch,
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Per-example gradients of the completion loss with respect to the modules' weights.

    Args:
        model: The causal LM, in eval mode, with no parameter requiring a gradient.
        modules: Linear layers whose ``weight`` gradients are wanted, in the flattening order.
        batch: A right-padded batch.
        out_dtype: dtype of the result; default: float32, or float64 for a float64 model.

    Returns:
        ``(B, D)`` tensor, row b the flattened ``[∇_{W_1} ℓ_b, ∇_{W_2} ℓ_b, ...]`` (each weight
        flattened row-major, the same layout as ``torch.cat([g.flatten() for g in grads])``).
    """
    if any(p.requires_grad for p in model.parameters()):
        raise ValueError("compute_batch_gradients needs a model with every parameter frozen")
    records: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {
        i: [] for i in range(len(modules))
    }

    def make_hook(index: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if not output.requires_grad:
                # Nothing upstream needs a gradient: make this output the graph's leaf.
                output.requires_grad_(True)
            records[index].append((args[0].detach(), output))

        return hook

    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(modules)]
    try:
        with torch.enable_grad():
            losses = compute_completion_nll(
                model, batch.input_ids, batch.attention_mask, batch.completion_mask
            )
    finally:
        for handle in handles:
            handle.remove()

    calls = [(i, x, y) for i, recs in records.items() for x, y in recs]
    if len(calls) == 0 or any(len(recs) == 0 for recs in records.values()):
        raise ValueError("a target module was not called in the forward pass")
    output_grads = torch.autograd.grad(losses.sum(), [y for _, _, y in calls], allow_unused=True)

    model_dtype = calls[0][1].dtype
    if out_dtype is None:
        out_dtype = torch.float64 if model_dtype == torch.float64 else torch.float32
    # Products in at least float32 even for a bf16/fp16 model.
    work_dtype = torch.float64 if model_dtype == torch.float64 else torch.float32
    keep = batch.attention_mask.unsqueeze(-1).to(work_dtype)
    n = batch.input_ids.shape[0]
    result = torch.zeros((n, gradient_dimension(modules)), dtype=out_dtype, device=losses.device)
    offsets = _offsets(modules)
    for (index, x, _), grad_y in zip(calls, output_grads, strict=True):
        if grad_y is None:
            continue  # the layer does not influence any scored token (e.g. after the last one)
        x = x.to(work_dtype).reshape(n, -1, x.shape[-1]) * keep
        grad_y = grad_y.to(work_dtype).reshape(n, -1, grad_y.shape[-1])
        per_example = torch.bmm(grad_y.transpose(1, 2), x)  # (B, out, in), the weight's layout
        start, stop = offsets[index]
        result[:, start:stop] += per_example.reshape(n, -1).to(out_dtype)
    return result


def _offsets(modules: Sequence[nn.Linear]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for m in modules:
        spans.append((start, start + m.weight.numel()))
        start += m.weight.numel()
    return spans


def compute_gradients(
    model: nn.Module,
    modules: Sequence[nn.Linear],
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    max_examples: int,
    max_tokens: int,
    device: str | torch.device = "cpu",
    on_batch: Callable[[Batch], None] | None = None,
) -> torch.Tensor:
    """Per-example gradients of many examples, in length-bucketed batches.

    Args:
        model: The causal LM, in eval mode, every parameter frozen.
        modules: Linear layers whose weight gradients are wanted.
        sequences: ``(input_ids, completion_mask)`` of each example.
        pad_id: Token id used for padding (never scored, masked from attention).
        max_examples: Largest batch, in examples.
        max_tokens: Largest padded batch size ``B * T``.
        device: Where the batches go (the model's device).
        on_batch: Called after each batch (for progress reporting).

    Returns:
        ``(N, D)`` gradients, row i for ``sequences[i]``.
    """
    lengths = [len(ids) for ids, _ in sequences]
    result: torch.Tensor | None = None
    for indices in plan_batches(lengths, max_examples=max_examples, max_tokens=max_tokens):
        batch = collate(sequences, indices, pad_id=pad_id, device=device)
        grads = compute_batch_gradients(model, modules, batch)
        if result is None:
            result = torch.empty(
                (len(sequences), grads.shape[1]), dtype=grads.dtype, device=grads.device
            )
        result[list(indices)] = grads
        if on_batch is not None:
            on_batch(batch)
    if result is None:
        raise ValueError("no sequences to compute gradients for")
    return result
