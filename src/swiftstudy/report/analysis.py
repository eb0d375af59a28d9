"""What a report says: the statistics of a study's saved tables, its diagnostics and its rules.

``analyze_study`` runs ``swiftstudy.scores.statistics`` on the tables rebuilt from a result folder
and summarises the gradient norms; ``describe_analysis`` turns the result into the plain data of
``verdicts.json``. The rules are stated once here, for the JSON file and the report alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from swiftstudy.constants import (
    CONCENTRATION_MIN_PAIRS,
    CONCENTRATION_SHARE,
    CONCENTRATION_TOP_FRACTION,
    MIN_VALID_RESAMPLE_SHARE,
)
from swiftstudy.report.results import StudyTables, build_metric_pairs
from swiftstudy.report.verdicts import (
    VerdictAnalysis,
    analyze_verdicts,
    describe_difference,
    describe_verdicts,
)
from swiftstudy.scores import (
    BootstrapSettings,
    Comparison,
    MetricPairs,
    MetricStatistics,
    SeriesSummary,
    StudyStatistics,
    compute_rank_correlation,
    compute_study_statistics,
)
from swiftstudy.scores.statistics import TREND_METHOD

INTERVAL_METHOD = (
    "two-way percentile bootstrap: probes and evaluation examples are resampled independently "
    "with replacement (each set once per resample, shared by every metric and checkpoint), the "
    "mean RelInf is recomputed over the resampled pairs, and the interval is the central "
    "{level:.0%} of {n_resamples} resamples (seed {seed}). An interval needs pairs from at least "
    f"two probes and two evaluation examples, and at least {MIN_VALID_RESAMPLE_SHARE:.0%} of "
    "resamples with a pair."
)
RULES = {
    "verdict": "positive and significant if the interval's lower bound is above 0; negative if "
    "its upper bound is below 0; otherwise not distinguishable from 0",
    "overall": "a metric's verdict is that of its mean over all checkpoints (each weighted "
    "equally), with the interval from the same resamples",
    "fraction_positive": "the share of checkpoints whose interval lies above 0",
    "trend": TREND_METHOD + "; rising / falling when that interval excludes 0",
    "overtake": "A exceeds B from step s when A > B at s and at every later checkpoint (point "
    "estimates); significantly when the interval of A − B lies above 0 from s to the end",
    "comparison": "metrics with the same evaluation set and context but different probe sets "
    "are compared, the one listed first in the spec minus the other",
    "concentration": f"a metric is driven by a few pairs at a checkpoint when its top "
    f"{CONCENTRATION_TOP_FRACTION:.0%} of pairs by |RelInf| (rounded up) carry more than "
    f"{CONCENTRATION_SHARE:.0%} of its sum of |RelInf| (checked from {CONCENTRATION_MIN_PAIRS} "
    "pairs)",
    "gradient_norms": "ℓ sums the completion tokens' losses, so longer completions tend to have "
    "larger gradients, and RelInf grows with the probe's gradient norm; Spearman's ρ between "
    "completion tokens and gradient norm, per set and checkpoint",
}
NO_NORMS_NOTE = (
    "norms.csv is missing (a result folder from before it existed): the gradient-norm "
    "diagnostic is skipped. Rerun the study to get it."
)


@dataclass(frozen=True)
class NormSummary:
    """The gradient norms of one set at one checkpoint.

    Attributes:
        step: The checkpoint's step.
        set: The set's name.
        n_examples: Examples in the set.
        median_tokens: Median completion tokens.
        median_norm: Median gradient norm ‖∇ℓ‖.
        rank_correlation: Spearman's ρ between completion tokens and gradient norm (None when
            undefined: fewer than three examples, or a constant).
        n_zero: Examples whose gradient is zero.
    """

    step: int
    set: str
    n_examples: int
    median_tokens: float
    median_norm: float
    rank_correlation: float | None
    n_zero: int


@dataclass(frozen=True)
class ReportAnalysis:
    """The tables of a study and everything computed from them for its report.

    Attributes:
        tables: The saved tables.
        pairs: Each metric's RelInf matrices and pair masks, rebuilt from the tables.
        statistics: Intervals, verdicts, trends and comparisons.
        norms: Gradient-norm summaries per checkpoint and set; None without ``norms.csv``.
        verdicts: Every scoring variant, the control margins and the headlines.
    """

    tables: StudyTables
    pairs: tuple[MetricPairs, ...]
    statistics: StudyStatistics
    norms: tuple[NormSummary, ...] | None
    verdicts: VerdictAnalysis


def analyze_study(tables: StudyTables, settings: BootstrapSettings | None = None) -> ReportAnalysis:
    """The statistics of every metric and comparison, the scoring variants and headlines, and
    the gradient-norm summaries."""
    pairs = tuple(build_metric_pairs(tables))
    statistics = compute_study_statistics(pairs, settings)
    verdicts = analyze_verdicts(tables, statistics)
    return ReportAnalysis(tables, pairs, statistics, _summarize_norms(tables), verdicts)


def _summarize_norms(tables: StudyTables) -> tuple[NormSummary, ...] | None:
    if tables.norms is None:
        return None
    groups: dict[tuple[int, str], list[tuple[int, float]]] = {}
    for record in tables.norms:
        groups.setdefault((record.step, record.set), []).append(
            (record.n_completion_tokens, math.sqrt(max(record.sqnorm, 0.0)))
        )
    summaries = []
    for (step, name), rows in sorted(groups.items(), key=lambda item: item[0][0]):
        tokens = np.array([t for t, _ in rows], dtype=np.float64)
        norms = np.array([n for _, n in rows])
        summaries.append(
            NormSummary(
                step=step,
                set=name,
                n_examples=len(rows),
                median_tokens=float(np.median(tokens)),
                median_norm=float(np.median(norms)),
                rank_correlation=compute_rank_correlation(tokens, norms),
                n_zero=int((norms == 0).sum()),
            )
        )
    return tuple(summaries)


# -- verdicts.json --------------------------------------------------------------------------


def describe_analysis(analysis: ReportAnalysis) -> dict[str, Any]:
    """The content of ``verdicts.json``: settings, rules, the headlines against controls, every
    scoring variant, verdicts, comparisons, diagnostics."""
    settings = analysis.statistics.settings
    return {
        "bootstrap": {"method": INTERVAL_METHOD.format(**asdict(settings)), **asdict(settings)},
        "rules": RULES,
        **describe_verdicts(analysis.verdicts, analysis.tables),
        "metrics": [_describe_metric(m) for m in analysis.statistics.metrics],
        "comparisons": [_describe_comparison(c) for c in analysis.statistics.comparisons],
        "diagnostics": {
            "gradient_norms": None
            if analysis.norms is None
            else [asdict(summary) for summary in analysis.norms],
            "note": NO_NORMS_NOTE if analysis.norms is None else None,
        },
    }


def _describe_summary(summary: SeriesSummary) -> dict[str, Any]:
    trend = summary.trend
    return {
        "verdict": summary.mean_over_steps.verdict,
        "mean_over_steps": asdict(summary.mean_over_steps),
        "fraction_positive": summary.fraction_positive,
        "trend": None
        if trend is None
        else {
            "slope_per_step": trend.slope,
            "ci_low": trend.ci_low,
            "ci_high": trend.ci_high,
            "verdict": trend.verdict,
            "method": TREND_METHOD,
        },
    }


def _describe_metric(metric: MetricStatistics) -> dict[str, Any]:
    return {
        "metric": metric.name,
        "probes": metric.probes,
        "evals": metric.evals,
        "context": metric.context,
        **_describe_summary(metric.summary),
        "steps": [
            {
                "step": s.step,
                **asdict(s.estimate),
                "n_pairs": s.n_pairs,
                "top_pairs": s.concentration.n_top,
                "top_share": s.concentration.top_share,
                "value_without_top": s.concentration.value_without_top,
                "driven_by_few_pairs": s.concentration.concentrated,
            }
            for s in metric.steps
        ],
    }


def _describe_comparison(comparison: Comparison) -> dict[str, Any]:
    return describe_difference(
        (comparison.metric, "baseline", comparison.baseline, "baseline"),
        {
            **_describe_summary(comparison.summary),
            "metric_above_from_step": comparison.metric_above_from,
            "baseline_above_from_step": comparison.baseline_above_from,
            "metric_significantly_above_from_step": comparison.metric_significantly_above_from,
            "baseline_significantly_above_from_step": comparison.baseline_significantly_above_from,
        },
        [(step, asdict(e)) for step, e in comparison.steps],
    )
