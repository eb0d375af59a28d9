"""Each checkpoint's Gram matrix of the study's rows, computing only what is missing.

The rows are the unique examples' gradients, projected and preconditioned as the spec asks
(``study.rows``). The tables need only a row's dot products with the eval rows (RelInf's numerator
and denominator) and its own squared norm, so only the eval rows are *kept*; every other row
(probes) is *streamed*: its dot products with the kept rows are taken as soon as its batch is
computed, and the row is dropped. Memory holds the kept rows and one batch, whatever the number
of probes; the other entries of the Gram matrix are NaN.

Per checkpoint, in order:

1. a Gram matrix saved in ``.partial/`` by an earlier run of the same study is taken as is;
2. rank 0 looks up each row's dot products in the gradient cache (``load_dots``, keyed by the
   kept rows' examples): when every row has them, nothing else is read or computed;
3. otherwise the kept rows are read from the cache or computed (the examples with a kept row
   missing are batched exactly as the engine batches them, ``plan_batches``, dealt to the ranks
   and collected on rank 0), and their Gram block formed in float64;
4. each streamed row without cached dot products is read from the cache, or its example computed
   in batches dealt to the ranks, each rank taking dot products with the kept rows (shared with
   it) and sending them to rank 0;
5. rank 0 saves the matrix to ``.partial/`` and shares it. Rows and dot products are cached as
   soon as they are computed.

Batches are planned longest first and stored whole, so a single-process study killed and resumed
plans the batches it had left exactly as before, and its rows are bit for bit those of an
uninterrupted run. A row cached by another study (or by a rank that finished out of order) may have
been computed beside other examples, and differ from a fresh one in the last bits of its dtype.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from swiftstudy.fileio import sha256_hex
from swiftstudy.gradients import compute_gradients, gradient_dimension, plan_batches
from swiftstudy.model import Checkpoint, ModelStates
from swiftstudy.scores import compute_dot_products
from swiftstudy.study.cache import GradientCache, PartialGrams, TokenSequence, example_digest
from swiftstudy.study.distributed import Processes
from swiftstudy.study.rows import (
    VARIANT_ADAM,
    VARIANT_RAW,
    GramRow,
    RowSettings,
    RowTransform,
    load_row_transform,
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
        rows: The Gram matrix's rows, ``(example index, variant)`` (``compute.layout_gram_rows``).
        kept: Indices of the rows kept in memory (the eval sets' raw rows), in order; the others
            are streamed.
        row_settings: The projection and preconditioner that make rows from gradients.
        pad_id: The tokenizer's padding id.
        max_examples: Most examples in a batch.
        max_tokens: Most padded tokens in a batch.
        row_dtype: The engine's output dtype (float64 for a float64 model, else float32).
        processes: This process's rank and device.
        caches: The gradient cache of each variant; empty when the cache is off.
        partial: The study's ``.partial/`` Gram matrices (read and written by rank 0); None:
            nowhere (a session resumes from its cache alone).
    """

    states: ModelStates
    sequences: Sequence[TokenSequence]
    rows: Sequence[GramRow]
    kept: Sequence[int]
    row_settings: RowSettings
    pad_id: int
    max_examples: int
    max_tokens: int
    row_dtype: torch.dtype
    processes: Processes
    caches: dict[str, GradientCache]
    partial: PartialGrams | None

    @functools.cached_property
    def kept_digest(self) -> str:
        """SHA-256 of the kept rows (their examples and variants, in order): the key of dot
        products with them."""
        kept = (self.rows[index] for index in self.kept)
        return sha256_hex(*(f"{v}:{example_digest(self.sequences[s])};" for s, v in kept))

    @functools.cached_property
    def rows_of_sequence(self) -> list[list[tuple[int, str]]]:
        """For each example, its ``(row index, variant)`` pairs in row order."""
        by_sequence: list[list[tuple[int, str]]] = [[] for _ in self.sequences]
        for index, (sequence, variant) in enumerate(self.rows):
            by_sequence[sequence].append((index, variant))
        return by_sequence

    def by_variant(
        self, items: Iterable[tuple[int, torch.Tensor]]
    ) -> dict[str, list[tuple[TokenSequence, torch.Tensor]]]:
        """``(Gram row, tensor)`` pairs as ``(example, tensor)`` pairs grouped by variant, as
        each variant's cache takes them."""
        grouped: dict[str, list[tuple[TokenSequence, torch.Tensor]]] = {}
        for index, tensor in items:
            sequence, variant = self.rows[index]
            grouped.setdefault(variant, []).append((self.sequences[sequence], tensor))
        return grouped


