"""The Hugging Face Trainer, taught the completion loss, the LR schedule and our checkpoint layout.

The loss of an optimizer step is the completion-token NLL of the global batch divided by its
number of completion tokens (a token-level mean, as the Trainer itself computes for causal LMs
since transformers 4.46): ``L = Σ_b ℓ(z_b; θ) / Σ_b |{t : m_bt = 1}|``, where ``ℓ`` is the summed
completion NLL of :func:`swiftstudy.gradients.compute_completion_nll`, the loss a study traces.
Prompt and padding tokens are never in it. The token count is taken over every micro-batch of the
step and every process, so the gradient does not depend on how the batch is split.

The Trainer runs :class:`CompletionLossModel`, a module whose ``forward`` returns the per-example
losses, because under ``torchrun`` the Trainer wraps its model in DistributedDataParallel, which
only synchronises gradients of a backward that went through the wrapper's forward. Checkpoints
save (and resume load) the causal LM inside: a PEFT adapter or a full model, in safetensors.

Learning rate: linear warm-up from 0 to ``lr`` over ``warmup_steps``, then linear decay to
``min_lr``, which the last update uses exactly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Sampler
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback

from swiftstudy.constants import ADAPTER_WEIGHTS, MODEL_CONFIG
from swiftstudy.errors import InputError
from swiftstudy.gradients import compute_completion_nll

logger = logging.getLogger(__name__)


class CompletionLossModel(nn.Module):
    """Wraps a causal LM (PEFT or not) so that its forward returns the summed completion NLLs.

    Args:
        model: The causal LM being trained.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``(B,)`` summed completion NLL of each example, see ``compute_completion_nll``."""
        return compute_completion_nll(self.model, input_ids, attention_mask, completion_mask)


class LinearWarmupDecay:
    """The LR factor of 0-based step ``s``: ``s / warmup`` in warm-up, then linear to ``floor``.

    As in transformers' schedules the first step of a warm-up has learning rate 0; the decay ends
    on the last update, which uses ``floor × lr`` (``min_lr``) exactly. A callable object rather
    than a closure, so that ``LambdaLR.state_dict`` saves it with a checkpoint's scheduler state.

    Args:
        warmup_steps: Steps of linear warm-up from 0.
        total_steps: The number of optimizer steps.
        floor: ``min_lr / lr``.
    """

    def __init__(self, warmup_steps: int, total_steps: int, floor: float) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.floor = floor

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        span = self.total_steps - 1 - self.warmup_steps
        progress = 1.0 if span <= 0 else min(1.0, (step - self.warmup_steps) / span)
        return 1.0 - progress * (1.0 - self.floor)


class CompletionTrainer(Trainer):
    """A Trainer for :class:`CompletionLossModel` with the token-mean completion loss.

    Args:
        sampler: The order of the training examples, with ``set_epoch``.
        warmup_steps: Steps of linear warm-up from 0 to the ``learning_rate`` of the arguments.
        min_lr: The learning rate reached at the last step.
        *args: As for ``Trainer``; ``model`` must be a :class:`CompletionLossModel`.
        **kwargs: As for ``Trainer``.
    """

    # compute_loss normalises by the step's token count itself: no division by accumulation.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        sampler: Sampler,
        warmup_steps: int,
        min_lr: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # transformers < 5 has no loss_is_scaled_for_ga and reads this flag instead.
        self.model_accepts_loss_kwargs = True
        self.sampler = sampler
        self.warmup_steps = warmup_steps
        self.min_lr = min_lr

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler:
        """The epoch order of the spec's schedule (see ``EpochSampler``)."""
        return self.sampler

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch's share of the step loss: its summed NLL over the step's token count.

        Without ``num_items_in_batch`` (outside a training step) it is the micro-batch's own
        token-mean completion NLL.
        """
        losses = model(**inputs)
        if num_items_in_batch is None:
            loss = losses.sum() / inputs["completion_mask"][:, 1:].sum()
        else:
            # DDP averages gradients over processes; the count is already global: undo that.
            loss = losses.sum() / num_items_in_batch * self.accelerator.num_processes
        return (loss, losses) if return_outputs else loss

    def get_batch_samples(
        self, epoch_iterator: Any, num_batches: int, device: torch.device
    ) -> tuple[list, torch.Tensor]:
        """The step's micro-batches, and their completion-token count over all processes."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        count = sum(int(b["completion_mask"][:, 1:].sum()) for b in batches)
        total = torch.tensor(count, device=device)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.gather(total).sum()
        return batches, total

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> LambdaLR:
        """Linear warm-up, then linear decay from ``learning_rate`` to ``min_lr``."""
        if self.lr_scheduler is None:
            factor = LinearWarmupDecay(
                self.warmup_steps, num_training_steps, self.min_lr / self.args.learning_rate
            )
            self.lr_scheduler = LambdaLR(self.optimizer if optimizer is None else optimizer, factor)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the causal LM inside the wrapper (adapter or full model) and the tokenizer."""
        output_dir = self.args.output_dir if output_dir is None else output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        inner = self.accelerator.unwrap_model(self.model).model
        inner.save_pretrained(output_dir, is_main_process=True)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None):
        """Load a checkpoint's weights into the causal LM inside the wrapper, exactly."""
        inner = self.accelerator.unwrap_model(self.model if model is None else model).model
        load_checkpoint_weights(inner, Path(resume_from_checkpoint))


