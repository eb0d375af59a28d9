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

import itertools
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
    out: torch.Tensor | None = None,
    rows: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-example gradients of the completion loss with respect to the modules' weights.

    Args:
        model: The causal LM, in eval mode, with no parameter requiring a gradient.
        modules: Linear layers whose ``weight`` gradients are wanted, in the flattening order.
        batch: A right-padded batch.
        out: Where to write: an ``(N, D)`` float32 (float64 for a float64 model) tensor whose
            ``rows`` receive this batch's gradients; default: a new ``(B, D)`` tensor.
        rows: Row of ``out`` for each example of the batch; default ``0..B-1``.

    Returns:
        ``out`` (or the new tensor): row ``rows[b]`` the flattened ``[∇_{W_1} ℓ_b, ∇_{W_2} ℓ_b,
        ...]`` (each weight flattened row-major, as ``torch.cat([g.flatten() for g in grads])``).
    """
    if any(p.requires_grad for p in model.parameters()):
        raise ValueError("compute_batch_gradients needs a model with every parameter frozen")
    calls, losses = _record_forward(model, modules, batch)
    output_grads = torch.autograd.grad(losses.sum(), [y for _, _, y in calls], allow_unused=True)

    n = batch.input_ids.shape[0]
    # Products in at least float32 even for a bf16/fp16 model.
    work_dtype = torch.float64 if calls[0][1].dtype == torch.float64 else torch.float32
    if out is None:
        out = torch.empty((n, gradient_dimension(modules)), dtype=work_dtype, device=losses.device)
    rows = list(range(n)) if rows is None else list(rows)
    spans = _scored_spans(batch)
    offsets = _offsets(modules)
    written: set[int] = set()
    for (index, x, _), grad_y in zip(calls, output_grads, strict=True):
        if grad_y is None:
            continue  # the layer does not influence any scored token (e.g. after the last one)
        x = x.to(work_dtype).reshape(n, -1, x.shape[-1])
        grad_y = grad_y.to(work_dtype).reshape(n, -1, grad_y.shape[-1])
        start, stop = offsets[index]
        shape = modules[index].weight.shape
        for b, (row, span) in enumerate(zip(rows, spans, strict=True)):
            # Positions from the last scored prediction on, padding included, have a zero
            # output gradient: leave them out rather than multiply by zeros.
            target = out[row, start:stop].view(shape)
            if index in written:
                target.addmm_(grad_y[b, :span].T, x[b, :span])
            else:
                torch.mm(grad_y[b, :span].T, x[b, :span], out=target)
        written.add(index)
    for index in set(range(len(modules))) - written:
        start, stop = offsets[index]
        out[rows, start:stop] = 0
    return out


def _record_forward(
    model: nn.Module, modules: Sequence[nn.Linear], batch: Batch
) -> tuple[list[tuple[int, torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Run the loss forward: each target call's ``(module index, input, differentiable output)``,
    and the losses."""
    records: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def make_hook(index: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if not output.requires_grad:
                # Nothing upstream needs a gradient: make this output the graph's leaf.
                output.requires_grad_(True)
            records.append((index, args[0].detach(), output))

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
    if {index for index, _, _ in records} != set(range(len(modules))):
        raise ValueError("a target module was not called in the forward pass")
    return records, losses


def _offsets(modules: Sequence[nn.Linear]) -> list[tuple[int, int]]:
    ends = list(itertools.accumulate(m.weight.numel() for m in modules))
    return list(zip([0, *ends], ends, strict=False))  # (start, stop) of each module


def _scored_spans(batch: Batch) -> list[int]:
    """Per example, the positions that can carry gradient: up to the last scored prediction.

    Position t predicts token t + 1, so with the last scored token at index k the outputs at
    positions k and later influence no scored token.
    """
    mask = batch.completion_mask
    index = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, index, 0).amax(dim=1).tolist()


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
    if len(sequences) == 0:
        raise ValueError("no sequences to compute gradients for")
    # Tokens after the last scored one influence nothing scored: leave them out of the forward.
    sequences = [_trim(ids, mask) for ids, mask in sequences]
    dtype = torch.float64 if modules[0].weight.dtype == torch.float64 else torch.float32
    result = torch.empty((len(sequences), gradient_dimension(modules)), dtype=dtype, device=device)
    lengths = [len(ids) for ids, _ in sequences]
    for indices in plan_batches(lengths, max_examples=max_examples, max_tokens=max_tokens):
        batch = collate(sequences, indices, pad_id=pad_id, device=device)
        compute_batch_gradients(model, modules, batch, out=result, rows=indices)
        if on_batch is not None:
            on_batch(batch)
    return result


def _trim(ids: Sequence[int], mask: Sequence[int]) -> tuple[Sequence[int], Sequence[int]]:
    """Cut an example after its last scored token (kept whole when nothing is scored)."""
    last = max((i for i, m in enumerate(mask) if m), default=len(ids) - 1)
    return ids[: last + 1], mask[: last + 1]
