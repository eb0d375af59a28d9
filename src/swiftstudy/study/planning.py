"""The memory plan logged before a study, and the batch budget it picks for ``max_memory_gb``.

The plan (``swiftstudy.model.memory``) models a Llama-style decoder with LoRA adapters; for other
models and for full-weight checkpoints the study runs without one, on the device's default budget
unless ``batch_tokens`` is set.
"""

from __future__ import annotations

import logging
import re

import torch

from swiftstudy.config.reader import spec_key_error
from swiftstudy.constants import CHECKPOINT_KIND_ADAPTER
from swiftstudy.errors import InputError
from swiftstudy.gradients import default_batch_tokens
from swiftstudy.model import (
    Checkpoint,
    GradientWorkload,
    ModelShape,
    ModelStates,
    choose_batch_tokens,
    plan_memory,
    render_memory_plan,
)
from swiftstudy.study.spec import StudySpec

logger = logging.getLogger(__name__)

_GIB = 1 << 30
#: The adapted Linear layer in a LoRA target's name: ``...mlp.up_proj.lora_A.default``.
_LORA_TARGET = re.compile(r"\.(\w+)\.lora_[AB]\.")


def plan_batch_tokens(
    spec: StudySpec,
    states: ModelStates,
    checkpoint: Checkpoint,
    n_examples: int,
    device: torch.device,
    n_kept: int | None = None,
) -> int:
    """Log the study's memory plan and return the batch token budget to use.

    Args:
        spec: The study; ``batch_tokens`` wins over ``max_memory_gb``.
        states: The base model, to be put in ``checkpoint``'s state for its LoRA shapes.
        checkpoint: The first checkpoint (every checkpoint has been checked to match it).
        n_examples: Gram rows (gradients) computed at a checkpoint.
        n_kept: Rows kept in memory (the eval rows); None: all of them.
        device: The study's device.

    Raises:
        InputError: ``max_memory_gb`` cannot hold even a one-token batch (names the key), or it is
            set for a study the plan does not model.
    """
    shapes = _shapes(spec, states, checkpoint, n_examples, n_kept)
    if shapes is None:
        if spec.max_memory_gb is not None and spec.batch_tokens is None:
            raise spec_key_error(
                spec.spec_path,
                "the memory plan models LoRA adapters of Llama-style models only: set "
                "batch_tokens instead",
                ("max_memory_gb",),
            )
        return spec.batch_tokens or default_batch_tokens(device)
    max_memory = None if spec.max_memory_gb is None else int(spec.max_memory_gb * _GIB)
    plan = plan_memory(*shapes, spec.batch_tokens or default_batch_tokens(device))
    if max_memory is not None and spec.batch_tokens is None:
        try:
            plan = choose_batch_tokens(*shapes, max_memory)
        except InputError as err:
            raise spec_key_error(spec.spec_path, err.message, ("max_memory_gb",)) from err
    logger.info("%s", render_memory_plan(plan, max_memory))
    return plan.batch_tokens


def _shapes(
    spec: StudySpec,
    states: ModelStates,
    checkpoint: Checkpoint,
    n_examples: int,
    n_kept: int | None,
) -> tuple[ModelShape, GradientWorkload] | None:
    """What the plan needs, or None where the model is not one the plan models."""
    if checkpoint.kind != CHECKPOINT_KIND_ADAPTER:
        return None
    model, targets = states.load(checkpoint)
    matches = [_LORA_TARGET.search(t.name) for t in targets]
    layers = {match.group(1) if match else None for match in matches}
    ranks = {t.module.weight.shape[0] for t in targets if ".lora_A." in t.name}
    config = getattr(model, "config", None)
    if None in layers or len(ranks) != 1 or config is None:
        return None
    base = [p for n, p in model.named_parameters() if "lora_" not in n]
    workload = GradientWorkload(
        n_examples,
        ranks.pop(),
        tuple(sorted(layers)),
        batch_examples=spec.batch_size,
        n_kept=n_kept,
        projection_dim=spec.projection_dim,
    )
    try:
        shape = ModelShape.from_config(config, sum(p.numel() for p in base), base[0].element_size())
        plan_memory(shape, workload, 1)  # raises for a layer the plan does not know
    except (AttributeError, InputError):  # not a Llama-style config or layer
        return None
    return shape, workload
