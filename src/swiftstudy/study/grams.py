"""Each checkpoint's Gram matrix of the study's rows, computing only what is missing.

The rows are the unique examples' gradients, projected and preconditioned as the spec asks
(``study.rows``). Per checkpoint, in order: a Gram matrix saved in ``.partial/`` by an earlier run
of the same study is taken as is; otherwise rank 0 reads the rows it finds in the gradient cache,
the examples with a row missing are batched exactly as the engine batches them
(``plan_batches``), the batches are dealt to the ranks, each batch's rows are cached as soon as
they are computed, rank 0 collects every row, forms G Gᵀ in float64 and saves it to ``.partial/``.

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
from swiftstudy.study.rows import (
    VARIANT_ADAM,
    VARIANT_RAW,
    GramRow,
    RowSettings,
    RowTransform,
    load_row_transform,
    rows_by_sequence,
)

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
class CheckpointKeys:
    """What identifies a checkpoint's rows.

    Attributes:
        weights: The hash of its weights (``hash_checkpoint``): the key of raw rows.
        adam: That combined with the hash of its ``optimizer.pt``: the key of ``adam`` rows and
            of the Gram matrix in ``.partial/``; None when the study has no ``adam`` rows.
    """

    weights: str
    adam: str | None = None

    def of(self, variant: str) -> str:
        """The key of rows of ``variant``."""
        if variant == VARIANT_ADAM:
            if self.adam is None:
                raise ValueError("no optimizer hash for adam rows")
            return self.adam
        return self.weights

    @property
    def gram(self) -> str:
        """The key of the checkpoint's Gram matrix (it holds every variant)."""
        return self.adam or self.weights


@dataclass(frozen=True)
class GramJob:
    """What every checkpoint's Gram matrix is computed from.

    Attributes:
        states: The base model, put in each checkpoint's state.
        sequences: The unique examples.
        rows: The Gram matrix's rows, ``(example index, variant)`` (``rows.layout_rows``).
        row_settings: The projection and preconditioner that make rows from gradients.
        pad_id: The tokenizer's padding id.
        max_examples: Most examples in a batch.
        max_tokens: Most padded tokens in a batch.
        row_dtype: The engine's output dtype (float64 for a float64 model, else float32).
        processes: This process's rank and device.
        caches: The gradient cache of each variant; empty when the cache is off.
        partial: The study's ``.partial/`` Gram matrices (read and written by rank 0).
    """

    states: ModelStates
    sequences: Sequence[TokenSequence]
    rows: Sequence[GramRow]
    row_settings: RowSettings
    pad_id: int
    max_examples: int
    max_tokens: int
    row_dtype: torch.dtype
    processes: Processes
    caches: dict[str, GradientCache]
    partial: PartialGrams


def compute_grams(
    job: GramJob,
    checkpoints: Sequence[Checkpoint],
    keys: Sequence[CheckpointKeys],
    on_rows: Callable[[int], None] = lambda _n: None,
) -> tuple[list[torch.Tensor], list[int], StudyWork]:
    """The float64 Gram matrix of the study's rows at every checkpoint.

    Args:
        job: The model, examples, rows and settings.
        checkpoints: The checkpoints, in order.
        keys: Their keys (hashes of weights and optimizer state).
        on_rows: Called with a count of examples as their rows are read or computed (progress;
            rank 0 only).

    Returns:
        The CPU Gram matrices (identical on every rank), the row dimension at each checkpoint
        (k when projected), and the work done.
    """
    grams, dims, work = [], [], StudyWork()
    for ckpt, key in zip(checkpoints, keys, strict=True):
        gram, dim, done = _checkpoint_gram(job, ckpt, key, on_rows)
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
    job: GramJob, ckpt: Checkpoint, key: CheckpointKeys, on_rows: Callable[[int], None]
) -> tuple[torch.Tensor, int, StudyWork]:
    """One checkpoint's Gram matrix and row dimension, and the work it took."""
    procs, n, n_rows = job.processes, len(job.sequences), len(job.rows)
    saved = job.partial.load(key.gram) if procs.is_main else None
    header = [int(saved is not None), saved[1] if saved else 0] if procs.is_main else None
    found, dim = procs.share_ints(header)
    if found:
        on_rows(n)
        gram = procs.share_tensor(saved[0] if saved else None, (n_rows, n_rows), torch.float64)
        return gram, dim, StudyWork(resumed=1)

    grads, missing = _read_cache(job, key) if procs.is_main else (None, None)
    missing = procs.share_ints(missing)
    on_rows(n - len(missing))
    lengths = [len(job.sequences[i][0]) for i in missing]
    plan = plan_batches(lengths, max_examples=job.max_examples, max_tokens=job.max_tokens)
    batches = [tuple(missing[k] for k in batch) for batch in plan]
    grads = _compute_share(job, ckpt, key, batches, grads, on_rows)

    gram = None
    if procs.is_main:
        dim = grads.shape[1]
        gram = compute_dot_products(grads).cpu()
        del grads
        job.partial.save(key.gram, gram, dim)
    dim = procs.share_ints([dim] if procs.is_main else None)[0]
    gram = procs.share_tensor(gram, (n_rows, n_rows), torch.float64)
    return gram, dim, StudyWork(computed=len(missing), cached=n - len(missing))


