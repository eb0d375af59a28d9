"""Which probes drive a metric: each probe's mean RelInf, and the probes that help and hurt most.

A metric is the mean RelInf over its (probe, eval) pairs at each checkpoint, then the mean over
checkpoints, each weighted equally. A probe p's share of it is the same mean over p's pairs alone,

    m_p = 1/|S_p| Σ_{s ∈ S_p} 1/|E_{s,p}| Σ_{e ∈ E_{s,p}} RelInf_s(p, e),

with S_p the checkpoints where p has a used pair and E_{s,p} its used eval examples there. When
every probe has as many pairs at every checkpoint, the metric's mean over checkpoints is the mean
of the m_p, so the probes with the largest m_p help it most and those with the most negative m_p
hurt it most; how many probes lie on each side tells whether a few probes or all of them set the
sign. Each (probe, eval) pair's mean over the checkpoints where it is used says which eval examples
a probe moves the most (by |mean|).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeInfluence:
    """Each probe's mean RelInf and the probes that move a metric most.

    Attributes:
        means: ``(P,)`` m_p (module docstring); NaN for a probe without a used pair.
        n_pairs: ``(P,)`` used (checkpoint, eval) pairs of each probe.
        pair_means: ``(P, E)`` each pair's mean RelInf over the checkpoints where it is used;
            NaN for a pair never used.
        helping: Indices of up to ``k`` probes with m_p > 0, largest first.
        hurting: Indices of up to ``k`` probes with m_p < 0, most negative first.
        top_evals: ``(P, n_evals)`` for each probe, the eval indices with the largest
            |pair_means|, largest first; -1 where the probe has fewer used evals.
    """

    means: np.ndarray
    n_pairs: np.ndarray
    pair_means: np.ndarray
    helping: np.ndarray
    hurting: np.ndarray
    top_evals: np.ndarray

    @property
    def n_helping(self) -> int:
        """Probes with m_p > 0."""
        return int(np.sum(self.means > 0))

    @property
    def n_hurting(self) -> int:
        """Probes with m_p < 0."""
        return int(np.sum(self.means < 0))


def compute_probe_influence(
    relinf: np.ndarray, used: np.ndarray, k: int, n_evals: int = 2
) -> ProbeInfluence:
    """Each probe's mean RelInf over checkpoints and eval examples, and the top probes.

    Args:
        relinf: ``(S, P, E)`` RelInf at each of S checkpoints; entries outside ``used`` ignored.
        used: ``(S, P, E)`` bool, the pairs the metric averages over.
        k: Most probes listed as helping, and as hurting.
        n_evals: Eval examples listed per probe.

    Returns:
        The means, pair counts, per-pair means and the rankings; ties keep probe (eval) order.
    """
    relinf = np.asarray(relinf, dtype=np.float64)
    used = np.asarray(used, dtype=bool)
    if relinf.shape != used.shape or relinf.ndim != 3:
        raise ValueError(f"expected two (S, P, E) arrays, got {relinf.shape} and {used.shape}")
    values = np.where(used, relinf, 0.0)
    counts = used.sum(axis=2)  # (S, P)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_step = values.sum(axis=2) / counts  # (S, P), NaN where a probe has no pair
        steps = (counts > 0).sum(axis=0)  # (P,)
        means = np.where(steps > 0, np.nansum(per_step, axis=0) / steps, np.nan)
        pair_counts = used.sum(axis=0)  # (P, E)
        pair_means = np.where(pair_counts > 0, values.sum(axis=0) / pair_counts, np.nan)
    order = np.argsort(-np.nan_to_num(means, nan=0.0), kind="stable")
    helping = np.array([p for p in order if means[p] > 0][:k], dtype=np.int64)
    order = np.argsort(np.nan_to_num(means, nan=0.0), kind="stable")
    hurting = np.array([p for p in order if means[p] < 0][:k], dtype=np.int64)
    return ProbeInfluence(
        means=means,
        n_pairs=counts.sum(axis=0),
        pair_means=pair_means,
        helping=helping,
        hurting=hurting,
        top_evals=_top_evals(pair_means, n_evals),
    )


def _top_evals(pair_means: np.ndarray, n: int) -> np.ndarray:
    """For each probe, the ``n`` evals with the largest |pair mean| (NaN last), -1 padded."""
    size = np.where(np.isnan(pair_means), -1.0, np.abs(pair_means))
    order = np.argsort(-size, axis=1, kind="stable")[:, :n]
    taken = np.take_along_axis(size, order, axis=1)
    top = np.where(taken >= 0, order, -1)
    if top.shape[1] < n:  # fewer evals than asked for
        top = np.pad(top, ((0, 0), (0, n - top.shape[1])), constant_values=-1)
    return top.astype(np.int64)
