"""The train spec: the base model, the data and the LoRA (or full) fine-tuning hyperparameters.

A spec is a YAML file loaded into frozen dataclasses by ``load_train_spec``. All validation lives
in this module; every error is an ``InputError`` naming the spec file, the line and the dotted key
(``lora.targets[1]``). Only ``model`` and ``data`` are required; the defaults are the reference
setup (LoRA r=64, alpha=512, dropout 0 on ``up_proj`` / ``down_proj``, lr 1e-5 decaying linearly
to 1e-7 after 10 warmup steps, global batch 32, 6 epochs, a checkpoint every 50 steps).

Example::

    model: smollm2
    data: [data/base.jsonl, {path: data/saved, split: train}]
    lr: 1e-5            # YAML reads 1e-5 as a string; numeric strings are accepted
    schedule: mixed     # or sequential: within each epoch, one data source after the other
    max_steps: 400      # instead of epochs

``epochs`` and ``max_steps`` exclude each other, except that one set by a command-line override
replaces the other one written in the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swiftstudy.constants import (
    DEFAULT_EPOCHS,
    DEFAULT_LORA_ALPHA,
    DEFAULT_LORA_DROPOUT,
    DEFAULT_LORA_R,
    DEFAULT_LORA_TARGETS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_SAVE_STEPS,
    DEFAULT_SEED,
    DEFAULT_TRAIN_BATCH_SIZE,
    DEFAULT_TRAIN_DEVICE,
    DEFAULT_TRAIN_LR,
    DEFAULT_TRAIN_MIN_LR,
    DEFAULT_WARMUP_STEPS,
    ON_OVERFLOW_ERROR,
    ON_OVERFLOW_MODES,
    SCHEDULE_MIXED,
    SCHEDULES,
    TRAIN_DEVICES,
)
from swiftstudy.validation import SpecValidator, absolute_path, describe_value, load_spec_data
from swiftstudy.yamlio import KeyPath

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("model", "data")
_OPTIONAL_KEYS = (
    "lora",
    "lr",
    "min_lr",
    "warmup_steps",
    "epochs",
    "max_steps",
    "batch_size",
    "micro_batch_size",
    "save_steps",
    "seed",
    "max_length",
    "on_overflow",
    "init_from",
    "schedule",
    "full_finetune",
    "device",
)
_LORA_KEYS = ("r", "alpha", "dropout", "targets")
_SOURCE_KEYS = ("path", "split")


@dataclass(frozen=True)
class DataSource:
    """One training data file: JSONL or a dataset saved with ``save_to_disk``.

    Attributes:
        path: The file or folder (absolute once loaded from a spec).
        split: The split to read from a saved ``DatasetDict``.
    """

    path: Path
    split: str | None = None


@dataclass(frozen=True)
class LoraSpec:
    """The LoRA adapter trained on the frozen base model.

    Attributes:
        r: The rank.
        alpha: ``lora_alpha``; the update is scaled by ``alpha / r``.
        dropout: Dropout on the adapter's input.
        targets: Module names (suffixes) to adapt, as PEFT's ``target_modules``.
    """

    r: int = DEFAULT_LORA_R
    alpha: float = DEFAULT_LORA_ALPHA
    dropout: float = DEFAULT_LORA_DROPOUT
    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS


@dataclass(frozen=True)
class TrainSpec:
    """A validated train spec.

    Attributes:
        model: Model alias, local folder, hub id or ``.gguf`` path (local paths made absolute).
        data: The data sources, in order (the order ``schedule: sequential`` follows).
        lora: The adapter to train (unused with ``full_finetune``).
        lr: The peak learning rate, reached after ``warmup_steps``.
        min_lr: The learning rate at the last step; it decays linearly from ``lr``.
        warmup_steps: Steps of linear warm-up from 0 to ``lr``.
        epochs: Passes over the data; ``None`` when ``max_steps`` is set.
        max_steps: Optimizer steps to train for; ``None`` to train for ``epochs``.
        batch_size: Examples per optimizer step, over all processes.
        micro_batch_size: Examples per forward pass on one process; ``None`` chooses one.
        save_steps: A checkpoint every this many steps (and one at the last step).
        seed: Seeds the adapter initialisation and the data order.
        max_length: The most tokens in an example; longer prompts are cut from the left.
        on_overflow: What to do with an example whose completion does not fit: error or drop.
        init_from: An adapter, a full model or a run folder (its newest checkpoint) to start from.
        schedule: ``mixed`` (one shuffled pool) or ``sequential`` (each epoch visits the data
            sources in order, each shuffled).
        full_finetune: Train every weight instead of a LoRA adapter; checkpoints are full models.
        device: ``auto`` (a GPU if there is one), ``cpu`` or ``cuda``.
        spec_path: The file the spec was loaded from, for messages; not compared or serialised.
    """

    model: str
    data: tuple[DataSource, ...]
    lora: LoraSpec = LoraSpec()
    lr: float = DEFAULT_TRAIN_LR
    min_lr: float = DEFAULT_TRAIN_MIN_LR
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    epochs: int | None = DEFAULT_EPOCHS
    max_steps: int | None = None
    batch_size: int = DEFAULT_TRAIN_BATCH_SIZE
    micro_batch_size: int | None = None
    save_steps: int = DEFAULT_SAVE_STEPS
    seed: int = DEFAULT_SEED
    max_length: int = DEFAULT_MAX_LENGTH
    on_overflow: str = ON_OVERFLOW_ERROR
    init_from: Path | None = None
    schedule: str = SCHEDULE_MIXED
    full_finetune: bool = False
    device: str = DEFAULT_TRAIN_DEVICE
    spec_path: Path | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain YAML-ready data with absolute path strings.

        ``lora`` is ``None`` for a full fine-tune, where it plays no part.
        ``train_spec_from_dict(spec.to_dict(), base_dir=...)`` gives back an equal spec.
        """
        lora = None
        if not self.full_finetune:
            lora = {
                "r": self.lora.r,
                "alpha": self.lora.alpha,
                "dropout": self.lora.dropout,
                "targets": list(self.lora.targets),
            }
        return {
            "model": self.model,
            "data": [{"path": str(absolute_path(s.path)), "split": s.split} for s in self.data],
            "lora": lora,
            "lr": self.lr,
            "min_lr": self.min_lr,
            "warmup_steps": self.warmup_steps,
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "micro_batch_size": self.micro_batch_size,
            "save_steps": self.save_steps,
            "seed": self.seed,
            "max_length": self.max_length,
            "on_overflow": self.on_overflow,
            "init_from": None if self.init_from is None else str(absolute_path(self.init_from)),
            "schedule": self.schedule,
            "full_finetune": self.full_finetune,
            "device": self.device,
        }


