"""Run a study: per-example gradients at every checkpoint, RelInf of each pair, metric means.

The order of work: validate everything that can be checked without a model (spec, sets, pairs,
checkpoints, the output folder), then join the launcher's processes if any (``distributed``), load
the model once, tokenize once, and compute each checkpoint's Gram matrix of the unique examples
(``grams``), reading what earlier runs left in the gradient cache and in ``<out>/.partial/``
(``cache``). The result files are written only at the end, each atomically, by rank 0 alone, and
the report is rendered from them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from functools import partial
from pathlib import Path

from swiftstudy.config.reader import spec_key_error
from swiftstudy.constants import CACHE_ENV_VAR, CONFIG_YAML, PARTIAL_DIR
from swiftstudy.data import Example, load_examples
from swiftstudy.errors import InputError
from swiftstudy.model import (
    Checkpoint,
    LoadOptions,
    default_cache_dir,
    discover_checkpoints,
    resolve_device,
)
from swiftstudy.rundir import claim_run_folder, hash_inputs, save_run_config
from swiftstudy.study.cache import GradientCache, prune_gradient_cache
from swiftstudy.study.compute import (
    SetGrams,
    check_pairs,
    checkpoint_keys,
    compute_result,
    compute_set_grams,
    load_study_model,
    resolve_config,
    used_sets,
)
from swiftstudy.study.compute import learning_rates as compute_learning_rates
from swiftstudy.study.distributed import Processes, start_processes
from swiftstudy.study.grams import CheckpointKeys
from swiftstudy.study.result import StudyResult, write_result_tables
from swiftstudy.study.rows import RowMaps
from swiftstudy.study.spec import CACHE_KEYS, REPORT_KEYS, StudySpec, load_study_spec

logger = logging.getLogger(__name__)

_MB = 1 << 20


def run_study(
    spec: StudySpec | str | Path,
    out_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    cache: bool = True,
    progress: bool = True,
    command: str | None = None,
) -> StudyResult:
    """Compute RelInf for every (probe, eval) pair the metrics use, at every checkpoint.

    Under ``torchrun`` or ``accelerate launch`` every process calls this function: the batches
    are shared out, and rank 0 writes the same files a single process would.

    Args:
        spec: A loaded spec, or the path of a spec YAML file.
        out_dir: Receives ``scores.csv``, ``relinf.csv``, ``norms.csv``, ``tokens.jsonl``,
            ``config.yaml``, then the report: ``verdicts.json``, ``report.html``, ``report.md``
            and ``figures/``.
        overrides: ``key=value`` overrides applied to a spec file (only with a path).
        overwrite: Replace results in ``out_dir`` that were made with a different config.
        cache: Read and write per-example gradients in the gradient cache (the spec's
            ``cache_dir``, else ``$SWIFTSTUDY_CACHE``, else the user cache folder).
        progress: Show a progress bar over checkpoints × examples.
        command: The command line that started the run, recorded in ``config.yaml``.

    Returns:
        The score and RelInf rows, the checkpoints, and the work done.

    Raises:
        InputError: Bad input (spec, data, checkpoints, model); nothing is written in that case.
    """
    if not isinstance(spec, StudySpec):
        spec = load_study_spec(spec, overrides)
    elif overrides:
        raise ValueError("overrides apply to a spec file, not to a loaded StudySpec")
    results = run_studies(
        {out_dir: spec}, overwrite=overwrite, cache=cache, progress=progress, command=command
    )
    return next(iter(results.values()))


def run_studies(
    studies: Mapping[str | Path, StudySpec | str | Path],
    *,
    overwrite: bool = False,
    cache: bool = True,
    report: bool = True,
    progress: bool = True,
    command: str | None = None,
) -> dict[str | Path, StudyResult]:
    """Run several studies of one run in one pass: each example's gradient is computed once per
    checkpoint, however many of the studies use it.

    The studies must agree on everything that makes a gradient (model, checkpoints, dtype,
    params, projection, preconditioner, tokenization, batching, device, cache): they differ in
    their sets, metrics and verdict. The Gram matrix of the union of their sets is computed at
    each checkpoint (``.partial/`` of the first output folder keeps the finished ones for
    resuming), and each study's tables, files and report are read off it. Each study's files are
    exactly those :func:`run_study` writes for it alone, up to float rounding in the order of
    the sums.

    Args:
        studies: Output folder -> its spec (loaded, or the path of a spec YAML file).
        report: Render each study's report after its files (``swiftstudy report`` does it
            later otherwise).
        overwrite, cache, progress, command: As for :func:`run_study`.

    Returns:
        Each study's result, under the key it was given.

    Raises:
        InputError: Bad input, or two studies that differ in a gradient setting (the error names
            the key); nothing is written in that case.
    """
    if not studies:
        raise ValueError("run_studies needs at least one study")
    specs = {
        key: spec if isinstance(spec, StudySpec) else load_study_spec(spec)
        for key, spec in studies.items()
    }
    first = next(iter(specs.values()))
    for spec in specs.values():
        _check_same_settings(first, spec)
    if len({Path(key).resolve() for key in specs}) < len(specs):
        raise ValueError("run_studies needs a different output folder for each study")
    examples, rates, files = {}, {}, {}
    ckpts = _discover(first)
    for key, spec in specs.items():
        loaded = {}
        for s in spec.sets:  # a file two studies share is read once
            read = replace(s, name="")  # what is read: the set's spec but its name
            if read not in files:
                files[read] = load_examples(s.path, **s.load_options())
            loaded[s.name] = files[read]
        check_pairs(spec, {name: [e.task for e in exs] for name, exs in loaded.items()})
        examples[key] = loaded
        if spec is not first and _discover(spec) != ckpts:
            raise spec_key_error(
                spec.spec_path,
                "names other checkpoints than the first study's: studies run together must "
                "study the same checkpoints",
                ("checkpoints",),
            )
        rates[key] = compute_learning_rates(spec, ckpts)
    for key, spec in specs.items():
        claim_run_folder(
            Path(key),
            CONFIG_YAML,
            {"spec": spec.to_dict()},
            what="study",
            overwrite=overwrite,
            ignore=CACHE_KEYS + REPORT_KEYS,  # they move the cache or restyle the report
        )
    cache_root = _cache_root(first) if cache else None
    keys = checkpoint_keys(first, ckpts)
    union, union_examples, names = _union(specs, examples)
    row_mb = first.cache_max_gradient_mb

    with start_processes(resolve_device(first.device)) as procs:
        model = load_study_model(
            first.model,
            ckpts,
            dtype=first.dtype,
            device=procs.device,
            params=first.params,
            options=LoadOptions.of(first),
        )
        computed = compute_set_grams(
            union,
            union_examples,
            model,
            ckpts,
            keys,
            processes=procs,
            cache=None
            if cache_root is None
            else partial(GradientCache, cache_root, max_row_bytes=row_mb * _MB),
            partial_dir=Path(next(iter(specs))) / PARTIAL_DIR,
            progress=progress,
        )
    results = {}
    for key, spec in specs.items():
        results[key] = _finish_study(
            spec,
            Path(key),
            _study_grams(computed, names[key], spec),
            ckpts,
            rates[key],
            keys,
            procs,
            command=command,
            report=report,
            shared=len(specs),
        )
    if procs.is_main:
        computed.job.partial.clear()
        if any(cache.written_rows for cache in computed.job.caches.values()):
            _prune_cache(cache_root, first.cache_max_gb)
    return results


#: The spec keys the studies of one ``run_studies`` call may differ in.
_STUDY_KEYS = ("sets", "metrics", "verdict", "checkpoints")  # checkpoints: compared found


def _check_same_settings(first: StudySpec, spec: StudySpec) -> None:
    """Refuse a study whose gradients would differ from the first study's."""
    for key in (f.name for f in fields(StudySpec) if f.compare and f.name not in _STUDY_KEYS):
        if getattr(spec, key) != getattr(first, key):
            raise spec_key_error(
                spec.spec_path,
                f"is {getattr(spec, key)!r} here and {getattr(first, key)!r} in the first study "
                f"({first.spec_path or 'a loaded spec'}): studies run together must share every "
                "gradient setting; run them one at a time",
                (key,),
            )


