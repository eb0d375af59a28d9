"""Training data: the collator of tokenized examples, the epoch order and batch sizes.

The examples are rendered and masked by ``swiftstudy.data`` and padded by
``swiftstudy.gradients.collate``, the same code the study uses, so the model is trained on exactly
the tokens whose loss a study traces.

The order of each epoch depends only on the seed and the epoch number, never on global random
state, so an interrupted run resumed from a checkpoint sees the same batches as one that was not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from swiftstudy.constants import SCHEDULE_MIXED, SCHEDULE_SEQUENTIAL
from swiftstudy.data import TokenizedExample
from swiftstudy.gradients import collate


class CompletionCollator:
    """Right-pads tokenized examples into ``input_ids``, ``attention_mask``, ``completion_mask``.

    Args:
        pad_id: The token id written at padding positions (masked out either way).
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        sequences = [(t.input_ids, t.completion_mask) for t in examples]
        batch = collate(sequences, range(len(sequences)), pad_id=self.pad_id)
        keys = ("input_ids", "attention_mask", "completion_mask")
        return {key: getattr(batch, key) for key in keys}


class EpochSampler(Sampler[int]):
    """The order of one epoch: one shuffled pool, or each data source in turn, each shuffled.

    The permutation of epoch ``e`` is drawn from a generator seeded with ``seed + e``; the
    Trainer calls :meth:`set_epoch` before each epoch (also when it resumes mid-epoch).

    Args:
        source_sizes: The number of examples of each data source, in dataset order.
        schedule: ``mixed`` or ``sequential``.
        seed: The run's seed.
    """

    def __init__(self, source_sizes: Sequence[int], schedule: str, seed: int) -> None:
        if schedule not in (SCHEDULE_MIXED, SCHEDULE_SEQUENTIAL):
            raise ValueError(f"unknown schedule {schedule!r}")
        self.source_sizes = tuple(source_sizes)
        self.schedule = schedule
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order :meth:`__iter__` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.source_sizes)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))

    def order(self, epoch: int) -> list[int]:
        """The dataset indices of ``epoch``, in training order."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.schedule == SCHEDULE_MIXED:
            return torch.randperm(len(self), generator=generator).tolist()
        order: list[int] = []
        start = 0
        for size in self.source_sizes:
            order.extend((start + torch.randperm(size, generator=generator)).tolist())
            start += size
        return order


def choose_micro_batch_size(
    per_device_batch: int, longest: int, batch_tokens: int, cap: int
) -> int:
    """The largest divisor of ``per_device_batch`` within ``cap`` examples and ``batch_tokens``.

    A heuristic for the memory a micro-batch needs: ``micro × longest`` padded tokens at most
    (at least one example, however long).

    Args:
        per_device_batch: Examples per optimizer step on one process.
        longest: Tokens in the longest training example.
        batch_tokens: The padded-token budget of one forward pass on the device.
        cap: The most examples in one micro-batch.

    Returns:
        The micro-batch size, which divides ``per_device_batch``.
    """
    limit = max(1, min(cap, batch_tokens // max(1, longest)))
    return max(d for d in range(1, min(limit, per_device_batch) + 1) if per_device_batch % d == 0)
