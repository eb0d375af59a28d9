"""A study's computation, shared by ``run_study`` and ``Session``: the model loaded once, then per
study the sets tokenized, the Gram rows laid out, each checkpoint's Gram matrix computed (reading
what a gradient cache holds) and the tables built.

``load_study_model`` does the work that does not depend on the sets (load the base model and the
run's tokenizer, fingerprint the weights, check every checkpoint against the model), so a session
pays it once for any number of studies; ``compute_set_grams`` and ``compute_result`` do the rest
and return a ``StudyResult`` that nothing has written yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from swiftstudy.config import torch_dtype
from swiftstudy.config.reader import spec_key_error
from swiftstudy.constants import (
    CHECKPOINT_KIND_FULL,
    OPTIMIZER_FILE,
    PRECONDITIONER_ADAM,
    TRAINER_STATE,
    WEIGHTING_LR,
)
from swiftstudy.data import Example, TokenizedExample, tokenize_examples
from swiftstudy.fileio import sha256_hex
from swiftstudy.gradients import relative_error_bound
from swiftstudy.model import (
    Checkpoint,
    LoadOptions,
    ModelStates,
    hash_checkpoint,
    load_base_model,
    load_checkpoint_tokenizer,
    load_learning_rate_log,
)
from swiftstudy.scores import compute_interval_learning_rates, compute_pair_mask
from swiftstudy.study.cache import (
    GradientCache,
    GradientSettings,
    PartialGrams,
    combine_digests,
    engine_digest,
    fingerprint_model,
)
from swiftstudy.study.distributed import Processes
from swiftstudy.study.grams import CheckpointKeys, GramJob, StudyWork, compute_grams
from swiftstudy.study.planning import plan_batch_tokens
from swiftstudy.study.result import StudyResult
from swiftstudy.study.rows import (
    VARIANT_ADAM,
    VARIANT_PRECONDITIONERS,
    VARIANT_RAW,
    GramRow,
    RowMaps,
    RowSettings,
)
from swiftstudy.study.spec import StudySpec
from swiftstudy.study.tables import compute_norm_rows, compute_tables

logger = logging.getLogger(__name__)

_MB = 1 << 20

#: Makes the gradient cache of one set of gradient settings (on disk, or a session's memory).
CacheFactory = Callable[[GradientSettings], GradientCache]


@dataclass(frozen=True)
class StudyModel:
    """The base model of a checkpoint series, loaded once for any number of studies.

    Attributes:
        name: The model as given (alias, folder, hub id or ``.gguf`` path).
        states: The base model, put in each checkpoint's state on demand.
        tokenizer: The run's tokenizer (a checkpoint's own when the run saved one).
        fingerprint: ``fingerprint_model`` of the base weights, taken before any adapter.
        dtype: The compute dtype's name.
        device: Where the model runs.
    """

    name: str
    states: ModelStates
    tokenizer: object
    fingerprint: str
    dtype: str
    device: torch.device


def load_study_model(
    name: str,
    checkpoints: Sequence[Checkpoint],
    *,
    dtype: str,
    device: torch.device,
    params: Sequence[str],
    options: LoadOptions | None = None,
) -> StudyModel:
    """Load the base model and tokenizer, and check every checkpoint against the model.

    ``options``: the spec's ``revision``, ``trust_remote_code`` and ``attn_implementation``
    (None: transformers' defaults).

    Raises:
        InputError: The model cannot be loaded, or a checkpoint does not fit it.
    """
    model, tokenizer = load_base_model(
        name, dtype=torch_dtype(dtype), device=device, options=options
    )
    # A run that added chat tokens saved its own tokenizer: tokenize as the run did.
    tokenizer = load_checkpoint_tokenizer([c.path for c in checkpoints]) or tokenizer
    fingerprint = fingerprint_model(model)  # before ModelStates puts adapters into it
    states = ModelStates(model, full_params=params, dtype=torch_dtype(dtype), device=device)
    for ckpt in checkpoints:
        states.check(ckpt)
    return StudyModel(name, states, tokenizer, fingerprint, dtype, device)


@dataclass(frozen=True)
class SetGrams:
    """The sets of a study, tokenized, and every checkpoint's Gram matrix of their examples.

    Attributes:
        tokenized: Each used set's tokenized examples.
        rows_of: Which Gram rows each set's examples use as probes and as evals.
        job: What the matrices were computed from (its caches and ``.partial`` store).
        grams: Each checkpoint's Gram matrix (NaN between two streamed rows).
        dims: Each checkpoint's row dimension.
        work: Gradients computed, read from the cache, and checkpoints resumed.
    """

    tokenized: dict[str, list[TokenizedExample]]
    rows_of: RowMaps
    job: GramJob
    grams: list[torch.Tensor]
    dims: list[int]
    work: StudyWork


def compute_set_grams(
    spec: StudySpec,
    examples: dict[str, list[Example]],
    model: StudyModel,
    checkpoints: Sequence[Checkpoint],
    keys: Sequence[CheckpointKeys],
    *,
    processes: Processes,
    cache: CacheFactory | None = None,
    partial_dir: Path | None = None,
    progress: bool = True,
) -> SetGrams:
    """Tokenize the used sets and compute every checkpoint's Gram matrix of their examples.

    Args:
        spec: The study (its model, dtype and params are those ``model`` was loaded with).
        examples: Each set's examples.
        model: The loaded base model.
        checkpoints: The checkpoints, in step order.
        keys: Their keys.
        processes: This process's rank and device.
        cache: Makes the gradient cache of each row variant's settings; None: no cache.
        partial_dir: Where finished checkpoints' Gram matrices are kept for resuming
            (``<out>/.partial``); None: nowhere.
        progress: Show a progress bar over checkpoints × examples (rank 0).

    Raises:
        InputError: An example overflows ``max_length`` (with ``on_overflow: error``), or a
            metric has no pairs once examples are dropped.
    """
    tokenized = tokenize_sets(spec, examples, model.tokenizer)
    sequences, sequence_of = unique_sequences(tokenized)
    rows, rows_of, kept = layout_gram_rows(spec, sequence_of, len(sequences))
    settings = _gradient_settings(spec, model, checkpoints[0].kind)
    dtype = torch_dtype(spec.dtype)
    job = GramJob(
        states=model.states,
        sequences=sequences,
        rows=rows,
        kept=kept,
        row_settings=RowSettings(settings.projection, spec.preconditioner),
        pad_id=model.tokenizer.pad_token_id,
        max_examples=spec.batch_size,
        max_tokens=plan_batch_tokens(
            spec, model.states, checkpoints[0], len(rows), processes.device, n_kept=len(kept)
        ),
        row_dtype=torch.float64 if dtype == torch.float64 else torch.float32,
        processes=processes,
        caches={}
        if cache is None
        else {
            variant: cache(replace(settings, preconditioner=preconditioner))
            for variant, preconditioner in VARIANT_PRECONDITIONERS.items()
        },
        partial=None
        if partial_dir is None
        else PartialGrams(
            partial_dir, replace(settings, preconditioner=spec.preconditioner), sequences, rows
        ),
    )
    grams, dims, work = _compute(job, checkpoints, keys, progress)
    return SetGrams(tokenized, rows_of, job, grams, dims, work)


def compute_result(
    spec: StudySpec,
    checkpoints: Sequence[Checkpoint],
    done: SetGrams,
    *,
    rank: int,
    config: dict | None,
    out_dir: Path | None = None,
) -> StudyResult:
    """The tables of ``done``'s Gram matrices: a result that nothing has written yet.

    Args:
        spec: The study (its sets are ``done.tokenized``'s).
        checkpoints: The checkpoints, in step order.
        done: The tokenized sets, their Gram rows and every checkpoint's Gram matrix.
        rank: This process's rank.
        config: ``config.yaml`` without provenance (``resolve_config``); None: unknown.
        out_dir: Where the result is (or will be) written; None: nowhere yet.
    """
    grams, tokenized, rows_of = done.grams, done.tokenized, done.rows_of
    scores, relinf = compute_tables(spec, checkpoints, grams, tokenized, rows_of)
    return StudyResult(
        out_dir=out_dir,
        scores=tuple(scores),
        relinf=tuple(relinf),
        checkpoints=tuple(checkpoints),
        work=done.work,
        rank=rank,
        norms=tuple(compute_norm_rows(checkpoints, grams, tokenized, rows_of)),
        tokens=tuple(token_records(tokenized)),
        config=config,
    )


# -- checks and keys ----------------------------------------------------------------------------


def used_sets(spec: StudySpec) -> set[str]:
    """The sets some metric uses as probes or evals."""
    return {m.probes for m in spec.metrics} | {m.evals for m in spec.metrics}


def tokenize_sets(
    spec: StudySpec, examples: dict[str, list[Example]], tokenizer: object
) -> dict[str, list[TokenizedExample]]:
    """The used sets tokenized; refuses a metric left with no pairs once examples are dropped."""
    tokenized = {
        name: tokenize_examples(
            exs, tokenizer, max_length=spec.max_length, on_overflow=spec.on_overflow
        )
        for name, exs in examples.items()
        if name in used_sets(spec)
    }
    check_pairs(spec, {name: [t.example.task for t in toks] for name, toks in tokenized.items()})
    return tokenized


def check_pairs(spec: StudySpec, tasks: dict[str, list[str]]) -> None:
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


def checkpoint_keys(spec: StudySpec, checkpoints: Sequence[Checkpoint]) -> list[CheckpointKeys]:
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
        keys.append(CheckpointKeys(weights, combine_digests(weights, sha256_hex(optimizer))))
    return keys


def learning_rates(spec: StudySpec, checkpoints: Sequence[Checkpoint]) -> list[float | None]:
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
    if missing and spec.verdict.checkpoints == WEIGHTING_LR:
        raise spec_key_error(
            spec.spec_path,
            f"the lr weighting needs each checkpoint's logged learning rates, and "
            f"{missing[0].path} has no {TRAINER_STATE} with a learning_rate (set verdict: "
            "{checkpoints: mean} or last)",
            ("verdict", "checkpoints"),
        )
    return interval_learning_rates([c.step for c in checkpoints], [] if missing else logged.items())


def interval_learning_rates(
    steps: Sequence[int], logged: Collection[tuple[int, float]]
) -> list[float | None]:
    """η_k at each of ``steps`` from logged ``(step, learning rate)`` pairs
    (``scores.compute_interval_learning_rates``); None for all when none is logged."""
    if not logged:
        return [None] * len(steps)
    rates = compute_interval_learning_rates(steps, [s for s, _ in logged], [r for _, r in logged])
    return [float(r) for r in rates]


# -- work ---------------------------------------------------------------------------------------


def layout_gram_rows(
    spec: StudySpec, sequence_of: dict[str, list[int]], n_sequences: int
) -> tuple[tuple[GramRow, ...], RowMaps, list[int]]:
    """The Gram rows (``adam`` rows for the probe sets' examples when preconditioned), which rows
    each set's examples use as probes and as evals, and the rows kept in memory (the eval sets'
    raw rows, which every probe row is multiplied with)."""
    probe_sets = {m.probes for m in spec.metrics}
    adam = spec.preconditioner == PRECONDITIONER_ADAM
    # A raw row per example, then an adam row per probe example when preconditioned.
    preconditioned = sorted({i for name in probe_sets for i in sequence_of[name]} if adam else ())
    rows = (
        *((i, VARIANT_RAW) for i in range(n_sequences)),
        *((i, VARIANT_ADAM) for i in preconditioned),
    )
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


def _gradient_settings(spec: StudySpec, model: StudyModel, kind: str) -> GradientSettings:
    """What the study's gradients depend on besides the checkpoint and the example."""
    return GradientSettings(
        model=model.fingerprint,
        dtype=spec.dtype,
        kind=kind,
        params=tuple(spec.params) if kind == CHECKPOINT_KIND_FULL else (),
        engine=engine_digest(),
        projection=None
        if spec.projection_dim is None
        else (spec.projection_dim, spec.projection_seed),
    )


def unique_sequences(
    tokenized: dict[str, list[TokenizedExample]],
) -> tuple[list[tuple[tuple[int, ...], tuple[int, ...]]], dict[str, list[int]]]:
    """Deduplicate examples across sets: one gradient per distinct (tokens, mask).

    Returns:
        The unique ``(input_ids, completion_mask)``, and each set's indices into them.
    """
    index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    rows_of = {
        name: [index.setdefault((t.input_ids, t.completion_mask), len(index)) for t in toks]
        for name, toks in tokenized.items()
    }
    return list(index), rows_of


# -- what the result files hold -----------------------------------------------------------------


def resolve_config(
    spec: StudySpec,
    checkpoints: Sequence[Checkpoint],
    keys: Sequence[CheckpointKeys],
    dims: Sequence[int],
    rates: Sequence[float | None],
    device: str | None = None,
) -> dict:
    """``config.yaml``'s resolved spec and checkpoints (provenance is added when it is saved);
    ``device``: what ``device: auto`` resolved to (not part of the run's identity: the spec is);
    ``rates``: each checkpoint's learning rate (``learning_rates``), saved where not None."""
    config = {
        "spec": spec.to_dict(),
        **({"device": device} if device is not None else {}),
        "checkpoints": [
            {
                "step": c.step,
                "path": str(c.path),
                "kind": c.kind,
                "sha256": k.weights,
                **({"optimizer_key": k.adam} if k.adam else {}),
                ("row_dim" if spec.projection_dim else "gradient_dim"): d,
                **({"learning_rate": r} if r is not None else {}),
            }
            for c, k, d, r in zip(checkpoints, keys, dims, rates, strict=True)
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


def token_records(tokenized: dict[str, list[TokenizedExample]]) -> list[dict]:
    """``tokens.jsonl``'s records: each scored example's set, id, task, text and tokens.

    ``prompt`` is the last prompt turn's text (the question, for a single turn).
    """
    return [
        {
            "set": name,
            "id": t.example.id,
            "task": t.example.task,
            "prompt": t.example.prompt[-1].content,
            "response": t.example.response,
            "input_ids": list(t.input_ids),
            "completion_mask": list(t.completion_mask),
        }
        for name, toks in tokenized.items()
        for t in toks
    ]
