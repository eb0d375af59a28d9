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
      nocot: {path: data/nocot.jsonl}
    metrics:
      - {name: "CoT → In-task non-CoT", probes: cot, evals: similar, context: in-task,
         control: nocot}
    verdict: {normalization: relinf, checkpoints: mean}

A metric's ``control`` names another probe set scored on the same evals in the same context; the
study reuses a listed metric with those sets, or adds one (named by ``control_metric_name``), and
the report's headline is the strategy's margin over it (``scores.variants``). ``verdict`` picks
the scoring variant of that headline; every variant is computed and saved in ``verdicts.json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swiftstudy.constants import (
    CHECKPOINT_WEIGHTINGS,
    CONTEXTS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CACHE_MAX_GB,
    DEFAULT_CACHE_MAX_GRADIENT_MB,
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_FULL_PARAMS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_PROJECTION_SEED,
    DEFAULT_VERDICT_VARIANT,
    DEVICES,
    DTYPES,
    NORMALIZATIONS,
    ON_OVERFLOW_ERROR,
    ON_OVERFLOW_MODES,
    PRECONDITIONER_NONE,
    PRECONDITIONERS,
)
from swiftstudy.data.examples import FIELDS, READ_AUTO, READ_FORMATS, is_hub_dataset_id
from swiftstudy.validation import SpecValidator, absolute_path, describe_value, load_spec_data
from swiftstudy.yamlio import KeyPath

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
    "cache_dir",
    "cache_max_gradient_mb",
    "cache_max_gb",
    "max_memory_gb",
    "projection_dim",
    "projection_seed",
    "preconditioner",
    "verdict",
)
#: Keys that say where and what to cache, not what to compute: results do not depend on them.
CACHE_KEYS = ("cache_dir", "cache_max_gradient_mb", "cache_max_gb")
#: Keys that say how the report states its verdicts: the saved tables do not depend on them.
REPORT_KEYS = ("verdict",)
_SET_KEYS = ("path", "split", "name", "columns", "format")
_METRIC_KEYS = ("name", "probes", "evals", "context")
_METRIC_OPTIONAL_KEYS = ("control",)
_VERDICT_KEYS = ("normalization", "checkpoints")
_CHECKPOINT_KEYS = ("path", "step")
_CUDA_INDEX = re.compile(r"cuda:\d+")


