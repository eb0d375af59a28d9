"""In-task and cross-task scores: means of RelInf over (probe, eval) pairs.

A pair is in-task when the probe's and the evaluation example's ``task`` are equal, cross-task
otherwise; ``all`` takes every pair. With one example per task in each set, aligned by task,
these are the paper's eq. 4, s_in = 1/n Σ_i RelInf(z'_i, z_i), and eq. 5,
s_cross = Σ_{i≠j} RelInf(z'_i, z_j) / n(n−1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from swiftstudy.constants import CONTEXT_ALL, CONTEXT_CROSS_TASK, CONTEXT_IN_TASK


@dataclass(frozen=True)
class MetricValue:
    """A metric at one checkpoint.

    Attributes:
        value: Mean RelInf over the metric's pairs (NaN only when ``n_pairs`` is 0).
        n_pairs: Pairs averaged.
        n_excluded_evals: Evaluation examples left out because their gradient is zero.
    """

    value: float
    n_pairs: int
    n_excluded_evals: int


def compute_pair_mask(
    probe_tasks: Sequence[str], eval_tasks: Sequence[str], context: str
) -> torch.Tensor:
    """``(P, E)`` bool mask of the pairs a context averages over."""
    same = torch.tensor(
        [[p == e for e in eval_tasks] for p in probe_tasks], dtype=torch.bool
    ).reshape(len(probe_tasks), len(eval_tasks))
    if context == CONTEXT_IN_TASK:
        return same
    if context == CONTEXT_CROSS_TASK:
        return ~same
    if context == CONTEXT_ALL:
        return torch.ones_like(same)
    raise ValueError(f"unknown context {context!r}")


def aggregate_metric(
    relinf: torch.Tensor, valid_evals: torch.Tensor, pairs: torch.Tensor
) -> MetricValue:
    """Mean RelInf over the chosen pairs, leaving out evaluation examples with a zero gradient.

    Args:
        relinf: ``(P, E)`` RelInf values.
        valid_evals: ``(E,)`` False for evaluation examples with a zero gradient.
        pairs: ``(P, E)`` bool mask from :func:`compute_pair_mask`.

    Returns:
        The metric's value, its number of pairs and how many evaluation examples were left out.
    """
    used = pairs & valid_evals.unsqueeze(0)
    excluded = int((pairs.any(dim=0) & ~valid_evals).sum())
    n = int(used.sum())
    value = float(relinf[used].to(torch.float64).mean()) if n else float("nan")
    return MetricValue(value=value, n_pairs=n, n_excluded_evals=excluded)
