"""Length-bucketed batches under a token budget, and padding them into tensors.

Padding costs more than batching saves on a CPU, so batches are formed from examples of similar
length (longest first) and capped both in examples and in padded tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Padded tokens per batch when the caller does not choose. On a CPU a batch of one long example is
#: already compute-bound and padding costs more than batching saves: measured on 2 cores
#: (benchmarks/engine.py, README), 512 was fastest, 1024 slower than batch size 1. A GPU wants
#: larger batches.
DEFAULT_BATCH_TOKENS = {"cpu": 512, "cuda": 16384}


@dataclass(frozen=True)
class Batch:
    """A padded batch of examples (right padding).

    Attributes:
        indices: Positions of the batch's examples in the caller's list, in batch order.
        input_ids: ``(B, T)`` token ids, padding positions hold ``pad_id``.
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        completion_mask: ``(B, T)`` bool, True where the token's NLL is in the loss.
    """

    indices: tuple[int, ...]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor


def default_batch_tokens(device: str | torch.device) -> int:
    """The padded-token budget for a device type when the user sets none."""
    kind = torch.device(device).type
    return DEFAULT_BATCH_TOKENS.get(kind, DEFAULT_BATCH_TOKENS["cuda"])


def plan_batches(
    lengths: Sequence[int], *, max_examples: int, max_tokens: int
) -> list[tuple[int, ...]]:
    """Group example indices into batches of similar length.

    Examples are sorted longest first and packed greedily while the padded size
    ``len(batch) * longest`` stays within ``max_tokens`` and the batch has at most ``max_examples``
    examples. An example longer than ``max_tokens`` gets a batch of its own.

    Args:
        lengths: Token count of each example.
        max_examples: Largest number of examples in one batch (>= 1).
        max_tokens: Largest padded size ``B * T`` of one batch (>= 1).

    Returns:
        Batches of indices into ``lengths``; every index appears exactly once.
    """
    if max_examples < 1 or max_tokens < 1:
        raise ValueError("max_examples and max_tokens must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[tuple[int, ...]] = []
    current: list[int] = []
    for i in order:
        # Sorted longest first, so the batch's first example fixes its padded length.
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= max_examples or (len(current) + 1) * longest > max_tokens):
            batches.append(tuple(current))
            current = []
        current.append(i)
    if current:
        batches.append(tuple(current))
    return batches


def collate(
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    indices: Sequence[int],
    *,
    pad_id: int,
    device: str | torch.device = "cpu",
) -> Batch:
    """Right-pad the chosen ``(input_ids, completion_mask)`` pairs into a :class:`Batch`."""
    chosen = [sequences[i] for i in indices]
    width = max(len(ids) for ids, _ in chosen)
    input_ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(chosen), width), dtype=torch.long)
    completion = torch.zeros((len(chosen), width), dtype=torch.bool)
    for row, (ids, mask) in enumerate(chosen):
        if len(ids) != len(mask):
            raise ValueError("input_ids and completion_mask differ in length")
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
        completion[row, : len(ids)] = torch.as_tensor(mask, dtype=torch.bool)
    return Batch(
        indices=tuple(indices),
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        completion_mask=completion.to(device),
    )
