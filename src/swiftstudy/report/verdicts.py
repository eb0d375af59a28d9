"""The headline verdicts of a study: every scoring variant, and each strategy against its control.

``analyze_verdicts`` rebuilds every metric's pair scores under each normalisation
(``results.build_metric_pairs``), combines the checkpoints under each weighting and computes each
control margin (``scores.compute_variant_scores``, the same resamples as every other interval).
The headline of a metric with a control is its margin under the spec's ``verdict`` variant:
"helps more than", "no better than" or "worse than" the control. ``describe_verdicts`` is the
part of ``verdicts.json`` that records them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from swiftstudy.constants import (
    CHECKPOINT_WEIGHTINGS,
    DEFAULT_VERDICT_VARIANT,
    NORMALIZATION_COSINE,
    NORMALIZATION_RELINF,
    NORMALIZATIONS,
    NORMS_CSV,
    VALIDITY_NOTE,
    WEIGHTING_LR,
    WEIGHTING_MEAN,
)
from swiftstudy.report.results import MetricDefinition, StudyTables, build_metric_pairs
from swiftstudy.scores import (
    ControlMargin,
    Estimate,
    StudyStatistics,
    VariantScores,
    compute_variant_scores,
)

#: What RelInf predicts, stated beside every headline.
RELINF_PREDICTS = (
    "RelInf predicts the change in likelihood of the reference responses of the evaluation "
    "set, not a grader's verdict: a format change such as chain of thought can lower accuracy "
    "under a strict grader and raise it under a lenient one."
)
VARIANT_RULES = {
    "normalizations": "relinf: ⟨p, e⟩ / ‖e‖² (the paper's); cosine: ⟨p, e⟩ / (‖p‖ ‖e‖); "
    "per-token: RelInf of gradients each divided by its completion token count, "
    "⟨p, e⟩ n_e / (n_p ‖e‖²)",
    "checkpoints": "mean: equal weights; last: the last checkpoint; lr: weights proportional to "
    "the mean logged learning rate over the steps since the previous checkpoint "
    "(trainer_state.json, as in TracInCP and LESS)",
    "control": "a strategy's margin is its metric minus its control's (same evaluation set and "
    "context, the control's probes), combined over checkpoints with the variant's weights; its "
    "interval comes from the same resamples. Headline: 'helps more than <control>' when the "
    "interval lies above 0, 'worse than <control>' below 0, otherwise 'no better than <control>'",
}


@dataclass(frozen=True)
class Headline:
    """A strategy metric against its control under the headline variant.

    Attributes:
        metric: The strategy's metric.
        probes: Its probe set.
        control: The control's probe set.
        control_metric: The control's metric.
        relinf: The raw RelInf mean over checkpoints (the paper's score, always shown).
        margin: The margin over the control under the headline variant.
    """

    metric: str
    probes: str
    control: str
    control_metric: str
    relinf: Estimate
    margin: ControlMargin


@dataclass(frozen=True)
class VerdictAnalysis:
    """Every variant of every metric, and the headlines.

    Attributes:
        variant: The headline's ``(normalization, checkpoints)``.
        variants: ``(normalization, scores)`` for every variant computed.
        headlines: One per metric with a control, in metric order.
        notes: Why a variant was not computed, or why the headline uses another variant.
    """

    variant: tuple[str, str]
    variants: tuple[tuple[str, VariantScores], ...]
    headlines: tuple[Headline, ...]
    notes: tuple[str, ...]


def find_control_metrics(metrics: tuple[MetricDefinition, ...]) -> dict[str, str]:
    """Strategy metric name → its control's metric name (same evals and context)."""
    # Reversed: when two metrics share probes, evals and context, the first one is the control.
    by_sets = {(m.probes, m.evals, m.context): m.name for m in reversed(metrics)}
    controls = {m.name: (m.control, m.evals, m.context) for m in metrics if m.control is not None}
    return {name: by_sets[sets] for name, sets in controls.items() if sets in by_sets}


def analyze_verdicts(tables: StudyTables, statistics: StudyStatistics) -> VerdictAnalysis:
    """Every scoring variant of every metric, each control margin, and the headlines."""
    notes = []
    normalizations = list(NORMALIZATIONS)
    if tables.norms is None:
        normalizations.remove(NORMALIZATION_COSINE)
        notes.append(f"cosine is not computed: the folder has no {NORMS_CSV}.")
    weightings = list(CHECKPOINT_WEIGHTINGS)
    if tables.learning_rates is None:
        weightings.remove(WEIGHTING_LR)
        notes.append(
            "lr weighting is not computed: config.yaml has no learning rate for every checkpoint "
            "(no trainer_state.json)."
        )
    controls = find_control_metrics(tables.metrics)
    variants = tuple(
        (normalization, scores)
        for normalization in normalizations
        for scores in compute_variant_scores(
            build_metric_pairs(tables, normalization),
            controls,
            weightings,
            tables.learning_rates,
            statistics.settings,
        )
    )
    computed = {(normalization, scores.weighting): scores for normalization, scores in variants}
    variant = tables.verdict
    if variant not in computed:
        # The default when it can be computed here, else the paper's RelInf (always available).
        fallbacks = (DEFAULT_VERDICT_VARIANT, (NORMALIZATION_RELINF, WEIGHTING_MEAN))
        fallback = next(v for v in fallbacks if v in computed)
        notes.append(
            f"The verdict variant {variant[0]} / {variant[1]} is not available here; "
            f"the headline uses {fallback[0]} / {fallback[1]}."
        )
        variant = fallback
    chosen = computed[variant]
    metrics = {m.name: m for m in tables.metrics}
    means = {m.name: m.summary.mean_over_steps for m in statistics.metrics}
    headlines = tuple(
        Headline(
            metric=margin.metric,
            probes=metrics[margin.metric].probes,
            control=metrics[margin.control].probes,
            control_metric=margin.control,
            relinf=means[margin.metric],
            margin=margin,
        )
        for margin in chosen.margins
    )
    return VerdictAnalysis(variant, variants, headlines, tuple(notes))


def describe_verdicts(analysis: VerdictAnalysis, tables: StudyTables) -> dict[str, Any]:
    """The ``headline``, ``variants`` and ``learning_rates`` entries of ``verdicts.json``."""
    return {
        "headline": {
            "normalization": analysis.variant[0],
            "checkpoints": analysis.variant[1],
            "relinf_predicts": RELINF_PREDICTS,
            "validity": VALIDITY_NOTE,
            "verdicts": [
                {
                    "metric": h.metric,
                    "probes": h.probes,
                    "control": h.control,
                    "control_metric": h.control_metric,
                    "verdict": h.margin.verdict,
                    "margin": _interval(h.margin.margin),
                    "relinf_mean_over_checkpoints": _interval(h.relinf),
                }
                for h in analysis.headlines
            ],
            "notes": list(analysis.notes),
        },
        "variant_rules": VARIANT_RULES,
        "learning_rates": None
        if tables.learning_rates is None
        else {str(step): rate for step, rate in tables.learning_rates.items()},
        "variants": [
            {
                "normalization": normalization,
                "checkpoints": scores.weighting,
                "metrics": [{"metric": name, **_interval(e)} for name, e in scores.values],
                "margins": [_describe_margin(m) for m in scores.margins],
            }
            for normalization, scores in analysis.variants
        ],
    }


def _describe_margin(margin: ControlMargin) -> dict[str, Any]:
    return describe_difference(
        (margin.metric, "control_metric", margin.control, "control"),
        {"verdict": margin.verdict, **_interval(margin.margin)},
        [(step, _interval(e)) for step, e in margin.steps],
    )


def describe_difference(
    names: tuple[str, str, str, str],
    fields: dict[str, Any],
    steps: Iterable[tuple[int, dict[str, Any]]],
) -> dict[str, Any]:
    """A difference series of ``verdicts.json``: a metric minus another, and its value by step.

    Args:
        names: The metric, the key naming the other metric, the other metric, and what the
            other is (``difference`` reads ``metric - <what>``).
        fields: The series' summary, after the names.
        steps: ``(step, its estimate's fields)`` in step order.
    """
    metric, key, other, what = names
    return {
        "metric": metric,
        key: other,
        "difference": f"metric - {what}",
        **fields,
        "steps": [{"step": step, **estimate} for step, estimate in steps],
    }


def _interval(estimate: Estimate) -> dict[str, float | None]:
    return {"value": estimate.value, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high}
