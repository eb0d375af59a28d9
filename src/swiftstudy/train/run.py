"""Run the base training: LoRA (or full) SFT on completion tokens that saves a checkpoint series.

The order of work: validate everything that can be checked without a model (spec, data, the
output folder, ``init_from``), then load and tokenize, choose the micro-batch, build the model,
and only then write into ``--out``: ``train_config.yaml`` (the resolved spec, input hashes and
provenance) and, from the Trainer, ``checkpoint-<step>/`` every ``save_steps`` steps and at the
last step. Each checkpoint holds the adapter (or full model) in safetensors, the tokenizer,
``trainer_state.json`` (step, epoch, learning rate and loss history) and the optimizer, scheduler
and RNG states that ``resume`` continues from.

Choices the spec does not expose: the Trainer's default AdamW optimizer, no weight decay, gradient
clipping at norm 1.0, float32 weights.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import PreTrainedModel, PrinterCallback, TrainingArguments, set_seed

from swiftstudy.config.reader import spec_key_error
from swiftstudy.constants import (
    ADAPTER_CONFIG,
    CHECKPOINT_KIND_ADAPTER,
    MAX_AUTO_MICRO_BATCH_SIZE,
    TRAIN_CONFIG_YAML,
)
from swiftstudy.data import TokenizedExample, load_examples, tokenize_examples
from swiftstudy.errors import InputError
from swiftstudy.fileio import read_json
from swiftstudy.gradients import default_batch_tokens
from swiftstudy.model import (
    Checkpoint,
    LoadOptions,
    discover_checkpoints,
    load_base_model,
    resolve_device,
)
from swiftstudy.rundir import hash_input, save_run_config
from swiftstudy.train.data import CompletionCollator, EpochSampler, choose_micro_batch_size
from swiftstudy.train.outputs import check_out_dir, is_finished, prepare_out_dir, read_trainer_state
from swiftstudy.train.spec import TrainSpec, load_train_spec
from swiftstudy.train.trainer import (
    CompletionLossModel,
    CompletionTrainer,
    ProgressCallback,
    load_checkpoint_weights,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run wrote.

    Attributes:
        out_dir: The run folder.
        checkpoints: The checkpoint series in ``out_dir``, sorted by step.
        losses: ``(step, loss)`` of every optimizer step of the run, resumed ones included.
        resumed_from: The checkpoint the run continued from, or ``None``.
    """

    out_dir: Path
    checkpoints: tuple[Checkpoint, ...]
    losses: tuple[tuple[int, float], ...]
    resumed_from: Path | None


@dataclass(frozen=True)
class _BatchPlan:
    """How the global batch is split: ``batch_size = micro × accumulation × world_size``."""

    micro_batch_size: int
    accumulation: int
    world_size: int


