"""Statistics of RelInf metrics: bootstrap intervals, verdicts, trends, overtakes, diagnostics.

The gradients are exact; the uncertainty is in which examples were drawn. A metric is a mean over
(probe, eval) pairs that share examples (the pairs of probe i all share probe i), so the pairs are
not independent. The two-way ("pigeonhole") bootstrap of Owen (2007, Ann. Appl. Stat. 1(2),
"The pigeonhole bootstrap") resamples probes and evaluation examples independently, with
replacement, and recomputes the mean over the resampled pairs. With c_i the number of times probe
i is drawn and d_j the same for evaluation example j,

    m* = Σ_ij c_i d_j M_ij R_ij / Σ_ij c_i d_j M_ij,

where R is the RelInf matrix and M the metric's pair mask (in-task or cross-task, without the
evaluation examples whose gradient is zero). Drawing a probe draws its row of R and of M together,
so a resample keeps the data's in-task / cross-task pairing. The interval is the percentile
interval of m* (2.5th and 97.5th percentiles for 95%). Counting the pairs of one example once per
draw makes it conservative (Owen 2007), most for in-task metrics, where an example has few pairs.

Counts are drawn once per example set, seeded by ``(seed, set name)``, and shared by every metric
and checkpoint, so differences between metrics and trends over steps are resampled consistently.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from swiftstudy.constants import (
    CONCENTRATION_MIN_PAIRS,
    CONCENTRATION_SHARE,
    CONCENTRATION_TOP_FRACTION,
    DEFAULT_BOOTSTRAP_RESAMPLES,
    DEFAULT_BOOTSTRAP_SEED,
    DEFAULT_CONFIDENCE_LEVEL,
    MIN_VALID_RESAMPLE_SHARE,
    VERDICT_NEGATIVE,
    VERDICT_NO_INTERVAL,
    VERDICT_POSITIVE,
    VERDICT_UNCLEAR,
)

#: How the interval of a trend's slope is computed (stated in the report).
TREND_METHOD = "least-squares slope over step; interval from the same two-way bootstrap"


@dataclass(frozen=True)
class BootstrapSettings:
    """How intervals are computed.

    Attributes:
        n_resamples: Bootstrap resamples (B).
        seed: Makes the resamples, hence every interval, reproducible.
        level: Coverage of the percentile intervals.
    """

    n_resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES
    seed: int = DEFAULT_BOOTSTRAP_SEED
    level: float = DEFAULT_CONFIDENCE_LEVEL

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, not {self.n_resamples}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be between 0 and 1, not {self.level}")


@dataclass(frozen=True)
class PairMatrix:
    """A metric's pairs at one checkpoint.

    Attributes:
        step: The checkpoint's training step.
        relinf: ``(P, E)`` RelInf of every probe (row) and evaluation example (column) of the two
            sets, in set order; entries outside ``used`` are ignored.
        used: ``(P, E)`` bool, the pairs the metric averages over.
    """

    step: int
    relinf: np.ndarray
    used: np.ndarray


@dataclass(frozen=True)
class MetricPairs:
    """A metric and its pairs at every checkpoint, in step order."""

    name: str
    probes: str
    evals: str
    context: str
    matrices: tuple[PairMatrix, ...]


@dataclass(frozen=True)
class Estimate:
    """A value, its interval (None: no interval) and the verdict the interval gives."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str


_NO_VALUE = Estimate(None, None, None, VERDICT_NO_INTERVAL)


@dataclass(frozen=True)
class Trend:
    """The least-squares slope of a series over step (per step), with its interval."""

    slope: float
    ci_low: float | None
    ci_high: float | None
    verdict: str


@dataclass(frozen=True)
class Concentration:
    """How much of a metric's Σ|RelInf| its largest pairs carry.

    Attributes:
        n_pairs: Pairs of the metric.
        n_top: ⌈top fraction × n_pairs⌉, the pairs with the largest |RelInf|.
        top_share: Their share of Σ|RelInf| (0 when every RelInf is 0).
        value_without_top: The mean over the other pairs (None when none is left).
        concentrated: ``n_pairs`` is at least the minimum and ``top_share`` exceeds the share.
    """

    n_pairs: int
    n_top: int
    top_share: float
    value_without_top: float | None
    concentrated: bool


@dataclass(frozen=True)
class StepStatistics:
    """A metric at one checkpoint."""

    step: int
    estimate: Estimate
    n_pairs: int
    concentration: Concentration


@dataclass(frozen=True)
class SeriesSummary:
    """A series over checkpoints.

    Attributes:
        mean_over_steps: The mean over the checkpoints that have a value, each weighted equally.
        fraction_positive: Share of those checkpoints whose interval lies above 0 (None: none).
        trend: The slope over step (None with fewer than two checkpoints).
    """

    mean_over_steps: Estimate
    fraction_positive: float | None
    trend: Trend | None