@dataclass(frozen=True)
class SetSpec:
    """A named example set (probes or evals) stored in a file, a dataset folder or on the Hub.

    Attributes:
        name: The name metrics refer to it by.
        path: The data file or folder (absolute once loaded from a spec), or a Hub dataset id
            (a string) when no such local path exists.
        split: The dataset split to read, for formats that have splits.
        config_name: The dataset configuration (``name:`` in the spec), for ``load_dataset``.
        columns: ``(field, column)`` renames (``columns:`` in the spec, a mapping).
        format: ``auto`` or ``trl`` (``data.examples.READ_FORMATS``).
    """

    name: str
    path: Path | str
    split: str | None = None
    config_name: str | None = None
    columns: tuple[tuple[str, str], ...] = ()
    format: str = READ_AUTO

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of ``data.load_examples`` besides the path."""
        return {
            "split": self.split,
            "name": self.config_name,
            "columns": dict(self.columns),
            "format": self.format,
        }

    def to_dict(self) -> dict[str, Any]:
        """The set as YAML-ready data; keys at their defaults are left out."""
        path = self.path if isinstance(self.path, str) else str(absolute_path(self.path))
        data: dict[str, Any] = {"path": path, "split": self.split}
        if self.config_name is not None:
            data["name"] = self.config_name
        if self.columns:
            data["columns"] = dict(self.columns)
        if self.format != READ_AUTO:
            data["format"] = self.format
        return data


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric: the mean RelInf of ``probes`` examples on ``evals`` examples.

    Attributes:
        name: Free-text label, kept exactly as written (arrows and all).
        probes: Name of the probe set.
        evals: Name of the eval set.
        context: ``in-task`` or ``cross-task`` (see ``constants.CONTEXTS``).
        control: The control probe set: the headline is this metric's margin over the metric of
            ``control`` on the same evals and context. None: no control.
        added_for: For a metric the validator added as another metric's control, that metric's
            index in the file (for messages); not compared or serialised.
    """

    name: str
    probes: str
    evals: str
    context: str
    control: str | None = None
    added_for: int | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The metric as YAML-ready data (``control`` only when set, as older configs have it)."""
        data = {
            "name": self.name,
            "probes": self.probes,
            "evals": self.evals,
            "context": self.context,
        }
        if self.control is not None:
            data["control"] = self.control
        return data


@dataclass(frozen=True)
class VerdictSpec:
    """The scoring variant of a study's headline verdicts (``scores.variants``).

    Attributes:
        normalization: One of ``constants.NORMALIZATIONS``.
        checkpoints: How checkpoints are combined, one of ``constants.CHECKPOINT_WEIGHTINGS``;
            ``lr`` needs each checkpoint's ``trainer_state.json``.
    """

    normalization: str = DEFAULT_VERDICT_VARIANT[0]
    checkpoints: str = DEFAULT_VERDICT_VARIANT[1]


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
        cache_dir: The gradient cache folder; None: ``$SWIFTSTUDY_CACHE``, else the user cache
            folder.
        cache_max_gradient_mb: Per-example gradients larger than this many MiB are not cached.
        max_memory_gb: Memory (GiB) the study may use on its device; with ``batch_tokens``
            unset, the largest batch token budget whose memory plan fits is used. None: the
            device's default budget. The plan is logged before the run either way.
        cache_max_gb: After the study, the least recently used cached gradients are deleted
            until the cache holds at most this many GiB.
        projection_dim: k: every gradient is replaced by its seeded Rademacher projection to k
            dimensions (``gradients.projection``), so each kept row holds k values; each dot
            product then has a standard error of at most √(2/k)·|a||b|. None: exact (default).
        projection_seed: The projection's seed; one seed gives one projection on every device.
        preconditioner: ``none``: probe gradients as they are (the method). ``adam``: each
            probe's gradient becomes the Adam update direction from the checkpoint's
            ``optimizer.pt``, as LESS computes it (``gradients.preconditioning``); eval gradients
            and the RelInf denominator stay raw.
        verdict: The scoring variant of the headline verdicts.
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
    cache_dir: Path | None = None
    cache_max_gradient_mb: int = DEFAULT_CACHE_MAX_GRADIENT_MB
    cache_max_gb: float = DEFAULT_CACHE_MAX_GB
    max_memory_gb: float | None = None
    projection_dim: int | None = None
    projection_seed: int = DEFAULT_PROJECTION_SEED
    preconditioner: str = PRECONDITIONER_NONE
    verdict: VerdictSpec = VerdictSpec()
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
            checkpoints: Any = str(absolute_path(self.checkpoints))
        else:
            checkpoints = [
                {"path": str(absolute_path(c.path)), "step": c.step} for c in self.checkpoints
            ]
        return {
            "model": self.model,
            "checkpoints": checkpoints,
            "sets": {s.name: s.to_dict() for s in self.sets},
            "metrics": [m.to_dict() for m in self.metrics],
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "batch_tokens": self.batch_tokens,
            "dtype": self.dtype,
            "device": self.device,
            "on_overflow": self.on_overflow,
            "params": list(self.params),
            "cache_dir": None if self.cache_dir is None else str(absolute_path(self.cache_dir)),
            "cache_max_gradient_mb": self.cache_max_gradient_mb,
            "cache_max_gb": self.cache_max_gb,
            "max_memory_gb": self.max_memory_gb,
            "projection_dim": self.projection_dim,
            "projection_seed": self.projection_seed,
            "preconditioner": self.preconditioner,
            "verdict": {
                "normalization": self.verdict.normalization,
                "checkpoints": self.verdict.checkpoints,
            },
        }

    def control_metric(self, metric: MetricSpec) -> MetricSpec | None:
        """The metric ``metric`` is compared with: its control's on the same evals and context."""
        if metric.control is None:
            return None
        return next(
            m
            for m in self.metrics
            if (m.probes, m.evals, m.context) == (metric.control, metric.evals, metric.context)
        )


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
    data, marked, path = load_spec_data(path, overrides)
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
    return _Validator(source, lines or {}, absolute_path(Path(base_dir))).spec(data)


