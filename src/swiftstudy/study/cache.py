"""The gradient cache that studies share, and a study's own resume state in ``<out>/.partial/``.

A per-example gradient is determined by the base model, the checkpoint, the example's tokens and
completion mask, and the gradient settings (dtype, checkpoint kind, ``params`` for full
checkpoints, the random projection, the preconditioner, the engine's code). An Adam-preconditioned
row also depends on the checkpoint's optimizer state: its checkpoint key is
:func:`combine_digests` of the weights' hash and the optimizer file's. The cache keeps one
safetensors file per (checkpoint, example)::

    <cache dir>/gradients/v1/<settings>/settings.json        what <settings> stands for
    <cache dir>/gradients/v1/<settings>/<checkpoint>/<ex[:2]>/<ex>.safetensors
    <cache dir>/gradients/v1/<settings>/<checkpoint>/dots/<evals>/<ex[:2]>/<ex>.safetensors

and beside each row its dot products with a study's kept (eval) gradients, ``<evals>`` the digest
of those examples in order: a few values, stored whether or not the row itself is small enough to
keep, so a study over the same evals reads them back without recomputing the gradient.

``<settings>`` is the first 16 hex digits of the SHA-256 of :class:`GradientSettings`,
``<checkpoint>`` those of the checkpoint's content hash, ``<ex>`` the SHA-256 of the tokens and
mask. Each file's metadata holds the three full digests, checked on every read. Files are written
to a uniquely named temporary file and renamed into place, so studies sharing a cache never see
half a file; an unreadable entry is a miss (logged), recomputed and replaced. Only safetensors
are read, never pickles.

``.partial/`` holds each finished checkpoint's Gram matrix (n² float64, small) keyed by the
settings, the checkpoint and the study's exact example list: a rerun of the same study skips
finished checkpoints without reading any gradient. It works with the cache off too.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from swiftstudy.constants import GRADIENT_CACHE_SUBDIR, PRECONDITIONER_NONE, STALE_CACHE_TMP_S
from swiftstudy.fileio import sha256_hex, write_atomic, write_temporary, write_text_atomic

logger = logging.getLogger(__name__)

#: Bump when a change outside the hashed engine sources changes what a cached gradient means.
CACHE_FORMAT = 1
#: The code that makes a gradient row: the engine and the loss, and how checkpoint states and
#: their gradient targets (hence the row layout) are set up. Any edit invalidates the cache.
_ENGINE_SOURCES = (
    (
        "swiftstudy.gradients",
        ("batching.py", "engine.py", "loss.py", "projection.py", "preconditioning.py"),
    ),
    ("swiftstudy.model", ("states.py",)),
)
#: ``config.json`` fields that name or date a model without changing it.
_CONFIG_IGNORED = ("_name_or_path", "transformers_version", "_commit_hash")
_DIGEST_CHARS = 16
#: Sub-folder of a checkpoint's rows that holds dot products with kept rows.
_DOTS_DIR = "dots"

#: An example as the engine takes it: ``(input_ids, completion_mask)``.
TokenSequence = tuple[Sequence[int], Sequence[int]]
#: Gradient rows (or their dot products), each with its example.
SequenceRows = Sequence[tuple[TokenSequence, torch.Tensor]]


@dataclass(frozen=True)
class GradientSettings:
    """Everything besides the checkpoint and the example that a gradient row depends on.

    Attributes:
        model: :func:`fingerprint_model` of the base model.
        dtype: The compute dtype name.
        kind: ``adapter`` or ``full``.
        params: The ``params`` regexes (full checkpoints only; empty for adapters).
        engine: :func:`engine_digest`.
        projection: ``(k, seed)`` of the random projection, or None (exact rows).
        preconditioner: ``none`` (raw gradients) or ``adam`` (Adam update directions).
    """

    model: str
    dtype: str
    kind: str
    params: tuple[str, ...]
    engine: str
    projection: tuple[int, int] | None = None
    preconditioner: str = PRECONDITIONER_NONE

    @property
    def digest(self) -> str:
        """SHA-256 of the settings and the cache format, as hex."""
        return sha256_hex(json.dumps({"format": CACHE_FORMAT, **asdict(self)}, sort_keys=True))


def fingerprint_model(model: torch.nn.Module) -> str:
    """SHA-256 of a model's config and every tensor of its state (names, dtypes, shapes, bytes).

    Hashes what was loaded, whatever it was loaded from (alias, folder, hub id, GGUF): about a
    second per GB on a CPU core.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        fields = {k: v for k, v in config.to_dict().items() if k not in _CONFIG_IGNORED}
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(memoryview(data))
    return digest.hexdigest()


@functools.cache
def engine_digest() -> str:
    """SHA-256 of the source files that compute a gradient row (see ``_ENGINE_SOURCES``)."""
    digest = hashlib.sha256()
    for package, names in _ENGINE_SOURCES:
        for name in names:
            digest.update(f"{package}/{name}\0".encode())
            digest.update(resources.files(package).joinpath(name).read_bytes())
    return digest.hexdigest()


def combine_digests(*digests: str) -> str:
    """SHA-256 of hex digests in order: one key for what several hashed files determine."""
    return sha256_hex(":".join(digests))


