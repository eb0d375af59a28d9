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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from swiftstudy.config.reader import spec_key_error
from swiftstudy.config.yamlio import dump_yaml, load_yaml
from swiftstudy.constants import (
    CACHE_ENV_VAR,
    CHECKPOINT_KIND_FULL,
    CONFIG_YAML,
    NORMS_CSV,
    PARTIAL_DIR,
    PRECONDITIONER_ADAM,
    RELINF_CSV,
    SCORES_CSV,
    TOKENS_JSONL,
    TRAINER_STATE,
    WEIGHTING_LR,
)
from swiftstudy.data import Example, TokenizedExample, load_examples, tokenize_examples
from swiftstudy.errors import InputError
from swiftstudy.fileio import write_text_atomic
from swiftstudy.gradients import relative_error_bound
from swiftstudy.gradients.preconditioning import OPTIMIZER_FILE
from swiftstudy.model import (
    Checkpoint,
    ModelStates,
    default_cache_dir,
    discover_checkpoints,
    hash_checkpoint,
    load_base_model,
    load_checkpoint_tokenizer,
    load_learning_rate_log,
)
from swiftstudy.provenance import describe_provenance
from swiftstudy.scores import compute_interval_learning_rates, compute_pair_mask
from swiftstudy.study.cache import (
    GradientCache,
    GradientSettings,
    PartialGrams,
    combine_digests,
    engine_digest,
    fingerprint_model,
    hash_file,
    prune_gradient_cache,
)
from swiftstudy.study.distributed import Processes, start_processes
from swiftstudy.study.grams import CheckpointKeys, GramJob, StudyWork, compute_grams
from swiftstudy.study.outputs import (
    RelInfRow,
    ScoreRow,
    render_norms_csv,
    render_relinf_csv,
    render_scores_csv,
    render_tokens_jsonl,
)
from swiftstudy.study.planning import plan_batch_tokens
from swiftstudy.study.rows import (
    VARIANT_ADAM,
    VARIANT_PRECONDITIONERS,
    VARIANT_RAW,
    GramRow,
    RowMaps,
    RowSettings,
    layout_rows,
)
from swiftstudy.study.spec import CACHE_KEYS, REPORT_KEYS, StudySpec, load_study_spec
from swiftstudy.study.tables import compute_norm_rows, compute_tables

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_MB = 1 << 20


@dataclass(frozen=True)
class StudyResult:
    """What a study computed (also written to ``out_dir`` by rank 0).

    Attributes:
        out_dir: The results folder.
        scores: The rows of ``scores.csv``.
        relinf: The rows of ``relinf.csv``.
        checkpoints: The checkpoints, in step order.
        work: Gradients computed, read from the cache, and checkpoints resumed.
        rank: This process's rank under ``torchrun`` / ``accelerate launch`` (0 alone); every
            rank returns the same rows, only rank 0 writes files.
    """

    out_dir: Path
    scores: tuple[ScoreRow, ...]
    relinf: tuple[RelInfRow, ...]
    checkpoints: tuple[Checkpoint, ...]
    work: StudyWork = field(default_factory=StudyWork)
    rank: int = 0


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
    out_dir = Path(out_dir)
    examples = {s.name: load_examples(s.path, **s.load_options()) for s in spec.sets}
    _check_pairs(spec, {name: [e.task for e in exs] for name, exs in examples.items()})
    checkpoints = _discover(spec)
    learning_rates = _learning_rates(spec, checkpoints)
    _check_out_dir(out_dir, spec, overwrite)
    cache_root = _cache_root(spec) if cache else None
    keys = _checkpoint_keys(spec, checkpoints)

    with start_processes(_resolve_device(spec.device)) as procs:
        tokenized, rows_of, job = _prepare(spec, examples, checkpoints, out_dir, procs, cache_root)
        grams, dims, work = _compute(job, checkpoints, keys, progress)

    scores, relinf = compute_tables(spec, checkpoints, grams, tokenized, rows_of)
    result = StudyResult(
        out_dir, tuple(scores), tuple(relinf), tuple(checkpoints), work, procs.rank
    )
    if not procs.is_main:
        return result
    norms = compute_norm_rows(checkpoints, grams, tokenized, rows_of)
    config = _resolved_config(spec, checkpoints, keys, dims, command)
    for entry, rate in zip(config["checkpoints"], learning_rates, strict=True):
        if rate is not None:
            entry["learning_rate"] = rate
    _write_outputs(out_dir, scores, relinf, norms, tokenized, config)
    job.partial.clear()
    if any(cache.written_rows for cache in job.caches.values()):
        _prune_cache(cache_root, spec.cache_max_gb)
    logger.info(
        "wrote %s: %d gradient(s) computed, %d read from the cache, %d checkpoint(s) resumed",
        out_dir,
        work.computed,
        work.cached,
        work.resumed,
    )
    # Imported here: the report draws with matplotlib, which the computation does not need.
    from swiftstudy.report import render_report

    render_report(out_dir)
    return result


