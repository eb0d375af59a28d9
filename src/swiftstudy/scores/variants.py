"""Scoring variants: pair normalisations, checkpoint weightings, and the margin over a control.

A metric is the mean of a pair score s_ij over its (probe i, eval j) pairs. From the dot product
d_ij = ⟨p_i, e_j⟩ of the probe's and the evaluation example's gradients (ℓ sums the completion
tokens' losses), their squared norms ‖p_i‖², ‖e_j‖² and completion token counts n_i, n_j:

    relinf:     s_ij = d_ij / ‖e_j‖²                     (the paper's RelInf)
    cosine:     s_ij = d_ij / (‖p_i‖ ‖e_j‖)
    per-token:  s_ij = ⟨p_i/n_i, e_j/n_j⟩ / ‖e_j/n_j‖² = d_ij n_j / (n_i ‖e_j‖²)

Evaluation examples with a zero gradient have no score and are left out of means, as in
``compute_relinf``; a probe with a zero gradient scores 0.

A metric's values v_k at checkpoints k are combined as V = Σ_k w_k v_k with Σ_k w_k = 1 over the
checkpoints that have a value: ``mean`` w_k = 1/K; ``last`` w = 1 at the last of them; ``lr``
w_k ∝ η_k, the learning rate of the training interval that ended at checkpoint k (TracInCP,
Pruthi et al. 2020; LESS, Xia et al. 2024), see ``compute_interval_learning_rates``.

A control is another probe set scored on the same evaluation examples in the same context. The
margin of a strategy over it is M = Σ_k w_k (v_k − c_k); its interval comes from the same two-way
bootstrap resamples as every other statistic (``statistics.compute_metric_series``), so strategy
and control are resampled together (paired).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from swiftstudy.constants import (
    CHECKPOINT_WEIGHTINGS,
    CONTROL_VERDICT_HELPS,
    CONTROL_VERDICT_NO_BETTER,
    CONTROL_VERDICT_WORSE,
    NORMALIZATION_COSINE,
    NORMALIZATION_RELINF,
    NORMALIZATIONS,
    WEIGHTING_LAST,
    WEIGHTING_LR,
    WEIGHTING_MEAN,
)
from swiftstudy.scores.statistics import (
    _NO_VALUE,
    BootstrapSettings,
    Estimate,
    MetricPairs,
    compute_difference_series,
    compute_estimate,
    compute_metric_series,
)


@dataclass(frozen=True)
class ControlMargin:
    """A strategy metric's margin over its control metric (strategy − control).

    Attributes:
        metric: The strategy's metric.
        control: The control's metric (same evaluation set and context, other probes).
        weighting: How the checkpoints were combined.
        steps: The margin at each checkpoint both metrics have, with its interval.
        margin: The combined margin and its interval.
        verdict: ``CONTROL_VERDICT_*`` filled with the control's probe set.
    """

    metric: str
    control: str
    weighting: str
    steps: tuple[tuple[int, Estimate], ...]
    margin: Estimate
    verdict: str


def normalize_pair_scores(
    dots: np.ndarray,
    probe_sqnorms: np.ndarray | None,
    eval_sqnorms: np.ndarray,
    probe_tokens: np.ndarray | None = None,
    eval_tokens: np.ndarray | None = None,
    normalization: str = NORMALIZATION_RELINF,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(P, E)`` pair scores of one normalisation (the module's equations).

    Args:
        dots: ``(P, E)`` ⟨p_i, e_j⟩.
        probe_sqnorms: ``(P,)`` ‖p_i‖² (needed for ``cosine``).
        eval_sqnorms: ``(E,)`` ‖e_j‖².
        probe_tokens: ``(P,)`` completion tokens n_i (needed for ``per-token``).
        eval_tokens: ``(E,)`` completion tokens n_j (needed for ``per-token``).
        normalization: One of ``NORMALIZATIONS``.

    Returns:
        ``(scores, valid)``: ``(P, E)`` float64 scores, and ``(E,)`` bool, False for evaluation
        examples with a zero gradient (their column is 0 and must be left out of means).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; one of {NORMALIZATIONS}")
    dots = np.asarray(dots, dtype=np.float64)
    eval_sqnorms = np.asarray(eval_sqnorms, dtype=np.float64)
    if dots.ndim != 2 or dots.shape[1] != eval_sqnorms.shape[0]:
        raise ValueError("dots and eval_sqnorms disagree on the number of evaluation examples")
    valid = eval_sqnorms > 0
    safe_eval = np.where(valid, eval_sqnorms, 1.0)
    if normalization == NORMALIZATION_RELINF:
        scores = dots / safe_eval
    elif normalization == NORMALIZATION_COSINE:
        probe_norms = np.sqrt(_per_row(probe_sqnorms, dots.shape[0], "probe_sqnorms"))
        safe_probe = np.where(probe_norms > 0, probe_norms, 1.0)
        scores = dots / safe_probe[:, None] / np.sqrt(safe_eval)
        scores = np.where(probe_norms[:, None] > 0, scores, 0.0)
    else:
        n_probe = _per_row(probe_tokens, dots.shape[0], "probe_tokens")
        n_eval = _per_row(eval_tokens, dots.shape[1], "eval_tokens")
        valid = valid & (n_eval > 0)
        safe_probe = np.where(n_probe > 0, n_probe, 1.0)
        scores = dots * n_eval / safe_probe[:, None] / safe_eval
        scores = np.where(n_probe[:, None] > 0, scores, 0.0)
    return np.where(valid[None, :], scores, 0.0), valid


def _per_row(values: np.ndarray | None, n: int, name: str) -> np.ndarray:
    if values is None:
        raise ValueError(f"this normalization needs {name}")
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"{name} has shape {values.shape}, expected ({n},)")
    return values


def compute_interval_learning_rates(
    checkpoint_steps: Sequence[int],
    logged_steps: Sequence[int],
    logged_learning_rates: Sequence[float],
) -> np.ndarray:
    """η_k: the learning rate of the training interval that ended at each checkpoint.

    η_k is the mean of the logged ``learning_rate`` values (``trainer_state.json``'s
    ``log_history``) at steps in (s_{k−1}, s_k], with s_0 = 0 and the checkpoints in ascending
    order. When no log entry falls in an interval (logging sparser than saving), η_k is the logged
    learning rate linearly interpolated at s_k (held constant beyond the first and last entry).

    Args:
        checkpoint_steps: The checkpoints' steps, ascending.
        logged_steps: Steps of the log entries that carry a learning rate.
        logged_learning_rates: Their learning rates.

    Returns:
        ``(K,)`` float64 learning rates, aligned with ``checkpoint_steps``.
    """
    steps = np.asarray(checkpoint_steps, dtype=np.float64)
    if np.any(np.diff(steps) <= 0):
        raise ValueError("checkpoint steps must be strictly ascending")
    x = np.asarray(logged_steps, dtype=np.float64)
    y = np.asarray(logged_learning_rates, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError("logged_steps and logged_learning_rates differ in length")
    if x.size == 0:
        raise ValueError("no logged learning rate")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    rates = np.empty(steps.size)
    previous = 0.0
    for k, step in enumerate(steps):
        inside = (x > previous) & (x <= step)
        rates[k] = y[inside].mean() if inside.any() else np.interp(step, x, y)
        previous = step
    return rates


def compute_checkpoint_weights(
    values: np.ndarray, weighting: str, learning_rates: Sequence[float] | None = None
) -> np.ndarray:
    """``(K,)`` weights w_k of a series of checkpoint values (the module's weightings).

    Checkpoints whose value is NaN (no pairs) get weight 0; the others' weights sum to 1.

    Args:
        values: ``(K,)`` the metric at each checkpoint, in step order.
        weighting: One of ``CHECKPOINT_WEIGHTINGS``.
        learning_rates: ``(K,)`` η_k, needed for ``lr``.

    Raises:
        ValueError: No checkpoint has a value, an unknown weighting, or learning rates that are
            missing, negative or all 0 where there are values.
    """
    if weighting not in CHECKPOINT_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; one of {CHECKPOINT_WEIGHTINGS}")
    have = np.isfinite(np.asarray(values, dtype=np.float64))
    if not have.any():
        raise ValueError("no checkpoint has a value")
    if weighting == WEIGHTING_MEAN:
        raw = have.astype(np.float64)
    elif weighting == WEIGHTING_LAST:
        raw = np.zeros(have.size)
        raw[np.flatnonzero(have)[-1]] = 1.0
    else:
        if learning_rates is None:
            raise ValueError("the lr weighting needs the checkpoints' learning rates")
        rates = np.asarray(learning_rates, dtype=np.float64)
        if rates.shape != have.shape:
            raise ValueError(f"{rates.size} learning rates for {have.size} checkpoints")
        if np.any(rates[have] < 0) or not np.all(np.isfinite(rates[have])):
            raise ValueError("learning rates must be finite and non-negative")
        raw = np.where(have, rates, 0.0)
        if raw.sum() <= 0:
            raise ValueError("every learning rate is 0")
    return raw / raw.sum()


def combine_checkpoints(
    values: np.ndarray, replicates: np.ndarray, weights: np.ndarray, level: float
) -> Estimate:
    """V = Σ_k w_k v_k with the percentile interval of the replicates combined the same way.

    Args:
        values: ``(K,)`` values per checkpoint (NaN where there is none).
        replicates: ``(B, K)`` their bootstrap replicates.
        weights: ``(K,)`` from ``compute_checkpoint_weights`` (0 where a value is NaN).
        level: The interval's coverage.
    """
    use = np.asarray(weights, dtype=np.float64) > 0
    w = np.asarray(weights, dtype=np.float64)[use]
    value = float(np.asarray(values, dtype=np.float64)[use] @ w)
    return compute_estimate(value, np.asarray(replicates)[:, use] @ w, level)


def compute_weighted_estimate(
    metric: MetricPairs,
    weighting: str = WEIGHTING_MEAN,
    learning_rates: Mapping[int, float] | None = None,
    settings: BootstrapSettings | None = None,
) -> Estimate:
    """A metric combined over checkpoints with a weighting, with its two-way bootstrap interval.

    With ``mean`` this is ``compute_study_statistics``'s mean over steps.

    Raises:
        ValueError: No checkpoint has a value, or ``lr`` lacks a step's learning rate.
    """
    settings = settings or BootstrapSettings()
    ((values, replicates),) = compute_metric_series([metric], settings)
    steps = [m.step for m in metric.matrices]
    return _combine(steps, values, replicates, weighting, learning_rates, settings.level)


def _combine(
    steps: Sequence[int],
    values: np.ndarray,
    replicates: np.ndarray,
    weighting: str,
    learning_rates: Mapping[int, float] | None,
    level: float,
) -> Estimate:
    """A series (and its replicates) combined over its steps with a weighting."""
    rates = None
    if weighting == WEIGHTING_LR:
        missing = [s for s in steps if learning_rates is None or s not in learning_rates]
        if missing:
            raise ValueError(f"no learning rate for step(s) {missing}")
        rates = [learning_rates[s] for s in steps]
    weights = compute_checkpoint_weights(values, weighting, rates)
    return combine_checkpoints(values, replicates, weights, level)


def decide_control_verdict(margin: Estimate, control: str) -> str:
    """The headline against ``control`` ("helps more than", "no better than", "worse than").

    Above 0: helps more; below 0: worse; containing 0, or no interval: no better.
    """
    if margin.ci_low is not None and margin.ci_low > 0:
        return CONTROL_VERDICT_HELPS.format(control=control)
    if margin.ci_high is not None and margin.ci_high < 0:
        return CONTROL_VERDICT_WORSE.format(control=control)
    return CONTROL_VERDICT_NO_BETTER.format(control=control)


def compute_control_margin(
    metric: MetricPairs,
    control: MetricPairs,
    weighting: str = WEIGHTING_MEAN,
    learning_rates: Mapping[int, float] | None = None,
    settings: BootstrapSettings | None = None,
) -> ControlMargin:
    """The margin M = Σ_k w_k (v_k − c_k) of a strategy over its control, with a paired interval.

    The resamples are those of ``compute_study_statistics`` (counts per set name, seeded by
    ``settings``), so with the ``mean`` weighting the result equals the ``Comparison`` of the two
    metrics' mean over steps.

    Args:
        metric: The strategy's pair matrices (already normalised as wanted).
        control: The control's, on the same evaluation set and context.
        weighting: One of ``CHECKPOINT_WEIGHTINGS``.
        learning_rates: Step → η_k, needed for ``lr``.
        settings: Resamples, seed and level; the defaults when None.

    Raises:
        ValueError: The two metrics differ in evaluation set or context, share the probe set,
            or ``lr`` lacks a step's learning rate. Without a checkpoint where both have a
            value, the margin has no value and the verdict is "no better than".
    """
    if metric.evals != control.evals or metric.context != control.context:
        raise ValueError(
            f"control {control.name!r} must have the evaluation set and context of {metric.name!r}"
        )
    if metric.probes == control.probes:
        raise ValueError(f"control {control.name!r} has the probes of {metric.name!r}")
    settings = settings or BootstrapSettings()
    series = compute_metric_series([metric, control], settings)
    return _margin(metric, control, series, weighting, learning_rates, settings.level)


def _margin(
    metric: MetricPairs,
    control: MetricPairs,
    series: Sequence[tuple[np.ndarray, np.ndarray]],
    weighting: str,
    learning_rates: Mapping[int, float] | None,
    level: float,
) -> ControlMargin:
    steps, values, replicates = compute_difference_series(metric, control, *series)
    margin = _NO_VALUE
    if np.isfinite(values).any():
        margin = _combine(steps, values, replicates, weighting, learning_rates, level)
    per_step = tuple(
        (step, compute_estimate(float(v), replicates[:, k], level))
        for k, (step, v) in enumerate(zip(steps, values, strict=True))
    )
    return ControlMargin(
        metric=metric.name,
        control=control.name,
        weighting=weighting,
        steps=per_step,
        margin=margin,
        verdict=decide_control_verdict(margin, control.probes),
    )


@dataclass(frozen=True)
class VariantScores:
    """Every metric of a study under one weighting (of matrices normalised one way).

    Attributes:
        weighting: How the checkpoints were combined.
        values: ``(metric name, estimate)`` in metric order; the estimate's value is None when
            the metric has no value at any checkpoint.
        margins: The margin of each metric that has a control, in the order of ``controls``.
    """

    weighting: str
    values: tuple[tuple[str, Estimate], ...]
    margins: tuple[ControlMargin, ...]


def compute_variant_scores(
    metrics: Sequence[MetricPairs],
    controls: Mapping[str, str],
    weightings: Sequence[str] = CHECKPOINT_WEIGHTINGS,
    learning_rates: Mapping[int, float] | None = None,
    settings: BootstrapSettings | None = None,
) -> tuple[VariantScores, ...]:
    """Each metric and each control margin under each weighting, from one set of resamples.

    The same as ``compute_weighted_estimate`` and ``compute_control_margin`` metric by metric,
    with each metric's series computed once.

    Args:
        metrics: Every metric's pair matrices, normalised one way.
        controls: Strategy metric name → its control metric's name (both in ``metrics``).
        weightings: The weightings to compute (``lr`` needs ``learning_rates``).
        learning_rates: Step → η_k.
        settings: Resamples, seed and level; the defaults when None.
    """
    settings = settings or BootstrapSettings()
    series = dict(
        zip((m.name for m in metrics), compute_metric_series(metrics, settings), strict=True)
    )
    by_name = {m.name: m for m in metrics}
    result = []
    for weighting in weightings:
        values = []
        for metric in metrics:
            v, replicates = series[metric.name]
            estimate = _NO_VALUE
            if np.isfinite(v).any():
                steps = [m.step for m in metric.matrices]
                estimate = _combine(steps, v, replicates, weighting, learning_rates, settings.level)
            values.append((metric.name, estimate))
        margins = tuple(
            _margin(
                by_name[name],
                by_name[control],
                (series[name], series[control]),
                weighting,
                learning_rates,
                settings.level,
            )
            for name, control in controls.items()
        )
        result.append(VariantScores(weighting, tuple(values), margins))
    return tuple(result)