@dataclass(frozen=True)
class MetricStatistics:
    """Everything computed for one metric."""

    name: str
    probes: str
    evals: str
    context: str
    steps: tuple[StepStatistics, ...]
    summary: SeriesSummary


@dataclass(frozen=True)
class Comparison:
    """A metric against a baseline metric with the same evaluation set and context.

    Attributes:
        metric: The metric listed first in the spec.
        baseline: The metric it is compared with (same evals and context, other probes).
        steps: The difference metric − baseline at each checkpoint both have.
        summary: The difference over checkpoints.
        metric_above_from: First step from which metric > baseline at every later checkpoint
            (point estimates; None when it is not above at the last one).
        baseline_above_from: The same with the roles swapped.
        metric_significantly_above_from: First step from which the interval of the difference
            lies above 0 at every later checkpoint.
        baseline_significantly_above_from: First step from which it lies below 0 to the end.
    """

    metric: str
    baseline: str
    steps: tuple[tuple[int, Estimate], ...]
    summary: SeriesSummary
    metric_above_from: int | None
    baseline_above_from: int | None
    metric_significantly_above_from: int | None
    baseline_significantly_above_from: int | None


@dataclass(frozen=True)
class StudyStatistics:
    """The statistics of every metric and comparison of a study."""

    settings: BootstrapSettings
    metrics: tuple[MetricStatistics, ...]
    comparisons: tuple[Comparison, ...]


# -- building blocks ------------------------------------------------------------------------


def draw_resample_counts(n: int, settings: BootstrapSettings, key: str) -> np.ndarray:
    """``(B, n)`` int: how often each of ``n`` examples is drawn in each resample.

    Each resample draws ``n`` indices uniformly with replacement. The generator is seeded by
    ``(settings.seed, crc32(key))``, so a set's resamples do not depend on the other sets.
    """
    rng = np.random.default_rng([settings.seed, zlib.crc32(key.encode("utf-8"))])
    draws = rng.integers(0, n, size=(settings.n_resamples, n))
    offsets = np.arange(settings.n_resamples)[:, None] * n
    counts = np.bincount((draws + offsets).ravel(), minlength=settings.n_resamples * n)
    return counts.reshape(settings.n_resamples, n)


def compute_mean(relinf: np.ndarray, used: np.ndarray) -> float | None:
    """Mean RelInf over the used pairs, None when there are none."""
    used = np.asarray(used, dtype=bool)
    if not used.any():
        return None
    return float(np.asarray(relinf, dtype=np.float64)[used].mean())


def compute_resampled_means(
    relinf: np.ndarray, used: np.ndarray, probe_counts: np.ndarray, eval_counts: np.ndarray
) -> np.ndarray:
    """``(B,)`` two-way bootstrap replicates m* of a metric's mean (the module's equation).

    A replicate without any pair is NaN. Every replicate is NaN when the pairs involve fewer than
    two probes or two evaluation examples: resampling cannot show the variation along that side.
    """
    used = np.asarray(used, dtype=bool)
    if used.any(axis=1).sum() < 2 or used.any(axis=0).sum() < 2:
        return np.full(probe_counts.shape[0], np.nan)
    values = np.where(used, np.asarray(relinf, dtype=np.float64), 0.0)
    pc = probe_counts.astype(np.float64)
    ec = eval_counts.astype(np.float64)
    numerator = ((pc @ values) * ec).sum(axis=1)
    denominator = ((pc @ used.astype(np.float64)) * ec).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def compute_percentile_interval(
    replicates: np.ndarray, level: float = DEFAULT_CONFIDENCE_LEVEL
) -> tuple[float | None, float | None]:
    """The percentile interval of bootstrap replicates, ignoring NaN ones.

    Returns ``(None, None)`` when fewer than ``MIN_VALID_RESAMPLE_SHARE`` of them are finite.
    """
    replicates = np.asarray(replicates, dtype=np.float64)
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0 or finite.size < MIN_VALID_RESAMPLE_SHARE * replicates.size:
        return None, None
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def decide_verdict(ci_low: float | None, ci_high: float | None) -> str:
    """Positive and significant if ci_low > 0, negative if ci_high < 0, else indistinguishable."""
    if ci_low is None or ci_high is None:
        return VERDICT_NO_INTERVAL
    if ci_low > 0:
        return VERDICT_POSITIVE
    if ci_high < 0:
        return VERDICT_NEGATIVE
    return VERDICT_UNCLEAR