def _prepare(
    spec: StudySpec,
    examples: dict[str, list[Example]],
    checkpoints: Sequence[Checkpoint],
    out_dir: Path,
    procs: Processes,
    cache_root: Path | None,
) -> tuple[dict[str, list[TokenizedExample]], RowMaps, GramJob]:
    """Load the model once, tokenize the used sets, and set up the Gram matrix job."""
    dtype = _DTYPES[spec.dtype]
    model, tokenizer = load_base_model(spec.model, dtype=dtype, device=procs.device)
    # A run that added chat tokens saved its own tokenizer: tokenize as the run did.
    tokenizer = load_checkpoint_tokenizer([c.path for c in checkpoints]) or tokenizer
    tokenized = {
        name: tokenize_examples(
            exs, tokenizer, max_length=spec.max_length, on_overflow=spec.on_overflow
        )
        for name, exs in examples.items()
        if name in _used_sets(spec)
    }
    _check_pairs(spec, {name: [t.example.task for t in toks] for name, toks in tokenized.items()})
    sequences, sequence_of = _unique_sequences(tokenized)
    rows, rows_of, kept = _layout(spec, sequence_of, len(sequences))
    settings = _gradient_settings(spec, model, checkpoints[0].kind)
    states = ModelStates(model, full_params=spec.params, dtype=dtype, device=procs.device)
    for ckpt in checkpoints:
        states.check(ckpt)
    job = GramJob(
        states=states,
        sequences=sequences,
        rows=rows,
        kept=kept,
        row_settings=RowSettings(settings.projection, spec.preconditioner),
        pad_id=tokenizer.pad_token_id,
        max_examples=spec.batch_size,
        max_tokens=plan_batch_tokens(
            spec, states, checkpoints[0], len(rows), procs.device, n_kept=len(kept)
        ),
        row_dtype=torch.float64 if dtype == torch.float64 else torch.float32,
        processes=procs,
        caches={}
        if cache_root is None
        else {
            variant: GradientCache(
                cache_root,
                replace(settings, preconditioner=preconditioner),
                max_row_bytes=spec.cache_max_gradient_mb * _MB,
            )
            for variant, preconditioner in VARIANT_PRECONDITIONERS.items()
        },
        partial=PartialGrams(
            out_dir / PARTIAL_DIR,
            replace(settings, preconditioner=spec.preconditioner),
            sequences,
            rows,
        ),
    )
    return tokenized, rows_of, job


def _layout(
    spec: StudySpec, sequence_of: dict[str, list[int]], n_sequences: int
) -> tuple[tuple[GramRow, ...], RowMaps, list[int]]:
    """The Gram rows (``adam`` rows for the probe sets' examples when preconditioned), which rows
    each set's examples use as probes and as evals, and the rows kept in memory (the eval sets'
    raw rows, which every probe row is multiplied with)."""
    probe_sets = {m.probes for m in spec.metrics}
    adam = spec.preconditioner == PRECONDITIONER_ADAM
    preconditioned = {i for name in probe_sets for i in sequence_of[name]} if adam else ()
    rows = layout_rows(n_sequences, preconditioned)
    index = {row: r for r, row in enumerate(rows)}
    probe_variant = VARIANT_ADAM if adam else VARIANT_RAW
    maps = RowMaps(
        evals={name: [index[(i, VARIANT_RAW)] for i in seqs] for name, seqs in sequence_of.items()},
        probes={
            name: [index[(i, probe_variant)] for i in seqs]
            for name, seqs in sequence_of.items()
            if name in probe_sets
        },
    )
    eval_sets = {m.evals for m in spec.metrics}
    kept = sorted({r for name in eval_sets for r in maps.evals[name]})
    return rows, maps, kept


