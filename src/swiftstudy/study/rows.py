"""The rows of a study's Gram matrix, and how a batch's raw gradients become those rows.

A study's Gram matrix has a row per (unique example, variant). Every example has a ``raw`` row
(eval gradients, the RelInf denominator, norms, and the probes of a study without a
preconditioner); with ``preconditioner: adam`` each probe also has an ``adam`` row. From a batch's
per-example gradients g (of the summed completion NLL, the engine's output), at one checkpoint:

    raw:   Pᵀ g                          (g itself when exact)
    adam:  Pᵀ u(g / n),   u(x) = m' / √(v' + ε),  m' = β₁m + (1 − β₁)x,  v' = β₂v + (1 − β₂)x²

with P the seeded Rademacher projection when ``projection_dim`` is set (``gradients.projection``),
m, v the checkpoint's Adam moments and n the example's scored tokens. LESS preconditions the
gradient of the token-mean loss: the scale of the training steps whose moments m, v are, hence
g / n. RelInf of an Adam probe is ⟨u(z), ∇ℓ(z0)⟩ / ⟨∇ℓ(z0), ∇ℓ(z0)⟩: the first-order loss change
of z0 under an Adam step on z, in units of a plain step on z0 (so not on the raw values' scale).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from swiftstudy.constants import (
    CHECKPOINT_KIND_ADAPTER,
    OPTIMIZER_FILE,
    PRECONDITIONER_ADAM,
    PRECONDITIONER_NONE,
)
from swiftstudy.gradients import compute_adam_update, project_gradients
from swiftstudy.model import Checkpoint, TargetModule, load_adam_moments, trainer_parameter_order

logger = logging.getLogger(__name__)

#: The variants of a Gram row.
VARIANT_RAW = "raw"
VARIANT_ADAM = "adam"

#: The ``preconditioner`` of each variant's rows (their gradient cache's settings).
VARIANT_PRECONDITIONERS = {VARIANT_RAW: PRECONDITIONER_NONE, VARIANT_ADAM: PRECONDITIONER_ADAM}

#: A Gram row: ``(index of the unique example, variant)``.
GramRow = tuple[int, str]


@dataclass(frozen=True)
class RowMaps:
    """Which Gram row each example of each set uses, as a probe and as an eval example.

    Attributes:
        probes: Set name -> the Gram row of each of its examples as a probe (``adam`` rows when
            preconditioned); probe sets only.
        evals: Set name -> the raw Gram row of each of its examples (RelInf's denominator,
            norms); every set.
    """

    probes: dict[str, list[int]]
    evals: dict[str, list[int]]


@dataclass(frozen=True)
class RowSettings:
    """How raw gradients become Gram rows.

    Attributes:
        projection: ``(k, seed)`` of the random projection, or None (exact).
        preconditioner: ``none`` or ``adam`` (the ``adam`` rows' transform).
    """

    projection: tuple[int, int] | None = None
    preconditioner: str = PRECONDITIONER_NONE

    def row_dim(self, gradient_dim: int) -> int:
        """Values in a row, for gradients of ``gradient_dim`` values."""
        return gradient_dim if self.projection is None else self.projection[0]


class RowTransform:
    """One checkpoint's map from a batch's raw gradients to its Gram rows (module docstring).

    Args:
        settings: The projection and the preconditioner.
        moments: ``(m, v)`` flattened in the gradient's column order, for ``adam`` rows.
        adam: ``(betas, eps)`` of the checkpoint's optimizer.
    """

    def __init__(
        self,
        settings: RowSettings,
        moments: tuple[torch.Tensor, torch.Tensor] | None = None,
        adam: tuple[tuple[float, float], float] | None = None,
    ) -> None:
        self.settings = settings
        self._moments = moments
        self._adam = adam

    def apply(
        self, grads: torch.Tensor, variants: Sequence[str], token_counts: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        """The ``(B, row_dim)`` rows of each requested variant of a batch.

        Args:
            grads: ``(B, D)`` raw per-example gradients of the summed completion NLL.
            variants: The variants wanted (``raw``, ``adam``).
            token_counts: Each example's scored tokens (for ``adam``).

        Returns:
            Variant -> rows in ``grads``' dtype (float32, or float64 for float64 gradients).
        """
        out = {}
        for variant in variants:
            if variant == VARIANT_RAW:
                rows = grads
            elif variant == VARIANT_ADAM:
                rows = self._precondition(grads, token_counts)
            else:
                raise ValueError(f"unknown row variant {variant!r}")
            if self.settings.projection is not None:
                rows = project_gradients(rows, *self.settings.projection).to(rows.dtype)
            out[variant] = rows
        return out

    def _precondition(self, grads: torch.Tensor, token_counts: Sequence[int]) -> torch.Tensor:
        if self._moments is None or self._adam is None:
            raise RuntimeError("adam rows need the checkpoint's moments")
        counts = torch.tensor(token_counts, dtype=grads.dtype, device=grads.device)
        if bool((counts <= 0).any()):
            raise ValueError("an example has no scored token")
        betas, eps = self._adam
        return compute_adam_update(grads / counts[:, None], *self._moments, betas=betas, eps=eps)


def load_row_transform(
    settings: RowSettings,
    ckpt: Checkpoint,
    model: torch.nn.Module,
    targets: Sequence[TargetModule],
    device: torch.device,
) -> RowTransform:
    """The row transform of ``ckpt``: reads its Adam moments when ``settings`` asks for them.

    Args:
        settings: The projection and the preconditioner.
        ckpt: The checkpoint; for ``adam`` its folder holds the Trainer's ``optimizer.pt``.
        model: The model in ``ckpt``'s state (``ModelStates.load``).
        targets: Its gradient targets, in the engine's column order.
        device: Where the moments go.

    Raises:
        InputError: No readable optimizer state matching the checkpoint's parameters.
    """
    if settings.preconditioner != PRECONDITIONER_ADAM:
        return RowTransform(settings)
    if ckpt.kind == CHECKPOINT_KIND_ADAPTER:
        # A LoRA run trains exactly the adapter's weights, in module order (the targets').
        parameters = [(t.name, t.module.weight.shape) for t in targets]
        names = [t.name for t in targets]
    else:
        parameters = trainer_parameter_order(model)
        names = [f"{t.name}.weight" for t in targets]
    moments = load_adam_moments(ckpt.path, parameters)
    m, v = (t.to(device) for t in moments.flatten(names))
    logger.info(
        "step %d: Adam moments of %d parameters (optimizer step %d) from %s",
        ckpt.step,
        len(names),
        moments.step,
        ckpt.path / OPTIMIZER_FILE,
    )
    return RowTransform(settings, (m, v), (moments.betas, moments.eps))
