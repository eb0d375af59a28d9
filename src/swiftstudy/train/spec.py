"""The train spec: the base model, the data and the LoRA (or full) fine-tuning hyperparameters.

Its keys are declared once with ``config.option``; ``load_train_spec`` reads a YAML file, and an
error names the file, the line and the dotted key (``lora.targets[1]``). Only ``model`` and
``data`` are required; the defaults are the reference setup (LoRA r=64, alpha=512, dropout 0
on ``up_proj`` / ``down_proj``, lr 1e-5 decaying linearly to 1e-7 after 10 warmup steps, global
batch 32, 6 epochs, a checkpoint every 50 steps).

Example::

    model: smollm2
    data: [data/base.jsonl, {path: data/saved, split: train}]
    lr: 1e-5            # YAML reads 1e-5 as a string; numeric strings are accepted
    schedule: mixed     # or sequential: within each epoch, one data source after the other
    max_steps: 400      # instead of epochs

``epochs`` and ``max_steps`` exclude each other, except that one set by a command-line override
replaces the other one written in the file.

The names of ``TrainingArguments`` and PEFT's ``LoraConfig`` are accepted for the same keys
(``learning_rate``, ``num_train_epochs``, ``per_device_train_batch_size``, ``lora.lora_alpha``,
``lora.target_modules``, ``lora.lora_dropout``); the resolved spec writes our names, and giving
both names of one key is refused. ``gradient_accumulation_steps`` has no key of its own (it
follows from ``batch_size`` and ``micro_batch_size``), and ``report_to`` takes ``none`` only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from swiftstudy.config.fields import (
    Check,
    attn_implementation,
    listed,
    option,
    revision,
    trust_remote_code,
)
from swiftstudy.config.reader import SpecValidator, describe_value
from swiftstudy.config.spec import Spec, from_dict, load_spec, nested
from swiftstudy.config.yamlio import KeyPath
from swiftstudy.constants import (
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_LORA_ALPHA,
    DEFAULT_LORA_DROPOUT,
    DEFAULT_LORA_R,
    DEFAULT_LORA_TARGETS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_SAVE_STEPS,
    DEFAULT_SEED,
    DEFAULT_TRAIN_BATCH_SIZE,
    DEFAULT_TRAIN_LR,
    DEFAULT_TRAIN_MIN_LR,
    DEFAULT_WARMUP_STEPS,
    ON_OVERFLOW_ERROR,
    ON_OVERFLOW_MODES,
    REPORT_TO_NONE,
    SCHEDULE_MIXED,
    SCHEDULES,
    TRAIN_DEVICES,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource(Spec):
    """One training data file: JSONL or a dataset saved with ``save_to_disk``."""

    path: Path = option(doc="The file or folder.")
    split: str | None = option(None, "The split to read from a saved DatasetDict.")


@dataclass(frozen=True)
class LoraSpec(Spec):
    """The LoRA adapter trained on the frozen base model."""

    r: int = option(DEFAULT_LORA_R, "The rank.", min=1)
    alpha: float = option(
        DEFAULT_LORA_ALPHA,
        "The update is scaled by alpha / r.",
        positive=True,
        aliases=("lora_alpha",),
    )
    dropout: float = option(
        DEFAULT_LORA_DROPOUT, "Dropout on the adapter's input.", below=1, aliases=("lora_dropout",)
    )
    targets: tuple[str, ...] = option(
        DEFAULT_LORA_TARGETS,
        "Module names (suffixes) to adapt.",
        check=listed(SpecValidator.string, "module names", single=True),
        aliases=("target_modules",),
    )


def _report_to(reader: SpecValidator, value: Any, key_path: KeyPath) -> str:
    """``report_to: none``: the Trainer reports to no tracker here."""
    if value not in (REPORT_TO_NONE, [REPORT_TO_NONE], []):
        raise reader.error(
            f"swiftstudy reports to no tracker, got {describe_value(value)}: the losses and "
            "learning rates go to the log and to each checkpoint's trainer_state.json; "
            "set none or leave it out",
            key_path,
        )
    return REPORT_TO_NONE


_SOURCE = nested(DataSource, "a data path or {path, split}", shorthand="path")


def _data(reader: SpecValidator, value: Any, key_path: KeyPath) -> tuple[DataSource, ...]:
    """One source (a path or ``{path, split}``) or a non-empty list of them."""
    if not isinstance(value, list):
        return (_SOURCE(reader, value, key_path),)
    if not value:
        raise reader.error("the list of data sources is empty", key_path)
    return tuple(_SOURCE(reader, item, (*key_path, i)) for i, item in enumerate(value))


@dataclass(frozen=True)
class TrainSpec(Spec):
    """A validated train spec (``spec_path``: its file, for messages; not compared or saved)."""

    unsupported_keys: ClassVar[dict[str, str]] = {
        "gradient_accumulation_steps": "set batch_size, the examples of one optimizer step over "
        "all processes (per_device_train_batch_size × gradient_accumulation_steps × processes): "
        "the accumulation is batch_size / (micro_batch_size × processes)",
    }

    model: str = option(
        doc="Model alias, local folder, hub id or .gguf path.", check=SpecValidator.model
    )
    data: tuple[DataSource, ...] = option(
        doc="The data sources, in order.", check=Check(_data, spec=DataSource, each="[]")
    )
    revision: str | None = revision()
    trust_remote_code: bool = trust_remote_code()
    attn_implementation: str | None = attn_implementation()
    lora: LoraSpec = option(LoraSpec(), "The adapter to train (unused with full_finetune).")
    lr: float = option(
        DEFAULT_TRAIN_LR,
        "The peak learning rate, after warmup_steps.",
        positive=True,
        aliases=("learning_rate",),
    )
    min_lr: float = option(DEFAULT_TRAIN_MIN_LR, "The last step's learning rate (linear decay).")
    warmup_steps: int = option(DEFAULT_WARMUP_STEPS, "Steps of linear warm-up to lr.", min=0)
    epochs: int | None = option(
        DEFAULT_EPOCHS,
        "Passes over the data; null with max_steps.",
        min=1,
        aliases=("num_train_epochs",),
    )
    max_steps: int | None = option(None, "Optimizer steps; null: train for epochs.", min=1)
    batch_size: int = option(
        DEFAULT_TRAIN_BATCH_SIZE, "Examples per optimizer step, all processes.", min=1
    )
    micro_batch_size: int | None = option(
        None,
        "Examples per forward pass on each process; null chooses.",
        min=1,
        aliases=("per_device_train_batch_size",),
    )
    save_steps: int = option(DEFAULT_SAVE_STEPS, "A checkpoint every this many steps.", min=1)
    seed: int = option(DEFAULT_SEED, "Seeds the adapter initialisation and the data order.", min=0)
    max_length: int = option(DEFAULT_MAX_LENGTH, "The most tokens of an example.", min=2)
    on_overflow: str = option(
        ON_OVERFLOW_ERROR,
        "A completion that does not fit: error or drop.",
        choices=ON_OVERFLOW_MODES,
    )
    init_from: Path | None = option(None, "An adapter, full model or run folder to start from.")
    schedule: str = option(
        SCHEDULE_MIXED, "mixed, or sequential: sources in order.", choices=SCHEDULES
    )
    full_finetune: bool = option(False, "Train every weight instead of a LoRA adapter.")
    device: str = option(DEFAULT_DEVICE, "auto (a GPU if any), cpu or cuda.", choices=TRAIN_DEVICES)
    report_to: str = option(
        REPORT_TO_NONE,
        "none only: the losses go to the log and each checkpoint's trainer_state.json.",
        check=_report_to,
        omit_default=True,
    )
    spec_path: Path | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain YAML-ready data; ``lora`` is None for a full fine-tune."""
        data = super().to_dict()
        if self.full_finetune:
            data["lora"] = None
        return data

    @staticmethod
    def _validate(
        reader: SpecValidator, values: dict[str, Any], body: dict[Any, Any], key_path: KeyPath
    ) -> None:
        """The rules across keys: epochs or max_steps (an override replacing the file's other
        one), lr above min_lr, whole gradient accumulation."""
        epochs, max_steps = values.get("epochs"), values.get("max_steps")
        if epochs is not None and max_steps is not None:
            by_override = [k for k in ("epochs", "max_steps") if reader.overridden((*key_path, k))]
            if len(by_override) != 1:
                raise reader.error("give epochs or max_steps, not both", (*key_path, "max_steps"))
            values["max_steps" if by_override == ["epochs"] else "epochs"] = None
        elif max_steps is not None:
            values["epochs"] = None
        elif epochs is None and "epochs" in body:
            raise reader.error("set epochs or max_steps", (*key_path, "epochs"))
        lr = values.get("lr", DEFAULT_TRAIN_LR)
        min_lr = values.get("min_lr", DEFAULT_TRAIN_MIN_LR)
        if min_lr > lr:
            if "min_lr" in body:
                raise reader.error(f"must not exceed lr ({lr})", (*key_path, "min_lr"))
            raise reader.error(f"must not be below min_lr ({min_lr})", (*key_path, "lr"))
        batch_size = values.get("batch_size", DEFAULT_TRAIN_BATCH_SIZE)
        micro = values.get("micro_batch_size")
        if micro is not None and batch_size % micro:
            raise reader.error(
                f"must divide batch_size ({batch_size}) so that gradient accumulation is whole",
                (*key_path, "micro_batch_size"),
            )
        if values.get("full_finetune") and "lora" in body:
            logger.warning("full_finetune is set: the lora section is ignored")


#: ``load_train_spec(path, overrides=())``: a spec file, after overrides (``config.load_spec``).
load_train_spec = partial(load_spec, TrainSpec)
#: ``train_spec_from_dict(data, *, base_dir, ...)``: plain data as a spec (``config.from_dict``).
train_spec_from_dict = partial(from_dict, TrainSpec)
