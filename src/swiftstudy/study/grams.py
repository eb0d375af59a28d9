"""Each checkpoint's Gram matrix of the study's unique examples, computing only what is missing.

Per checkpoint, in order: a Gram matrix saved in ``.partial/`` by an earlier run of the same study
is taken as is; otherwise rank 0 reads the rows it finds in the gradient cache, the missing
examples are batched exactly as the engine batches them (``plan_batches``), the batches are dealt
to the ranks, each batch's rows are cached as soon as they are computed, rank 0 collects every row,
forms G Gᵀ in float64 and saves it to ``.partial/``.

Batches are planned longest first and stored whole, so a single-process study killed and resumed
plans the batches it had left exactly as before, and its rows are bit for bit those of an
uninterrupted run. A row cached by another study (or by a rank that finished out of order) may have
been computed beside other examples, and differ from a fresh one in the last bits of its dtype.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from swiftstudy.gradients import compute_gradients, gradient_dimension, plan_batches
from swiftstudy.model import Checkpoint, ModelStates
from swiftstudy.scores import compute_dot_products
from swiftstudy.study.cache import GradientCache, PartialGrams, TokenSequence
from swiftstudy.study.distributed import Processes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyWork:
    """How much gradient work a study did, and how much it found already done.

    Attributes:
        computed: (checkpoint, example) gradients the engine computed, over all processes.
        cached: (checkpoint, example) gradients read from the gradient cache.
        resumed: Checkpoints whose Gram matrix was read from ``.partial/``.
    """

    computed: int = 0
    cached: int = 0
    resumed: int = 0

    def __add__(self, other: StudyWork) -> StudyWork:
        return StudyWork(
            self.computed + other.computed, self.cached + other.cached, self.resumed + other.resumed
        )


@dataclass(frozen=True)
class GramJob:
    """What every checkpoint's Gram matrix is computed from.

    Attributes:
        states: The base model, put in each checkpoint's state.
        sequences: The unique examples, in Gram row order.
        pad_id: The tokenizer's padding id.
        max_examples: Most examples in a batch.
        max_tokens: Most padded tokens in a batch.
        row_dtype: The engine's output dtype (float64 for a float64 model, else float32).
        processes: This process's rank and device.
        cache: The gradient cache, or None (off).
        partial: The study's ``.partial/`` Gram matrices (read and written by rank 0).
    """

    states: ModelStates
    sequences: Sequence[TokenSequence]
    pad_id: int
    max_examples: int
    max_tokens: int
    row_dtype: torch.dtype
    processes: Processes
    cache: GradientCache | None
    partial: PartialGrams


def compute_grams(
    job: GramJob,
    checkpoints: Sequence[Checkpoint],
    hashes: Sequence[str],
    on_rows: Callable[[int], None] = lambda _n: None,
) -> tuple[list[torch.Tensor], list[int], StudyWork]:
    """The float64 Gram matrix of the examples' gradients at every checkpoint.

    Args:
        job: The model, examples and settings.
        checkpoints: The checkpoints, in order.
        hashes: Their content hashes (``hash_checkpoint``).
        on_rows: Called with a count as rows are read or computed (progress; rank 0 only).

    Returns:
        The CPU Gram matrices (identical on every rank), the gradient dimension of each
        checkpoint, and the work done.
    """
    grams, dims, work = [], [], StudyWork()
    for ckpt, digest in zip(checkpoints, hashes, strict=True):
        gram, dim, done = _checkpoint_gram(job, ckpt, digest, on_rows)
        logger.info(
            "step %d: %d gradient(s) computed, %d from the cache%s",
            ckpt.step,
            done.computed,
            done.cached,
            ", Gram matrix from .partial" if done.resumed else "",
        )
        grams.append(gram)
        dims.append(dim)
        work += done
    return grams, dims, work


def _checkpoint_gram(
    job: GramJob, ckpt: Checkpoint, digest: str, on_rows: Callable[[int], None]
) -> tuple[torch.Tensor, int, StudyWork]:
    """One checkpoint's Gram matrix and gradient dimension, and the work it took."""
    procs, n = job.processes, len(job.sequences)
    saved = job.partial.load(digest) if procs.is_main else None
    header = [int(saved is not None), saved[1] if saved else 0] if procs.is_main else None
    found, dim = procs.share_ints(header)
    if found:
        on_rows(n)
        gram = procs.share_tensor(saved[0] if saved else None, (n, n), torch.float64)
        return gram, dim, StudyWork(resumed=1)

    grads, missing = _read_cache(job, digest) if procs.is_main else (None, None)
    missing = procs.share_ints(missing)
    on_rows(n - len(missing))
    lengths = [len(job.sequences[i][0]) for i in missing]
    plan = plan_batches(lengths, max_examples=job.max_examples, max_tokens=job.max_tokens)
    batches = [tuple(missing[k] for k in batch) for batch in plan]
    grads = _compute_share(job, ckpt, digest, batches, grads, on_rows)

    gram = None
    if procs.is_main:
        dim = grads.shape[1]
        gram = compute_dot_products(grads).cpu()
        del grads
        job.partial.save(digest, gram, dim)
    dim = procs.share_ints([dim] if procs.is_main else None)[0]
    gram = procs.share_tensor(gram, (n, n), torch.float64)
    return gram, dim, StudyWork(computed=len(missing), cached=n - len(missing))


