"""Studies in a notebook: the base model loaded once, sets given as data, results in memory.

A ``Session`` loads the base model, hashes the checkpoints and checks them against the model
once; each ``study`` then takes its sets as lists of records, ``datasets.Dataset`` objects,
pandas DataFrames or paths, and its metrics as a spec's ``metrics:`` list, and returns the
``StudyResult`` that ``run_study`` returns, written nowhere until ``result.save(out_dir)``.

Gradients are shared across a session's studies through an in-memory cache keyed as the
on-disk gradient cache is (``study.memcache``): a study that adds a probe set to the evals of an
earlier one computes only the new set's gradients. With ``cache_dir`` the session uses the
on-disk cache in that folder instead, shared with ``run_study`` and later sessions.

Example::

    session = swiftstudy.Session("smollm2", "runs/base")
    result = session.study(
        sets={"cot": cot_records, "evals": "data/evals.jsonl"},
        metrics=[{"name": "CoT → in-task", "probes": "cot", "evals": "evals",
                  "context": "in-task"}],
    )
    result.scores.to_pandas()
    result.top_probes("CoT → in-task", k=3).to_pandas()
    result.save("results/cot")  # the usual files and report
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from swiftstudy.constants import (
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_FULL_PARAMS,
    DTYPES,
)
from swiftstudy.data import Example, load_examples
from swiftstudy.data.examples import parse_examples
from swiftstudy.errors import InputError
from swiftstudy.model import Checkpoint, discover_checkpoints, resolve_device
from swiftstudy.study.cache import GradientCache
from swiftstudy.study.compute import (
    StudyModel,
    check_pairs,
    checkpoint_keys,
    compute_result,
    compute_set_grams,
    learning_rates,
    load_study_model,
    resolve_config,
)
from swiftstudy.study.distributed import Processes
from swiftstudy.study.grams import CheckpointKeys
from swiftstudy.study.memcache import MemoryGradientCache, MemoryStore
from swiftstudy.study.result import StudyResult
from swiftstudy.study.spec import StudySpec, spec_from_dict

logger = logging.getLogger(__name__)

#: Gradient rows a session keeps in memory by default, in GiB.
DEFAULT_MEMORY_GB = 4.0
#: Spec keys a session fixes for all its studies (the model it loaded, where its cache is).
_SESSION_KEYS = ("model", "checkpoints", "dtype", "device", "params", "cache_dir", "cache_max_gb")
#: A set's path in a spec stands for its data given in memory (replaced by a description).
_IN_MEMORY = "<in memory>"
_MB = 1 << 20


class Session:
    """A base model and its checkpoint series, loaded once for many studies.

    Args:
        model: ``smollm2`` (the bundled SmolLM2-135M-Instruct), a ``.gguf`` file, a local model
            folder or a hub id.
        checkpoints: A run's output folder, or a list of checkpoint folders (or ``{path, step}``
            mappings).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        dtype: The compute dtype: ``float32``, ``float64``, ``bfloat16`` or ``float16``.
        params: For full-model checkpoints, regexes choosing the weights (as the spec's).
        cache_dir: Use the on-disk gradient cache in this folder; None: keep gradients in memory.
        memory_gb: With the in-memory cache, the most GiB of gradient rows kept (least recently
            used dropped first; dot products with the evals are always kept).

    Raises:
        InputError: Bad model, checkpoints, device or dtype (the error names the argument).
    """

    def __init__(
        self,
        model: str,
        checkpoints: str | Path | Sequence[str | Path | Mapping[str, Any]],
        *,
        device: str = DEFAULT_DEVICE,
        dtype: str = DEFAULT_DTYPE,
        params: Sequence[str] = DEFAULT_FULL_PARAMS,
        cache_dir: str | Path | None = None,
        memory_gb: float = DEFAULT_MEMORY_GB,
    ) -> None:
        if dtype not in DTYPES:
            raise InputError(f"must be one of {', '.join(DTYPES)}, got {dtype!r}", key="dtype")
        self.device_name = device
        self.device = resolve_device(device)
        self.dtype = dtype
        self.params = tuple(params)
        self.checkpoints: list[Checkpoint] = discover_checkpoints(_checkpoint_source(checkpoints))
        self.model: StudyModel = load_study_model(
            model, self.checkpoints, dtype=dtype, device=self.device, params=self.params
        )
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.store = MemoryStore(int(memory_gb * 2**30))
        self._keys: dict[str, list[CheckpointKeys]] = {}

    def study(
        self,
        sets: Mapping[str, Any],
        metrics: Sequence[Mapping[str, Any]],
        *,
        progress: bool = True,
        **options: Any,
    ) -> StudyResult:
        """Compute RelInf for every (probe, eval) pair the metrics use, at every checkpoint.

        Args:
            sets: Set name → a list of records (``{"prompt", "response"}``, ``{"messages"}``,
                TRL's formats; ``id`` and ``task`` optional), a ``datasets.Dataset``, a pandas
                DataFrame, a path (JSONL file, dataset folder, Hub id), or a spec's set mapping
                (``{"path", "split", "columns", "format"}``).
            metrics: The spec's ``metrics:`` list: ``{name, probes, evals, context}`` mappings,
                ``control`` optional.
            progress: Show a progress bar.
            **options: Other spec keys (``batch_size``, ``max_length``, ``projection_dim``,
                ``preconditioner``, ``verdict``, ...); those the session fixes are refused.

        Returns:
            The result; nothing is written until ``result.save(out_dir)``.

        Raises:
            InputError: A bad set, metric or option; the error names the key.
        """
        fixed = sorted(set(options) & set(_SESSION_KEYS))
        if fixed:
            raise InputError(f"set by the Session, not per study: {', '.join(fixed)}", key=fixed[0])
        spec, examples = self._spec(sets, metrics, options)
        check_pairs(spec, {name: [e.task for e in exs] for name, exs in examples.items()})
        rates = learning_rates(spec, self.checkpoints)
        keys = self._checkpoint_keys(spec)
        make, where = (
            (GradientCache, self.cache_dir) if self.cache_dir else (MemoryGradientCache, self.store)
        )
        done = compute_set_grams(
            spec,
            examples,
            self.model,
            self.checkpoints,
            keys,
            processes=Processes(device=self.device),
            cache=functools.partial(make, where, max_row_bytes=spec.cache_max_gradient_mb * _MB),
            progress=progress,
        )
        config = resolve_config(spec, self.checkpoints, keys, done.dims, rates)
        result = compute_result(spec, self.checkpoints, done, rank=0, config=config)
        logger.info(
            "study: %d gradient(s) computed, %d from the cache",
            result.work.computed,
            result.work.cached,
        )
        return result

    def _spec(
        self, sets: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]], options: dict
    ) -> tuple[StudySpec, dict[str, list[Example]]]:
        """The study's validated spec, and each set's examples."""
        if not isinstance(sets, Mapping) or not sets:
            raise InputError("expected a mapping of set name to data", key="sets")
        in_memory: dict[str, tuple[list[Any], str]] = {}
        spec_sets: dict[str, Any] = {}
        for name, data in sets.items():
            records = _records(data, name)
            if records is None:
                body = dict(data) if isinstance(data, Mapping) else {"path": data}
                if isinstance(body.get("path"), Path):
                    body["path"] = str(body["path"])
                spec_sets[name] = body
            else:
                in_memory[name] = records
                spec_sets[name] = {"path": _IN_MEMORY}
        data = {
            "model": self.model.name,
            "checkpoints": [{"path": str(c.path), "step": c.step} for c in self.checkpoints],
            "sets": spec_sets,
            "metrics": list(metrics),
            "dtype": self.dtype,
            "device": self.device_name,
            "params": list(self.params),
            **options,
        }
        spec = spec_from_dict(data, base_dir=Path.cwd())
        spec = replace(
            spec,
            sets=tuple(
                replace(s, path=in_memory[s.name][1]) if s.name in in_memory else s
                for s in spec.sets
            ),
        )
        examples = {
            s.name: parse_examples(in_memory[s.name][0], source=f"sets.{s.name}")
            if s.name in in_memory
            else load_examples(s.path, **s.load_options())
            for s in spec.sets
        }
        return spec, examples

    def _checkpoint_keys(self, spec: StudySpec) -> list[CheckpointKeys]:
        """The checkpoints' keys for the spec's preconditioner, hashed once per session."""
        if spec.preconditioner not in self._keys:
            self._keys[spec.preconditioner] = checkpoint_keys(spec, self.checkpoints)
        return self._keys[spec.preconditioner]


def _records(data: Any, name: str) -> tuple[list[Any], str] | None:
    """A set given in memory as its records and a description; None for a path or spec set."""
    if isinstance(data, str | Path | Mapping):
        return None
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and hasattr(data, "to_dict"):
        # NaN marks a missing value in a DataFrame; a record's null field counts as absent.
        records = data.astype(object).where(data.notna(), None).to_dict(orient="records")
        return records, f"<in memory: DataFrame of {len(records)} rows>"
    if module == "datasets":
        import datasets

        if isinstance(data, datasets.DatasetDict):
            raise InputError(
                "a DatasetDict: pass one split, e.g. data['train']", key=f"sets.{name}"
            )
        return list(data), f"<in memory: Dataset of {len(data)} rows>"
    if isinstance(data, Sequence):
        return list(data), f"<in memory: {len(data)} records>"
    raise InputError(
        f"expected records, a Dataset, a DataFrame or a path, got {type(data).__name__}",
        key=f"sets.{name}",
    )


def _checkpoint_source(checkpoints: Any) -> str | Path | list[dict]:
    """``discover_checkpoints``' input: a folder, or ``{path, step}`` entries."""
    if isinstance(checkpoints, str | Path):
        return checkpoints
    return [dict(c) if isinstance(c, Mapping) else {"path": str(c)} for c in checkpoints]
