"""Adam-preconditioned gradients from a checkpoint's optimizer state, as LESS computes them.

Implements LESS's ``obtain_gradients_with_adam`` (Xia et al. 2024), one Adam step's direction
taken from the checkpoint's moments m, v for a gradient g, without bias correction:

    m' = β₁ m + (1 − β₁) g,    v' = β₂ v + (1 − β₂) g²,    u = m' / √(v' + ε)

LESS puts ε inside the square root (with β₁ = 0.9, β₂ = 0.999, ε = 1e-8 hard-coded, the Trainer
defaults); ``torch.optim.Adam`` divides by ``√v' + ε`` instead, available as ``eps_in_sqrt=False``.
LESS's g is the gradient of one example's token-mean loss; the engine's is that of the summed
completion NLL, so divide a row by its example's completion-token count first to match LESS.

The moments m, v are tensors: ``model.load_adam_moments`` reads them from a Trainer checkpoint's
``optimizer.pt``; this module reads no file.
"""

from __future__ import annotations

import torch

#: LESS's constants (also the Trainer's AdamW defaults).
LESS_BETAS = (0.9, 0.999)
LESS_EPS = 1e-8
#: Columns transformed at once, to bound the temporaries of a (B, D) block.
_CHUNK_COLUMNS = 1 << 20


def compute_adam_update(
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    betas: tuple[float, float] = LESS_BETAS,
    eps: float = LESS_EPS,
    eps_in_sqrt: bool = True,
) -> torch.Tensor:
    """The Adam update direction of each gradient row: ``m' / √(v' + ε)`` (see module docstring).

    Args:
        grads: ``(B, D)`` per-example gradients, or one ``(D,)`` gradient.
        exp_avg: ``(D,)`` first moments m, in the gradient's column order.
        exp_avg_sq: ``(D,)`` second moments v (non-negative).
        betas: ``(β₁, β₂)``.
        eps: ε.
        eps_in_sqrt: ``True``: ``√(v' + ε)`` as LESS; ``False``: ``√v' + ε`` as torch's Adam.

    Returns:
        Tensor of ``grads``' shape, in float32 (float64 for float64 gradients).
    """
    if exp_avg.shape != exp_avg_sq.shape or exp_avg.ndim != 1:
        raise ValueError("exp_avg and exp_avg_sq must be 1-D and of one shape")
    if grads.shape[-1] != exp_avg.shape[0]:
        raise ValueError(f"gradient dimension {grads.shape[-1]} != moments' {exp_avg.shape[0]}")
    beta1, beta2 = betas
    dtype = torch.float64 if grads.dtype == torch.float64 else torch.float32
    rows = grads.reshape(-1, grads.shape[-1])
    out = torch.empty(rows.shape, dtype=dtype, device=grads.device)
    for start in range(0, rows.shape[1], _CHUNK_COLUMNS):
        cols = slice(start, start + _CHUNK_COLUMNS)
        g = rows[:, cols].to(dtype)
        m = exp_avg[cols].to(device=g.device, dtype=dtype)
        v = exp_avg_sq[cols].to(device=g.device, dtype=dtype)
        m_new = beta1 * m + (1 - beta1) * g
        v_new = beta2 * v + (1 - beta2) * g.square()
        denom = (v_new + eps).sqrt() if eps_in_sqrt else v_new.sqrt() + eps
        out[:, cols] = m_new / denom
    return out.reshape(grads.shape)