def load_train_spec(path: str | Path, overrides: Sequence[str] = ()) -> TrainSpec:
    """Load and validate a train spec file, after applying ``key=value`` overrides.

    Relative paths in the file resolve against the file's folder.

    Args:
        path: The spec YAML file.
        overrides: Command-line overrides such as ``max_steps=40`` or ``lora.r=8``.

    Returns:
        The validated spec, with ``spec_path`` set.

    Raises:
        InputError: The file cannot be read or parsed, an override is malformed, or the spec is
            invalid; the error names the file, line and key.
    """
    data, marked, path = load_spec_data(path, overrides)
    spec = train_spec_from_dict(data, base_dir=path.parent, source=path, lines=marked)
    logger.debug("loaded train spec %s: %d data source(s)", path, len(spec.data))
    return spec


def train_spec_from_dict(
    data: Any,
    *,
    base_dir: Path,
    source: Path | None = None,
    lines: Mapping[KeyPath, int | None] | None = None,
) -> TrainSpec:
    """Validate plain data (as loaded from YAML) and build a ``TrainSpec``.

    Args:
        data: The parsed spec, a mapping.
        base_dir: The folder relative paths resolve against.
        source: The spec file, named in errors and kept as ``spec_path``.
        lines: Key paths to 1-based line numbers (from ``load_yaml``); a None value marks a key
            set by a command-line override.

    Returns:
        The validated spec.

    Raises:
        InputError: The data is not a valid spec.
    """
    return _Validator(source, lines or {}, absolute_path(Path(base_dir))).spec(data)