def _union(
    specs: Mapping[str | Path, StudySpec], examples: Mapping[str | Path, dict[str, list[Example]]]
) -> tuple[StudySpec, dict[str, list[Example]], dict[str | Path, dict[str, str]]]:
    """One spec over every study's sets and metrics, its examples, and each study's set names in
    it (a single study is its own union)."""
    if len(specs) == 1:
        key, spec = next(iter(specs.items()))
        return spec, examples[key], {key: {s.name: s.name for s in spec.sets}}
    sets, metrics, union_examples, names = [], [], {}, {}
    for index, (key, spec) in enumerate(specs.items()):
        names[key] = {s.name: f"{index}/{s.name}" for s in spec.sets}
        sets += [replace(s, name=names[key][s.name]) for s in spec.sets]
        metrics += [
            replace(m, probes=names[key][m.probes], evals=names[key][m.evals]) for m in spec.metrics
        ]
        union_examples.update({names[key][n]: exs for n, exs in examples[key].items()})
    first = next(iter(specs.values()))
    return replace(first, sets=tuple(sets), metrics=tuple(metrics)), union_examples, names


def _study_grams(computed: SetGrams, names: dict[str, str], spec: StudySpec) -> SetGrams:
    """One study's tokenized sets and Gram rows, under its own set names."""
    used = used_sets(spec)
    own = [(name, names[name]) for name in (s.name for s in spec.sets) if name in used]
    rows_of = computed.rows_of
    return replace(
        computed,
        tokenized={name: computed.tokenized[union] for name, union in own},
        rows_of=RowMaps(
            probes={n: rows_of.probes[u] for n, u in own if u in rows_of.probes},
            evals={n: rows_of.evals[u] for n, u in own},
        ),
    )


