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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from swiftstudy.constants import (
    ADAPTER_CONFIG,
    CHECKPOINT_PREFIX,
    DEFAULT_DTYPE,
    DEFAULT_EVAL_BATCH_SIZE,
    DEFAULT_EVAL_MAX_NEW_TOKENS,
    DEFAULT_VALIDATE_DEVICE,
    DEVICES,
    DTYPES,
    EVALUATOR_EXACT,
    MODEL_CONFIG,
    QUICK_EVAL_LIMIT,
    QUICK_MAX_NEW_TOKENS,
    QUICK_MAX_STEPS,
)
from swiftstudy.errors import InputError
from swiftstudy.train import TrainSpec, train_spec_from_dict
from swiftstudy.validate.evaluator_spec import EvaluatorSpec, EvaluatorSpecValidator
from swiftstudy.validation import SpecValidator, absolute_path, describe_value, load_spec_data
from swiftstudy.yamlio import KeyPath

_REQUIRED_KEYS = ("model", "eval", "runs")
_OPTIONAL_KEYS = ("train", "base", "baseline", "swift", "quick", "device", "dtype")
_EVAL_KEYS = ("path", "split", "evaluator", "max_new_tokens", "batch_size", "limit")
_QUICK_KEYS = ("max_steps", "eval_limit", "max_new_tokens")
_SWIFT_KEYS = ("scores", "metrics")
_CUDA_INDEX = re.compile(r"cuda:\d+")
_DURATION_KEYS = ("epochs", "max_steps")
_BASE_RUN = "base"


@dataclass(frozen=True)
class EvalSpec:
    """The eval set: queries with golden responses, and how answers are made and graded.

    Attributes:
        path: A JSONL file or saved dataset in the example formats (golden answer in
            ``response``, optional ``checkpoints`` for the judge).
        split: The split of a saved ``DatasetDict``.
        evaluator: How answers are graded.
        max_new_tokens: The most tokens of a generated answer.
        batch_size: Queries answered together.
        limit: Only the first ``limit`` queries; ``None`` for all.
    """

    path: Path
    split: str | None = None
    evaluator: EvaluatorSpec = field(default_factory=lambda: EvaluatorSpec(EVALUATOR_EXACT))
    max_new_tokens: int = DEFAULT_EVAL_MAX_NEW_TOKENS
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    limit: int | None = None


@dataclass(frozen=True)
class RunSpec:
    """One named run: a training config, or an existing checkpoint evaluated as it is.

    Attributes:
        name: The run's name (a row of the tables).
        train: The train spec (``None`` for a checkpoint run). When ``init_run`` is set, its
            ``init_from`` is filled in with that run's final checkpoint at run time.
        init_run: The run whose final checkpoint this one continues from.
        checkpoint: An adapter, model or run folder (its newest checkpoint) to evaluate.
    """

    name: str
    train: TrainSpec | None = None
    init_run: str | None = None
    checkpoint: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "train": None if self.train is None else self.train.to_dict(),
            "init_run": self.init_run,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
        }


@dataclass(frozen=True)
class SwiftSpec:
    """The swift study whose predictions the validation checks.

    Attributes:
        scores: Its ``scores.csv``.
        metrics: ``(run, metric)`` pairs chosen by hand; other runs are matched by name.
    """

    scores: Path
    metrics: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class QuickSpec:
    """The ``--quick`` profile: short runs, few queries, short answers.

    Attributes:
        max_steps: Optimizer steps of every run (at most; its warm-up cut to a quarter).
        eval_limit: Queries evaluated (the first ones).
        max_new_tokens: The most tokens of an answer.
    """

    max_steps: int = QUICK_MAX_STEPS
    eval_limit: int = QUICK_EVAL_LIMIT
    max_new_tokens: int = QUICK_MAX_NEW_TOKENS


