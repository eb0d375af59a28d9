"""Dot products of gradients and relative influence (RelInf).

RelInf(z, z0; θ) = ⟨∇ℓ(z; θ), ∇ℓ(z0; θ)⟩ / ⟨∇ℓ(z0; θ), ∇ℓ(z0; θ)⟩: how much one gradient step on
probe z lowers the loss of evaluation example z0, relative to a step on z0 itself. All products are
accumulated in float64: a float32 sum over millions of columns drifts by ~1e-3.
"""

from __future__ import annotations

import torch

from swiftstudy.constants import DOT_CHUNK_COLUMNS


def compute_dot_products(
    left: torch.Tensor, right: torch.Tensor | None = None, *, chunk: int = DOT_CHUNK_COLUMNS
) -> torch.Tensor:
    """All pairwise dot products ``left @ right.T`` accumulated in float64.

    Args:
        left: ``(N, D)`` gradients.
        right: ``(M, D)`` gradients; ``None`` means ``left`` (the Gram matrix).
        chunk: Columns processed at a time.

    Returns:
        ``(N, M)`` float64 tensor on ``left``'s device.
    """
    right = left if right is None else right
    if left.shape[1] != right.shape[1]:
        raise ValueError(f"gradient dimensions differ: {left.shape[1]} vs {right.shape[1]}")
    out = torch.zeros((left.shape[0], right.shape[0]), dtype=torch.float64, device=left.device)
    for start in range(0, left.shape[1], chunk):
        a = left[:, start : start + chunk].to(torch.float64)
        b = a if right is left else right[:, start : start + chunk].to(torch.float64)
        out.addmm_(a, b.T)
    return out


def compute_relinf(
    dots: torch.Tensor, eval_sqnorms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """RelInf of every (probe, eval) pair from their dot products.

    Args:
        dots: ``(P, E)`` float64, ``dots[i, j] = ⟨g_probe_i, g_eval_j⟩``.
        eval_sqnorms: ``(E,)`` float64, ``⟨g_eval_j, g_eval_j⟩``.

    Returns:
        ``(relinf, valid)``: ``(P, E)`` RelInf, and ``(E,)`` bool, False for evaluation examples
        whose gradient is zero. Their column of ``relinf`` is 0 and must be left out of means.
    """
    if dots.shape[1] != eval_sqnorms.shape[0]:
        raise ValueError("dots and eval_sqnorms disagree on the number of evaluation examples")
    valid = eval_sqnorms > 0
    safe = torch.where(valid, eval_sqnorms, torch.ones_like(eval_sqnorms))
    relinf = torch.where(valid.unsqueeze(0), dots / safe.unsqueeze(0), torch.zeros_like(dots))
    return relinf, valid