def example_digest(sequence: TokenSequence) -> str:
    """SHA-256 of an example's ``(input_ids, completion_mask)``, as hex."""
    ids, mask = sequence
    return sha256_hex(json.dumps([list(ids), [int(m) for m in mask]], separators=(",", ":")))


class GradientCache:
    """Per-example gradients on disk, one safetensors file per (checkpoint, example).

    Args:
        root: The cache folder (rows go under ``<root>/gradients/``).
        settings: The gradient settings of every row this instance reads and writes.
        max_row_bytes: Rows larger than this are not stored.
    """

    def __init__(self, root: Path, settings: GradientSettings, *, max_row_bytes: int) -> None:
        self.settings = settings
        self.max_row_bytes = max_row_bytes
        self._digest = settings.digest
        self.folder = (
            Path(root) / GRADIENT_CACHE_SUBDIR / f"v{CACHE_FORMAT}" / self._digest[:_DIGEST_CHARS]
        )
        self._swept: set[str] = set()
        self._told_size = False
        self._damaged: set[Path] = set()
        self._write_error: OSError | None = None
        #: Rows and bytes this instance wrote, for the study's log.
        self.written_rows = 0
        self.written_bytes = 0

    def accepts(self, dim: int, dtype: torch.dtype) -> bool:
        """Whether rows of ``dim`` values of ``dtype`` are small enough to cache."""
        size = dim * dtype.itemsize
        if size <= self.max_row_bytes:
            return True
        if not self._told_size:
            self._told_size = True
            logger.warning(
                "per-example gradients of %.1f MiB exceed cache_max_gradient_mb (%.1f MiB): not "
                "cached; a rerun resumes from each finished checkpoint's Gram matrix only",
                size / 2**20,
                self.max_row_bytes / 2**20,
            )
        return False

    def path(self, checkpoint: str, example: str) -> Path:
        """The file of one row, given the checkpoint hash and :func:`example_digest`."""
        return self.folder / checkpoint[:_DIGEST_CHARS] / example[:2] / f"{example}.safetensors"

    def load(self, checkpoint: str, sequence: TokenSequence) -> torch.Tensor | None:
        """The cached gradient row of ``sequence`` at ``checkpoint``, or None (missing, unreadable).

        Safe while other processes write: a file is either absent or complete.
        """
        loaded = self._load(*self._entry(checkpoint, sequence))
        return None if loaded is None else loaded[0]

    def load_dots(
        self, checkpoint: str, evals: str, sequence: TokenSequence
    ) -> tuple[torch.Tensor, int] | None:
        """The cached dot products of ``sequence``'s row with the kept rows ``evals``, or None.

        Returns:
            float64: the dot product with each kept row, then the row's squared norm; and the
            row's dimension.
        """
        loaded = self._load(*self._entry(checkpoint, sequence, evals))
        if loaded is None or not loaded[1].get("dim", "").isdigit():
            return None
        return loaded[0], int(loaded[1]["dim"])

    def _load(
        self, path: Path, name: str, expected: dict[str, str]
    ) -> tuple[torch.Tensor, dict[str, str]] | None:
        """Tensor ``name`` of the file at ``path`` and the file's metadata, or None (missing,
        unreadable, or of another key)."""
        try:
            tensors, metadata = _read_safetensors(path)
            row = tensors[name]
        except FileNotFoundError:
            return None
        except (OSError, SafetensorError, KeyError, ValueError) as err:
            logger.warning("ignoring unreadable cache entry %s: %s", path, err)
            self._damaged.add(path)
            return None
        if any(metadata.get(k) != v for k, v in expected.items()) or row.ndim != 1:
            logger.warning("ignoring cache entry %s: it belongs to another key", path)
            self._damaged.add(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # its time is its last use: prune_gradient_cache keeps it longest
        return row, metadata

    def save(self, checkpoint: str, rows: SequenceRows) -> None:
        """Store rows not stored yet (or found damaged), never failing the study.

        All rows are written to temporary files first, then renamed: a kill leaves a batch half
        stored only in the moment between renames. A write error (disk full, no permission) is
        logged once, and nothing more is stored by this instance.
        """
        self._save([(*self._entry(checkpoint, s), row) for s, row in rows])

    def save_dots(self, checkpoint: str, evals: str, rows: SequenceRows, dim: int) -> None:
        """Store rows' dot products with the kept rows ``evals``, and the rows' dimension ``dim``
        (see :meth:`load_dots`)."""
        self._save([(*self._entry(checkpoint, s, evals, dim), dots) for s, dots in rows])

    def _entry(
        self,
        checkpoint: str,
        sequence: TokenSequence,
        evals: str | None = None,
        dim: int | None = None,
    ) -> tuple[Path, str, dict[str, str]]:
        """The file, tensor name and metadata of a row (with ``evals``: of its dot products)."""
        example = example_digest(sequence)
        metadata = {
            "format": str(CACHE_FORMAT),
            "settings": self._digest,
            "checkpoint": checkpoint,
            "example": example,
        }
        if evals is None:
            return self.path(checkpoint, example), "gradient", metadata
        metadata["evals"] = evals
        if dim is not None:
            metadata["dim"] = str(dim)
        # Dot products with the kept rows of digest ``evals``, in the checkpoint's folder.
        folder = self.folder / checkpoint[:_DIGEST_CHARS] / _DOTS_DIR / evals[:_DIGEST_CHARS]
        return folder / example[:2] / f"{example}.safetensors", "dots", metadata

    def _save(self, entries: Sequence[tuple[Path, str, dict[str, str], torch.Tensor]]) -> None:
        if self._write_error is not None:
            return
        pending: list[tuple[Path, Path]] = []
        try:
            for path, name, metadata, row in entries:
                if path.is_file() and path not in self._damaged:
                    continue
                self._sweep(path.parent.parent)
                data = save({name: row.detach().to("cpu").contiguous()}, metadata=metadata)
                pending.append((write_temporary(path, data, fsync=False), path))
                self.written_bytes += len(data)
            for tmp, path in pending:
                os.replace(tmp, path)
                self._damaged.discard(path)
            self.written_rows += len(pending)
            self._write_settings()
        except BaseException as err:
            for tmp, _ in pending:
                tmp.unlink(missing_ok=True)
            if not isinstance(err, OSError):
                raise
            self._write_error = err
            logger.warning(
                "cannot write the gradient cache %s (%s): going on without storing gradients",
                self.folder,
                err,
            )

    def _write_settings(self) -> None:
        """``settings.json`` beside the rows, saying what the settings digest stands for."""
        path = self.folder / "settings.json"
        if self.written_rows and not path.is_file():
            settings = {"format": CACHE_FORMAT, **asdict(self.settings)}
            write_text_atomic(path, json.dumps(settings, indent=1) + "\n")

    def _sweep(self, checkpoint_folder: Path) -> None:
        """Delete temporary files that killed writers left in a checkpoint's folder (once)."""
        if checkpoint_folder.name in self._swept:
            return
        self._swept.add(checkpoint_folder.name)
        cutoff = time.time() - STALE_CACHE_TMP_S
        for tmp in checkpoint_folder.glob("*/.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()


def prune_gradient_cache(root: Path, max_bytes: int) -> int:
    """Delete the least recently used gradient rows until they take at most ``max_bytes``.

    A row's file time is when it was last written or read. Safe while studies run: a reader
    treats a deleted row as missing and computes it again.

    Args:
        root: The cache folder (rows are under ``<root>/gradients/``).
        max_bytes: The most the rows may take.

    Returns:
        The bytes freed.
    """
    entries = []
    for path in (Path(root) / GRADIENT_CACHE_SUBDIR).rglob("*.safetensors"):
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            entries.append((stat.st_mtime_ns, stat.st_size, path))
    excess = sum(size for _, size, _ in entries) - max_bytes
    freed = 0
    for _, size, path in sorted(entries):
        if freed >= excess:
            break
        path.unlink(missing_ok=True)
        freed += size
    return freed


class PartialGrams:
    """Each finished checkpoint's Gram matrix in ``<out>/.partial/``, for resuming a study.

    Args:
        folder: ``<out>/.partial``.
        settings: The study's gradient settings.
        sequences: The study's unique examples.
        rows: The Gram matrix's rows: ``(sequence index, variant)`` (``study.rows``).
    """

    def __init__(
        self,
        folder: Path,
        settings: GradientSettings,
        sequences: Sequence[TokenSequence],
        rows: Sequence[tuple[int, str]],
    ) -> None:
        self.folder = Path(folder)
        self._study = sha256_hex(
            settings.digest,
            *(example_digest(sequence) for sequence in sequences),
            json.dumps([list(row) for row in rows]),
        )

    def path(self, checkpoint: str) -> Path:
        """The file of ``checkpoint``'s Gram matrix."""
        key = sha256_hex(f"{self._study}:{checkpoint}")
        return self.folder / f"{key[:32]}.safetensors"

    def load(self, checkpoint: str) -> tuple[torch.Tensor, int] | None:
        """The saved Gram matrix and gradient dimension, or None."""
        path = self.path(checkpoint)
        try:
            stored, _ = _read_safetensors(path)
            return stored["gram"], int(stored["dim"])
        except FileNotFoundError:
            return None
        except (OSError, SafetensorError, KeyError, ValueError) as err:
            logger.warning("ignoring unreadable %s: %s", path, err)
            return None

    def save(self, checkpoint: str, gram: torch.Tensor, dim: int) -> None:
        """Save a checkpoint's Gram matrix atomically."""
        path = self.path(checkpoint)
        data = save({"gram": gram.contiguous(), "dim": torch.tensor(dim)})
        write_atomic(path, data, fsync=False)

    def clear(self) -> None:
        """Delete the folder (the study's results are written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata, copied into memory.

    Not memory-mapped: a mapped file that someone truncates kills the reader (SIGBUS).

    Raises:
        FileNotFoundError: No such file.
        SafetensorError, ValueError: Not a whole safetensors file.
    """
    data = path.read_bytes()
    tensors = load(data)  # validates the header and the data length
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return tensors, header.get("__metadata__") or {}
