"""The study spec: which model, checkpoints, probe/eval sets and metrics a study computes.

A spec is a YAML file loaded into frozen dataclasses by ``load_study_spec``. All validation lives
in this module; every error is an ``InputError`` naming the spec file, the line and the dotted key
(``metrics[1].probes``). Validation is about shape and values only: whether the data, checkpoint
and model files exist is checked by the modules that open them.

Example::

    model: smollm2
    checkpoints: runs/base
    sets:
      cot: {path: data/cot.jsonl}
      similar: {path: data/similar.jsonl}
    metrics:
      - {name: "CoT → In-task non-CoT", probes: cot, evals: similar, context: in-task}
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swiftstudy.constants import (
    CONTEXTS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_FULL_PARAMS,
    DEFAULT_MAX_LENGTH,
    DEVICES,
    DTYPES,
    ON_OVERFLOW_ERROR,
    ON_OVERFLOW_MODES,
)
from swiftstudy.errors import InputError
from swiftstudy.yamlio import KeyPath, apply_overrides, load_yaml, override_key_path

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("model", "checkpoints", "sets", "metrics")
_OPTIONAL_KEYS = (
    "max_length",
    "batch_size",
    "batch_tokens",
    "dtype",
    "device",
    "on_overflow",
    "params",
)
_SET_KEYS = ("path", "split")
_METRIC_KEYS = ("name", "probes", "evals", "context")
_CHECKPOINT_KEYS = ("path", "step")
_CUDA_INDEX = re.compile(r"cuda:\d+")


@dataclass(frozen=True)
class SetSpec:
    """A named example set (probes or evals) stored in a file.

    Attributes:
        name: The name metrics refer to it by.
        path: The data file (absolute once loaded from a spec).
        split: The dataset split to read, for formats that have splits.
    """

    name: str
    path: Path
    split: str | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric: the mean RelInf of ``probes`` examples on ``evals`` examples.

    Attributes:
        name: Free-text label, kept exactly as written (arrows and all).
        probes: Name of the probe set.
        evals: Name of the eval set.
        context: ``in-task`` or ``cross-task`` (see ``constants.CONTEXTS``).
    """

    name: str
    probes: str
    evals: str
    context: str


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint listed explicitly in a spec.

    Attributes:
        path: The checkpoint folder or file (absolute once loaded from a spec).
        step: The training step, or None to read it from the checkpoint.
    """

    path: Path
    step: int | None = None


@dataclass(frozen=True)
class StudySpec:
    """A validated study spec.

    Attributes:
        model: Model alias, local folder, hub id or ``.gguf`` path (local paths made absolute).
        checkpoints: A folder of checkpoints, or an explicit tuple of checkpoints.
        sets: The example sets, in file order.
        metrics: The metrics, in file order.
        max_length: Longest tokenized example, in tokens.
        batch_size: Most examples in one batch.
        batch_tokens: Most padded tokens in one batch; None lets the engine pick for the device.
        dtype: Compute dtype name, one of ``constants.DTYPES``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        on_overflow: What to do with examples longer than ``max_length``: ``error`` or ``drop``.
        params: Regexes selecting the weights of full-model checkpoints.
        spec_path: The file the spec was loaded from, for messages; not compared or serialised.
    """

    model: str
    checkpoints: Path | tuple[CheckpointRef, ...]
    sets: tuple[SetSpec, ...]
    metrics: tuple[MetricSpec, ...]
    max_length: int = DEFAULT_MAX_LENGTH
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_tokens: int | None = None
    dtype: str = DEFAULT_DTYPE
    device: str = DEFAULT_DEVICE
    on_overflow: str = ON_OVERFLOW_ERROR
    params: tuple[str, ...] = DEFAULT_FULL_PARAMS
    spec_path: Path | None = field(default=None, compare=False, repr=False)

    def set(self, name: str) -> SetSpec:
        """Return the set called ``name``.

        Raises:
            KeyError: No set has that name.
        """
        for set_spec in self.sets:
            if set_spec.name == name:
                return set_spec
        known = ", ".join(s.name for s in self.sets)
        raise KeyError(f"no set named {name!r} (known sets: {known})")

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain YAML-ready data with absolute path strings.

        ``spec_from_dict(spec.to_dict(), base_dir=...)`` gives back an equal spec.
        """
        if isinstance(self.checkpoints, Path):
            checkpoints: Any = str(_absolute(self.checkpoints))
        else:
            checkpoints = [
                {"path": str(_absolute(c.path)), "step": c.step} for c in self.checkpoints
            ]
        return {
            "model": self.model,
            "checkpoints": checkpoints,
            "sets": {s.name: {"path": str(_absolute(s.path)), "split": s.split} for s in self.sets},
            "metrics": [
                {"name": m.name, "probes": m.probes, "evals": m.evals, "context": m.context}
                for m in self.metrics
            ],
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "batch_tokens": self.batch_tokens,
            "dtype": self.dtype,
            "device": self.device,
            "on_overflow": self.on_overflow,
            "params": list(self.params),
        }


