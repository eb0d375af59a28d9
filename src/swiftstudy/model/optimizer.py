"""A Trainer checkpoint's optimizer state: Adam's moments read from ``optimizer.pt`` and named.

The file is the optimizer's ``state_dict``, read with ``torch.load(weights_only=True)``, which
refuses pickled code. Its state is keyed by integer positions, not names: position p is the p-th
parameter over the param groups in order. The Trainer's default optimizer has two groups, the
parameters with weight decay then those without (biases and norms), each in
``model.parameters()`` order, trainable ones only. For a LoRA run (swiftstudy's trainer, or any
Trainer run with PEFT) every trainable parameter is a ``lora_A`` / ``lora_B`` weight, all in the
first group, so the order is the adapter's module order: that of ``ModelStates.load``'s targets.
:func:`trainer_parameter_order` rebuilds the order for a full fine-tune. Shapes are checked;
DeepSpeed, FSDP and sharded optimizer files are not read.

The moments are tensors for ``gradients.compute_adam_update``, which reads no file.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from swiftstudy.constants import OPTIMIZER_FILE
from swiftstudy.errors import InputError, first_line

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdamMoments:
    """Adam's first and second moments of named parameters, and the optimizer's settings.

    Attributes:
        exp_avg: Parameter name -> m, the parameter's shape, on CPU, float32 (float64 when
            saved in float64).
        exp_avg_sq: Parameter name -> v.
        betas: ``(β₁, β₂)`` of the optimizer's param groups.
        eps: ε of the optimizer's param groups.
        step: Optimizer steps taken when the state was saved.
    """

    exp_avg: Mapping[str, torch.Tensor]
    exp_avg_sq: Mapping[str, torch.Tensor]
    betas: tuple[float, float]
    eps: float
    step: int

    def flatten(self, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, v)`` of ``names`` flattened row-major and concatenated, the engine's layout."""
        missing = [n for n in names if n not in self.exp_avg]
        if missing:
            raise KeyError(f"no optimizer state for {missing[0]!r}")
        m = torch.cat([self.exp_avg[n].reshape(-1) for n in names])
        v = torch.cat([self.exp_avg_sq[n].reshape(-1) for n in names])
        return m, v


def load_adam_moments(
    checkpoint_dir: str | Path, parameters: Sequence[tuple[str, Sequence[int]]]
) -> AdamMoments:
    """Read Adam's moments from a Trainer checkpoint's ``optimizer.pt`` and name them.

    Args:
        checkpoint_dir: A ``checkpoint-<step>`` folder (or any folder holding ``optimizer.pt``).
        parameters: ``(name, shape)`` of every parameter the optimizer held, in its order (see
            the module docstring): for a LoRA checkpoint ``[(t.name, t.module.weight.shape) for t
            in targets]`` with ``targets`` from ``ModelStates.load``; for a full fine-tune
            :func:`trainer_parameter_order`.

    Returns:
        The moments keyed by the given names, with β₁, β₂, ε and the step of the saved optimizer.

    Raises:
        InputError: The file is missing, unreadable, not a safe pickle, not an Adam state, or
            holds another number of parameters or another shape than ``parameters`` (naming the
            file and the parameter).
    """
    path = Path(checkpoint_dir) / OPTIMIZER_FILE
    state_dict = _read_state_dict(path)
    state, groups = state_dict["state"], state_dict["param_groups"]
    order = [index for group in groups for index in group["params"]]
    if len(order) != len(parameters):
        raise InputError(
            f"the optimizer holds {len(order)} parameters, the model {len(parameters)} trainable "
            "ones: not a checkpoint of this model's training",
            path=path,
        )
    exp_avg, exp_avg_sq, steps = {}, {}, set()
    for (name, shape), index in zip(parameters, order, strict=True):
        exp_avg[name], exp_avg_sq[name], step = _moments_of(state.get(index), name, shape, path)
        steps.add(step)
    betas, eps = _adam_settings(groups, path)
    logger.info("read Adam moments of %d parameters from %s", len(exp_avg), path)
    return AdamMoments(exp_avg, exp_avg_sq, betas, eps, max(steps, default=0))


def _moments_of(
    entry: object, name: str, shape: Sequence[int], path: Path
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(exp_avg, exp_avg_sq, step)`` of one parameter's state entry, checked against its shape."""
    if not isinstance(entry, Mapping) or not {"exp_avg", "exp_avg_sq"} <= entry.keys():
        raise InputError(
            "no Adam moments (exp_avg, exp_avg_sq) for this parameter", path=path, key=name
        )
    for what in ("exp_avg", "exp_avg_sq"):
        tensor = entry[what]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(shape):
            found = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise InputError(
                f"{what} has shape {found}, the parameter {tuple(shape)}: the optimizer's "
                "parameter order does not match the model's",
                path=path,
                key=name,
            )
    return _widen(entry["exp_avg"]), _widen(entry["exp_avg_sq"]), int(entry.get("step", 0))


def _widen(tensor: torch.Tensor) -> torch.Tensor:
    """float64 moments as they are, any other dtype as float32."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def _read_state_dict(path: Path) -> dict:
    """``torch.load`` of an optimizer state with only tensors and plain containers allowed."""
    if not path.is_file():
        raise InputError(
            "no optimizer state: was the checkpoint saved without it (save_only_model)?", path=path
        )
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise InputError(
            f"refused: not a plain tensor file ({first_line(err)})", path=path
        ) from err
    except (OSError, RuntimeError, EOFError) as err:
        raise InputError(f"cannot read: {first_line(err)}", path=path) from err
    if not (
        isinstance(loaded, dict)
        and isinstance(loaded.get("state"), dict)
        and isinstance(loaded.get("param_groups"), list)
        and all(isinstance(g, dict) and "params" in g for g in loaded["param_groups"])
    ):
        raise InputError("not an optimizer state_dict (state, param_groups)", path=path)
    return loaded


def _adam_settings(groups: list[dict], path: Path) -> tuple[tuple[float, float], float]:
    """The (β₁, β₂) and ε shared by the non-empty param groups."""
    settings = {
        (tuple(float(b) for b in g.get("betas", ())), float(g.get("eps", float("nan"))))
        for g in groups
        if g["params"]
    }
    if len(settings) != 1:
        raise InputError(f"param groups disagree on Adam's betas / eps: {settings}", path=path)
    (betas, eps) = settings.pop()
    if len(betas) != 2:
        raise InputError("the optimizer has no Adam betas", path=path, key="param_groups")
    return (betas[0], betas[1]), eps


def trainer_parameter_order(model: nn.Module) -> list[tuple[str, torch.Size]]:
    """The order of the Trainer's default optimizer over ``model``'s parameters (full fine-tune).

    Weight-decay parameters then the others (biases, norms), each in ``named_parameters`` order,
    as ``Trainer.create_optimizer`` groups them with the installed transformers' rule.

    Args:
        model: The model as trained (the names may lack the training wrapper's prefix).

    Returns:
        ``(name, shape)`` in optimizer order, for :func:`load_adam_moments`.
    """
    from transformers import Trainer

    # The rule depends only on the model; the method does not use the Trainer instance.
    decay = set(Trainer.get_decay_parameter_names(None, model))
    named = [(n, p.shape) for n, p in model.named_parameters()]
    return [x for x in named if x[0] in decay] + [x for x in named if x[0] not in decay]
