"""The validate spec: the model, the eval set and its evaluator, the runs to train, the baseline.

A spec is a YAML file loaded into frozen dataclasses by ``load_validate_spec``; every error is an
``InputError`` naming the spec file, the line and the dotted key (``runs[2].lr``). Each run is a
``swiftstudy train`` spec: the ``train:`` defaults, then the run's own keys (a run's ``epochs`` or
``max_steps`` replaces both of the defaults'; mappings such as ``lora`` merge key by key), with the
top-level ``model``. ``init_from:`` may name another run, which then trains first and hands over
its final checkpoint. A run with ``checkpoint:`` instead of ``data:`` is evaluated as it is.

Example::

    model: smollm2
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
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from swiftstudy.config import (
    Check,
    KeyPath,
    Lines,
    Spec,
    SpecValidator,
    describe_value,
    device,
    dtype,
    from_dict,
    load_spec,
    model,
    nested,
    option,
)
from swiftstudy.constants import (
    ADAPTER_CONFIG,
    CHECKPOINT_PREFIX,
    DEFAULT_DTYPE,
    DEFAULT_EVAL_BATCH_SIZE,
    DEFAULT_EVAL_MAX_NEW_TOKENS,
    DEFAULT_VALIDATE_DEVICE,
    EVALUATOR_EXACT,
    MODEL_CONFIG,
    QUICK_EVAL_LIMIT,
    QUICK_MAX_NEW_TOKENS,
    QUICK_MAX_STEPS,
)
from swiftstudy.errors import InputError
from swiftstudy.train import TrainSpec, train_spec_from_dict
from swiftstudy.validate.evaluator_spec import EvaluatorSpec, read_evaluator

_DURATION_KEYS = ("epochs", "max_steps")
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


def _swift_metrics(
    reader: SpecValidator, value: Any, key_path: KeyPath
) -> tuple[tuple[str, str], ...]:
    chosen = reader.mapping(value or {}, key_path, "a mapping {run: metric name}")
    names = [run.name for run in reader.lookup("runs")]
    metrics = []
    for run, metric in chosen.items():
        run_path = (*key_path, run)
        run = reader.choice(str(run), names, run_path, what="run")
        if run == reader.lookup("baseline"):
            raise reader.error("the baseline has no gain to compare", run_path)
        metrics.append((run, reader.string(metric, run_path)))
    return tuple(metrics)


@dataclass(frozen=True)
class SwiftSpec(Spec):
    """The swift study whose predictions the validation checks."""

    scores: Path = option(doc="Its scores.csv.")
    metrics: tuple[tuple[str, str], ...] = option(
        (),
        "{run: metric name} by hand; other runs match by name.",
        check=Check(_swift_metrics),
        dump=dict,
    )


@dataclass(frozen=True)
class QuickSpec(Spec):
    """The ``--quick`` profile: short runs, few queries, short answers."""

    max_steps: int = option(QUICK_MAX_STEPS, "Optimizer steps of every run (at most).", min=1)
    eval_limit: int = option(QUICK_EVAL_LIMIT, "Queries evaluated (the first ones).", min=1)
    max_new_tokens: int = option(QUICK_MAX_NEW_TOKENS, "The most tokens of an answer.", min=1)


def _baseline(reader: SpecValidator, value: Any, key_path: KeyPath) -> str:
    names = [run.name for run in reader.lookup("runs")]
    return reader.choice(value, names, key_path, what="run")


@dataclass(frozen=True)
class ValidateSpec(Spec):
    """A validated validate spec (``spec_path``: its file; not compared or saved)."""

    extra_keys: ClassVar[dict[str, str]] = {
        "train": "Defaults of every run: any train key (swiftstudy train --print-config).",
        "base": "A run named base: a checkpoint (adapter, model or run folder) or its data.",
    }

    model: str = option(doc="The base model every run fine-tunes.", check=model())
    eval: EvalSpec = option(
        doc="The eval set and its evaluator.",
        check=nested(EvalSpec, "a mapping {path, evaluator, ...}"),
    )
    runs: tuple[RunSpec, ...] = option(
        doc="Each {name, <train keys>} over train:, or {name, checkpoint}.",
        check=Check(lambda r, v, k: _runs(r, v, k)),
    )
    baseline: str = option(
        doc="The run deltas are measured against (default: the first).",
        check=Check(_baseline),
        fill=lambda reader: reader.lookup("runs")[0].name,
    )
    swift: SwiftSpec | None = option(
        None,
        "The swift study to compare with: its scores.csv, or {scores, metrics}.",
        check=nested(SwiftSpec, "a scores.csv path or {scores, metrics}", shorthand="scores"),
    )
    quick: QuickSpec = option(QuickSpec(), "The --quick profile.")
    device: str = option(DEFAULT_VALIDATE_DEVICE, "Where answers are generated.", check=device())
    dtype: str = option(DEFAULT_DTYPE, "The dtype of the model when generating.", check=dtype())
    spec_path: Path | None = field(default=None, compare=False, repr=False)

    def run(self, name: str) -> RunSpec:
        """The run named ``name``."""
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(name)


def load_validate_spec(path: str | Path, overrides: Sequence[str] = ()) -> ValidateSpec:
    """Load and validate a validate spec file, after applying ``key=value`` overrides.

    Relative paths in the file resolve against the file's folder; errors name the file, line and
    key (see ``config.load_spec``).
    """
    return load_spec(ValidateSpec, path, overrides)


def validate_spec_from_dict(
    data: Any, *, base_dir: Path, source: Path | None = None, lines: Lines | None = None
) -> ValidateSpec:
    """Validate plain data (as loaded from YAML) and build a ``ValidateSpec`` (``from_dict``)."""
    return from_dict(ValidateSpec, data, base_dir=base_dir, source=source, lines=lines)


def apply_quick(spec: ValidateSpec) -> ValidateSpec:
    """The spec under the ``--quick`` profile: short runs, the first queries, short answers."""
    quick = spec.quick
    runs = []
    for run in spec.runs:
        if run.train is not None:
            steps = quick.max_steps
            if run.train.max_steps is not None:
                steps = min(steps, run.train.max_steps)
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
    done: list[RunSpec] = []
    names: set[str] = set()
    pending = list(spec.runs)
    while pending:
        ready = [r for r in pending if r.init_run is None or r.init_run in names]
        if not ready:  # the validator refuses cycles; this is a guard
            raise ValueError("runs depend on each other in a cycle")
        for run in ready:
            done.append(run)
            names.add(run.name)
            pending.remove(run)
    return done


# -- runs -----------------------------------------------------------------------------------

Entry = tuple[str, dict[Any, Any], KeyPath]


def _runs(reader: SpecValidator, items: Any, key_path: KeyPath) -> tuple[RunSpec, ...]:
    """The runs (``base:`` first), each a train spec over the ``train:`` defaults."""
    model = reader.lookup("model")
    defaults = _train_defaults(reader, _lookup(reader, "train", {}))
    entries = _run_entries(reader, items)
    names = [name for name, _, _ in entries]
    runs = tuple(
        _run(reader, name, value, key_path, model, defaults, names)
        for name, value, key_path in entries
    )
    _check_cycles(reader, runs, entries)
    return runs


def _lookup(reader: SpecValidator, name: str, default: Any) -> Any:
    try:
        return reader.lookup(name)
    except KeyError:
        return default


def _train_defaults(reader: SpecValidator, value: Any) -> dict[Any, Any]:
    defaults = reader.mapping(value, ("train",), "a mapping of train keys (lr, epochs, ...)")
    for key, why in (("model", "set it at the top level"), ("data", "each run names its data")):
        if key in defaults:
            raise reader.error(f"not a default: {why}", ("train", key))
    return defaults


def _run_entries(reader: SpecValidator, items: Any) -> list[Entry]:
    """``(name, mapping, key path)`` of every run, ``base:`` first when given."""
    if not isinstance(items, list) or not items:
        raise reader.error(
            f"expected a non-empty list of runs, got {describe_value(items)}", ("runs",)
        )
    entries = []
    base = _lookup(reader, "base", None)
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
    reader: SpecValidator,
    name: str,
    value: dict[Any, Any],
    key_path: KeyPath,
    model: str,
    defaults: dict[Any, Any],
    names: list[str],
) -> RunSpec:
    if "checkpoint" in value:
        extra = [k for k in value if k != "checkpoint"]
        if extra:
            raise reader.error(
                "a run evaluated from a checkpoint takes no training keys", (*key_path, extra[0])
            )
        checkpoint = reader.path(value["checkpoint"], (*key_path, "checkpoint"))
        if not checkpoint.exists():
            raise reader.error(f"no such file or folder: {checkpoint}", (*key_path, "checkpoint"))
        return RunSpec(name, checkpoint=checkpoint)
    own = dict(value)
    base = dict(defaults)
    if any(k in own for k in _DURATION_KEYS):
        base = {k: v for k, v in base.items() if k not in _DURATION_KEYS}
    merged = _deep_merge(base, own)
    merged["model"] = model
    init_run = None
    init = merged.get("init_from")
    if isinstance(init, str) and init in names:
        where = (*key_path, "init_from") if "init_from" in own else ("train", "init_from")
        if init == name:
            raise reader.error("a run cannot continue from itself", where)
        init_run = init
        del merged["init_from"]
    lines = _train_lines(reader.lines, key_path, own, base)
    try:
        train = train_spec_from_dict(
            merged, base_dir=reader.base_dir, source=reader.source, lines=lines
        )
    except InputError as err:
        raise _relocate(err, key_path, own, base) from None
    return RunSpec(name, train=train, init_run=init_run)


def _train_lines(
    lines: Lines, key_path: KeyPath, own: dict[Any, Any], base: dict[Any, Any]
) -> dict[KeyPath, int | None]:
    """Line numbers of the merged train spec's keys: the run's own, else the defaults'."""
    result: dict[KeyPath, int | None] = {}
    if key_path in lines:
        result[()] = lines[key_path]
    if ("model",) in lines:
        result[("model",)] = lines[("model",)]
    for prefix, keys in ((("train",), base), (key_path, own)):
        for where, line in lines.items():
            inside = len(where) > len(prefix) and where[: len(prefix)] == prefix
            if inside and where[len(prefix)] in keys:
                result[where[len(prefix) :]] = line
    return result