class ProgressCallback(TrainerCallback):
    """A progress bar over optimizer steps with the loss and learning rate, and a line per save."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.last: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                unit="step",
                desc="train",
                disable=not self.enabled,
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last = {"loss": logs["loss"], "lr": logs.get("learning_rate", float("nan"))}
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self.last['loss']:.4f}", lr=f"{self.last['lr']:.3g}")

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            loss = self.last.get("loss", float("nan"))
            logger.info(
                "saved checkpoint-%d (epoch %.2f, loss %.4f)", state.global_step, state.epoch, loss
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def load_checkpoint_weights(model: nn.Module, folder: Path) -> None:
    """Load an adapter (into a ``PeftModel``) or a full model's weights (into a plain model).

    Every tensor must be present with its shape, so a checkpoint of another configuration is
    refused instead of half-loaded; only tied weights (saved once) may be absent.

    Args:
        model: The model to load into, in place.
        folder: A checkpoint folder: ``adapter_model.safetensors`` or ``*.safetensors`` weights.

    Raises:
        InputError: The checkpoint does not match the model.
    """
    if isinstance(model, PeftModel):
        state = load_file(folder / ADAPTER_WEIGHTS, device="cpu")
        expected = get_peft_model_state_dict(model)
        _check_tensors(expected, state, folder, optional=set())
        set_peft_model_state_dict(model, state)
        return
    if not (folder / MODEL_CONFIG).is_file():
        raise InputError("expected a full model checkpoint (config.json)", path=folder)
    files = sorted(folder.glob("*.safetensors"))
    state = {k: v for file in files for k, v in load_file(file, device="cpu").items()}
    tied = _tied_groups(model)
    _check_tensors(model.state_dict(), state, folder, optional={n for g in tied for n in g})
    absent = [names[0] for names in tied if not any(n in state for n in names)]
    if absent:
        raise InputError(f"the checkpoint lacks {absent[0]!r}", path=folder)
    model.load_state_dict(state, strict=False)


def _tied_groups(model: nn.Module) -> list[list[str]]:
    """Names of tensors sharing one storage (tied weights, which are saved once), by storage."""
    by_storage: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        by_storage.setdefault(tensor.data_ptr(), []).append(name)
    return [names for names in by_storage.values() if len(names) > 1]


def _check_tensors(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], folder: Path, optional: set
) -> None:
    missing = sorted(set(expected) - set(state) - optional)
    unknown = sorted(set(state) - set(expected))
    misshapen = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    found = {"missing": missing, "unknown": unknown, "of another shape": misshapen}
    problems = [f"{len(keys)} {what} (e.g. {keys[0]!r})" for what, keys in found.items() if keys]
    if problems:
        raise InputError(
            "the checkpoint does not match the model being trained: " + ", ".join(problems),
            path=folder,
        )