def compute_estimate(value: float | None, replicates: np.ndarray, level: float) -> Estimate:
    """A value with the percentile interval of its replicates and the verdict."""
    if value is None or not math.isfinite(value):
        return _NO_VALUE
    low, high = compute_percentile_interval(replicates, level)
    return Estimate(value, low, high, decide_verdict(low, high))


def compute_slope(steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slopes of ``values`` (``(S,)`` or ``(B, S)``) over ``steps`` (``(S,)``)."""
    x = np.asarray(steps, dtype=np.float64)
    dx = x - x.mean()
    y = np.asarray(values, dtype=np.float64)
    return (y - y.mean(axis=-1, keepdims=True)) @ dx / (dx @ dx)


def find_lasting_step(steps: Sequence[int], holds: Sequence[bool]) -> int | None:
    """The first step from which ``holds`` is true at every later step; None if not at the end."""
    first = None
    for step, ok in zip(reversed(steps), reversed(holds), strict=True):
        if not ok:
            break
        first = step
    return first


def compute_concentration(values: np.ndarray) -> Concentration:
    """Whether a few pairs drive a metric: the top ``CONCENTRATION_TOP_FRACTION`` of pairs by
    |RelInf| carry more than ``CONCENTRATION_SHARE`` of Σ|RelInf| (checked from
    ``CONCENTRATION_MIN_PAIRS`` pairs)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = values.size
    # The tolerance keeps 0.1 × 30 = 3.0000000000000004 at 3 pairs.
    n_top = math.ceil(CONCENTRATION_TOP_FRACTION * n - 1e-9) if n else 0
    order = np.argsort(-np.abs(values), kind="stable")
    total = float(np.abs(values).sum())
    top_share = float(np.abs(values[order[:n_top]]).sum()) / total if total > 0 else 0.0
    rest = values[order[n_top:]]
    return Concentration(
        n_pairs=n,
        n_top=n_top,
        top_share=top_share,
        value_without_top=float(rest.mean()) if rest.size else None,
        concentrated=n >= CONCENTRATION_MIN_PAIRS and top_share > CONCENTRATION_SHARE,
    )


def compute_rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get their average rank); None for < 3 points or a
    constant variable."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size != y.size:
        raise ValueError("x and y differ in length")
    if x.size < 3:
        return None
    rx, ry = _average_ranks(x), _average_ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float(dx @ dx) * float(dy @ dy))
    # Clamped: rounding can push a perfect correlation a hair past ±1.
    return max(-1.0, min(1.0, float(dx @ dy) / norm)) if norm > 0 else None


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def find_comparisons(metrics: Sequence[MetricPairs]) -> list[tuple[int, int]]:
    """Index pairs (metric, baseline): same evaluation set and context, different probe sets.

    The metric listed first is the one compared (list a strategy before its baseline).
    """
    return [
        (i, j)
        for (i, a), (j, b) in itertools.combinations(enumerate(metrics), 2)
        if a.evals == b.evals and a.context == b.context and a.probes != b.probes
    ]


# -- a whole study --------------------------------------------------------------------------


def compute_study_statistics(
    metrics: Sequence[MetricPairs], settings: BootstrapSettings | None = None
) -> StudyStatistics:
    """Intervals, verdicts, trends, comparisons and concentration of every metric.

    Args:
        metrics: Each metric's pair matrices in step order; metrics that name the same set must
            agree on its size.
        settings: Resamples, seed and level; the defaults when None.

    Returns:
        The statistics, deterministic for given inputs and settings.
    """
    settings = settings or BootstrapSettings()
    series = compute_metric_series(metrics, settings)
    stats = tuple(
        _metric_statistics(metric, values, replicates, settings.level)
        for metric, (values, replicates) in zip(metrics, series, strict=True)
    )
    comparisons = tuple(
        _comparison(metrics[i], metrics[j], series[i], series[j], settings.level)
        for i, j in find_comparisons(metrics)
    )
    return StudyStatistics(settings, stats, comparisons)