def _check_cycles(reader: SpecValidator, runs: tuple[RunSpec, ...], entries: list[Entry]) -> None:
    parents = {run.name: run.init_run for run in runs}
    for run, (_, _, key_path) in zip(runs, entries, strict=True):
        chain, current = [run.name], run.init_run
        while current is not None:
            chain.append(current)
            if current == run.name:
                raise reader.error(
                    f"runs continue from each other in a cycle: {' → '.join(chain)}",
                    (*key_path, "init_from"),
                )
            current = parents[current]
            if len(chain) > len(runs) + 1:
                break


def _deep_merge(base: dict[Any, Any], own: dict[Any, Any]) -> dict[Any, Any]:
    """``base`` updated with ``own``; mappings present in both are merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _relocate(
    err: InputError, key_path: KeyPath, own: dict[Any, Any], base: dict[Any, Any]
) -> InputError:
    """A train-spec error re-keyed to where its value is written: the run, ``train``, ``model``."""
    key = err.key or ""
    top = re.match(r"[^.\[]*", key).group(0)
    if top == "model":
        prefix = ""
    elif top in base and top not in own:
        prefix = "train."
    elif key_path == ("base",):
        prefix = "base."
    else:
        prefix = f"runs[{key_path[1]}]."
    if not key:
        prefix = prefix.rstrip(".")
    return InputError(err.message, path=err.path, line=err.line, key=prefix + key or None)


def _is_checkpoint_folder(path: Path) -> bool:
    """Whether ``path`` holds an adapter, a model or a run's ``checkpoint-<step>`` folders."""
    if not path.is_dir():
        return False
    if (path / ADAPTER_CONFIG).is_file() or (path / MODEL_CONFIG).is_file():
        return True
    return any(child.name.startswith(CHECKPOINT_PREFIX) for child in path.iterdir())
