"""The study spec: which model, checkpoints, probe/eval sets and metrics a study computes.

Its keys are declared once with ``config.option``; ``load_study_spec`` reads a YAML file, and an
error names the file, the line and the dotted key (``metrics[1].probes``). Only shape and values
are checked here: whether the data, checkpoint and model files exist, the modules that open them.

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
study reuses a listed metric with those sets, or adds one named ``<control> → <evals> (<context>,
control)``, and the report's headline is the strategy's margin over it (``scores.variants``).
``verdict`` picks the scoring variant of that headline; every variant is computed and saved in
``verdicts.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from swiftstudy.config.fields import (
    Check,
    among,
    attn_implementation,
    device,
    dtype,
    listed,
    option,
    regex,
    revision,
    trust_remote_code,
)
from swiftstudy.config.reader import SpecValidator, describe_value
from swiftstudy.config.spec import Spec, from_dict, load_spec, nested, read_spec
from swiftstudy.config.yamlio import KeyPath
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
    NORMALIZATIONS,
    ON_OVERFLOW_ERROR,
    ON_OVERFLOW_MODES,
    PRECONDITIONER_NONE,
    PRECONDITIONERS,
)
from swiftstudy.data.examples import FIELDS, READ_AUTO, READ_FORMATS, is_hub_dataset_id

#: Keys that say where and what to cache, not what to compute: results do not depend on them.
CACHE_KEYS = ("cache_dir", "cache_max_gradient_mb", "cache_max_gb")
#: Keys that say how the report states its verdicts: the saved tables do not depend on them.
REPORT_KEYS = ("verdict",)


def _data_path(reader: SpecValidator, value: Any, key_path: KeyPath) -> Path | str:
    """A local data path made absolute, or a Hub dataset id kept as written."""
    text = reader.string(value, key_path)
    local = reader.path(text, key_path)
    return text if not local.exists() and is_hub_dataset_id(text) else local


def _columns(reader: SpecValidator, value: Any, key_path: KeyPath) -> tuple[tuple[str, str], ...]:
    """``columns: {field: column}``: the example field each column stands for."""
    if value is None:
        return ()
    columns = reader.mapping(value, key_path, "a mapping of field to column name")
    for field_name, column in columns.items():
        reader.choice(field_name, FIELDS, (*key_path, field_name), what="field")
        reader.string(column, (*key_path, field_name))
    return tuple(columns.items())


@dataclass(frozen=True)
class SetSpec(Spec):
    """A named example set (probes or evals) stored in a file, a dataset folder or on the Hub.

    ``name`` is the set's key under ``sets:``, the name metrics refer to it by; a set written as
    a string is its ``path``.
    """

    name: str
    path: Path | str = option(doc="The data file or folder, or a Hub dataset id.", check=_data_path)
    split: str | None = option(None, "The split to read, for formats that have splits.")
    config_name: str | None = option(
        None, "The dataset configuration (load_dataset).", key="name", omit_default=True
    )
    columns: tuple[tuple[str, str], ...] = option(
        (), "{field: column}: what each column holds.", check=_columns, omit_default=True, dump=dict
    )
    format: str = option(
        READ_AUTO, "auto, or trl: TRL's formats.", choices=READ_FORMATS, omit_default=True
    )

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of ``data.load_examples`` besides the path."""
        return {
            "split": self.split,
            "name": self.config_name,
            "columns": dict(self.columns),
            "format": self.format,
        }


_SET = among("sets", "set")


def _control(reader: SpecValidator, value: Any, key_path: KeyPath) -> str | None:
    control = None if value is None else _SET(reader, value, key_path)
    if control is not None and control == reader.lookup("probes"):
        raise reader.error(
            f"the control {control!r} is the metric's own probe set; name another probe set "
            "(unrelated tasks, or the plain data the strategy was derived from)",
            key_path,
        )
    return control