def _read_cache(job: GramJob, digest: str) -> tuple[torch.Tensor | None, list[int]]:
    """The rows found in the cache, in an ``(n, dim)`` tensor, and the indices not found."""
    if job.cache is None:
        return None, list(range(len(job.sequences)))
    grads, missing = None, []
    for index, sequence in enumerate(job.sequences):
        row = job.cache.load(digest, sequence)
        if (
            row is not None
            and row.dtype == job.row_dtype
            and (grads is None or len(row) == grads.shape[1])
        ):
            if grads is None:
                n, device = len(job.sequences), job.processes.device
                grads = torch.empty((n, len(row)), dtype=job.row_dtype, device=device)
            grads[index] = row
        else:
            missing.append(index)
    return grads, missing


def _compute_share(
    job: GramJob,
    ckpt: Checkpoint,
    digest: str,
    batches: Sequence[tuple[int, ...]],
    grads: torch.Tensor | None,
    on_rows: Callable[[int], None],
) -> torch.Tensor | None:
    """Compute this rank's batches; on rank 0, gather every rank's rows into ``grads``.

    Returns:
        On rank 0, all ``(n, dim)`` rows; elsewhere None.
    """
    procs = job.processes
    mine = procs.shard(batches)
    if procs.world_size > 1:
        logger.info(
            "step %d: rank %d computes %d of %d batch(es)",
            ckpt.step,
            procs.rank,
            len(mine),
            len(batches),
        )
    if not batches or not (mine or procs.is_main):
        return grads  # nothing to compute, or nothing for this rank to compute or collect
    state, targets = job.states.load(ckpt)
    modules = [t.module for t in targets]
    dim = gradient_dimension(modules)
    counts = [sum(len(b) for b in procs.shard(batches, r)) for r in range(procs.world_size)]
    if not procs.is_main:
        own = torch.empty((counts[procs.rank], dim), dtype=job.row_dtype, device=procs.device)
        starts = [0, *itertools.accumulate(len(b) for b in mine)]
        places = [slice(a, b) for a, b in itertools.pairwise(starts)]
        _compute_batches(job, (state, modules), digest, mine, (own, places), on_rows)
        procs.collect_rows(own, counts)
        return None
    if grads is None:
        grads = torch.empty((len(job.sequences), dim), dtype=job.row_dtype, device=procs.device)
    if grads.shape[1] != dim:
        raise RuntimeError(f"cached rows have {grads.shape[1]} values, the model {dim}")
    _compute_batches(job, (state, modules), digest, mine, (grads, [list(b) for b in mine]), on_rows)
    for rank, rows in enumerate(procs.collect_rows(grads[:0], counts), start=1):
        indices = [i for batch in procs.shard(batches, rank) for i in batch]
        grads[indices] = rows
        _store(job, digest, indices, rows)
        on_rows(len(indices))
    return grads


def _compute_batches(
    job: GramJob,
    model: tuple[torch.nn.Module, list[torch.nn.Linear]],
    digest: str,
    batches: Sequence[tuple[int, ...]],
    out: tuple[torch.Tensor, Sequence[list[int] | slice]],
    on_rows: Callable[[int], None],
) -> None:
    """Run the engine on each batch, put its rows in ``out`` and in the cache at once.

    Args:
        job: The examples and settings.
        model: The model in the checkpoint's state and its target modules.
        digest: The checkpoint's hash.
        batches: Indices of the examples of each batch.
        out: The tensor that receives the rows, and where in it each batch's rows go.
        on_rows: Progress.
    """
    (state, modules), (rows_out, places) = model, out
    for batch, place in zip(batches, places, strict=True):
        rows = compute_gradients(
            state,
            modules,
            [job.sequences[i] for i in batch],
            pad_id=job.pad_id,
            max_examples=job.max_examples,
            max_tokens=job.max_tokens,
            device=job.processes.device,
        )
        if rows.dtype != job.row_dtype:
            raise RuntimeError(f"the engine returned {rows.dtype}, expected {job.row_dtype}")
        rows_out[place] = rows
        _store(job, digest, batch, rows)
        on_rows(len(batch))


def _store(job: GramJob, digest: str, indices: Sequence[int], rows: torch.Tensor) -> None:
    """Cache rows (when the cache is on and they are small enough)."""
    if job.cache is None or not job.cache.accepts(rows.shape[1], rows.dtype):
        return
    job.cache.save(digest, [(job.sequences[i], row) for i, row in zip(indices, rows, strict=True)])
