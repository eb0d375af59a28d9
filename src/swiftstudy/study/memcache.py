"""The gradient cache of a notebook session: gradient rows and dot products held in memory.

Entries are keyed as the on-disk cache (``study.cache``) keys its files: the gradient settings'
digest, the checkpoint key and the example's digest, and for dot products also the digest of the
kept (eval) rows they were taken with. So a second study in the same session reads back every
row and dot product the first computed for the same checkpoint, example and settings, and the
engine runs only on examples it has not seen: a study that adds a probe set to the same evals
computes only that set's gradients.

Dot products (a few values a row) are always kept. Rows are kept while they fit ``max_bytes``
together, the least recently used dropped first; a dropped row is computed again when needed.
Nothing is written to disk.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from swiftstudy.study.cache import GradientSettings, SequenceRows, TokenSequence, example_digest


class MemoryStore:
    """The rows and dot products a session keeps, shared by every study it runs.

    Args:
        max_bytes: The most bytes of gradient rows kept at once.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.rows: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self.dots: dict[tuple[str, ...], tuple[torch.Tensor, int]] = {}
        self.row_bytes = 0

    def put_row(self, key: tuple[str, ...], row: torch.Tensor) -> int:
        """Keep ``row`` (a CPU copy), dropping the least recently used rows to make room.

        Returns:
            The bytes stored (0 when it was there already or does not fit at all).
        """
        size = row.numel() * row.element_size()
        if key in self.rows or size > self.max_bytes:
            return 0
        while self.row_bytes + size > self.max_bytes:
            _, dropped = self.rows.popitem(last=False)
            self.row_bytes -= dropped.numel() * dropped.element_size()
        self.rows[key] = row.detach().to("cpu", copy=True)
        self.row_bytes += size
        return size


class MemoryGradientCache:
    """:class:`~swiftstudy.study.cache.GradientCache`'s interface over a :class:`MemoryStore`.

    Args:
        store: The session's store.
        settings: The gradient settings of every row this instance reads and writes.
        max_row_bytes: Rows larger than this are not kept.
    """

    folder = "memory"

    def __init__(
        self, store: MemoryStore, settings: GradientSettings, *, max_row_bytes: int
    ) -> None:
        self.store = store
        self.settings = settings
        self.max_row_bytes = max_row_bytes
        self._digest = settings.digest
        #: Rows and bytes this instance stored, for the study's log.
        self.written_rows = 0
        self.written_bytes = 0

    def accepts(self, dim: int, dtype: torch.dtype) -> bool:
        """Whether rows of ``dim`` values of ``dtype`` are small enough to keep."""
        size = dim * dtype.itemsize
        return size <= self.max_row_bytes and size <= self.store.max_bytes

    def load(self, checkpoint: str, sequence: TokenSequence) -> torch.Tensor | None:
        """The kept gradient row of ``sequence`` at ``checkpoint``, or None."""
        key = (self._digest, checkpoint, example_digest(sequence))
        row = self.store.rows.get(key)
        if row is not None:
            self.store.rows.move_to_end(key)  # the least recently used row is dropped first
        return row

    def load_dots(
        self, checkpoint: str, evals: str, sequence: TokenSequence
    ) -> tuple[torch.Tensor, int] | None:
        """The kept dot products of ``sequence``'s row with the kept rows ``evals`` (then its
        squared norm), and the row's dimension; or None."""
        return self.store.dots.get((self._digest, checkpoint, evals, example_digest(sequence)))

    def save(self, checkpoint: str, rows: SequenceRows) -> None:
        """Keep rows not kept yet (as memory allows)."""
        for sequence, row in rows:
            size = self.store.put_row((self._digest, checkpoint, example_digest(sequence)), row)
            if size:
                self.written_rows += 1
                self.written_bytes += size

    def save_dots(self, checkpoint: str, evals: str, rows: SequenceRows, dim: int) -> None:
        """Keep rows' dot products with the kept rows ``evals`` and the rows' dimension."""
        for sequence, dots in rows:
            key = (self._digest, checkpoint, evals, example_digest(sequence))
            self.store.dots[key] = (dots.detach().to("cpu", copy=True), dim)