@dataclass(frozen=True)
class MetricSpec(Spec):
    """One reported metric: the mean RelInf of ``probes`` examples on ``evals`` examples.

    ``added_for``: for a metric added as another metric's control, that metric's index in the
    file (for messages); not compared or saved.
    """

    name: str = option(doc="Free-text label, kept exactly as written.")
    probes: str = option(doc="The probe set.", check=_SET)
    evals: str = option(doc="The eval set.", check=_SET)
    context: str = option(doc="in-task or cross-task.", choices=CONTEXTS)
    control: str | None = option(
        None, "A probe set; the headline is the margin over it.", check=_control, omit_default=True
    )
    added_for: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class VerdictSpec(Spec):
    """The scoring variant of a study's headline verdicts (``scores.variants``)."""

    normalization: str = option(
        DEFAULT_VERDICT_VARIANT[0], "How each score is normalized.", choices=NORMALIZATIONS
    )
    checkpoints: str = option(
        DEFAULT_VERDICT_VARIANT[1],
        "How checkpoints are combined (lr: by learning rate).",
        choices=CHECKPOINT_WEIGHTINGS,
    )


@dataclass(frozen=True)
class CheckpointRef(Spec):
    """One checkpoint listed explicitly in a spec."""

    path: Path = option(doc="The checkpoint folder or file.")
    step: int | None = option(None, "The training step; null reads it from the checkpoint.", min=0)


_CHECKPOINT = nested(CheckpointRef, "a checkpoint {path, step}", shorthand="path")


def _checkpoints(
    reader: SpecValidator, value: Any, key_path: KeyPath
) -> Path | tuple[CheckpointRef, ...]:
    if isinstance(value, str):
        return reader.path(value, key_path)
    if not isinstance(value, list):
        raise reader.error(
            f"expected a path or a list of {{path, step}}, got {describe_value(value)}", key_path
        )
    if not value:
        raise reader.error("the list of checkpoints is empty", key_path)
    refs = [_CHECKPOINT(reader, item, (*key_path, index)) for index, item in enumerate(value)]
    steps = [ref.step for ref in refs]
    for index, step in enumerate(steps):
        if step is not None and step in steps[:index]:
            raise reader.error(
                f"step {step} is also given to checkpoints[{steps.index(step)}]",
                (*key_path, index, "step"),
            )
    return tuple(refs)


def _sets(reader: SpecValidator, value: Any, key_path: KeyPath) -> tuple[SetSpec, ...]:
    sets = reader.mapping(value, key_path, "a mapping of set name to {path, split}")
    if not sets:
        raise reader.error("no sets are defined", key_path)
    result = []
    for name, body in sets.items():
        set_path = (*key_path, name)
        if not isinstance(name, str) or not name.strip():
            raise reader.error(f"a set name must be a non-empty string, got {name!r}", set_path)
        body = {"path": body} if isinstance(body, str) else body
        result.append(read_spec(SetSpec, body, reader, set_path, "a set {path, split}", name=name))
    return tuple(result)


def _metrics(reader: SpecValidator, value: Any, key_path: KeyPath) -> tuple[MetricSpec, ...]:
    if not isinstance(value, list):
        raise reader.error(f"expected a list of metrics, got {describe_value(value)}", key_path)
    if not value:
        raise reader.error("the list of metrics is empty", key_path)
    metrics: list[MetricSpec] = []
    for index, item in enumerate(value):
        item_path = (*key_path, index)
        what = "a metric {name, probes, evals, context}"
        metric = read_spec(MetricSpec, item, reader, item_path, what)
        names = [m.name for m in metrics]
        if metric.name in names:
            raise reader.error(
                f"duplicate metric name {metric.name!r} (also metrics[{names.index(metric.name)}])",
                (*item_path, "name"),
            )
        metrics.append(metric)
    return tuple(metrics) + _added_controls(metrics)


def _seed(reader: SpecValidator, value: Any, key_path: KeyPath) -> int:
    seed = reader.integer(value, key_path, 0)
    if seed >= 1 << 64:
        raise reader.error(f"must be below 2**64, got {seed}", key_path)
    return seed


