"""A study traced while the model trains: ``SwiftStudyCallback`` for ``Trainer`` and ``SFTTrainer``.

At each save (or every N steps) the callback computes the study's Gram matrix from the live
model, the PEFT model being trained, with the code ``run_study`` runs (``compute.compute_set_grams``
on a one-step series whose one state is the model as it is, without a gradient cache), so no
checkpoint is read or written for it. At the end of training it saves the tables of every studied
step as a study does (``StudyResult.save``: ``scores.csv``, ``relinf.csv``, ``norms.csv``,
``tokens.jsonl``, ``config.yaml`` and the report); with ``update_report=True`` it saves them after
every studied step as well.

The run itself is unchanged: during each study step every parameter is frozen and the model is in
eval mode (no dropout), the torch CPU and CUDA random states are forked, and afterwards every
module's train mode and every parameter's ``requires_grad`` are put back, so the training steps
that follow compute exactly what they would have (bit for bit on a CPU:
``tests/study/test_callback``).

Under ``torchrun`` / ``accelerate launch`` (DDP) every process studies: the batches are shared out
as in a study (``study.distributed``) and rank 0 writes. FSDP and DeepSpeed shard the weights,
which the engine needs whole: they are refused. ``preconditioner: adam`` needs a checkpoint's
``optimizer.pt`` and is refused too: run ``swiftstudy study`` on the saved checkpoints instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from peft import PeftModel
from transformers import TrainerCallback

from swiftstudy.config.reader import absolute_path, load_spec_data, spec_key_error
from swiftstudy.constants import (
    CHECKPOINT_KIND_ADAPTER,
    CHECKPOINT_KIND_FULL,
    CHECKPOINT_PREFIX,
    CONFIG_YAML,
    DTYPES,
    PRECONDITIONER_ADAM,
    WEIGHTING_LR,
)
from swiftstudy.data import load_examples
from swiftstudy.errors import InputError
from swiftstudy.model import Checkpoint, TargetModule, find_targets, hash_checkpoint
from swiftstudy.study.compute import (
    SetGrams,
    StudyModel,
    check_pairs,
    compute_result,
    compute_set_grams,
    interval_learning_rates,
    resolve_config,
    tokenize_sets,
    used_sets,
)
from swiftstudy.study.distributed import Processes
from swiftstudy.study.grams import CheckpointKeys
from swiftstudy.study.result import StudyResult
from swiftstudy.study.spec import StudySpec, spec_from_dict

logger = logging.getLogger(__name__)

#: Spec keys the callback fills itself when a spec leaves them out: the model is the one being
#: trained, its checkpoints the Trainer's ``output_dir``.
_FILLED_KEYS = {"model": "the model being trained", "checkpoints": "."}


class SwiftStudyCallback(TrainerCallback):
    """Trace a study while a ``Trainer`` or TRL ``SFTTrainer`` trains (module docstring).

    Example::

        callback = SwiftStudyCallback("study.yaml", "sft-study")  # sets and metrics
        trainer = SFTTrainer(..., peft_config=LoraConfig(...), callbacks=[callback])
        trainer.train()  # studies the model at each save; writes sft-study/ at the end

    Args:
        spec: A study spec file, a spec as a mapping (relative paths from the current folder) or
            a ``StudySpec``. ``model`` and ``checkpoints`` may be left out: the model studied is
            the one being trained, and its checkpoints are the Trainer's ``output_dir``.
            ``dtype`` and ``device`` are the model's own.
        out_dir: Receives the study's files and report.
        every_n_steps: Study every N optimizer steps instead of at each save.
        update_report: Rewrite the files and the report after every studied step, not only at
            the end of training.
        overwrite: Replace the results of an earlier study in ``out_dir``.
        tokenizer: The tokenizer to render the examples with; default: the trainer's
            ``processing_class``, as ``SFTTrainer`` tokenizes the training data.

    Attributes:
        result: The study's rows once training has ended (on every rank); None before.
        seconds: Wall time the callback took from the run, over all studied steps (with
            ``update_report``, writing the files and the report included).

    Raises:
        InputError: Bad input (spec, data, ``out_dir``), before training starts.
    """

    def __init__(
        self,
        spec: StudySpec | Mapping[str, Any] | str | Path,
        out_dir: str | Path,
        *,
        every_n_steps: int | None = None,
        update_report: bool = False,
        overwrite: bool = False,
        tokenizer: Any = None,
    ) -> None:
        self.spec, self._model_named = _load_spec(spec)
        if self.spec.preconditioner == PRECONDITIONER_ADAM:
            raise spec_key_error(
                self.spec.spec_path,
                "adam needs each checkpoint's optimizer.pt: run swiftstudy study on the saved "
                "checkpoints instead of the callback",
                ("preconditioner",),
            )
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or every_n_steps < 1):
            raise InputError(
                f"must be a positive integer, got {every_n_steps!r}", key="every_n_steps"
            )
        self.out_dir = Path(out_dir)
        if (self.out_dir / CONFIG_YAML).is_file() and not overwrite:
            raise InputError(
                "holds the results of a study; use another folder or overwrite=True",
                path=self.out_dir,
                key="out_dir",
            )
        self.every_n_steps = every_n_steps
        self.update_report = update_report
        self._tokenizer = tokenizer
        self._examples = {
            s.name: load_examples(s.path, **s.load_options())
            for s in self.spec.sets
            if s.name in used_sets(self.spec)
        }
        check_pairs(
            self.spec, {name: [e.task for e in exs] for name, exs in self._examples.items()}
        )
        self._live: _LiveStudy | None = None
        self.result: StudyResult | None = None
        self.seconds = 0.0

    # -- Trainer events -----------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        """Check the sets against the trainer's tokenizer and model before the first step."""
        tokenizer = self._tokenizer or getattr(processing_class, "tokenizer", processing_class)
        if tokenizer is None:
            raise InputError(
                "the trainer has no processing_class: pass SwiftStudyCallback(tokenizer=...)",
                key="tokenizer",
            )
        _check_trainer(args, self.spec, self.every_n_steps)
        self._live = _LiveStudy.start(self, args, model, tokenizer)
        self.result, self.seconds = None, 0.0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._study_step(args, state, model)

    def on_save(self, args, state, control, model=None, **kwargs):
        if self.every_n_steps is None:
            self._study_step(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        """Write the study's files and report (rank 0); keep the rows in ``result``."""
        live = self._live
        if live is None or not live.checkpoints:
            logger.warning("SwiftStudyCallback: no step was studied, so nothing is written")
            return
        self.result = live.finish(state, write=True)
        logger.info(
            "SwiftStudyCallback: %d step(s) studied in %.1f s; wrote %s",
            len(live.checkpoints),
            self.seconds,
            self.out_dir,
        )

    # -- work ---------------------------------------------------------------------------------

    def _study_step(self, args, state, model) -> None:
        live = self._live
        if live is None or (live.checkpoints and live.checkpoints[-1].step >= state.global_step):
            return
        start = time.perf_counter()
        live.study(Path(args.output_dir), state.global_step, model)
        if self.update_report:
            live.finish(state, write=True)
        self.seconds += time.perf_counter() - start


@dataclass
class _LiveStudy:
    """One training run's study: the spec resolved for the run, the model, the steps studied."""

    callback: SwiftStudyCallback
    spec: StudySpec
    model: StudyModel
    processes: Processes
    #: Where the Trainer saves each studied step's checkpoint; their Gram matrices, row sizes and
    #: work, with the last step's sets.
    checkpoints: list[Checkpoint] = field(default_factory=list)
    done: SetGrams | None = None
    hashes: dict[int, str] = field(default_factory=dict)

    @classmethod
    def start(cls, callback: SwiftStudyCallback, args, model, tokenizer) -> _LiveStudy:
        """The study of the model about to be trained by a Trainer with ``args``."""
        kind = CHECKPOINT_KIND_ADAPTER if isinstance(model, PeftModel) else CHECKPOINT_KIND_FULL
        output_dir = absolute_path(Path(args.output_dir))
        targets = find_targets(model, Checkpoint(output_dir, 0, kind), callback.spec.params)
        first = next(model.parameters())
        spec = replace(
            callback.spec,
            model=callback.spec.model if callback._model_named else _model_name(model),
            checkpoints=output_dir,
            dtype=_dtype_name(first.dtype, callback.spec.dtype),
            device=str(first.device),
        )
        # Tokenized again at each step, with the study's code; here to fail before training.
        tokenize_sets(spec, callback._examples, tokenizer)
        # No gradient cache: the live weights are never seen again.
        states = _LiveStates(model, targets, kind)
        live = StudyModel(spec.model, states, tokenizer, "", spec.dtype, first.device)
        return cls(callback, spec, live, _processes(first.device))

    def study(self, output_dir: str, step: int, model: torch.nn.Module) -> None:
        """The Gram matrix of the live model at ``step``, the run left as it was."""
        if model is not self.model.states.model:
            raise RuntimeError("SwiftStudyCallback: the trainer's model changed during training")
        path = absolute_path(Path(output_dir)) / f"{CHECKPOINT_PREFIX}{step}"
        ckpt = Checkpoint(path, step, self.model.states.kind)
        with _study_mode(model, self.processes.device):
            done = compute_set_grams(
                self.spec,
                self.callback._examples,
                self.model,
                [ckpt],
                [CheckpointKeys(f"live:{step}")],
                processes=self.processes,
                progress=False,
            )
        logger.info("SwiftStudyCallback: step %d studied (%d gradients)", step, done.work.computed)
        if self.done is not None:
            done = replace(
                done,
                grams=self.done.grams + done.grams,
                dims=self.done.dims + done.dims,
                work=self.done.work + done.work,
            )
        self.checkpoints.append(ckpt)
        self.done = done

    def finish(self, state, *, write: bool) -> StudyResult:
        """The result of the steps studied so far; rank 0 saves it (files and report)."""
        result = compute_result(
            self.spec,
            self.checkpoints,
            self.done,
            rank=self.processes.rank,
            config=self._config(state) if self.processes.is_main else None,
            out_dir=self.callback.out_dir,
        )
        if write and self.processes.is_main:
            result.save(self.callback.out_dir, overwrite=True)
        return result

    def _config(self, state) -> dict:
        """``config.yaml``: as a study's of the saved checkpoints, with the callback's settings
        and time."""
        checkpoints = self.checkpoints
        keys = [CheckpointKeys(self._hash(c)) for c in checkpoints]
        # The Trainer's logged learning rates, as a study reads them from trainer_state.json.
        logged = [
            (entry["step"], entry["learning_rate"])
            for entry in state.log_history
            if "learning_rate" in entry and "step" in entry
        ]
        rates = interval_learning_rates([c.step for c in checkpoints], logged)
        config = resolve_config(self.spec, checkpoints, keys, self.done.dims, rates)
        for entry in config["checkpoints"]:
            if not entry["sha256"]:
                del entry["sha256"]  # not saved (every_n_steps), or deleted (save_total_limit)
        config["callback"] = {
            "every_n_steps": self.callback.every_n_steps,
            "seconds": round(self.callback.seconds, 3),
        }
        return config

    def _hash(self, ckpt: Checkpoint) -> str:
        """The saved checkpoint's hash (as a study records it), once it exists; else ''."""
        if ckpt.step not in self.hashes:
            try:
                self.hashes[ckpt.step] = hash_checkpoint(ckpt)
            except OSError:
                return ""
        return self.hashes[ckpt.step]


@dataclass(frozen=True)
class _LiveStates:
    """Stands in for ``ModelStates``: the one state is the model being trained, as it is."""

    model: torch.nn.Module
    targets: list[TargetModule]
    kind: str  # adapter for a PEFT model, else full

    def load(self, ckpt: Checkpoint) -> tuple[torch.nn.Module, list[TargetModule]]:
        return self.model, self.targets


@contextmanager
def _study_mode(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode and frozen parameters for the engine; the RNG, train modes and
    ``requires_grad`` flags as they were afterwards."""
    modes = [m.training for m in model.modules()]
    trainable = [p.requires_grad for p in model.parameters()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model.eval()
        model.requires_grad_(False)
        try:
            yield
        finally:
            for module, mode in zip(model.modules(), modes, strict=True):
                module.training = mode
            for param, flag in zip(model.parameters(), trainable, strict=True):
                param.requires_grad_(flag)


def _load_spec(spec: StudySpec | Mapping[str, Any] | str | Path) -> tuple[StudySpec, bool]:
    """The validated spec, ``model`` and ``checkpoints`` filled in when left out; and whether
    it named the model."""
    if isinstance(spec, StudySpec):
        return spec, True
    if isinstance(spec, Mapping):
        data, lines, source, base_dir = dict(spec), {}, None, Path.cwd()
    else:
        data, lines, source = load_spec_data(spec)
        base_dir = source.parent
    named = not isinstance(data, dict) or "model" in data
    if isinstance(data, dict):
        data = {**_FILLED_KEYS, **data}
    return spec_from_dict(data, base_dir=base_dir, source=source, lines=lines), named


def _check_trainer(args, spec: StudySpec, every_n_steps: int | None) -> None:
    """Refuse a training run the callback cannot study."""
    for key in ("fsdp", "deepspeed"):
        if getattr(args, key, None):
            raise InputError(
                f"{key} shards the weights, and the study needs them whole: study the saved "
                "checkpoints with swiftstudy study",
                key=key,
            )
    # The strategies are str enums: they compare equal to their values.
    if every_n_steps is None and args.save_strategy == "no":
        raise InputError(
            "the run never saves (save_strategy: no): set SwiftStudyCallback(every_n_steps=...)",
            key="save_strategy",
        )
    if spec.verdict.checkpoints == WEIGHTING_LR and args.logging_strategy == "no":
        raise spec_key_error(
            spec.spec_path,
            "the lr weighting needs the learning rates the Trainer logs, and logging_strategy "
            "is no (set verdict: {checkpoints: mean} or last)",
            ("verdict", "checkpoints"),
        )


def _processes(device: torch.device) -> Processes:
    """This process's place among the trainer's processes (rank 0 of 1 without a launcher)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Processes(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)
    return Processes(device=device)


def _model_name(model: torch.nn.Module) -> str:
    """The trained model's base: its hub id or folder as it was loaded."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    config = getattr(model, "config", None)
    return getattr(config, "name_or_path", "") or type(model).__name__


def _dtype_name(dtype: torch.dtype, default: str) -> str:
    """The spec's name of a torch dtype (``torch.float64`` → ``float64``), else ``default``."""
    name = str(dtype).removeprefix("torch.")
    return name if name in DTYPES else default
