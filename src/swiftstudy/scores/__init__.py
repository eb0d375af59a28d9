"""The math of scores: dot products, RelInf and in-task / cross-task means (tensors in and out)."""

from swiftstudy.scores.aggregate import MetricValue, aggregate_metric, compute_pair_mask
from swiftstudy.scores.relinf import compute_dot_products, compute_relinf

__all__ = [
    "MetricValue",
    "aggregate_metric",
    "compute_dot_products",
    "compute_pair_mask",
    "compute_relinf",
]
