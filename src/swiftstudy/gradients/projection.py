"""Seeded Rademacher random projection of per-example gradients, and its expected error.

Implements the Johnson–Lindenstrauss sketch ĝ = Pᵀ g with P ∈ {±1/√k}^{d×k}, entries independent
and equally likely. Because E[P Pᵀ] = I, projected dot products are unbiased,
E[⟨Pᵀa, Pᵀb⟩] = ⟨a, b⟩, with variance

    Var[⟨Pᵀa, Pᵀb⟩] = (|a|²|b|² + ⟨a,b⟩² − 2 Σ_i a_i² b_i²) / k  ≤  (|a|²|b|² + ⟨a,b⟩²) / k,

so the standard error of a projected dot product is at most √(2/k) · |a| |b| (at k = 8192:
1.6 % of |a||b|), and that of a projected squared norm at most √(2/k) · |a|².

P is never materialized: entry (i, j) is a hash of (seed, i·k + j), so any block of rows is
generated on demand, on any device, bit for bit the same whatever the device, the process or the
block size used. A counter-based hash rather than a ``torch.Generator`` seeded per block: CPU and
CUDA generators give different streams, and generating a 7B adapter's d×k ≈ 5·10¹¹ signs on the
CPU for every projected batch would take hours. The hash works on 32-bit words held in int64, so
no operation overflows and the result is exact on every backend. One 32-bit hash gives 32 signs.

Projection is linear, so a gradient can be projected piece by piece: the piece holding columns
``[offset, offset + n)`` of the flattened gradient is projected with rows ``[offset, offset + n)``
of P, and the projections of the pieces sum to that of the whole (see :func:`project_gradients`).
"""

from __future__ import annotations

import math

import torch

#: Rows of P generated at once when the caller does not choose: 4 M signs for k = 8192.
DEFAULT_CHUNK_ROWS = 512
_MASK32 = 0xFFFFFFFF
_WORD_BITS = 32
#: Per-seed key constants (the golden-ratio and a Murmur3 constant), so seed s and the element
#: index are hashed through different keys.
_SEED_KEYS = (0x9E3779B9, 0x85EBCA6B)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x · c) mod 2³²`` for 32-bit words in int64, in 16-bit halves so nothing overflows."""
    low, high = c & 0xFFFF, c >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """Murmur3's 32-bit finalizer: a bijection on 32-bit words with full avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def _seed_words(seed: int) -> tuple[int, int]:
    """Two 32-bit keys derived from a (64-bit) seed."""
    if seed < 0 or seed >= 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    words = torch.tensor([seed & _MASK32, seed >> 32], dtype=torch.int64)
    low = int(_mix32(words[0:1] ^ _SEED_KEYS[0]))
    high = int(_mix32((words[1:2] ^ _SEED_KEYS[1]) ^ low))
    return low, high


def _hash_words(counter: torch.Tensor, seed: int) -> torch.Tensor:
    """A 32-bit pseudo-random word per 64-bit counter (int64 ≥ 0), keyed by ``seed``.

    Within a window of 2³² counters the inner hash is a bijection, so words are distinct; across
    windows the window key enters after a nonlinear mix of the low word, so no window repeats or
    shifts another.
    """
    key_low, key_high = _seed_words(seed)
    low = _mix32((counter & _MASK32) ^ key_low)
    window = _mix32(((counter >> 32) & _MASK32) ^ key_high)
    return _mix32(low ^ window)


def rademacher_rows(
    seed: int,
    k: int,
    start: int,
    stop: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Rows ``[start, stop)`` of the projection matrix P of ``seed`` and output dimension ``k``.

    Args:
        seed: The projection's seed, in ``[0, 2**64)``.
        k: Output dimension (columns of P).
        start: First row (gradient coordinate), ``>= 0``.
        stop: One past the last row.
        dtype: dtype of the result.
        device: Where the rows are generated.

    Returns:
        ``(stop - start, k)`` tensor of ``±1/√k``; the same values for the same arguments on every
        device and in every process.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
    words_per_row = -(-k // _WORD_BITS)
    rows = torch.arange(start, stop, dtype=torch.int64, device=device)
    columns = torch.arange(words_per_row, dtype=torch.int64, device=device)
    words = _hash_words(rows[:, None] * words_per_row + columns[None, :], seed)
    # Each byte of a word indexes a table of its 8 signs (bit b of the word is column 32w + b).
    byte_shifts = torch.arange(0, _WORD_BITS, 8, dtype=torch.int64, device=device)
    word_bytes = (words[:, :, None] >> byte_shifts) & 0xFF
    values = _sign_table(k, dtype, device)[word_bytes]
    return values.reshape(stop - start, words_per_row * _WORD_BITS)[:, :k]


def _sign_table(k: int, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    """``(256, 8)``: row v holds the signs of v's bits, low bit first; bit 0 -> +1/√k."""
    bits = (torch.arange(256, device=device)[:, None] >> torch.arange(8, device=device)) & 1
    return (1 - 2 * bits).to(dtype) / math.sqrt(k)


def project_gradients(
    grads: torch.Tensor,
    k: int,
    seed: int,
    *,
    offset: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    accumulate_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Project a block of per-example gradients (or a piece of them) to dimension ``k``.

    ``grads`` holds columns ``[offset, offset + n)`` of the flattened gradients, so a caller that
    has per-module pieces (the engine's column layout, see ``gradient_dimension``) projects each
    with its column offset and sums the results: the sum equals projecting the whole row.

    Args:
        grads: ``(B, n)`` gradients (any float dtype; half precision is upcast per chunk).
        k: Output dimension.
        seed: The projection's seed; the same seed gives the same projection everywhere.
        offset: Column of the flattened gradient that ``grads[:, 0]`` is.
        chunk_rows: Rows of P generated at once: memory is ``chunk_rows × k`` elements.
        accumulate_dtype: dtype of the sums and the result; default float32, or float64 for
            float64 input.

    Returns:
        ``(B, k)`` projected gradients on ``grads``' device.
    """
    if grads.ndim != 2:
        raise ValueError(f"expected (B, n) gradients, got shape {tuple(grads.shape)}")
    if offset < 0 or chunk_rows < 1:
        raise ValueError("offset must be >= 0 and chunk_rows >= 1")
    if accumulate_dtype is None:
        accumulate_dtype = torch.float64 if grads.dtype == torch.float64 else torch.float32
    out = torch.zeros((grads.shape[0], k), dtype=accumulate_dtype, device=grads.device)
    for start in range(0, grads.shape[1], chunk_rows):
        stop = min(start + chunk_rows, grads.shape[1])
        rows = rademacher_rows(
            seed, k, offset + start, offset + stop, dtype=accumulate_dtype, device=grads.device
        )
        out.addmm_(grads[:, start:stop].to(accumulate_dtype), rows)
    return out


def relative_error_bound(k: int) -> float:
    """``√(2/k)``: the projected dot product's standard error is at most this times ``|a||b|``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return math.sqrt(2.0 / k)
