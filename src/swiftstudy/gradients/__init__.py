"""Per-example gradients of the completion loss: the batched engine and its naive reference,
plus optional transforms of the gradients (random projection, Adam preconditioning)."""

from swiftstudy.gradients.batching import Batch, collate, default_batch_tokens, plan_batches
from swiftstudy.gradients.engine import (
    compute_batch_gradients,
    compute_gradients,
    gradient_dimension,
)
from swiftstudy.gradients.loss import compute_completion_nll
from swiftstudy.gradients.naive import compute_naive_gradients
from swiftstudy.gradients.preconditioning import compute_adam_update
from swiftstudy.gradients.projection import (
    project_gradients,
    rademacher_rows,
    relative_error_bound,
)

__all__ = [
    "Batch",
    "collate",
    "compute_adam_update",
    "compute_batch_gradients",
    "compute_completion_nll",
    "compute_gradients",
    "compute_naive_gradients",
    "default_batch_tokens",
    "gradient_dimension",
    "plan_batches",
    "project_gradients",
    "rademacher_rows",
    "relative_error_bound",
]