@dataclass(frozen=True)
class ValidateSpec:
    """A validated validate spec.

    Attributes:
        model: The base model every run fine-tunes (alias, folder, hub id or ``.gguf``).
        eval: The eval set and its evaluator.
        runs: The runs, in spec order.
        baseline: The run deltas and tests are measured against.
        swift: The swift study to compare with, if any.
        quick: The ``--quick`` profile.
        device: Where answers are generated: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: The dtype of the model when generating.
        spec_path: The file the spec was loaded from; not compared or serialised.
    """

    model: str
    eval: EvalSpec
    runs: tuple[RunSpec, ...]
    baseline: str
    swift: SwiftSpec | None = None
    quick: QuickSpec = QuickSpec()
    device: str = DEFAULT_VALIDATE_DEVICE
    dtype: str = DEFAULT_DTYPE
    spec_path: Path | None = field(default=None, compare=False, repr=False)

    def run(self, name: str) -> RunSpec:
        """The run named ``name``."""
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain YAML-ready data (absolute paths)."""
        return {
            "model": self.model,
            "eval": {
                "path": str(self.eval.path),
                "split": self.eval.split,
                "evaluator": self.eval.evaluator.to_dict(),
                "max_new_tokens": self.eval.max_new_tokens,
                "batch_size": self.eval.batch_size,
                "limit": self.eval.limit,
            },
            "runs": [run.to_dict() for run in self.runs],
            "baseline": self.baseline,
            "swift": None
            if self.swift is None
            else {"scores": str(self.swift.scores), "metrics": dict(self.swift.metrics)},
            "quick": {
                "max_steps": self.quick.max_steps,
                "eval_limit": self.quick.eval_limit,
                "max_new_tokens": self.quick.max_new_tokens,
            },
            "device": self.device,
            "dtype": self.dtype,
        }


def load_validate_spec(path: str | Path, overrides: Sequence[str] = ()) -> ValidateSpec:
    """Load and validate a validate spec file, after applying ``key=value`` overrides.

    Relative paths in the file resolve against the file's folder.

    Raises:
        InputError: The file cannot be read or parsed, or the spec is invalid; the error names
            the file, line and key.
    """
    data, marked, path = load_spec_data(path, overrides)
    return validate_spec_from_dict(data, base_dir=path.parent, source=path, lines=marked)


def validate_spec_from_dict(
    data: Any,
    *,
    base_dir: Path,
    source: Path | None = None,
    lines: Mapping[KeyPath, int | None] | None = None,
) -> ValidateSpec:
    """Validate plain data (as loaded from YAML) and build a ``ValidateSpec``.

    Args:
        data: The parsed spec, a mapping.
        base_dir: The folder relative paths resolve against.
        source: The spec file, named in errors and kept as ``spec_path``.
        lines: Key paths to 1-based line numbers (None: set by a command-line override).
    """
    return _Validator(source, lines or {}, absolute_path(Path(base_dir))).spec(data)


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


class _Validator(SpecValidator):
    """Checks one spec, raising ``InputError`` with the file, line and key of the first problem."""

    def spec(self, data: Any) -> ValidateSpec:
        top = self.mapping(data, (), "a mapping of spec keys (model, eval, runs, ...)")
        self.check_keys(top, _REQUIRED_KEYS, _OPTIONAL_KEYS, ())
        model = self.model(top["model"])
        defaults = self.train_defaults(top.get("train", {}))
        entries = self.run_entries(top)
        names = [name for name, _, _ in entries]
        runs = tuple(
            self.run(name, value, key_path, model, defaults, names)
            for name, value, key_path in entries
        )
        self.check_cycles(runs, entries)
        baseline = names[0]
        if "baseline" in top:
            baseline = self.choice(top["baseline"], names, ("baseline",), what="run")
        options: dict[str, Any] = {}
        if "swift" in top:
            options["swift"] = self.swift(top["swift"], names, baseline)
        if "quick" in top:
            options["quick"] = self.quick(top["quick"])
        if "device" in top:
            options["device"] = self.device(top["device"])
        if "dtype" in top:
            options["dtype"] = self.choice(top["dtype"], DTYPES, ("dtype",))
        return ValidateSpec(
            model=model,
            eval=self.evaluation(top["eval"]),
            runs=runs,
            baseline=baseline,
            spec_path=self.source,
            **options,
        )

    # -- runs -------------------------------------------------------------------------------

    def train_defaults(self, value: Any) -> dict[Any, Any]:
        defaults = self.mapping(value, ("train",), "a mapping of train keys (lr, epochs, ...)")
        for key, why in (("model", "set it at the top level"), ("data", "each run names its data")):
            if key in defaults:
                raise self.error(f"not a default: {why}", ("train", key))
        return defaults

    def run_entries(self, top: dict[Any, Any]) -> list[tuple[str, dict[Any, Any], KeyPath]]:
        """``(name, mapping, key path)`` of every run, ``base:`` first when given."""
        items = top["runs"]
        if not isinstance(items, list) or not items:
            raise self.error(
                f"expected a non-empty list of runs, got {describe_value(items)}", ("runs",)
            )
        entries = []
        if "base" in top:
            entries.append((_BASE_RUN, self.base_entry(top["base"]), ("base",)))
        seen = {name: key_path for name, _, key_path in entries}
        for index, item in enumerate(items):
            key_path: KeyPath = ("runs", index)
            item = self.mapping(item, key_path, "a run mapping {name, data, ...}")
            if "name" not in item:
                raise self.error("missing required key 'name'", (*key_path, "name"))
            name = self.string(item["name"], (*key_path, "name"))
            if name in seen:
                where = "base:" if seen[name] == ("base",) else f"runs[{seen[name][1]}]"
                raise self.error(f"duplicate run name {name!r} (also {where})", (*key_path, "name"))
            seen[name] = key_path
            entries.append((name, {k: v for k, v in item.items() if k != "name"}, key_path))
        return entries

    def base_entry(self, value: Any) -> dict[Any, Any]:
        """``base:``: a checkpoint (adapter, model or run folder) or data to train it on."""
        if isinstance(value, dict):
            return value
        path = self.path(value, ("base",))
        if _is_checkpoint_folder(path):
            return {"checkpoint": value}
        return {"data": [value]}

    def run(
        self,
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
                raise self.error(
                    "a run evaluated from a checkpoint takes no training keys",
                    (*key_path, extra[0]),
                )
            path = self.path(value["checkpoint"], (*key_path, "checkpoint"))
            if not path.exists():
                raise self.error(f"no such file or folder: {path}", (*key_path, "checkpoint"))
            return RunSpec(name, checkpoint=path)
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
                raise self.error("a run cannot continue from itself", where)
            init_run = init
            del merged["init_from"]
        lines = self.train_lines(key_path, own, base)
        try:
            train = train_spec_from_dict(
                merged, base_dir=self.base_dir, source=self.source, lines=lines
            )
        except InputError as err:
            raise _relocate(err, key_path, own, base) from None
        return RunSpec(name, train=train, init_run=init_run)

    def train_lines(
        self, key_path: KeyPath, own: dict[Any, Any], base: dict[Any, Any]
    ) -> dict[KeyPath, int | None]:
        """Line numbers of the merged train spec's keys: the run's own, else the defaults'."""
        lines: dict[KeyPath, int | None] = {}
        if key_path in self.lines:
            lines[()] = self.lines[key_path]
        if ("model",) in self.lines:
            lines[("model",)] = self.lines[("model",)]
        for prefix, keys in ((("train",), base), (key_path, own)):
            for path, line in self.lines.items():
                inside = len(path) > len(prefix) and path[: len(prefix)] == prefix
                if inside and path[len(prefix)] in keys:
                    lines[path[len(prefix) :]] = line
        return lines

    def check_cycles(
        self, runs: tuple[RunSpec, ...], entries: list[tuple[str, dict[Any, Any], KeyPath]]
    ) -> None:
        parents = {run.name: run.init_run for run in runs}
        for run, (_, _, key_path) in zip(runs, entries, strict=True):
            chain, current = [run.name], run.init_run
            while current is not None:
                chain.append(current)
                if current == run.name:
                    raise self.error(
                        f"runs continue from each other in a cycle: {' → '.join(chain)}",
                        (*key_path, "init_from"),
                    )
                current = parents[current]
                if len(chain) > len(runs) + 1:
                    break

    # -- eval and evaluator -----------------------------------------------------------------

    def evaluation(self, value: Any) -> EvalSpec:
        key_path: KeyPath = ("eval",)
        evaluation = self.mapping(value, key_path, "a mapping {path, evaluator, ...}")
        self.check_keys(evaluation, ("path",), _EVAL_KEYS[1:], key_path)
        options: dict[str, Any] = {}
        if evaluation.get("split") is not None:
            options["split"] = self.string(evaluation["split"], (*key_path, "split"))
        if "evaluator" in evaluation:
            options["evaluator"] = EvaluatorSpecValidator(
                self.source, self.lines, self.base_dir
            ).evaluator(evaluation["evaluator"])
        for key in ("max_new_tokens", "batch_size"):
            if key in evaluation:
                options[key] = self.integer(evaluation[key], (*key_path, key), 1)
        if "limit" in evaluation:
            options["limit"] = self.integer(
                evaluation["limit"], (*key_path, "limit"), 1, nullable=True
            )
        return EvalSpec(path=self.path(evaluation["path"], (*key_path, "path")), **options)

    # -- the rest ---------------------------------------------------------------------------

    def swift(self, value: Any, names: list[str], baseline: str) -> SwiftSpec:
        key_path: KeyPath = ("swift",)
        if isinstance(value, str):
            value = {"scores": value}
        swift = self.mapping(value, key_path, "a scores.csv path or {scores, metrics}")
        self.check_keys(swift, _SWIFT_KEYS[:1], _SWIFT_KEYS[1:], key_path)
        scores = self.path(swift["scores"], (*key_path, "scores"))
        metrics: list[tuple[str, str]] = []
        chosen = swift.get("metrics") or {}
        chosen = self.mapping(chosen, (*key_path, "metrics"), "a mapping {run: metric name}")
        for run, metric in chosen.items():
            run_path = (*key_path, "metrics", run)
            run = self.choice(str(run), names, run_path, what="run")
            if run == baseline:
                raise self.error("the baseline has no gain to compare", run_path)
            metrics.append((run, self.string(metric, run_path)))
        return SwiftSpec(scores=scores, metrics=tuple(metrics))

    def quick(self, value: Any) -> QuickSpec:
        key_path: KeyPath = ("quick",)
        quick = self.mapping(value, key_path, "a mapping {max_steps, eval_limit, max_new_tokens}")
        self.check_keys(quick, (), _QUICK_KEYS, key_path)
        return QuickSpec(**{key: self.integer(quick[key], (*key_path, key), 1) for key in quick})

    def device(self, value: Any) -> str:
        device = self.string(value, ("device",))
        if device not in DEVICES and not _CUDA_INDEX.fullmatch(device):
            raise self.error(
                f"unknown device {device!r} (expected cpu, cuda, cuda:N or auto)", ("device",)
            )
        return device


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
