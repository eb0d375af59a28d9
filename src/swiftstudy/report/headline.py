"""The report's headline section: each strategy against its control, and what the score predicts.

The verdicts and the variants come from ``verdicts.analyze_verdicts``; this module only says them.
"""

from __future__ import annotations

from swiftstudy.constants import (
    CONTROL_VERDICT_HELPS,
    CONTROL_VERDICT_WORSE,
    VALIDITY_NOTE,
)
from swiftstudy.report.analysis import ReportAnalysis
from swiftstudy.report.document import (
    TONE_NEGATIVE,
    TONE_NEUTRAL,
    TONE_NOTE,
    TONE_POSITIVE,
    Block,
    Cell,
    Notice,
    Paragraph,
    Section,
    Table,
)
from swiftstudy.report.verdicts import RELINF_PREDICTS, Headline
from swiftstudy.scores import Estimate


def _format(estimate: Estimate) -> str:
    if estimate.value is None:
        return "n/a"
    text = f"{estimate.value:+.3g}"
    if estimate.ci_low is None or estimate.ci_high is None:
        return f"{text} (no interval)"
    return f"{text} [{estimate.ci_low:+.3g}, {estimate.ci_high:+.3g}]"


def _verdict_cell(headline: Headline) -> Cell:
    tones = {
        CONTROL_VERDICT_HELPS.format(control=headline.control): TONE_POSITIVE,
        CONTROL_VERDICT_WORSE.format(control=headline.control): TONE_NEGATIVE,
    }
    return Cell(headline.margin.verdict, tones.get(headline.margin.verdict, TONE_NEUTRAL))


def build_headline(analysis: ReportAnalysis) -> Section:
    """The headline section: the verdict table, the variants' margins and the fixed notes."""
    verdicts = analysis.verdicts
    normalization, checkpoints = verdicts.variant
    ci = f"{analysis.statistics.settings.level:.0%} CI"
    if verdicts.headlines:
        blocks: list[Block] = [
            Table(
                (
                    "Strategy",
                    "Verdict",
                    f"Margin over the control [{ci}]",
                    f"RelInf, mean over checkpoints [{ci}]",
                    "Control metric",
                ),
                tuple(
                    (
                        Cell(h.metric),
                        _verdict_cell(h),
                        Cell(_format(h.margin.margin)),
                        Cell(_format(h.relinf)),
                        Cell(h.control_metric),
                    )
                    for h in verdicts.headlines
                ),
                id="headline-table",
                numeric=frozenset({2, 3}),
            ),
            Paragraph(
                f"The margin is the strategy's score minus its control's on the same evaluation "
                f"examples and context (normalization **{normalization}**, checkpoints "
                f"**{checkpoints}**: the spec's `verdict`), with a paired two-way bootstrap "
                "interval. A strategy **helps more than** its control when the interval lies "
                "above 0, is **worse than** it when it lies below 0, and is **no better than** it "
                "otherwise. Every variant's value is in `verdicts.json`."
            ),
            _variants_table(analysis, ci),
        ]
    else:
        blocks = [
            Paragraph(
                "No metric names a control, so there is no headline verdict. Add "
                "`control: <probe set>` to a strategy's metric (unrelated-task data, or the plain "
                "data the strategy was derived from): RelInf > 0 alone does not mean a strategy "
                "helps, since examples of one format share a gradient direction."
            )
        ]
    blocks.append(Paragraph(f"**What the score predicts.** {RELINF_PREDICTS}"))
    blocks.append(Paragraph(f"**How well it predicts.** {VALIDITY_NOTE}"))
    if verdicts.notes:
        blocks.append(Notice("**Variants.**", tone=TONE_NOTE, items=verdicts.notes))
    return Section("headline", "Verdicts against controls", tuple(blocks))


def _variants_table(analysis: ReportAnalysis, ci: str) -> Table:
    """Each strategy's margin under every normalisation (rows) and weighting (columns)."""
    variants = analysis.verdicts.variants
    weightings = list(dict.fromkeys(scores.weighting for _, scores in variants))
    normalizations = list(dict.fromkeys(n for n, _ in variants))
    margins = {
        (n, scores.weighting, m.metric): m.margin for n, scores in variants for m in scores.margins
    }
    rows = tuple(
        (
            Cell(h.metric),
            Cell(n),
            *(Cell(_format(margins[n, w, h.metric])) for w in weightings),
        )
        for h in analysis.verdicts.headlines
        for n in normalizations
    )
    return Table(
        ("Strategy", "Normalization", *(f"{w} [{ci}]" for w in weightings)),
        rows,
        id="variant-table",
        numeric=frozenset(range(2, 2 + len(weightings))),
    )