def compute_metric_series(
    metrics: Sequence[MetricPairs], settings: BootstrapSettings | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each metric's means ``(S,)`` per checkpoint and their bootstrap replicates ``(B, S)``.

    The resample counts are drawn once per set name (``draw_resample_counts``) and shared by every
    metric, so any difference or weighted combination of these series is resampled consistently.
    A checkpoint without pairs has the value NaN.
    """
    settings = settings or BootstrapSettings()
    counts = _draw_set_counts(metrics, settings)
    series = []
    for metric in metrics:
        means = [compute_mean(m.relinf, m.used) for m in metric.matrices]
        values = np.array(means, dtype=np.float64)  # None (no pairs) becomes NaN
        probe_counts, eval_counts = counts[metric.probes], counts[metric.evals]
        replicates = np.stack(
            [
                compute_resampled_means(m.relinf, m.used, probe_counts, eval_counts)
                for m in metric.matrices
            ],
            axis=1,
        ).reshape(settings.n_resamples, len(metric.matrices))
        series.append((values, replicates))
    return series


def compute_difference_series(
    a: MetricPairs,
    b: MetricPairs,
    series_a: tuple[np.ndarray, np.ndarray],
    series_b: tuple[np.ndarray, np.ndarray],
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The series of A − B at the steps both have: ``(steps, values (S,), replicates (B, S))``.

    ``series_a`` and ``series_b`` come from one call of ``compute_metric_series``, so the
    difference of each resample is paired (the same probes and evaluation examples drawn).
    """
    steps_a = [m.step for m in a.matrices]
    steps_b = [m.step for m in b.matrices]
    steps = [s for s in steps_a if s in set(steps_b)]
    ka = [steps_a.index(s) for s in steps]
    kb = [steps_b.index(s) for s in steps]
    return steps, series_a[0][ka] - series_b[0][kb], series_a[1][:, ka] - series_b[1][:, kb]


def _draw_set_counts(
    metrics: Sequence[MetricPairs], settings: BootstrapSettings
) -> dict[str, np.ndarray]:
    sizes: dict[str, int] = {}
    for metric in metrics:
        for matrix in metric.matrices:
            p, e = np.shape(matrix.relinf)
            if np.shape(matrix.used) != (p, e):
                raise ValueError(f"{metric.name}: relinf and used differ in shape")
            for name, n in ((metric.probes, p), (metric.evals, e)):
                if sizes.setdefault(name, n) != n:
                    raise ValueError(f"set {name!r} has {sizes[name]} examples and {n}")
    return {name: draw_resample_counts(n, settings, name) for name, n in sizes.items()}


def _summarize(
    steps: Sequence[int], values: np.ndarray, replicates: np.ndarray, level: float
) -> tuple[tuple[Estimate, ...], SeriesSummary]:
    """Per-step estimates and the summary of one series (values ``(S,)``, replicates ``(B, S)``)."""
    estimates = tuple(
        compute_estimate(float(v), replicates[:, k], level) for k, v in enumerate(values)
    )
    have = np.isfinite(values)
    if not have.any():
        return estimates, SeriesSummary(_NO_VALUE, None, None)
    mean = compute_estimate(float(values[have].mean()), replicates[:, have].mean(axis=1), level)
    positive = sum(e.ci_low is not None and e.ci_low > 0 for e in estimates)
    trend = None
    x = np.asarray(steps, dtype=np.float64)[have]
    if np.unique(x).size >= 2:
        slope = float(compute_slope(x, values[have]))
        low, high = compute_percentile_interval(compute_slope(x, replicates[:, have]), level)
        trend = Trend(slope, low, high, decide_verdict(low, high))
    return estimates, SeriesSummary(mean, positive / int(have.sum()), trend)


def _metric_statistics(
    metric: MetricPairs, values: np.ndarray, replicates: np.ndarray, level: float
) -> MetricStatistics:
    steps = [m.step for m in metric.matrices]
    estimates, summary = _summarize(steps, values, replicates, level)
    per_step = tuple(
        StepStatistics(
            step=m.step,
            estimate=estimate,
            n_pairs=int(np.count_nonzero(m.used)),
            concentration=compute_concentration(
                np.asarray(m.relinf, dtype=np.float64)[np.asarray(m.used, dtype=bool)]
            ),
        )
        for m, estimate in zip(metric.matrices, estimates, strict=True)
    )
    return MetricStatistics(
        metric.name, metric.probes, metric.evals, metric.context, per_step, summary
    )


def _comparison(
    a: MetricPairs,
    b: MetricPairs,
    series_a: tuple[np.ndarray, np.ndarray],
    series_b: tuple[np.ndarray, np.ndarray],
    level: float,
) -> Comparison:
    steps, values, replicates = compute_difference_series(a, b, series_a, series_b)
    estimates, summary = _summarize(steps, values, replicates, level)
    # a − b > 0 exactly when a > b (IEEE subtraction keeps the sign; NaN, no value, is neither),
    # so metric_above_from is where a overtakes b for good (a missing value breaks the run).
    return Comparison(
        metric=a.name,
        baseline=b.name,
        steps=tuple(zip(steps, estimates, strict=True)),
        summary=summary,
        metric_above_from=find_lasting_step(steps, values > 0),
        baseline_above_from=find_lasting_step(steps, values < 0),
        metric_significantly_above_from=find_lasting_step(
            steps, [e.verdict == VERDICT_POSITIVE for e in estimates]
        ),
        baseline_significantly_above_from=find_lasting_step(
            steps, [e.verdict == VERDICT_NEGATIVE for e in estimates]
        ),
    )