def run_training(
    spec: TrainSpec | str | Path,
    out_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Train a LoRA adapter (or the full model) on completion tokens, saving a checkpoint series.

    Works unchanged under ``torchrun`` / ``accelerate launch``: each process calls this function,
    the Trainer splits the batches, and only the main process writes files.

    Args:
        spec: A loaded spec, or the path of a train spec YAML file.
        out_dir: Receives ``train_config.yaml`` and ``checkpoint-<step>/`` folders.
        overrides: ``key=value`` overrides applied to a spec file (only with a path).
        resume: Continue from the newest checkpoint in ``out_dir`` (which must hold a run of the
            same config); starts afresh when there is none.
        overwrite: Delete the checkpoints and config of another run in ``out_dir`` first.
        progress: Show a progress bar with the loss and learning rate.
        command: The command line that started the run, recorded in ``train_config.yaml``.

    Returns:
        The checkpoints written and the loss of every step.

    Raises:
        InputError: Bad input (spec, data, model, ``init_from``, a batch that does not split, an
            ``out_dir`` holding another run); nothing is written in that case.
    """
    if resume and overwrite:
        raise InputError("resume and overwrite contradict each other: choose one", key="--resume")
    if not isinstance(spec, TrainSpec):
        spec = load_train_spec(spec, overrides)
    elif overrides:
        raise ValueError("overrides apply to a spec file, not to a loaded TrainSpec")
    out_dir = Path(out_dir)
    examples = [load_examples(source.path, split=source.split) for source in spec.data]
    hashes = [hash_input(source.path) for source in spec.data]
    resume_from = check_out_dir(out_dir, spec, hashes, resume=resume, overwrite=overwrite)
    init = _discover_init(spec)
    if resume_from is not None and is_finished(resume_from):
        # The Trainer would train one step past the end when resumed from the last step.
        logger.info("%s is the last step of the run: nothing to resume", resume_from)
        return _result(out_dir, resume_from)
    device = _resolve_device(spec)

    model, tokenizer = load_base_model(
        spec.model, dtype=torch.float32, options=LoadOptions.of(spec)
    )
    tokenized = [
        tokenize_examples(exs, tokenizer, max_length=spec.max_length, on_overflow=spec.on_overflow)
        for exs in examples
    ]
    _check_not_empty(spec, tokenized)
    # Every source's examples in spec order; the sampler knows where each source starts.
    dataset = [example for toks in tokenized for example in toks]
    plan = _plan_batches(spec, dataset, device)
    set_seed(spec.seed)
    model = _prepare_model(model, spec, init)

    args = _training_arguments(spec, out_dir, plan, device)
    trainer = CompletionTrainer(
        model=CompletionLossModel(model),
        args=args,
        data_collator=CompletionCollator(tokenizer.pad_token_id),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[ProgressCallback(enabled=progress)],
        sampler=EpochSampler([len(toks) for toks in tokenized], spec.schedule, spec.seed),
        warmup_steps=spec.warmup_steps,
        min_lr=spec.min_lr,
    )
    trainer.remove_callback(PrinterCallback)
    with args.main_process_first(desc="prepare the output folder"):
        if args.process_index == 0 and resume_from is None:
            prepare_out_dir(out_dir, overwrite)
            save_run_config(
                out_dir / TRAIN_CONFIG_YAML,
                _resolved_config(spec, hashes, tokenized, plan, device),
                command=command,
                inputs={str(s.path): h for s, h in zip(spec.data, hashes, strict=True)},
            )
    if resume_from is not None:
        logger.info("resuming from %s", resume_from)
    with logging_redirect_tqdm():
        trainer.train(resume_from_checkpoint=None if resume_from is None else str(resume_from))
    trainer.accelerator.wait_for_everyone()  # the main process writes the last checkpoint

    result = _result(out_dir, resume_from)
    if args.process_index == 0:
        logger.info("wrote %d checkpoint(s) to %s", len(result.checkpoints), out_dir)
    return result


def _result(out_dir: Path, resume_from: Path | None) -> TrainResult:
    """The series in ``out_dir``, with the loss history of its last checkpoint."""
    checkpoints = tuple(discover_checkpoints(out_dir))
    state = read_trainer_state(checkpoints[-1].path)
    losses = tuple(
        (int(entry["step"]), float(entry["loss"]))
        for entry in state.get("log_history", [])
        if "loss" in entry and "step" in entry
    )
    return TrainResult(out_dir, checkpoints, losses, resume_from)


# -- validation before any model work -------------------------------------------------------


def _discover_init(spec: TrainSpec) -> Checkpoint | None:
    """The checkpoint ``init_from`` names: a folder, or the newest of a run's series."""
    if spec.init_from is None:
        return None
    init = discover_checkpoints(spec.init_from, origin="init_from")[-1]
    if init.kind != CHECKPOINT_KIND_ADAPTER and not spec.full_finetune:
        raise spec_key_error(
            spec.spec_path,
            f"{init.path} is a full model: LoRA is trained on a base model, so set model: to it "
            "(or set full_finetune: true to continue training all its weights)",
            ("init_from",),
        )
    return init


def _resolve_device(spec: TrainSpec) -> str:
    """``model.resolve_device``, refusing a CUDA device absent here at the spec's line and key."""
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise spec_key_error(spec.spec_path, "CUDA is not available on this machine", ("device",))
    return str(resolve_device(spec.device))


def _check_not_empty(spec: TrainSpec, tokenized: list[list[TokenizedExample]]) -> None:
    for index, (source, toks) in enumerate(zip(spec.data, tokenized, strict=True)):
        if not toks:
            raise spec_key_error(
                spec.spec_path,
                f"every example of {source.path} was dropped: none fits max_length",
                ("data", index),
            )


def _plan_batches(spec: TrainSpec, examples: list[TokenizedExample], device: str) -> _BatchPlan:
    """Split ``batch_size`` over processes, micro-batches and gradient accumulation."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if spec.batch_size % world_size:
        raise spec_key_error(
            spec.spec_path,
            f"must be a multiple of the {world_size} training processes",
            ("batch_size",),
        )
    per_device = spec.batch_size // world_size
    micro = spec.micro_batch_size
    if micro is None:
        longest = max(len(t.input_ids) for t in examples)
        micro = choose_micro_batch_size(
            per_device, longest, default_batch_tokens(device), MAX_AUTO_MICRO_BATCH_SIZE
        )
    elif per_device % micro:
        raise spec_key_error(
            spec.spec_path,
            f"must divide the batch of each of the {world_size} processes "
            f"({spec.batch_size} / {world_size} = {per_device})",
            ("micro_batch_size",),
        )
    plan = _BatchPlan(micro, per_device // micro, world_size)
    logger.info(
        "batch %d = micro-batch %d × accumulation %d × %d process(es)",
        spec.batch_size,
        plan.micro_batch_size,
        plan.accumulation,
        plan.world_size,
    )
    return plan


# -- model ----------------------------------------------------------------------------------


def _prepare_model(
    model: PreTrainedModel, spec: TrainSpec, init: Checkpoint | None
) -> torch.nn.Module:
    """The model to train: a fresh or loaded LoRA adapter on the frozen base, or the full model."""
    if spec.full_finetune:
        if init is not None and init.kind == CHECKPOINT_KIND_ADAPTER:
            with _quiet_peft():
                model = PeftModel.from_pretrained(model, init.path).merge_and_unload()
        elif init is not None:
            load_checkpoint_weights(model, init.path)
        model.requires_grad_(True)
        return model
    if init is not None:
        _check_adapter_matches(spec, init)
    config = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=list(spec.lora.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        with _quiet_peft():
            peft_model = get_peft_model(model, config)
    except ValueError as err:
        raise spec_key_error(
            spec.spec_path, f"cannot apply LoRA: {err}", ("lora", "targets")
        ) from err
    if init is not None:
        load_checkpoint_weights(peft_model, init.path)
    return peft_model


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Hide a deprecation warning PEFT triggers in transformers 5: nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def _check_adapter_matches(spec: TrainSpec, init: Checkpoint) -> None:
    """Refuse to continue an adapter whose LoRA settings differ from the spec's ``lora``."""
    saved = read_json(init.path / ADAPTER_CONFIG, key="init_from")
    peft = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "targets": "target_modules"}
    found = {key: saved.get(name) for key, name in peft.items()}
    if isinstance(found["targets"], list):
        found["targets"] = sorted(found["targets"])
    wanted = {**{k: getattr(spec.lora, k) for k in peft}, "targets": sorted(spec.lora.targets)}
    differing = [f"{k}: {found[k]!r}" for k in peft if found[k] != wanted[k]]
    if differing:
        raise spec_key_error(
            spec.spec_path,
            f"init_from {init.path} is an adapter with other settings ({', '.join(differing)}); "
            "set lora to match to continue training it",
            ("lora",),
        )


def _training_arguments(
    spec: TrainSpec, out_dir: Path, plan: _BatchPlan, device: str
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=plan.micro_batch_size,
        gradient_accumulation_steps=plan.accumulation,
        learning_rate=spec.lr,
        num_train_epochs=spec.epochs or 1,
        max_steps=-1 if spec.max_steps is None else spec.max_steps,
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=spec.save_steps,
        seed=spec.seed,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=True,
        use_cpu=device == "cpu",
        dataloader_pin_memory=device != "cpu",
    )


def _resolved_config(
    spec: TrainSpec,
    hashes: list[str | None],
    tokenized: list[list[TokenizedExample]],
    plan: _BatchPlan,
    device: str,
) -> dict:
    return {
        "spec": spec.to_dict(),
        "data_sha256": hashes,
        "device": device,  # what device: auto resolved to (the spec keeps auto)
        "n_examples": [len(toks) for toks in tokenized],
        "micro_batch_size": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.accumulation,
        "world_size": plan.world_size,
    }
