"""What the report says, section by section, built from an analysis and its saved figures.

Sections: the verdicts against controls (``headline``), the question and key findings, the verdict
table and comparisons, the figures, the pairs, the probes that drive each metric (``drivers``),
the diagnostics; then the reference sections from
``reference``: the set-up (model, gradients, checkpoints, sets), the method and rules, and how to
reproduce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from swiftstudy.constants import (
    CONCENTRATION_TOP_FRACTION,
    CONTEXT_IN_TASK,
    VERDICT_NEGATIVE,
    VERDICT_NO_INTERVAL,
    VERDICT_POSITIVE,
)
from swiftstudy.report.analysis import NO_NORMS_NOTE, RULES, ReportAnalysis
from swiftstudy.report.document import (
    TONE_MUTED,
    TONE_NEGATIVE,
    TONE_NEUTRAL,
    TONE_NOTE,
    TONE_POSITIVE,
    TONE_WARNING,
    Block,
    Bullets,
    Cell,
    Document,
    FigureBlock,
    Notice,
    Paragraph,
    Section,
    Table,
)
from swiftstudy.report.drivers import HELPS, REPORT_TOP_PROBES, describe_drivers, format_moved
from swiftstudy.report.headline import build_headline
from swiftstudy.report.reference import build_method, build_reproduce, build_setup
from swiftstudy.scores import Comparison, Estimate, MetricStatistics, Trend

_TONES = {
    VERDICT_POSITIVE: TONE_POSITIVE,
    VERDICT_NEGATIVE: TONE_NEGATIVE,
    VERDICT_NO_INTERVAL: TONE_MUTED,
}
_TRENDS = {VERDICT_POSITIVE: "rising", VERDICT_NEGATIVE: "falling"}
#: How the step table words a trend, by its verdict (any other: "no clear trend").
_TREND_WORDS = {**_TRENDS, VERDICT_NO_INTERVAL: "no interval"}
#: A rank correlation above this is called strong in the diagnostics.
_STRONG_CORRELATION = 0.5
_PAIRS_INTRO = Paragraph(
    "The means above average many pairs. The heatmaps show the mean RelInf of each "
    "(probe task, eval task); the distributions show every pair of each metric."
)


@dataclass(frozen=True)
class ReportFigures:
    """The figures saved for a report, as document blocks in reading order."""

    metrics_by_step: tuple[FigureBlock, ...]
    heatmaps: tuple[FigureBlock, ...]
    distributions: tuple[FigureBlock, ...]
    gradient_norms: FigureBlock | None


def build_document(analysis: ReportAnalysis, figures: ReportFigures) -> Document:
    """The whole report."""
    tables = analysis.tables
    config = tables.config
    steps = tables.steps
    span = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}–{steps[-1]}"
    subtitle = (
        f"{tables.out_dir.name} · model {config['spec'].get('model')} · "
        f"{len(steps)} checkpoint{'s' if len(steps) != 1 else ''} ({span}) · "
        f"study run {config.get('created', 'at an unknown time')}"
    )
    sections = (
        build_headline(analysis),
        _summary(analysis),
        *_comparisons(analysis),
        Section("figures", "Metrics by step", (*figures.metrics_by_step, _step_table(analysis))),
        Section("pairs", "Pairs", (_PAIRS_INTRO, *figures.heatmaps, *figures.distributions)),
        _drivers(analysis),
        _diagnostics(analysis, figures.gradient_norms),
        build_setup(analysis),
        build_method(analysis),
        build_reproduce(analysis),
    )
    return Document("Swift study report", subtitle, sections)


# -- formatting -----------------------------------------------------------------------------


def format_number(value: float | None) -> str:
    """Three significant digits with a sign, or ``n/a``."""
    return "n/a" if value is None else f"{value:+.3g}"


def format_interval(low: float | None, high: float | None) -> str:
    return (
        "n/a" if low is None or high is None else f"[{format_number(low)}, {format_number(high)}]"
    )


def _ci(analysis: ReportAnalysis) -> str:
    return f"{analysis.statistics.settings.level:.0%} CI"


def _estimate(estimate: Estimate) -> str:
    return f"{format_number(estimate.value)} {format_interval(estimate.ci_low, estimate.ci_high)}"


def _verdict_cell(verdict: str) -> Cell:
    return Cell(verdict, _TONES.get(verdict, TONE_NEUTRAL))


def _trend_text(trend: Trend | None) -> str:
    if trend is None:
        return "n/a (one checkpoint)"
    word = _TREND_WORDS.get(trend.verdict, "no clear trend")
    return f"{word}: {format_number(trend.slope)} {format_interval(trend.ci_low, trend.ci_high)}"


def _checkpoints_positive(metric: MetricStatistics) -> str:
    have = [s for s in metric.steps if s.estimate.value is not None]
    if not have:
        return "n/a"
    positive = sum(s.estimate.verdict == VERDICT_POSITIVE for s in have)
    return f"{positive} of {len(have)}"


def format_steps(steps: Sequence[int]) -> str:
    """``0, 50, 100``: steps as the report lists them."""
    return ", ".join(str(s) for s in steps)


# -- sections -------------------------------------------------------------------------------


def _question(analysis: ReportAnalysis) -> str:
    metrics = analysis.tables.metrics
    probes = list(dict.fromkeys(m.probes for m in metrics))
    evals = list(dict.fromkeys(m.evals for m in metrics))
    contexts = {m.context for m in metrics}
    where = {
        frozenset({CONTEXT_IN_TASK}): "on the same task (in-task)",
        frozenset({"cross-task"}): "on other tasks (cross-task)",
        frozenset({"all"}): "(all pairs)",
    }.get(frozenset(contexts), "on the same task (in-task) and on other tasks (cross-task)")
    text = (
        f"Does one gradient step on {_names(probes)} examples lower the loss of held-out "
        f"{_names(evals)} examples {where}"
    )
    comparisons = analysis.statistics.comparisons
    if comparisons:
        by_name = {m.name: m for m in metrics}
        firsts = list(dict.fromkeys(by_name[c.metric].probes for c in comparisons))
        baselines = list(dict.fromkeys(by_name[c.baseline].probes for c in comparisons))
        text += (
            f", and does a step on {_names(firsts)} examples do so more than a step on "
            f"{_names(baselines)} examples"
        )
    return f"**Question.** {text}?"


def _names(names: Sequence[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _metric_finding(metric: MetricStatistics, ci: str) -> str:
    mean = metric.summary.mean_over_steps
    n = sum(s.estimate.value is not None for s in metric.steps)
    text = (
        f"**{metric.name}**: {mean.verdict}. Mean RelInf over the {n} checkpoint"
        f"{'s' if n != 1 else ''} {format_number(mean.value)}, {ci} "
        f"{format_interval(mean.ci_low, mean.ci_high)}; interval above 0 at "
        f"{_checkpoints_positive(metric)} checkpoints"
    )
    trend = metric.summary.trend
    if trend is not None and trend.verdict in _TRENDS:
        text += (
            f"; {_TRENDS[trend.verdict]} over training (slope {format_number(trend.slope)} per "
            f"step, {ci} {format_interval(trend.ci_low, trend.ci_high)})"
        )
    elif trend is not None:
        text += "; no clear trend over training"
    return text + "."


def _comparison_finding(comparison: Comparison, first_step: int, ci: str) -> str:
    a, b = comparison.metric, comparison.baseline
    mean = comparison.summary.mean_over_steps
    verdict = {
        VERDICT_POSITIVE: "significantly higher",
        VERDICT_NEGATIVE: "significantly lower",
        VERDICT_NO_INTERVAL: "without an interval",
    }.get(mean.verdict, "not distinguishable")
    return (
        f"**{a}** vs **{b}**: {verdict} on average over checkpoints (difference "
        f"{format_number(mean.value)}, {ci} {format_interval(mean.ci_low, mean.ci_high)}); "
        f"{_overtake_text(comparison, first_step)}."
    )


def _overtake_text(comparison: Comparison, first_step: int) -> str:
    a, b = comparison.metric, comparison.baseline
    for above, below, start, significant in (
        (a, b, comparison.metric_above_from, comparison.metric_significantly_above_from),
        (b, a, comparison.baseline_above_from, comparison.baseline_significantly_above_from),
    ):
        if start is None:
            continue
        text = (
            f"{above} is above {below} at every checkpoint"
            if start == first_step
            else f"{above} exceeds {below} from step {start} on"
        )
        if significant is not None:
            text += (
                ", significantly at every checkpoint"
                if significant == first_step
                else f", significantly from step {significant}"
            )
        return text
    return "neither stays above the other up to the last checkpoint"


def _summary(analysis: ReportAnalysis) -> Section:
    stats = analysis.statistics
    first_step = analysis.tables.steps[0]
    ci = _ci(analysis)
    findings = [_metric_finding(m, ci) for m in stats.metrics]
    findings += [_comparison_finding(c, first_step, ci) for c in stats.comparisons]
    blocks: list[Block] = [
        Paragraph(_question(analysis)),
        Paragraph(
            "RelInf is how much one gradient step on a probe example lowers the loss of an "
            "evaluation example, relative to a step on that example itself; a metric is its mean "
            f"over the metric's (probe, eval) pairs. Intervals ({ci}) are two-way bootstrap "
            "intervals over the probe and evaluation examples (see *Method and rules*)."
        ),
        build_verdict_table(analysis),
        Paragraph(f"**Verdict rule:** {RULES['verdict']}. {_sentence(RULES['overall'])}."),
        Paragraph("**Findings.**"),
        Bullets(tuple(findings)),
    ]
    flagged = [m.name for m in stats.metrics if any(s.concentration.concentrated for s in m.steps)]
    if flagged:
        blocks.append(
            Notice(
                f"{len(flagged)} metric{' is' if len(flagged) == 1 else 's are'} driven by a few "
                "pairs at some checkpoint "
                f"({', '.join(f'**{name}**' for name in flagged)}): see *Diagnostics*."
            )
        )
    no_interval = _no_interval_notice(analysis)
    if no_interval:
        blocks.append(no_interval)
    return Section("summary", "Summary", tuple(blocks))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _few_pairs_notice(analysis: ReportAnalysis) -> Notice | None:
    items = [_few_pairs_item(analysis, m) for m in analysis.statistics.metrics]
    if not any(items):
        return None
    return Notice(
        f"**Driven by a few pairs** (the top {CONCENTRATION_TOP_FRACTION:.0%} of pairs by "
        "|RelInf| carry more than half of Σ|RelInf|): read these means with care.",
        items=tuple(item for item in items if item),
    )


def _no_interval_notice(analysis: ReportAnalysis) -> Notice | None:
    missing = []
    for metric in analysis.statistics.metrics:
        steps = [s.step for s in metric.steps if s.estimate.verdict == VERDICT_NO_INTERVAL]
        if steps:
            missing.append(
                f"**{metric.name}** at step{'s' if len(steps) > 1 else ''} {format_steps(steps)}"
            )
    if not missing:
        return None
    return Notice(
        "**No interval**: the pairs involve fewer than two probes or two evaluation examples, "
        "or too few resamples contain a pair.",
        items=tuple(missing),
    )


def _few_pairs_item(analysis: ReportAnalysis, metric: MetricStatistics) -> str | None:
    flagged = [s for s in metric.steps if s.concentration.concentrated]
    if not flagged:
        return None
    worst = max(flagged, key=lambda s: s.concentration.top_share)
    c = worst.concentration
    top = _top_pairs(analysis, metric.name, worst.step, c.n_top)
    probe, example, value = top[0]
    text = (
        f"**{metric.name}** at step{'s' if len(flagged) > 1 else ''} "
        f"{format_steps([s.step for s in flagged])}. At step {worst.step} "
        + (
            f"the top pair (of {c.n_pairs}) carries {c.top_share:.0%}: probe `{probe}` on eval "
            if c.n_top == 1
            else f"the top {c.n_top} of {c.n_pairs} pairs carry {c.top_share:.0%}; the largest "
            f"is probe `{probe}` on eval "
        )
        + f"`{example}` ({format_number(value)})"
    )
    if len(top) > 1 and len({e for _, e, _ in top}) == 1:
        text += f", and all of them are on eval `{example}`"
    elif len(top) > 1 and len({p for p, _, _ in top}) == 1:
        text += f", and all of them have probe `{probe}`"
    return (
        f"{text}. Without {'it' if c.n_top == 1 else 'them'} the mean is "
        f"{format_number(c.value_without_top)} instead of {format_number(worst.estimate.value)}."
    )


def _top_pairs(
    analysis: ReportAnalysis, name: str, step: int, n: int
) -> list[tuple[str, str, float]]:
    """The ``n`` pairs of a metric at a step with the largest |RelInf|: (probe, eval, RelInf)."""
    pairs = next(m for m in analysis.pairs if m.name == name)
    matrix = next(x for x in pairs.matrices if x.step == step)
    probes = analysis.tables.examples[pairs.probes]
    evals = analysis.tables.examples[pairs.evals]
    rows, cols = np.nonzero(np.asarray(matrix.used, dtype=bool))
    values = np.asarray(matrix.relinf, dtype=np.float64)[rows, cols]
    order = np.argsort(-np.abs(values), kind="stable")[:n]
    return [(probes[rows[k]].id, evals[cols[k]].id, float(values[k])) for k in order]


def build_verdict_table(analysis: ReportAnalysis) -> Table:
    """The summary's table: each metric's verdict, mean over checkpoints, trend, last step."""
    ci = _ci(analysis)
    last = analysis.tables.steps[-1]
    rows = []
    for metric in analysis.statistics.metrics:
        summary = metric.summary
        at_last = next((s.estimate for s in metric.steps if s.step == last), None)
        rows.append(
            (
                Cell(metric.name),
                Cell(metric.context),
                _verdict_cell(summary.mean_over_steps.verdict),
                Cell(_estimate(summary.mean_over_steps)),
                Cell(_checkpoints_positive(metric)),
                Cell(_trend_text(summary.trend)),
                Cell("n/a" if at_last is None else _estimate(at_last)),
            )
        )
    return Table(
        (
            "Metric",
            "Context",
            "Verdict",
            f"Mean over checkpoints [{ci}]",
            "Checkpoints with CI > 0",
            f"Trend: slope per step [{ci}]",
            f"Step {last} [{ci}]",
        ),
        tuple(rows),
        id="verdict-table",
        numeric=frozenset({3, 4, 6}),
    )


def _comparisons(analysis: ReportAnalysis) -> tuple[Section, ...]:
    stats = analysis.statistics
    if not stats.comparisons:
        return ()
    first_step = analysis.tables.steps[0]
    blocks: tuple[Block, ...] = (
        Paragraph(
            "Each metric against the metric with the same evaluation set and context but other "
            "probes: the difference is the metric listed first in the spec minus the other, "
            "with intervals from the same resamples."
        ),
        Table(
            (
                "Metric",
                "Baseline",
                "Verdict on the difference",
                f"Mean difference [{_ci(analysis)}]",
                "Trend of the difference",
                "Which is above",
            ),
            tuple(
                (
                    Cell(c.metric),
                    Cell(c.baseline),
                    _verdict_cell(c.summary.mean_over_steps.verdict),
                    Cell(_estimate(c.summary.mean_over_steps)),
                    Cell(_trend_text(c.summary.trend)),
                    Cell(_overtake_text(c, first_step)),
                )
                for c in stats.comparisons
            ),
            id="comparison-table",
            numeric=frozenset({3}),
        ),
    )
    return (Section("comparisons", "Comparisons", blocks),)


def _drivers(analysis: ReportAnalysis) -> Section:
    """Per metric, the probes that help and hurt it most, and the evals each moves most."""
    blocks: list[Block] = [
        Paragraph(
            "Each probe's mean RelInf over the checkpoints and its eval examples: the metric is "
            "the mean of these when every probe has as many pairs. A verdict that a few probes "
            "carry shows a few large values here; one that all of them carry shows most probes "
            "on one side. *Moves most*: the eval examples with the largest |mean RelInf| for "
            "that probe."
        )
    ]
    for pairs in analysis.pairs:
        drivers = describe_drivers(pairs, analysis.tables, REPORT_TOP_PROBES)
        blocks += [
            Paragraph(
                f"**{drivers.metric}**: {drivers.n_helping} of {drivers.n_probes} probes help "
                f"on average, {drivers.n_hurting} hurt."
            ),
            Table(
                ("Effect", "Probe", "Task", "Mean RelInf", "Prompt", "Response", "Moves most"),
                tuple(
                    (
                        Cell(d.effect, TONE_POSITIVE if d.effect == HELPS else TONE_NEGATIVE),
                        Cell(f"`{d.probe_id}`"),
                        Cell(d.task),
                        Cell(format_number(d.mean_relinf)),
                        Cell(d.prompt),
                        Cell(d.response),
                        Cell(format_moved(d)),
                    )
                    for d in drivers.drivers
                ),
                numeric=frozenset({3}),
            ),
        ]
    return Section("drivers", "Which probes drive each metric", tuple(blocks))


def _step_table(analysis: ReportAnalysis) -> Table:
    rows = []
    for metric in analysis.statistics.metrics:
        for step in metric.steps:
            c = step.concentration
            share = f"{c.top_share:.0%} (top {c.n_top})" if c.n_pairs else "n/a"
            rows.append(
                (
                    Cell(metric.name),
                    Cell(str(step.step)),
                    Cell(format_number(step.estimate.value)),
                    Cell(format_interval(step.estimate.ci_low, step.estimate.ci_high)),
                    Cell(str(step.n_pairs)),
                    _verdict_cell(step.estimate.verdict),
                    Cell(share, TONE_WARNING if c.concentrated else None),
                )
            )
    return Table(
        (
            "Metric",
            "Step",
            "Mean RelInf",
            _ci(analysis),
            "Pairs",
            "Verdict",
            "Share of Σ|RelInf| in the top 10% of pairs",
        ),
        tuple(rows),
        id="step-table",
        numeric=frozenset({1, 2, 3, 4}),
    )


def _diagnostics(analysis: ReportAnalysis, figure: FigureBlock | None) -> Section:
    blocks: list[Block] = [
        Paragraph(
            "**Gradient norms and completion length.** The loss ℓ sums the completion tokens' "
            "negative log-likelihoods, so long completions (chain-of-thought answers) tend to "
            "have larger gradients, and RelInf grows in proportion to the probe's gradient norm. "
            "A large positive Spearman ρ means norms follow length; a probe set with much larger "
            "norms than its baseline can show larger |RelInf| for that reason alone."
        )
    ]
    if analysis.norms is None:
        blocks.append(Notice(NO_NORMS_NOTE, TONE_NOTE))
    else:
        if figure is not None:
            blocks.append(figure)
        blocks += [
            _norms_summary(analysis),
            Table(
                (
                    "Step",
                    "Set",
                    "Examples",
                    "Median completion tokens",
                    "Median ‖∇ℓ‖",
                    "Spearman ρ (tokens, ‖∇ℓ‖)",
                    "Zero gradients",
                ),
                tuple(
                    (
                        Cell(str(n.step)),
                        Cell(n.set),
                        Cell(str(n.n_examples)),
                        Cell(f"{n.median_tokens:g}"),
                        Cell(f"{n.median_norm:.3g}"),
                        Cell("n/a" if n.rank_correlation is None else f"{n.rank_correlation:+.2f}"),
                        Cell(str(n.n_zero), TONE_WARNING if n.n_zero else None),
                    )
                    for n in analysis.norms
                ),
                id="norm-table",
                numeric=frozenset({0, 2, 3, 4, 5, 6}),
            ),
        ]
    blocks.append(Paragraph(f"**Few pairs.** {_sentence(RULES['concentration'])}."))
    blocks.append(
        _few_pairs_notice(analysis)
        or Notice("No metric is driven by a few pairs at any checkpoint.", TONE_NOTE)
    )
    return Section("diagnostics", "Diagnostics", tuple(blocks))


def _norms_summary(analysis: ReportAnalysis) -> Paragraph:
    last = analysis.tables.steps[-1]
    at_last = [n for n in analysis.norms or () if n.step == last]
    parts = [f"`{n.set}` {n.median_norm:.3g} ({n.median_tokens:g} tokens)" for n in at_last]
    text = f"At step {last}, median gradient norms (median completion tokens): {'; '.join(parts)}."
    positive = [n for n in at_last if n.median_norm > 0]
    if len(positive) >= 2:
        high = max(positive, key=lambda n: n.median_norm)
        low = min(positive, key=lambda n: n.median_norm)
        text += (
            f" `{high.set}` gradients are {high.median_norm / low.median_norm:.1f}× those of "
            f"`{low.set}`."
        )
    strong = [n for n in at_last if (n.rank_correlation or 0) > _STRONG_CORRELATION]
    if strong:
        text += f" Norms rise with length within {_names([n.set for n in strong])} (ρ > 0.5)."
    return Paragraph(text)