class _Validator(SpecValidator):
    """Checks one spec, raising ``InputError`` with the file, line and key of the first problem."""

    def spec(self, data: Any) -> TrainSpec:
        top = self.mapping(data, (), "a mapping of spec keys (model, data, lr, ...)")
        self.check_keys(top, _REQUIRED_KEYS, _OPTIONAL_KEYS, ())
        options = {
            key: check(top[key], (key,)) for key, check in self.checks().items() if key in top
        }
        options.update(self.duration(top))
        lr = options.get("lr", DEFAULT_TRAIN_LR)
        min_lr = options.get("min_lr", DEFAULT_TRAIN_MIN_LR)
        if min_lr > lr:
            if "min_lr" in top:
                raise self.error(f"must not exceed lr ({lr})", ("min_lr",))
            raise self.error(f"must not be below min_lr ({min_lr})", ("lr",))
        batch_size = options.get("batch_size", DEFAULT_TRAIN_BATCH_SIZE)
        micro = options.get("micro_batch_size")
        if micro is not None and batch_size % micro:
            raise self.error(
                f"must divide batch_size ({batch_size}) so that gradient accumulation is whole",
                ("micro_batch_size",),
            )
        if options.get("full_finetune") and "lora" in top:
            logger.warning("full_finetune is set: the lora section is ignored")
        return TrainSpec(
            model=self.model(top["model"]),
            data=self.data(top["data"]),
            spec_path=self.source,
            **options,
        )

    def checks(self) -> dict[str, Any]:
        return {
            "lora": lambda value, key_path: self.lora(value),
            "lr": lambda value, key_path: self.number(value, key_path, positive=True),
            "min_lr": lambda value, key_path: self.number(value, key_path, positive=False),
            "warmup_steps": lambda value, key_path: self.integer(value, key_path, 0),
            "batch_size": lambda value, key_path: self.integer(value, key_path, 1),
            "micro_batch_size": lambda v, key_path: self.integer(v, key_path, 1, nullable=True),
            "save_steps": lambda value, key_path: self.integer(value, key_path, 1),
            "seed": lambda value, key_path: self.integer(value, key_path, 0),
            "max_length": lambda value, key_path: self.integer(value, key_path, 2),
            "on_overflow": lambda value, key_path: self.choice(value, ON_OVERFLOW_MODES, key_path),
            "init_from": lambda value, key_path: (
                None if value is None else self.path(value, key_path)
            ),
            "schedule": lambda value, key_path: self.choice(value, SCHEDULES, key_path),
            "full_finetune": lambda value, key_path: self.boolean(value, key_path),
            "device": lambda value, key_path: self.choice(value, TRAIN_DEVICES, key_path),
        }

    # -- sections ---------------------------------------------------------------------------

    def data(self, value: Any) -> tuple[DataSource, ...]:
        key_path: KeyPath = ("data",)
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.error("the list of data sources is empty", key_path)
        sources = []
        for index, item in enumerate(items):
            item_path = (*key_path, index) if isinstance(value, list) else key_path
            if isinstance(item, str):
                item = {"path": item}
            item = self.mapping(item, item_path, "a data path or {path, split}")
            self.check_keys(item, ("path",), ("split",), item_path)
            split = item.get("split")
            if split is not None:
                split = self.string(split, (*item_path, "split"))
            sources.append(DataSource(self.path(item["path"], (*item_path, "path")), split))
        return tuple(sources)

    def lora(self, value: Any) -> LoraSpec:
        key_path: KeyPath = ("lora",)
        lora = self.mapping(value, key_path, "a mapping {r, alpha, dropout, targets}")
        self.check_keys(lora, (), _LORA_KEYS, key_path)
        options: dict[str, Any] = {}
        if "r" in lora:
            options["r"] = self.integer(lora["r"], (*key_path, "r"), 1)
        if "alpha" in lora:
            options["alpha"] = self.number(lora["alpha"], (*key_path, "alpha"), positive=True)
        if "dropout" in lora:
            dropout = self.number(lora["dropout"], (*key_path, "dropout"), positive=False)
            if dropout >= 1:
                raise self.error(f"must be below 1, got {dropout}", (*key_path, "dropout"))
            options["dropout"] = dropout
        if "targets" in lora:
            options["targets"] = self.targets(lora["targets"], (*key_path, "targets"))
        return LoraSpec(**options)

    def targets(self, value: Any, key_path: KeyPath) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.error(
                f"expected a non-empty list of module names, got {describe_value(value)}", key_path
            )
        return tuple(self.string(name, (*key_path, i)) for i, name in enumerate(value))

    def duration(self, top: dict[Any, Any]) -> dict[str, int | None]:
        """``epochs`` or ``max_steps``: one of them, an override replacing the file's other one."""
        max_steps = self.integer(top.get("max_steps"), ("max_steps",), 1, nullable=True)
        epochs = self.integer(top.get("epochs"), ("epochs",), 1, nullable=True)
        if epochs is not None and max_steps is not None:
            by_override = [k for k in ("epochs", "max_steps") if self.lines.get((k,), 0) is None]
            if len(by_override) != 1:
                raise self.error("give epochs or max_steps, not both", ("max_steps",))
            if by_override == ["epochs"]:
                max_steps = None
            else:
                epochs = None
        if max_steps is not None:
            return {"epochs": None, "max_steps": max_steps}
        if epochs is not None:
            return {"epochs": epochs, "max_steps": None}
        if "epochs" in top:
            raise self.error("set epochs or max_steps", ("epochs",))
        return {}