def compute_grams(
    job: GramJob,
    checkpoints: Sequence[Checkpoint],
    keys: Sequence[CheckpointKeys],
    on_rows: Callable[[int], None] = lambda _n: None,
) -> tuple[list[torch.Tensor], list[int], StudyWork]:
    """The float64 Gram matrix of the study's rows at every checkpoint (see module docstring).

    Args:
        job: The model, examples, rows and settings.
        checkpoints: The checkpoints, in order.
        keys: Their keys (hashes of weights and optimizer state).
        on_rows: Called with a count of examples as their rows are read or computed (progress;
            rank 0 only).

    Returns:
        The CPU Gram matrices (identical on every rank; entries between two streamed rows are
        NaN), the row dimension at each checkpoint (k when projected; 0 when every dot product
        came from the cache), and the work done.
    """
    grams, dims, work = [], [], StudyWork()
    for ckpt, key in zip(checkpoints, keys, strict=True):
        gram, dim, done = _CheckpointGram(job, ckpt, key, on_rows).compute()
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


@dataclass
class _CheckpointGram:
    """One checkpoint's Gram matrix: the steps of the module docstring."""

    job: GramJob
    ckpt: Checkpoint
    key: CheckpointKeys
    on_rows: Callable[[int], None]
    #: Examples computed (by every rank), the row dimension (0 while unknown), and rows of other
    #: variants computed beside the kept rows (step 3 -> step 4).
    computed: int = 0
    dim: int = 0
    extra: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    #: The model in the checkpoint's state, its target modules and row transform, once loaded.
    _engine: tuple[torch.nn.Module, list[torch.nn.Linear], RowTransform] | None = field(
        default=None, repr=False
    )

    def compute(self) -> tuple[torch.Tensor, int, StudyWork]:
        """The Gram matrix (NaN between streamed rows), the row dimension, the work done."""
        job, procs = self.job, self.job.processes
        n, n_rows = len(job.sequences), len(job.rows)
        saved = job.partial.load(self.key.gram) if procs.is_main and job.partial else None
        found, dim = procs.share_ints([int(saved is not None), saved[1] if saved else 0])
        if found:
            self.on_rows(n)
            gram = procs.share_tensor(saved[0] if saved else None, (n_rows, n_rows), torch.float64)
            return gram, dim, StudyWork(resumed=1)

        gram = torch.full((n_rows, n_rows), float("nan"), dtype=torch.float64)
        dots = self._read_dots() if procs.is_main else {}
        lacking = procs.share_ints([n_rows - len(dots)])[0]
        if lacking:
            self._streamed_rows(dots, self._kept_rows(dots))
        if procs.is_main:
            for row, values in dots.items():
                gram[row, job.kept] = values[:-1]
                gram[job.kept, row] = values[:-1]
                gram[row, row] = values[-1]
            if job.partial:
                job.partial.save(self.key.gram, gram, self.dim)
        self.dim = procs.share_ints([self.dim])[0]
        gram = procs.share_tensor(gram, (n_rows, n_rows), torch.float64)
        self.on_rows(n - self.computed)
        work = StudyWork(computed=self.computed, cached=n - self.computed)
        return gram, self.dim, work

    # -- step 2: dot products from the cache ------------------------------------------------

    def _read_dots(self) -> dict[int, torch.Tensor]:
        """Row -> its cached dot products with the kept rows, then its squared norm."""
        job, found = self.job, {}
        if not job.caches:
            return found
        for index, (sequence, variant) in enumerate(job.rows):
            loaded = job.caches[variant].load_dots(
                self.key.of(variant), job.kept_digest, job.sequences[sequence]
            )
            if loaded and loaded[0].dtype == torch.float64 and len(loaded[0]) == len(job.kept) + 1:
                found[index], self.dim = loaded
        return found

    def _save_dots(self, dots: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Cache ``dots`` (Gram row -> values), each in its variant's cache; return them."""
        job = self.job
        if job.caches:
            for variant, entries in job.by_variant(dots.items()).items():
                job.caches[variant].save_dots(
                    self.key.of(variant), job.kept_digest, entries, self.dim
                )
        return dots

    # -- step 3: the kept rows ------------------------------------------------------------------

    def _kept_rows(self, dots: dict[int, torch.Tensor]) -> torch.Tensor | None:
        """The kept rows on rank 0 (None elsewhere); puts their dot products in ``dots``.

        Rows of other variants computed on the way (an eval example's Adam row) wait in
        ``self.extra`` for step 4.
        """
        job, procs = self.job, self.job.processes
        kept, missing = self._read_rows(job.kept) if procs.is_main else (None, None)
        missing = procs.share_ints(missing)
        self.computed += len(missing)
        if missing:
            position = {row: p for p, row in enumerate(job.kept)}

            def place(index: int, row: torch.Tensor) -> None:
                nonlocal kept
                if index not in position:
                    self.extra[index] = row.clone()  # not a view that holds its whole batch
                    return
                if kept is None:
                    kept = row.new_empty((len(job.kept), len(row)))
                kept[position[index]] = row

            self._gather(missing, place)
        if not procs.is_main:
            return None
        self.dim = kept.shape[1]
        block = compute_dot_products(kept).cpu()
        fresh = {i: torch.cat([block[p], block[p, p : p + 1]]) for p, i in enumerate(job.kept)}
        dots.update(self._save_dots(fresh))
        return kept

    def _read_rows(self, indices: Sequence[int]) -> tuple[torch.Tensor | None, list[int]]:
        """Rows ``indices`` from the row cache, stacked, and the examples of those not found."""
        job = self.job
        if not job.caches:
            return None, sorted({job.rows[i][0] for i in indices})
        rows, missing = None, set()
        for position, index in enumerate(indices):
            sequence, variant = job.rows[index]
            row = job.caches[variant].load(self.key.of(variant), job.sequences[sequence])
            if (
                row is None
                or row.dtype != job.row_dtype
                or (rows is not None and len(row) != rows.shape[1])
            ):
                missing.add(sequence)
                continue
            if rows is None:
                rows = torch.empty(
                    (len(indices), len(row)), dtype=job.row_dtype, device=job.processes.device
                )
            rows[position] = row
        return rows, sorted(missing)

    # -- step 4: the streamed rows --------------------------------------------------------------

    def _streamed_rows(self, dots: dict[int, torch.Tensor], kept: torch.Tensor | None) -> None:
        """Dot products of every streamed row lacking them, into ``dots`` (rank 0)."""
        job, procs = self.job, self.job.processes
        streamed = set(range(len(job.rows))) - set(job.kept)
        missing = None
        if procs.is_main:
            lacking = [i for i in sorted(streamed) if i not in dots]
            extra = [i for i in lacking if i in self.extra]
            if extra:
                dots.update(self._dots(extra, torch.stack([self.extra[i] for i in extra]), kept))
            still = [i for i in lacking if i not in self.extra]
            unread = set()
            # Rows found in the cache, a batch's worth at a time: never all probes at once.
            for start in range(0, len(still), job.max_examples):
                chunk = still[start : start + job.max_examples]
                rows, chunk_unread = self._read_rows(chunk)
                unread.update(chunk_unread)
                found = [p for p, i in enumerate(chunk) if job.rows[i][0] not in chunk_unread]
                if found:
                    dots.update(self._dots([chunk[p] for p in found], rows[found], kept))
            missing = sorted(unread)
        self.extra = {}
        missing = procs.share_ints(missing)
        self.computed += len(missing)
        if not missing:
            return
        self.dim = procs.share_ints([self.dim])[0]
        if procs.world_size > 1:
            shape = (len(job.kept), self.dim)
            kept = procs.share_tensor(kept, shape, job.row_dtype).to(procs.device)
        mine, per_rank = self._deal(missing, "streamed", only=streamed)
        own = [torch.empty((0, len(job.kept) + 1), dtype=torch.float64)]
        for batch in mine:
            indices, rows = self._compute(batch)
            pick = [p for p, i in enumerate(indices) if i in streamed]
            own.extend(self._dots([indices[p] for p in pick], rows[pick], kept).values())
        own_values = torch.vstack(own)
        received = procs.collect_rows(own_values.to(procs.device), [len(r) for r in per_rank])
        if not procs.is_main:
            return
        for rank, values in enumerate([own_values, *received]):
            dots.update(zip(per_rank[rank], values.cpu(), strict=True))
            if rank:
                self.on_rows(len({job.rows[i][0] for i in per_rank[rank]}))

    def _dots(
        self, indices: Sequence[int], rows: torch.Tensor, kept: torch.Tensor
    ) -> dict[int, torch.Tensor]:
        """Gram rows ``indices`` (values ``rows``) -> float64 dot products with the kept rows,
        then the row's squared norm; cached."""
        products = compute_dot_products(rows, kept)
        sqnorms = compute_dot_products(rows).diagonal()  # B² dot products, B ≪ K
        values = torch.cat([products, sqnorms[:, None]], dim=1).cpu()
        return self._save_dots(dict(zip(indices, values, strict=True)))

    # -- computing batches ---------------------------------------------------------------------

    def _deal(
        self, sequences: Sequence[int], what: str, only: Collection[int] | None = None
    ) -> tuple[list[tuple[int, ...]], list[list[int]]]:
        """Batch ``sequences`` and deal the batches to the ranks (every ``world_size``-th).

        Returns:
            This rank's batches, and the Gram rows (of ``only`` those, if given) each rank
            computes, in the order its batches yield them.
        """
        job, procs = self.job, self.job.processes
        lengths = [len(job.sequences[i][0]) for i in sequences]
        plan = plan_batches(lengths, max_examples=job.max_examples, max_tokens=job.max_tokens)
        batches = [tuple(sequences[k] for k in batch) for batch in plan]
        places = [
            [r for i in batch for r, _ in job.rows_of_sequence[i] if only is None or r in only]
            for batch in batches
        ]
        per_rank = [[i for b in procs.shard(places, r) for i in b] for r in range(procs.world_size)]
        mine = procs.shard(batches)
        if procs.world_size > 1:
            logger.info(
                "step %d: rank %d computes %d of %d batch(es) of %s rows",
                self.ckpt.step,
                procs.rank,
                len(mine),
                len(batches),
                what,
            )
        return mine, per_rank

    def _compute(self, batch: tuple[int, ...]) -> tuple[list[int], torch.Tensor]:
        """Run the engine on a batch; return its examples' Gram rows (indices, values), cached
        (when the cache is on and they are small enough)."""
        job = self.job
        if self._engine is None:
            state, targets = job.states.load(self.ckpt)
            transform = load_row_transform(
                job.row_settings, self.ckpt, state, targets, job.processes.device
            )
            self._engine = (state, [t.module for t in targets], transform)
            self.dim = job.row_settings.row_dim(gradient_dimension(self._engine[1]))
        state, modules, transform = self._engine
        sequences = [job.sequences[i] for i in batch]
        grads = compute_gradients(
            state,
            modules,
            sequences,
            pad_id=job.pad_id,
            max_examples=job.max_examples,
            max_tokens=job.max_tokens,
            device=job.processes.device,
        )
        if grads.dtype != job.row_dtype:
            raise RuntimeError(f"the engine returned {grads.dtype}, expected {job.row_dtype}")
        wanted = [(k, r, v) for k, i in enumerate(batch) for r, v in job.rows_of_sequence[i]]
        variants = list(dict.fromkeys(v for _, _, v in wanted))
        counts = [sum(mask[1:]) for _, mask in sequences]
        produced = transform.apply(grads, variants, counts)
        del grads
        if variants == [VARIANT_RAW] and len(wanted) == len(batch):
            rows = produced[VARIANT_RAW]  # the common case: one raw row per example
        else:
            rows = torch.stack([produced[v][k] for k, _, v in wanted])
        indices = [r for _, r, _ in wanted]
        if job.caches:
            for variant, entries in job.by_variant(zip(indices, rows, strict=True)).items():
                cache = job.caches[variant]
                if cache.accepts(rows.shape[1], rows.dtype):
                    cache.save(self.key.of(variant), entries)
        self.on_rows(len(batch))
        return indices, rows

    def _gather(self, sequences: Sequence[int], place: Callable[[int, torch.Tensor], None]) -> None:
        """Compute ``sequences`` in batches dealt to the ranks; rank 0 places every Gram row.

        Rank 0 places its own rows batch by batch; each other rank sends its share at once.
        """
        job, procs = self.job, self.job.processes
        mine, per_rank = self._deal(sequences, "kept")
        own, offset = None, 0
        for batch in mine:
            indices, rows = self._compute(batch)
            if procs.is_main:
                for index, row in zip(indices, rows, strict=True):
                    place(index, row)
                continue
            if own is None:
                own = rows.new_empty((len(per_rank[procs.rank]), rows.shape[1]))
            own[offset : offset + len(rows)] = rows
            offset += len(rows)
        self.dim = procs.share_ints([self.dim])[0]
        if own is None:
            own = torch.empty((0, self.dim), dtype=job.row_dtype, device=procs.device)
        received = procs.collect_rows(own, [len(r) for r in per_rank])
        for rank, rows in enumerate(received, start=1):
            for index, row in zip(per_rank[rank], rows, strict=True):
                place(index, row)
            self.on_rows(len({job.rows[i][0] for i in per_rank[rank]}))