def load_study_spec(path: str | Path, overrides: Sequence[str] = ()) -> StudySpec:
    """Load and validate a study spec file, after applying ``key=value`` overrides.

    Relative paths in the file resolve against the file's folder.

    Args:
        path: The spec YAML file.
        overrides: Command-line overrides such as ``batch_size=4`` or ``metrics.0.name=x``.

    Returns:
        The validated spec, with ``spec_path`` set.

    Raises:
        InputError: The file cannot be read or parsed, an override is malformed, or the spec is
            invalid; the error names the file, line and key.
    """
    path = _absolute(Path(path))
    data, lines = load_yaml(path)
    data = apply_overrides(data, overrides)
    marked: dict[KeyPath, int | None] = dict(lines)
    for override in overrides:
        _mark_overridden(marked, override_key_path(override.partition("=")[0].strip()))
    spec = spec_from_dict(data, base_dir=path.parent, source=path, lines=marked)
    logger.debug(
        "loaded study spec %s: %d sets, %d metrics", path, len(spec.sets), len(spec.metrics)
    )
    return spec


def spec_from_dict(
    data: Any,
    *,
    base_dir: Path,
    source: Path | None = None,
    lines: Mapping[KeyPath, int | None] | None = None,
) -> StudySpec:
    """Validate plain data (as loaded from YAML) and build a ``StudySpec``.

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
    return _Validator(source, lines or {}, _absolute(Path(base_dir))).spec(data)


class _Validator:
    """Checks one spec, raising ``InputError`` with the file, line and key of the first problem."""

    def __init__(
        self, source: Path | None, lines: Mapping[KeyPath, int | None], base_dir: Path
    ) -> None:
        self.source = source
        self.lines = lines
        self.base_dir = base_dir

    def spec(self, data: Any) -> StudySpec:
        top = self.mapping(data, (), "a mapping of spec keys (model, checkpoints, sets, ...)")
        self.check_keys(top, _REQUIRED_KEYS, _OPTIONAL_KEYS, ())
        model = self.model(top["model"])
        checkpoints = self.checkpoints(top["checkpoints"])
        sets = self.sets(top["sets"])
        metrics = self.metrics(top["metrics"], sets)
        options = self.options(top)
        return StudySpec(
            model=model,
            checkpoints=checkpoints,
            sets=sets,
            metrics=metrics,
            spec_path=self.source,
            **options,
        )

    # -- sections ---------------------------------------------------------------------------

    def options(self, top: dict[Any, Any]) -> dict[str, Any]:
        checks = {
            "max_length": lambda value, key_path: self.integer(value, key_path, 2),
            "batch_size": lambda value, key_path: self.integer(value, key_path, 1),
            "batch_tokens": lambda value, key_path: self.integer(value, key_path, 1, nullable=True),
            "dtype": lambda value, key_path: self.choice(value, DTYPES, key_path),
            "device": lambda value, key_path: self.device(value),
            "on_overflow": lambda value, key_path: self.choice(value, ON_OVERFLOW_MODES, key_path),
            "params": lambda value, key_path: self.params(value),
        }
        return {key: check(top[key], (key,)) for key, check in checks.items() if key in top}

    def model(self, value: Any) -> str:
        model = self.string(value, ("model",))
        candidate = Path(model).expanduser()
        looks_like_path = model.lower().endswith(".gguf") or model.startswith(("./", "../", "~"))
        if candidate.is_absolute() or looks_like_path or (self.base_dir / candidate).exists():
            return str(self.resolve(candidate))
        return model

    def checkpoints(self, value: Any) -> Path | tuple[CheckpointRef, ...]:
        key_path: KeyPath = ("checkpoints",)
        if isinstance(value, str):
            return self.path(value, key_path)
        if not isinstance(value, list):
            raise self.error(
                f"expected a path or a list of {{path, step}}, got {_describe(value)}", key_path
            )
        if not value:
            raise self.error("the list of checkpoints is empty", key_path)
        refs: list[CheckpointRef] = []
        seen_steps: dict[int, int] = {}
        for index, item in enumerate(value):
            item_path = (*key_path, index)
            if isinstance(item, str):
                item = {"path": item}
            item = self.mapping(item, item_path, "a checkpoint {path, step}")
            self.check_keys(item, ("path",), ("step",), item_path)
            step = item.get("step")
            if step is not None:
                step = self.integer(step, (*item_path, "step"), 0)
                if step in seen_steps:
                    raise self.error(
                        f"step {step} is also given to checkpoints[{seen_steps[step]}]",
                        (*item_path, "step"),
                    )
                seen_steps[step] = index
            refs.append(CheckpointRef(self.path(item["path"], (*item_path, "path")), step))
        return tuple(refs)

    def sets(self, value: Any) -> tuple[SetSpec, ...]:
        key_path: KeyPath = ("sets",)
        sets = self.mapping(value, key_path, "a mapping of set name to {path, split}")
        if not sets:
            raise self.error("no sets are defined", key_path)
        result: list[SetSpec] = []
        for name, body in sets.items():
            set_path = (*key_path, name)
            if not isinstance(name, str) or not name.strip():
                raise self.error(f"a set name must be a non-empty string, got {name!r}", set_path)
            if isinstance(body, str):
                body = {"path": body}
            body = self.mapping(body, set_path, "a set {path, split}")
            self.check_keys(body, ("path",), ("split",), set_path)
            split = body.get("split")
            if split is not None:
                split = self.string(split, (*set_path, "split"))
            result.append(SetSpec(name, self.path(body["path"], (*set_path, "path")), split))
        return tuple(result)

    def metrics(self, value: Any, sets: tuple[SetSpec, ...]) -> tuple[MetricSpec, ...]:
        key_path: KeyPath = ("metrics",)
        if not isinstance(value, list):
            raise self.error(f"expected a list of metrics, got {_describe(value)}", key_path)
        if not value:
            raise self.error("the list of metrics is empty", key_path)
        set_names = [s.name for s in sets]
        first_index: dict[str, int] = {}
        result: list[MetricSpec] = []
        for index, item in enumerate(value):
            item_path = (*key_path, index)
            item = self.mapping(item, item_path, "a metric {name, probes, evals, context}")
            self.check_keys(item, _METRIC_KEYS, (), item_path)
            name = self.string(item["name"], (*item_path, "name"))
            if name in first_index:
                raise self.error(
                    f"duplicate metric name {name!r} (also metrics[{first_index[name]}])",
                    (*item_path, "name"),
                )
            first_index[name] = index
            probes, evals = (
                self.choice(item[key], set_names, (*item_path, key), what="set")
                for key in ("probes", "evals")
            )
            context = self.choice(item["context"], CONTEXTS, (*item_path, "context"))
            result.append(MetricSpec(name, probes, evals, context))
        return tuple(result)

    def device(self, value: Any) -> str:
        device = self.string(value, ("device",))
        if device not in DEVICES and not _CUDA_INDEX.fullmatch(device):
            raise self.error(
                f"unknown device {device!r} (expected cpu, cuda, cuda:N or auto)", ("device",)
            )
        return device

    def params(self, value: Any) -> tuple[str, ...]:
        key_path: KeyPath = ("params",)
        if not isinstance(value, list) or not value:
            raise self.error(
                f"expected a non-empty list of regexes, got {_describe(value)}", key_path
            )
        for index, pattern in enumerate(value):
            pattern = self.string(pattern, (*key_path, index))
            try:
                re.compile(pattern)
            except re.error as exc:
                raise self.error(f"invalid regex {pattern!r}: {exc}", (*key_path, index)) from None
        return tuple(value)

    # -- values -----------------------------------------------------------------------------

    def mapping(self, value: Any, key_path: KeyPath, what: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise self.error(f"expected {what}, got {_describe(value)}", key_path)
        return value

    def check_keys(
        self,
        mapping: dict[Any, Any],
        required: Sequence[str],
        optional: Sequence[str],
        key_path: KeyPath,
    ) -> None:
        allowed = (*required, *optional)
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = (
                    f"did you mean {close[0]!r}?" if close else f"expected one of {_list(allowed)}"
                )
                raise self.error(f"unknown key {key!r}: {hint}", (*key_path, key))
        for key in required:
            if key not in mapping:
                raise self.error(f"missing required key {key!r}", (*key_path, key))

    def string(self, value: Any, key_path: KeyPath) -> str:
        if not isinstance(value, str):
            raise self.error(f"expected a string, got {_describe(value)}", key_path)
        if not value.strip():
            raise self.error("must not be empty", key_path)
        return value

    def integer(
        self, value: Any, key_path: KeyPath, minimum: int, *, nullable: bool = False
    ) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            expected = "an integer or null" if nullable else "an integer"
            raise self.error(f"expected {expected}, got {_describe(value)}", key_path)
        if value < minimum:
            raise self.error(f"must be at least {minimum}, got {value}", key_path)
        return value

    def choice(
        self, value: Any, choices: Sequence[str], key_path: KeyPath, *, what: str = "value"
    ) -> str:
        text = self.string(value, key_path)
        if text not in choices:
            known = "known sets" if what == "set" else "expected one of"
            raise self.error(f"unknown {what} {text!r} ({known}: {_list(choices)})", key_path)
        return text

    def path(self, value: Any, key_path: KeyPath) -> Path:
        return self.resolve(Path(self.string(value, key_path)).expanduser())

    def resolve(self, path: Path) -> Path:
        return _absolute(self.base_dir / path)

    # -- errors -----------------------------------------------------------------------------

    def error(self, message: str, key_path: KeyPath) -> InputError:
        line = None
        for depth in range(len(key_path), -1, -1):
            prefix = key_path[:depth]
            if prefix in self.lines:
                line = self.lines[prefix]
                if line is None:
                    message += " (set by a command-line override)"
                break
        return InputError(message, path=self.source, line=line, key=_dotted(key_path) or None)


def _mark_overridden(lines: dict[KeyPath, int | None], key_path: KeyPath) -> None:
    """Drop file lines under an overridden key; mark it (and new parents) as overridden."""
    for existing in [k for k in lines if k[: len(key_path)] == key_path]:
        del lines[existing]
    for depth in range(1, len(key_path) + 1):
        lines.setdefault(key_path[:depth], None)


def _absolute(path: Path) -> Path:
    # abspath, not resolve(): keep symlinked folders as the user wrote them.
    return Path(os.path.abspath(path.expanduser()))


def _dotted(key_path: KeyPath) -> str:
    text = ""
    for part in key_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds.update({list: "a list", dict: "a mapping"})
    kind = kinds.get(type(value), type(value).__name__)
    return kind if isinstance(value, (list, dict)) else f"{kind} ({value!r})"


def _list(choices: Sequence[str]) -> str:
    return ", ".join(choices)
