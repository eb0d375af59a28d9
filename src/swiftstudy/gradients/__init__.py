"""Per-example gradients of the completion loss: the batched engine and its naive reference."""

from swiftstudy.gradients.batching import Batch, collate, default_batch_tokens, plan_batches
from swiftstudy.gradients.engine import (
    compute_batch_gradients,
    compute_gradients,
    gradient_dimension,
)
from swiftstudy.gradients.loss import compute_completion_nll
from swiftstudy.gradients.naive import compute_naive_gradients

__all__ = [
    "Batch",
    "collate",
    "compute_batch_gradients",
    "compute_completion_nll",
    "compute_gradients",
    "compute_naive_gradients",
    "default_batch_tokens",
    "gradient_dimension",
    "plan_batches",
]