def _checkpoint_keys(spec: StudySpec, checkpoints: Sequence[Checkpoint]) -> list[CheckpointKeys]:
    """Each checkpoint's weights hash, combined with its optimizer's when preconditioning.

    Raises:
        InputError: ``preconditioner: adam`` and a checkpoint has no ``optimizer.pt``.
    """
    keys = []
    for ckpt in checkpoints:
        weights = hash_checkpoint(ckpt)
        if spec.preconditioner != PRECONDITIONER_ADAM:
            keys.append(CheckpointKeys(weights))
            continue
        optimizer = ckpt.path / OPTIMIZER_FILE
        if not optimizer.is_file():
            raise spec_key_error(
                spec.spec_path,
                f"preconditioner adam needs the optimizer state {optimizer}, which is missing "
                "(was the run saved with save_only_model?)",
                ("preconditioner",),
            )
        keys.append(CheckpointKeys(weights, combine_digests(weights, hash_file(optimizer))))
    return keys


def _compute(
    job: GramJob, checkpoints: Sequence[Checkpoint], keys: Sequence[CheckpointKeys], progress: bool
) -> tuple[list[torch.Tensor], list[int], StudyWork]:
    """Every checkpoint's Gram matrix, with a progress bar on rank 0."""
    with tqdm(
        total=len(checkpoints) * len(job.sequences),
        unit="example",
        disable=not progress or not job.processes.is_main,
        desc="study",
    ) as bar:
        grams, dims, work = compute_grams(job, checkpoints, keys, bar.update)
    for cache in job.caches.values():
        if cache.written_rows:
            logger.info(
                "gradient cache %s: %d row(s), %.1f MiB written by this process",
                cache.folder,
                cache.written_rows,
                cache.written_bytes / _MB,
            )
    return grams, dims, work


def _gradient_settings(spec: StudySpec, model: torch.nn.Module, kind: str) -> GradientSettings:
    """What the study's gradients depend on besides the checkpoint and the example."""
    return GradientSettings(
        model=fingerprint_model(model),
        dtype=spec.dtype,
        kind=kind,
        params=tuple(spec.params) if kind == CHECKPOINT_KIND_FULL else (),
        engine=engine_digest(),
        projection=None
        if spec.projection_dim is None
        else (spec.projection_dim, spec.projection_seed),
    )


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


def _used_sets(spec: StudySpec) -> set[str]:
    return {m.probes for m in spec.metrics} | {m.evals for m in spec.metrics}


def _check_pairs(spec: StudySpec, tasks: dict[str, list[str]]) -> None:
    """Refuse a metric that would average over no (probe, eval) pair."""
    for index, metric in enumerate(spec.metrics):
        pairs = compute_pair_mask(tasks[metric.probes], tasks[metric.evals], metric.context)
        if not bool(pairs.any()):
            why = (
                "no probe shares a task with an eval example"
                if metric.context == "in-task"
                else "every probe has the same task as every eval example"
            )
            key = ("metrics", index)
            if metric.added_for is not None:
                key = ("metrics", metric.added_for, "control")
            raise spec_key_error(spec.spec_path, f"metric {metric.name!r} has no pairs: {why}", key)


def _learning_rates(spec: StudySpec, checkpoints: Sequence[Checkpoint]) -> list[float | None]:
    """η_k of each checkpoint (``scores.compute_interval_learning_rates``) from the logs in the
    checkpoints' ``trainer_state.json`` files; None for all when a checkpoint has none.

    Raises:
        InputError: ``verdict.checkpoints`` is ``lr`` and a checkpoint has no logged learning rate.
    """
    logged: dict[int, float] = {}
    missing = []
    for ckpt in checkpoints:
        entries = load_learning_rate_log(ckpt)
        if not entries:
            missing.append(ckpt)
        logged.update(entries or ())
    if not missing:
        steps, rates = [c.step for c in checkpoints], sorted(logged.items())
        logged_steps, logged_rates = [s for s, _ in rates], [r for _, r in rates]
        return [
            float(r) for r in compute_interval_learning_rates(steps, logged_steps, logged_rates)
        ]
    if spec.verdict.checkpoints == WEIGHTING_LR:
        raise spec_key_error(
            spec.spec_path,
            f"the lr weighting needs each checkpoint's logged learning rates, and "
            f"{missing[0].path} has no {TRAINER_STATE} with a learning_rate (set verdict: "
            "{checkpoints: mean} or last)",
            ("verdict", "checkpoints"),
        )
    return [None] * len(checkpoints)