def _finish_study(
    spec: StudySpec,
    out_dir: Path,
    computed: SetGrams,
    checkpoints: Sequence[Checkpoint],
    learning_rates: Sequence[float | None],
    keys: Sequence[CheckpointKeys],
    procs: Processes,
    *,
    command: str | None,
    report: bool,
    shared: int = 1,
) -> StudyResult:
    """A study's tables from the Gram matrices, written (rank 0) with its config and report;
    ``shared``: how many studies the Gram matrices were computed for."""
    config = None
    if procs.is_main:
        config = resolve_config(
            spec, checkpoints, keys, computed.dims, learning_rates, str(procs.device)
        )
    result = compute_result(
        spec, checkpoints, computed, rank=procs.rank, config=config, out_dir=out_dir
    )
    if not procs.is_main:
        return result
    work = result.work
    write_result_tables(out_dir, result)
    # config.yaml last: its presence marks a complete result (the report is derived from it).
    inputs = hash_inputs(s.path for s in spec.sets)
    save_run_config(out_dir / CONFIG_YAML, config, command=command, inputs=inputs)
    logger.info(
        "wrote %s: %d gradient(s) computed, %d read from the cache, %d checkpoint(s) resumed%s",
        out_dir,
        work.computed,
        work.cached,
        work.resumed,
        f" (for the {shared} studies together)" if shared > 1 else "",
    )
    if report:
        # Imported here: the report draws with matplotlib, which the computation does not need.
        from swiftstudy.report import render_report

        render_report(out_dir)
    return result


def _prune_cache(root: Path, max_gb: float) -> None:
    """Cut the gradient cache to ``max_gb`` GiB, least recently used rows first."""
    freed = prune_gradient_cache(root, int(max_gb * 2**30))
    if freed:
        logger.info(
            "gradient cache %s: deleted %.1f MiB of least recently used gradients to keep within "
            "cache_max_gb (%g GiB)",
            root,
            freed / _MB,
            max_gb,
        )


def _cache_root(spec: StudySpec) -> Path:
    """The gradient cache folder: ``cache_dir``, ``$SWIFTSTUDY_CACHE`` or the user cache folder.

    Raises:
        InputError: The folder cannot be made or written (the error names where it came from).
    """
    root = default_cache_dir() if spec.cache_dir is None else spec.cache_dir
    existing = next(p for p in (root, *root.parents) if p.exists())
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        logger.info("gradient cache: %s", root)
        return root
    problem = "is not a writable folder" if existing == root else f"{existing} is not writable"
    message = f"the gradient cache {root} {problem}: choose another or pass --no-cache"
    if spec.cache_dir is not None:
        raise spec_key_error(spec.spec_path, message, ("cache_dir",))
    raise InputError(message, key=CACHE_ENV_VAR if os.environ.get(CACHE_ENV_VAR) else None)


# -- validation before any model work -------------------------------------------------------


def _discover(spec: StudySpec) -> list[Checkpoint]:
    base_dir = spec.spec_path.parent if spec.spec_path else None
    if isinstance(spec.checkpoints, Path):
        return discover_checkpoints(spec.checkpoints, base_dir=base_dir)
    entries = [{"path": str(c.path), "step": c.step} for c in spec.checkpoints]
    return discover_checkpoints(entries, base_dir=base_dir)
