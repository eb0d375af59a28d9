"""The reference: one example at a time, plain autograd on the full logits.

Deliberately naive and independent of the engine (no hooks, no position selection, the model's
own forward and LM head), so that agreement between the two is evidence of correctness.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def compute_naive_gradients(
    model: nn.Module,
    modules: Sequence[nn.Linear],
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Per-example gradients by one forward and one backward per example.

    Args:
        model: The causal LM, in eval mode.
        modules: Linear layers whose weight gradients are wanted, in the flattening order.
        sequences: ``(input_ids, completion_mask)`` of each example.
        device: Where to run.

    Returns:
        ``(N, D)`` tensor in the model's dtype (float32 for half-precision models).
    """
    weights = [m.weight for m in modules]
    before = [w.requires_grad for w in weights]
    rows = []
    try:
        for w in weights:
            w.requires_grad_(True)
        for ids, mask in sequences:
            input_ids = torch.as_tensor([list(ids)], dtype=torch.long, device=device)
            labels = input_ids.clone()
            labels[torch.as_tensor([list(mask)], device=device) == 0] = -100
            logits = model(input_ids=input_ids, use_cache=False).logits[0, :-1]
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            loss = F.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="sum")
            grads = torch.autograd.grad(loss, weights)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    finally:
        for w, flag in zip(weights, before, strict=True):
            w.requires_grad_(flag)
    return torch.stack(rows)