@dataclass(frozen=True)
class StudySpec(Spec):
    """A validated study spec (``spec_path``: its file, for messages; not compared or saved)."""

    model: str = option(
        doc="Model alias, local folder, hub id or .gguf path.", check=SpecValidator.model
    )
    checkpoints: Path | tuple[CheckpointRef, ...] = option(
        doc="A folder of checkpoints, or a list of {path, step}.",
        check=Check(_checkpoints, spec=CheckpointRef, each="[]"),
    )
    sets: tuple[SetSpec, ...] = option(
        doc="The example sets by name: {path, split, ...} or a path.",
        check=Check(_sets, spec=SetSpec, each=".<name>"),
        dump=lambda sets: {s.name: s.to_dict() for s in sets},
    )
    metrics: tuple[MetricSpec, ...] = option(
        doc="The metrics, in order.", check=Check(_metrics, spec=MetricSpec, each="[]")
    )
    revision: str | None = revision()
    trust_remote_code: bool = trust_remote_code()
    attn_implementation: str | None = attn_implementation()
    max_length: int = option(DEFAULT_MAX_LENGTH, "Longest tokenized example (tokens).", min=2)
    batch_size: int = option(DEFAULT_BATCH_SIZE, "Most examples in one batch.", min=1)
    batch_tokens: int | None = option(
        None, "Most padded tokens in a batch; null: the device's.", min=1
    )
    dtype: str = option(DEFAULT_DTYPE, "Compute dtype.", check=dtype())
    device: str = option(
        DEFAULT_DEVICE, "auto (a GPU if any), cpu, cuda or cuda:N.", check=device()
    )
    on_overflow: str = option(
        ON_OVERFLOW_ERROR,
        "Examples longer than max_length: error or drop.",
        choices=ON_OVERFLOW_MODES,
    )
    params: tuple[str, ...] = option(
        DEFAULT_FULL_PARAMS,
        "Regexes of the weights of full-model checkpoints.",
        check=listed(regex, "regexes"),
    )
    cache_dir: Path | None = option(
        None, "The gradient cache; null: $SWIFTSTUDY_CACHE or the user's."
    )
    cache_max_gradient_mb: int = option(
        DEFAULT_CACHE_MAX_GRADIENT_MB, "Larger per-example gradients (MiB) are not cached.", min=0
    )
    cache_max_gb: float = option(
        DEFAULT_CACHE_MAX_GB, "The cache is pruned to this many GiB after a study.", positive=True
    )
    max_memory_gb: float | None = option(
        None, "Memory (GiB) on the device; sizes batch_tokens when unset.", positive=True
    )
    projection_dim: int | None = option(
        None, "k: gradients projected to k dimensions (Rademacher); null: exact.", min=1
    )
    projection_seed: int = option(DEFAULT_PROJECTION_SEED, "The projection's seed.", check=_seed)
    preconditioner: str = option(
        PRECONDITIONER_NONE,
        "none, or adam: the Adam update of optimizer.pt (LESS).",
        choices=PRECONDITIONERS,
    )
    verdict: VerdictSpec = option(VerdictSpec(), "The scoring variant of the headline verdicts.")
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

    def control_metric(self, metric: MetricSpec) -> MetricSpec | None:
        """The metric ``metric`` is compared with: its control's on the same evals and context."""
        if metric.control is None:
            return None
        return next(
            m
            for m in self.metrics
            if (m.probes, m.evals, m.context) == (metric.control, metric.evals, metric.context)
        )


#: ``load_study_spec(path, overrides=())``: a spec file, after overrides (``config.load_spec``).
load_study_spec = partial(load_spec, StudySpec)
#: ``spec_from_dict(data, *, base_dir, ...)``: plain data as a spec (``config.from_dict``).
spec_from_dict = partial(from_dict, StudySpec)


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
        name = base = f"{metric.control} → {metric.evals} ({metric.context}, control)"
        while name in names:
            name = f"{base}'"
        names.add(name)
        added.append(MetricSpec(name, *key, added_for=index))
    return tuple(added)