class _Validator(SpecValidator):
    """Checks one spec, raising ``InputError`` with the file, line and key of the first problem."""

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
            "cache_dir": lambda value, key_path: (
                None if value is None else self.path(value, key_path)
            ),
            "cache_max_gradient_mb": lambda value, key_path: self.integer(value, key_path, 0),
            "cache_max_gb": lambda value, key_path: self.number(value, key_path, positive=True),
            "max_memory_gb": lambda value, key_path: (
                None if value is None else self.number(value, key_path, positive=True)
            ),
            "projection_dim": lambda value, key_path: self.integer(
                value, key_path, 1, nullable=True
            ),
            "projection_seed": lambda value, key_path: self.seed(value, key_path),
            "preconditioner": lambda value, key_path: self.choice(value, PRECONDITIONERS, key_path),
            "verdict": lambda value, key_path: self.verdict(value),
        }
        return {key: check(top[key], (key,)) for key, check in checks.items() if key in top}

    def checkpoints(self, value: Any) -> Path | tuple[CheckpointRef, ...]:
        key_path: KeyPath = ("checkpoints",)
        if isinstance(value, str):
            return self.path(value, key_path)
        if not isinstance(value, list):
            raise self.error(
                f"expected a path or a list of {{path, step}}, got {describe_value(value)}",
                key_path,
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
            self.check_keys(body, ("path",), _SET_KEYS[1:], set_path)
            split, config_name = (
                None if body.get(key) is None else self.string(body[key], (*set_path, key))
                for key in ("split", "name")
            )
            result.append(
                SetSpec(
                    name,
                    self.data_path(body["path"], (*set_path, "path")),
                    split,
                    config_name,
                    self.columns(body.get("columns"), (*set_path, "columns")),
                    self.choice(body.get("format", READ_AUTO), READ_FORMATS, (*set_path, "format")),
                )
            )
        return tuple(result)

    def data_path(self, value: Any, key_path: KeyPath) -> Path | str:
        """A local data path made absolute, or a Hub dataset id kept as written."""
        text = self.string(value, key_path)
        local = self.path(text, key_path)
        return text if not local.exists() and is_hub_dataset_id(text) else local

    def columns(self, value: Any, key_path: KeyPath) -> tuple[tuple[str, str], ...]:
        """``columns: {field: column}``: the example field each column stands for."""
        if value is None:
            return ()
        columns = self.mapping(value, key_path, "a mapping of field to column name")
        for field_name, column in columns.items():
            self.choice(field_name, FIELDS, (*key_path, field_name), what="field")
            self.string(column, (*key_path, field_name))
        return tuple(columns.items())

    def metrics(self, value: Any, sets: tuple[SetSpec, ...]) -> tuple[MetricSpec, ...]:
        key_path: KeyPath = ("metrics",)
        if not isinstance(value, list):
            raise self.error(f"expected a list of metrics, got {describe_value(value)}", key_path)
        if not value:
            raise self.error("the list of metrics is empty", key_path)
        set_names = [s.name for s in sets]
        first_index: dict[str, int] = {}
        result: list[MetricSpec] = []
        for index, item in enumerate(value):
            item_path = (*key_path, index)
            item = self.mapping(item, item_path, "a metric {name, probes, evals, context}")
            self.check_keys(item, _METRIC_KEYS, _METRIC_OPTIONAL_KEYS, item_path)
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
            control = self.control(item, item_path, probes, set_names)
            result.append(MetricSpec(name, probes, evals, context, control))
        return tuple(result) + _added_controls(result)

    def control(
        self, item: dict[Any, Any], item_path: KeyPath, probes: str, set_names: list[str]
    ) -> str | None:
        if item.get("control") is None:
            return None
        key_path = (*item_path, "control")
        control = self.choice(item["control"], set_names, key_path, what="set")
        if control == probes:
            raise self.error(
                f"the control {control!r} is the metric's own probe set; name another probe set "
                "(unrelated tasks, or the plain data the strategy was derived from)",
                key_path,
            )
        return control

    def verdict(self, value: Any) -> VerdictSpec:
        key_path: KeyPath = ("verdict",)
        body = self.mapping(value, key_path, "a mapping {normalization, checkpoints}")
        self.check_keys(body, (), _VERDICT_KEYS, key_path)
        default = VerdictSpec()
        return VerdictSpec(
            normalization=self.choice(
                body.get("normalization", default.normalization),
                NORMALIZATIONS,
                (*key_path, "normalization"),
            ),
            checkpoints=self.choice(
                body.get("checkpoints", default.checkpoints),
                CHECKPOINT_WEIGHTINGS,
                (*key_path, "checkpoints"),
            ),
        )

    def seed(self, value: Any, key_path: KeyPath) -> int:
        seed = self.integer(value, key_path, 0)
        if seed >= 1 << 64:
            raise self.error(f"must be below 2**64, got {seed}", key_path)
        return seed

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
                f"expected a non-empty list of regexes, got {describe_value(value)}", key_path
            )
        for index, pattern in enumerate(value):
            pattern = self.string(pattern, (*key_path, index))
            try:
                re.compile(pattern)
            except re.error as exc:
                raise self.error(f"invalid regex {pattern!r}: {exc}", (*key_path, index)) from None
        return tuple(value)


def control_metric_name(control: str, evals: str, context: str) -> str:
    """The name of a metric added as a control: ``<control> → <evals> (<context>, control)``."""
    return f"{control} → {evals} ({context}, control)"


def _added_controls(metrics: Sequence[MetricSpec]) -> tuple[MetricSpec, ...]:
    """The control metrics no listed metric provides, in the order their strategies name them."""
    have = {(m.probes, m.evals, m.context) for m in metrics}
    names = {m.name for m in metrics}
    added: list[MetricSpec] = []
    for index, metric in enumerate(metrics):
        key = (metric.control, metric.evals, metric.context)
        if metric.control is None or key in have:
            continue
        have.add(key)
        name = base = control_metric_name(*key)
        while name in names:
            name = f"{base}'"
        names.add(name)
        added.append(MetricSpec(name, *key, added_for=index))
    return tuple(added)