def _read_cache(job: GramJob, key: CheckpointKeys) -> tuple[torch.Tensor | None, list[int]]:
    """The rows found in the cache, in an ``(n_rows, dim)`` tensor, and the examples with a row
    not found (all of their rows are computed again)."""
    if not job.caches:
        return None, list(range(len(job.sequences)))
    grads, missing = None, set()
    for index, (sequence, variant) in enumerate(job.rows):
        row = job.caches[variant].load(key.of(variant), job.sequences[sequence])
        if (
            row is not None
            and row.dtype == job.row_dtype
            and (grads is None or len(row) == grads.shape[1])
        ):
            if grads is None:
                shape, device = (len(job.rows), len(row)), job.processes.device
                grads = torch.empty(shape, dtype=job.row_dtype, device=device)
            grads[index] = row
        else:
            missing.add(sequence)
    return grads, sorted(missing)


def _compute_share(
    job: GramJob,
    ckpt: Checkpoint,
    key: CheckpointKeys,
    batches: Sequence[tuple[int, ...]],
    grads: torch.Tensor | None,
    on_rows: Callable[[int], None],
) -> torch.Tensor | None:
    """Compute this rank's batches; on rank 0, gather every rank's rows into ``grads``.

    Returns:
        On rank 0, all ``(n_rows, dim)`` rows; elsewhere None.
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
    transform = load_row_transform(job.row_settings, ckpt, state, targets, procs.device)
    work = _BatchWork(job, key, state, [t.module for t in targets], transform)
    dim = job.row_settings.row_dim(gradient_dimension(work.modules))
    by_sequence = rows_by_sequence(job.rows, len(job.sequences))
    places = [[index for i in batch for index, _ in by_sequence[i]] for batch in batches]
    counts = [sum(len(p) for p in procs.shard(places, r)) for r in range(procs.world_size)]
    if not procs.is_main:
        own = torch.empty((counts[procs.rank], dim), dtype=job.row_dtype, device=procs.device)
        starts = [0, *itertools.accumulate(len(p) for p in procs.shard(places))]
        work.run(mine, own, [slice(a, b) for a, b in itertools.pairwise(starts)], on_rows)
        procs.collect_rows(own, counts)
        return None
    if grads is None:
        grads = torch.empty((len(job.rows), dim), dtype=job.row_dtype, device=procs.device)
    if grads.shape[1] != dim:
        raise RuntimeError(f"cached rows have {grads.shape[1]} values, the study {dim}")
    work.run(mine, grads, procs.shard(places), on_rows)
    for rank, rows in enumerate(procs.collect_rows(grads[:0], counts), start=1):
        indices = [index for place in procs.shard(places, rank) for index in place]
        grads[indices] = rows
        work.store(indices, rows)
        on_rows(len({job.rows[i][0] for i in indices}))
    return grads


@dataclass(frozen=True)
class _BatchWork:
    """Computes batches of one checkpoint and caches their rows."""

    job: GramJob
    key: CheckpointKeys
    state: torch.nn.Module
    modules: list[torch.nn.Linear]
    transform: RowTransform

    def run(
        self,
        batches: Sequence[tuple[int, ...]],
        out: torch.Tensor,
        places: Sequence[list[int] | slice],
        on_rows: Callable[[int], None],
    ) -> None:
        """Run the engine on each batch and put its rows in ``out[place]`` and in the cache.

        Args:
            batches: Indices of the examples of each batch.
            out: Receives the rows.
            places: Where in ``out`` each batch's rows go: its examples' Gram rows in order.
            on_rows: Progress.
        """
        job = self.job
        by_sequence = rows_by_sequence(job.rows, len(job.sequences))
        for batch, place in zip(batches, places, strict=True):
            sequences = [job.sequences[i] for i in batch]
            grads = compute_gradients(
                self.state,
                self.modules,
                sequences,
                pad_id=job.pad_id,
                max_examples=job.max_examples,
                max_tokens=job.max_tokens,
                device=job.processes.device,
            )
            if grads.dtype != job.row_dtype:
                raise RuntimeError(f"the engine returned {grads.dtype}, expected {job.row_dtype}")
            wanted = [(k, r, v) for k, i in enumerate(batch) for r, v in by_sequence[i]]
            variants = list(dict.fromkeys(v for _, _, v in wanted))
            counts = [sum(mask[1:]) for _, mask in sequences]
            produced = self.transform.apply(grads, variants, counts)
            del grads
            if variants == [VARIANT_RAW] and len(wanted) == len(batch):
                rows = produced[VARIANT_RAW]  # the common case: one raw row per example
            else:
                rows = torch.stack([produced[v][k] for k, _, v in wanted])
            out[place] = rows
            self.store([r for _, r, _ in wanted], rows)
            on_rows(len(batch))

    def store(self, indices: Sequence[int], rows: torch.Tensor) -> None:
        """Cache the rows of Gram rows ``indices`` (when the cache is on and they are small
        enough), each in its variant's cache."""
        job = self.job
        if not job.caches:
            return
        by_variant: dict[str, list[tuple[TokenSequence, torch.Tensor]]] = {}
        for index, row in zip(indices, rows, strict=True):
            sequence, variant = job.rows[index]
            by_variant.setdefault(variant, []).append((job.sequences[sequence], row))
        for variant, entries in by_variant.items():
            cache = job.caches[variant]
            if cache.accepts(rows.shape[1], rows.dtype):
                cache.save(self.key.of(variant), entries)