def _discover(spec: StudySpec) -> list[Checkpoint]:
    base_dir = spec.spec_path.parent if spec.spec_path else None
    if isinstance(spec.checkpoints, Path):
        return discover_checkpoints(spec.checkpoints, base_dir=base_dir)
    entries = [{"path": str(c.path), "step": c.step} for c in spec.checkpoints]
    for entry in entries:
        if entry["step"] is None:
            del entry["step"]
    return discover_checkpoints(entries, base_dir=base_dir)


def _check_out_dir(out_dir: Path, spec: StudySpec, overwrite: bool) -> None:
    """Refuse to mix results of a different config into ``out_dir``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("exists and is not a folder", path=out_dir, key="--out")
    config = out_dir / CONFIG_YAML
    if overwrite or not config.is_file():
        return
    saved, _ = load_yaml(config)
    saved_spec = saved.get("spec") if isinstance(saved, dict) else None
    if not isinstance(saved_spec, dict) or _without_cache(saved_spec) != _without_cache(
        spec.to_dict()
    ):
        raise InputError(
            "holds results of a different study config; use another --out or --overwrite",
            path=out_dir,
            key="--out",
        )


def _without_cache(spec: dict) -> dict:
    """A spec's keys that make its results (where the cache lives and the verdict's variant do
    not)."""
    return {k: v for k, v in spec.items() if k not in CACHE_KEYS + REPORT_KEYS}


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA is not available on this machine", key="device")
    return resolved


# -- work -----------------------------------------------------------------------------------


def _unique_sequences(
    tokenized: dict[str, list[TokenizedExample]],
) -> tuple[list[tuple[tuple[int, ...], tuple[int, ...]]], dict[str, list[int]]]:
    """Deduplicate examples across sets: one gradient per distinct (tokens, mask).

    Returns:
        The unique ``(input_ids, completion_mask)``, and each set's indices into them.
    """
    index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    rows_of: dict[str, list[int]] = {}
    for name, toks in tokenized.items():
        rows_of[name] = [
            index.setdefault((t.input_ids, t.completion_mask), len(index)) for t in toks
        ]
    return list(index), rows_of


# -- outputs --------------------------------------------------------------------------------


def _resolved_config(spec, checkpoints, keys, dims, command) -> dict:
    config = {
        "spec": spec.to_dict(),
        **describe_provenance(command),
        "checkpoints": [
            {
                "step": c.step,
                "path": str(c.path),
                "kind": c.kind,
                "sha256": k.weights,
                **({"optimizer_key": k.adam} if k.adam else {}),
                ("row_dim" if spec.projection_dim else "gradient_dim"): d,
            }
            for c, k, d in zip(checkpoints, keys, dims, strict=True)
        ],
    }
    if spec.projection_dim is not None:
        config["projection"] = {
            "kind": "rademacher",
            "dim": spec.projection_dim,
            "seed": spec.projection_seed,
            # The standard error of a projected dot product <a, b> is at most this x |a| |b|.
            "relative_error_bound": relative_error_bound(spec.projection_dim),
        }
    return config


def _token_records(tokenized: dict[str, list[TokenizedExample]]) -> list[dict]:
    return [
        {
            "set": name,
            "id": t.example.id,
            "task": t.example.task,
            "input_ids": list(t.input_ids),
            "completion_mask": list(t.completion_mask),
        }
        for name, toks in tokenized.items()
        for t in toks
    ]


def _write_outputs(out_dir, scores, relinf, norms, tokenized, config) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / TOKENS_JSONL, render_tokens_jsonl(_token_records(tokenized)))
    write_text_atomic(out_dir / RELINF_CSV, render_relinf_csv(relinf))
    write_text_atomic(out_dir / NORMS_CSV, render_norms_csv(norms))
    write_text_atomic(out_dir / SCORES_CSV, render_scores_csv(scores))
    # config.yaml last: its presence marks a complete result (the report is derived from it).
    write_text_atomic(out_dir / CONFIG_YAML, dump_yaml(config))
